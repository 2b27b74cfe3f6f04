"""The values each layer's bounds test tries, read from where the library defines the bounds: a config field's Spec
(vqdemo/settings.py) or a page setting's Param (its widget's range, narrowed from the field's). Nothing here repeats
a number: a bound moved in its Spec moves every layer's test with it.

For a closed bound: the bound itself (taken) and the nearest value past it (refused); for an open bound (a learning
rate of 0): the bound (refused) and the nearest value inside (taken). Whole-number fields step by 1, the others by
the next float.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from vqdemo import settings
from vqdemo.data import DataConfig
from vqdemo.fsq import FSQConfig
from vqdemo.models import ModelConfig
from vqdemo.playground import PlaygroundConfig
from vqdemo.prior import PriorConfig
from vqdemo.quantize import QuantizerConfig, ResidualConfig
from vqdemo.trainer import TrainConfig

CONFIGS = [QuantizerConfig, ResidualConfig, FSQConfig, ModelConfig, DataConfig, TrainConfig, PriorConfig,
           PlaygroundConfig]


def edges(lo: float | None, hi: float | None, lo_open: bool = False, hi_open: bool = False,
          whole: bool = True) -> list[tuple[Any, bool]]:
    """(value, taken) on each side of a range's bounds; none for a side without a bound."""
    def past(b: float, toward: float) -> float:
        return b + (1 if toward > b else -1) if whole else math.nextafter(float(b), toward)

    out: list[tuple[Any, bool]] = []
    if lo is not None:
        out += [(lo, False), (past(lo, math.inf), True)] if lo_open else [(past(lo, -math.inf), False), (lo, True)]
    if hi is not None:
        out += [(hi, False), (past(hi, -math.inf), True)] if hi_open else [(hi, True), (past(hi, math.inf), False)]
    return out


def field_edges(cls: type, name: str) -> list[tuple[Any, bool]]:
    """A field's bound edges, its choices (each taken) and one value outside them; list fields' items one at a
    time, plus the empty list and one item too many."""
    s, (base, _) = settings.spec(cls, name), settings.kind_of(cls, name)
    out = edges(s.lo, s.hi, s.lo_open, s.hi_open, whole=base in ("int", "list"))
    if base == "list":
        out = [([v], taken) for v, taken in out] + [([], False)]
        if s.items:
            out += [([s.lo] * s.items, True), ([s.lo] * (s.items + 1), False)]
    if s.choices:
        out += [(c, True) for c in s.choices] + [("not-a-choice" if base == "str" else 2, False)]
    return out


def wrong_types(cls: type, name: str) -> list[Any]:
    """Values of the wrong type for a field: a float or a switch for a whole number, NaN and infinities for a number,
    text for either, None where the field has no "none"."""
    base, optional = settings.kind_of(cls, name)
    values: list[Any] = {"int": [2.5, True, "7", math.nan], "float": [math.nan, math.inf, -math.inf, True, "7"],
                         "list": [[2.5], [True], "64,64"]}.get(base, [])
    return values + ([] if optional or base == "bool" else [None])


def bounded_fields() -> list[tuple[type, str]]:
    """Every (config, field) with a bound or choices: what the config layer's table covers."""
    return [(cls, name) for cls in CONFIGS for name, s in settings.specs(cls).items()
            if s.lo is not None or s.hi is not None or s.choices]


def is_frozen(cls: type) -> bool:
    return cls.__dataclass_params__.frozen if dataclasses.is_dataclass(cls) else False
