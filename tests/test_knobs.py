"""The one check of a live change (`knobs.check`): which model takes which knob, and each value against its field."""

import pytest

from vqdemo import knobs, settings
from vqdemo.quantize import QuantizerConfig
from vqdemo.trainer import TrainConfig

K = settings.spec(QuantizerConfig, "k")
BETA = settings.spec(QuantizerConfig, "beta")
LR = settings.spec(TrainConfig, "lr")


@pytest.mark.parametrize("kind, changes, expect", [
    ("vq", {"k": int(K.lo)}, {"k": K.lo}),
    ("vq", {"beta": BETA.lo, "lr": 1e-3}, {"beta": BETA.lo, "lr": 1e-3}),
    ("rq", {"beta": BETA.hi}, {"beta": BETA.hi}),
    ("vae", {"lr": LR.hi}, {"lr": LR.hi}),
    ("fsq", {"lr": 0.01}, {"lr": 0.01}),
])
def test_a_change_within_its_field_bounds_passes_as_numbers(kind, changes, expect):
    assert knobs.check(kind, changes) == expect


@pytest.mark.parametrize("kind, changes, says", [
    ("vq", {"k": int(K.lo) - 1}, "codebook size K"),
    ("vq", {"k": 3.5}, "codebook size K"),
    ("vq", {"k": True}, "codebook size K"),
    ("vq", {"beta": BETA.hi * 1.01}, "beta"),
    ("vq", {"beta": float("nan")}, "beta"),
    ("vq", {"lr": LR.lo}, "learning rate"),          # lr's lower bound is open
    ("rq", {"k": 64}, "K changes live only for VQ"),
    ("vae", {"beta": 0.5}, "has no commitment weight"),
    ("vq", {"dim": 8}, "cannot change during a run"),
])
def test_a_change_outside_its_field_or_its_model_is_refused_in_one_line(kind, changes, says):
    with pytest.raises(ValueError, match=says) as e:
        knobs.check(kind, changes)
    assert "\n" not in str(e.value)


def test_the_apps_cap_on_k_applies_only_when_given():
    assert knobs.check("vq", {"k": 4096}) == {"k": 4096}
    with pytest.raises(ValueError, match="at most 1024"):
        knobs.check("vq", {"k": 4096}, k_max=1024)
