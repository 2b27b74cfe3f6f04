"""vqdemo.best_codes: a greedy search for the code map that decodes best, which the encoder's nearest codes miss."""

import numpy as np
import pytest
import torch

from helpers import tiny_config
from vqdemo import runs
from vqdemo.best_codes import SearchConfig, search
from vqdemo.jobs import worker
from vqdemo.models import build_model
from vqdemo.quantize import ResidualConfig


def fresh(kind: str = "vq", seed: int = 0):
    torch.manual_seed(seed)
    cfg = tiny_config(kind, k=16, init="uniform")
    if kind == "rq":
        cfg.rq = ResidualConfig(depth=2, codebook_sizes=[8, 8])
    return build_model(cfg).eval()


@pytest.mark.parametrize("kind", ["vq", "rq", "fsq"])
def test_the_search_never_does_worse_than_the_encoder_and_says_what_changed(kind):
    model = fresh(kind)
    x = torch.rand(1, 28, 28)
    r = search(model, x, SearchConfig(sweeps=2, seconds=60))
    assert r.psnr >= r.encoder_psnr
    assert r.history == sorted(r.history) and r.sweeps <= 2
    stack = r.codes[None] if kind == "rq" else r.codes
    decoded = model.decode_codes(stack)[0]
    assert torch.allclose(decoded, r.image)
    assert r.psnr == pytest.approx(10 * np.log10(1 / float((decoded - x).pow(2).mean())), abs=1e-4)
    assert torch.equal(r.changed, (r.codes != r.encoder_codes).any(0))
    assert torch.equal(r.encoder_codes[0] if kind != "rq" else r.encoder_codes,
                       model.encode_codes(x[None])[0])


def test_the_encoders_nearest_codes_are_not_the_best_for_the_decoded_image():
    model = fresh("vq")
    x = torch.rand(1, 28, 28)
    r = search(model, x, SearchConfig(sweeps=3, seconds=60))
    assert r.psnr > r.encoder_psnr and r.changed.any()


def test_the_search_is_seeded_and_keeps_to_its_budget():
    model = fresh("vq")
    x = torch.rand(1, 28, 28)
    a, b = (search(model, x, SearchConfig(sweeps=1, seconds=60, seed=3)) for _ in range(2))
    assert torch.equal(a.codes, b.codes) and a.sweeps == 1
    quick = search(model, x, SearchConfig(sweeps=100, seconds=1e-6))
    assert quick.sweeps <= 1 and quick.psnr >= quick.encoder_psnr   # stops at once, never worse


@pytest.mark.parametrize("bad", [dict(sweeps=0), dict(seconds=0.0), dict(seed=-1)])
def test_bad_search_settings_are_refused(bad):
    with pytest.raises(ValueError):
        SearchConfig(**bad)


def test_the_worker_call_loads_the_run_and_returns_plain_arrays(tmp_path):
    model = fresh("vq")
    runs.save_weights(tmp_path / runs.WEIGHTS, model, {"model": model.config.to_dict(), "kind": "vq"})
    x = torch.rand(1, 28, 28)
    out = worker.CALLS["best_codes"](str(tmp_path), x.numpy(), seed=0)
    assert out["codes"].shape == out["encoder_codes"].shape == (1, *model.latent_shape)
    assert out["psnr"] >= out["encoder_psnr"] and isinstance(out["image"], np.ndarray)
