"""A page's settings as URL text (?k=64&beta=0.25): how each is read, bounded and written back.

The app's pages read their settings from the URL through these (ui/state.py adds the reading of Streamlit's
query), and `vqdemo.notebook` reads the same text with the same bounds, so a link and the notebook exported from it
agree. No streamlit in here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import settings


@dataclass(frozen=True)
class Param:
    """One setting kept in the URL as ?name=value: the one mechanism every page uses to read and write its settings.

    Its text is read by `parse`: one of `options`, or a number clamped to [lo, hi]; junk (and NaN, inf) reads
    as None, so the default applies. `field` names the config field it sets, when it is one (see `field_param`).
    """

    name: str
    default: Any
    options: tuple = ()
    lo: float | None = None
    hi: float | None = None
    cast: type = str             # int, float, bool or str
    field: str | None = None     # the config field this setting is (the Train page hands these to fit.model_config)
    help: str | None = None      # the field's help, for the widget

    def parse(self, raw: str | None) -> Any:
        if raw is None:
            return None
        if self.options:
            return next((o for o in self.options if raw in (str(o), text_of(o))), None)
        if self.cast is bool:
            return {"1": True, "0": False}.get(raw)
        try:
            value = self.cast(raw)
        except ValueError:
            return None
        if self.cast is str:
            return value[: int(self.hi)] if self.hi else value
        return self._within(value) if math.isfinite(value) else None

    def lookup(self, query: Mapping[str, str], fallback: Any = None) -> Any:
        """This setting as `query` says, else the fallback (what the session had), else its default."""
        value = self.parse(query.get(self.name))
        return value if value is not None else fallback if fallback is not None else self.default

    def clamp(self, value: Any) -> Any:
        """A value already held (in a widget) kept inside the bounds or options, which may have changed with the
        model (a label colouring for a model without labels)."""
        if self.options:
            return value if value in self.options else self.default
        return self._within(self.cast(value)) if self.cast in (int, float) else value

    def accepts(self, raw: str) -> Any:
        """The value of `raw` when it is one this setting takes as written (no clamping), else ValueError saying
        which values it takes: for text typed by a person (`python -m vqdemo notebook --url`), where a silent
        clamp would hide a typo."""
        value = self.parse(raw)
        inside = value is not None and (self.cast not in (int, float) or self.options or value == self.cast(raw))
        if not inside:
            raise ValueError(f"{self.name}={raw!r} is not a setting this page takes: {self.describe()}")
        return value

    def describe(self) -> str:
        """The values this setting takes, in words ("one of 2, 4, 8", "a number in [0, 2]")."""
        if self.options:
            return "one of " + ", ".join(text_of(o) for o in self.options)
        if self.cast is bool:
            return "1 or 0"
        if self.cast is str:
            return f"text of at most {int(self.hi)} characters" if self.hi else "text"
        kind = "a whole number" if self.cast is int else "a number"
        if self.lo is not None and self.hi is not None:
            return f"{kind} in [{text_of(self.lo)}, {text_of(self.hi)}]"
        if self.lo is not None:
            return f"{kind} of at least {text_of(self.lo)}"
        return kind if self.hi is None else f"{kind} of at most {text_of(self.hi)}"

    def _within(self, value: float) -> float:
        if self.lo is not None:
            value = max(self.lo, value)
        return value if self.hi is None else min(self.hi, value)


def text_of(value: Any) -> str:
    """How a URL spells a value: 1/0 for a switch, 0.25 not 0.250000."""
    if isinstance(value, bool):
        return "1" if value else "0"
    return f"{value:g}" if isinstance(value, float) else str(value)


def field_param(name: str, cls: type, field: str, *, options: tuple | list = (), lo: float | None = None,
                hi: float | None = None, default: Any = None, kind: type[Param] = Param) -> Param:
    """A config field's URL setting: default, help, choices and bounds from the field's metadata (settings.py).

    A page may offer fewer values (`options`, e.g. K in powers of two up to the slider's end) or a narrower range
    (`lo`, `hi`), never a value the field refuses, and may start elsewhere (`default`, e.g. 500 steps where the
    field's default is no step budget). `kind`: the Param class to build (ui.state's reads Streamlit's URL)."""
    s, (base, _) = settings.spec(cls, field), settings.kind_of(cls, field)
    options = tuple(options) or s.choices
    refused = [o for o in options if not settings.accepts(cls, field, o)]
    if refused:
        raise ValueError(f"{cls.__name__}.{field} refuses the page's options {refused}")
    if options and (settings.default(cls, field) if default is None else default) not in options:
        raise ValueError(f"{cls.__name__}.{field}'s default is not among the page's options {options}")
    cast = {"int": int, "float": float, "bool": bool}.get(base, str)

    def bound(given: float | None, field_bound: float | None) -> float | None:
        # in the field's own type: st.slider refuses mixed types (a Spec's lo=0 beside a float field's hi=2.0)
        b = field_bound if given is None else given
        return cast(b) if b is not None and cast in (int, float) else b

    lo, hi = bound(lo, s.lo), bound(hi, s.hi)
    value = settings.default(cls, field) if default is None else default
    return kind(name, value, options, lo, hi, cast, field, s.help or None)
