"""Live knobs: what may change while a run trains, and the one check of a change.

A student may move the commitment weight beta (VQ and RQ), the learning rate (every model) and the codebook size K
(VQ only: the codebook is resized in place) without starting over. Which model takes which knob is said here once;
each value is checked against its config field's own Spec (`settings.check_value`, the check a config makes of
itself), plus the app's cap on K for runs the app started. The queue checks a change where it comes in; the
training loop and the model apply what passed, without checking again.
"""

from __future__ import annotations

from typing import Any

from . import settings
from .quantize import QuantizerConfig
from .trainer import TrainConfig

FIELDS: dict[str, tuple[type, str]] = {"beta": (QuantizerConfig, "beta"), "lr": (TrainConfig, "lr"),
                                       "k": (QuantizerConfig, "k")}
TAKES: dict[str, tuple[str, ...]] = {"vq": ("beta", "lr", "k"), "rq": ("beta", "lr")}   # any other model: lr only
CASTS = {"beta": float, "lr": float, "k": int}


def takes(kind: str) -> tuple[str, ...]:
    """The knobs a model of this kind (vq, rq, fsq, vae) has while it trains."""
    return TAKES.get(kind, ("lr",))


def check(kind: str, changes: dict[str, Any], *, k_max: int | None = None) -> dict[str, float]:
    """`changes` checked for a running model of `kind`, as the numbers the loop applies; ValueError in one line
    naming what was wrong and what to do. `k_max` is the app's cap on K (its slider's top)."""
    clean: dict[str, float] = {}
    for name, value in changes.items():
        if name not in FIELDS:
            raise ValueError(f"{name!r} cannot change during a run (only beta, lr and k); start a new run")
        if name not in takes(kind):
            raise ValueError(f"a {kind.upper()} has no commitment weight beta; start a VQ or RQ run to try it"
                             if name == "beta" else "K changes live only for VQ models; RQ has one K per depth and "
                             "a VAE none. Start a new run")
        settings.check_value(*FIELDS[name], value)
        if name == "k" and k_max is not None and value > k_max:
            raise ValueError(f"codebook size K (k) must be at most {k_max} here, got {value!r}")
        clean[name] = CASTS[name](value)
    return clean
