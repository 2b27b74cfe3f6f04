"""The pages' layers of bounds, one table each: every page's URL settings (read as text, clamped into their range)
and the Train page's form (its widgets' ends, held again for a typed K per depth and for the app's job queue).

Each setting's bounds are read from its Param (vqdemo/page_urls.py, vqdemo/train_settings.py), whose field settings
take them from the config field's Spec (vqdemo/settings.py): no number is repeated here. The config and command
line layers are tests/test_settings.py's and tests/test_hardening_params.py's.
"""

from __future__ import annotations

import math

import pytest

from tests import bounds
from vqdemo import fit, page_urls, settings
from vqdemo import train_settings as form
from vqdemo.playground import PlaygroundConfig
from vqdemo.urlstate import Param, text_of

# what a link can carry: each reads as the setting's default (None) or as a value inside its options or bounds
HOSTILE = ["nan", "-inf", "1e309", "-1", "9" * 30, "9" * 5000, "abc", "", "1.5", "0x10", "<img src=x>",
           "[a](http://x.test/a)", "\u202e1", "1,2,3," * 40]
URL_CASES = [(page, name) for page, params in page_urls.PARAMS.items() for name in params]


def typed(value) -> str:
    """A value as a link spells it: the app's own spelling, floats in full (the next float past a bound)."""
    return repr(value) if isinstance(value, float) else text_of(value)


def field_of(page: str, p: Param) -> type | None:
    """The config whose field this setting is, found by the field's name and help (field_param copies the help);
    None for a setting that is no field, or one written as text (a K per depth)."""
    configs = [PlaygroundConfig] if page == "playground" else [c for c in bounds.CONFIGS if c is not PlaygroundConfig]
    cls = next((c for c in configs if p.field in settings.specs(c) and (settings.spec(c, p.field).help or None)
                == p.help), None)
    return None if cls is None or settings.kind_of(cls, p.field)[0] == "list" else cls


def inside(p: Param, got) -> bool:
    if p.options:
        return got in p.options
    if p.cast in (int, float):
        return (type(got) is p.cast and math.isfinite(got) and (p.lo is None or got >= p.lo)
                and (p.hi is None or got <= p.hi))
    return p.cast is bool and isinstance(got, bool) or p.cast is str and len(got) <= (p.hi or 10_000)


@pytest.mark.parametrize("page, name", URL_CASES, ids=[f"{p}-{n}" for p, n in URL_CASES])
def test_every_url_setting_takes_its_bounds_and_clamps_past_them(page, name):
    """The URL's layer: at each bound a value reads as itself, past it as the bound (the same for a value already
    held, `clamp`); an option reads as itself and anything else as the default; junk and hostile text never read as
    NaN, inf, a huge number or an over-long string; a field's URL range lies inside the field's own."""
    p = page_urls.PARAMS[page][name]
    if p.options:
        assert [p.parse(text_of(o)) for o in p.options] == list(p.options)
        assert p.parse("not-an-option") is None and p.clamp("not-an-option") == p.default
    elif p.cast in (int, float):
        assert {type(b) for b in (p.lo, p.hi) if b is not None} <= {p.cast}   # st.slider refuses mixed types
        for value, taken in bounds.edges(p.lo, p.hi, whole=p.cast is int):
            want = value if taken else p.lo if value < p.lo else p.hi
            assert p.parse(typed(value)) == want and p.clamp(value) == want, (value, want)
        assert [p.parse(t) for t in ("nan", "inf", "-inf", "x", "")] == [None] * 5
        if p.hi is None:   # no upper bound: a large value stays itself
            assert p.parse(typed(p.cast(10**7))) == 10**7
    elif p.cast is bool:
        assert (p.parse(text_of(True)), p.parse(text_of(False)), p.parse("yes")) == (True, False, None)
    elif p.hi:
        assert p.parse("a" * (int(p.hi) + 1)) == "a" * int(p.hi)
    for text in HOSTILE:
        got = p.parse(text)
        assert got is None or inside(p, got), (text[:20], got)
    cls = field_of(page, p)
    if cls is not None:
        reachable = p.options or [b for b in (p.lo, p.hi) if b is not None]   # with options, parse gives only those
        assert all(settings.accepts(cls, p.field, b) for b in reachable), p


DEFAULTS = {name: p.default for name, p in form.SETTINGS.items()}


def form_ends(name: str) -> tuple[int, int]:
    """A Train form setting's range: from the field's lower bound to the widget's last stop (or its slider's end)."""
    p = form.SETTINGS[name]
    return p.lo, max(p.options) if p.options else p.hi


@pytest.mark.parametrize("name", ["k", "d", "batch", "depth", "sizes"])
def test_the_train_form_takes_its_widgets_ends_and_refuses_past_them(name):
    """The Train page's form: K, D, batch size and RQ depth at the widgets' ends build a model; one past them is
    refused in one line saying the limit is this app's ("here"), as is a typed K per depth past the K slider's ends
    (`sizes`), and the app's job queue (`check_app_limits`) holds a model built past them the same way."""
    lo, hi = form_ends("k" if name == "sizes" else name)
    for value, taken in bounds.edges(lo, hi):
        kind = "rq" if name in ("depth", "sizes") else "vq"   # a VQ model's K is its one codebook's
        given = {"sizes": f"{value},{value}"} if name == "sizes" else {name: value}   # typed: K at both depths
        v = {**DEFAULTS, "kind": kind, "depth": 2, **given}
        if taken:
            fit.check_app_limits(form.model_config(v, 1, 28), v["batch"])
            continue
        with pytest.raises(ValueError, match="here") as e:
            form.model_config(v, 1, 28)
        assert "\n" not in str(e.value)
        if value > hi:   # a model the library allows (a bigger K, D, depth or batch) but the app does not
            model = fit.model_config(kind, 1, 28, **form.model_settings(v))
            with pytest.raises(ValueError, match="here"):
                fit.check_app_limits(model, v["batch"])
