"""Every page's settings as its URL spells them, for the pages that export a notebook: names, defaults and bounds.

The Train page's come from `train_settings.SETTINGS` and the Playground's from `PlaygroundConfig`'s fields, as those
pages build them; the other pages read theirs from here (`ui.state.page_param`), so each name and bound is written
once. Bounds that follow the model (the first image up to its validation set's size, the depth up to its depth) are
applied where the model is known: by the page (narrowing the Param) and in the notebook.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from .app_limits import BETA_MAX, MAX_K, MAX_SEED
from .playground import PlaygroundConfig
from .prior import DEFAULT_GUIDANCE, DEFAULT_TEMPERATURE
from .train_settings import SETTINGS
from .urlstate import Param, field_param

MODEL = Param("model", "shipped:mnist-vq", hi=200)   # the sidebar's model: "shipped:<name>" or "run:<run id>"
MODEL_ID = re.compile(r"(shipped|run):[A-Za-z0-9][A-Za-z0-9._-]*")
APP_WIDE = ("present", "me")   # presenter mode and the class id: in every page's URL, nothing a notebook needs


def _playground() -> dict[str, Param]:
    """The Playground's settings, narrowed to its widgets' stops (in the order the page shows them)."""
    narrowed = {"k": {"options": (4, 8, 16, 32, 64, 128, 256)}, "init": {"options": ("normal", "uniform", "data")},
                "codebook": {"options": ("grad", "ema")}, "steps": {"options": (200, 400, 800)}, "restart_dead": {},
                "beta": {"hi": BETA_MAX}, "data": {}, "quantizer": {}}
    names = {"codebook": "cb", "restart_dead": "restart", "quantizer": "q"}
    return {names.get(f, f): field_param(names.get(f, f), PlaygroundConfig, f, **kw) for f, kw in narrowed.items()}


PARAMS: dict[str, dict[str, Param]] = {
    "train": dict(SETTINGS),
    "reconstruct": {"n": Param("n", 8, lo=1, hi=12, cast=int), "start": Param("start", 0, lo=0, cast=int),
                    "depth": Param("depth", 1, lo=1, cast=int)},
    "codebook": {"depth": Param("depth", 1, lo=1, cast=int), "code": Param("code", None, lo=0, hi=MAX_K - 1,
                                                                         cast=int),
                 "hl": Param("hl", False, cast=bool), "by": Param("by", "code", options=("code", "label")),
                 "proj": Param("proj", "UMAP", options=("UMAP", "PCA"))},
    "paint": {"grid": Param("grid", "")},
    "sample": {"n": Param("n", 16, lo=1, hi=64, cast=int), "top_k": Param("top_k", 0, lo=0, hi=MAX_K, cast=int),
               "temperature": Param("temperature", DEFAULT_TEMPERATURE, lo=0.05, hi=3.0, cast=float),
               "seed": Param("seed", 0, lo=0, hi=MAX_SEED, cast=int),
               "label": Param("label", -1, lo=-1, hi=9_999, cast=int),
               "guidance": Param("guidance", DEFAULT_GUIDANCE, lo=0.0, hi=5.0, cast=float)},
    "playground": _playground(),
}
PAGES = tuple(PARAMS)
TAKES_MODEL = ("reconstruct", "codebook", "paint", "sample")   # the Train page's model is its settings'


def query_pairs(query: str | Mapping[str, str]) -> dict[str, str]:
    """A page's URL, its query ("?k=16&beta=0.5", "k=16&beta=0.5") or a mapping -> {name: text} (the last of a
    repeated name wins, as Streamlit's query_params.get does)."""
    if isinstance(query, Mapping):
        return {str(k): str(v) for k, v in query.items()}
    text = query.strip()
    if "?" in text:
        text = urlsplit(text).query if "://" in text else text.split("?", 1)[1]
    return dict(parse_qsl(text, keep_blank_values=True))


def page_settings(page: str, query: str | Mapping[str, str] = "", strict: bool = True) -> dict[str, Any]:
    """The page's settings as its URL gives them (its defaults for the rest), by URL name, plus "model".

    strict (a person typed the query: the command line): an unknown name, a value the page would not take, a value
    outside its bounds is a ValueError of one line. Not strict (the app's own URL: the export button): read as the
    page reads it, junk -> the default, numbers clamped, other names ignored.
    """
    if page not in PARAMS:
        raise ValueError(f"unknown page {page!r}: the pages with a notebook are {', '.join(PAGES)}")
    params = {**PARAMS[page], **({"model": MODEL} if page in TAKES_MODEL else {})}
    given = query_pairs(query)
    if strict:
        unknown = sorted(set(given) - set(params) - set(APP_WIDE) - {"model"})
        if unknown:
            raise ValueError(f"the {page} page has no setting {', '.join(map(repr, unknown))}; it takes "
                             f"{', '.join(params)}")
        values = {name: p.accepts(given[name]) if name in given else p.default for name, p in params.items()}
    else:
        values = {name: p.lookup(given) for name, p in params.items()}
    if "model" in values and not MODEL_ID.fullmatch(values["model"]):
        if strict:
            raise ValueError(f"model={values['model']!r} names no model: give shipped:<name> (e.g. shipped:mnist-vq) "
                             "or run:<run id>")
        values["model"] = MODEL.default
    return values
