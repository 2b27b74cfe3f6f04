"""The one training loop: budgets, checkpoints, metrics, seeds, controls, divergence."""

import inspect
import json
import math
import threading
import time

import pytest
import torch

from helpers import tiny_config
from vqdemo import runs
from vqdemo.data import DataConfig, load_data
from vqdemo.fit import far_init_quantizer, fit, near_init_quantizer
from vqdemo.models import build_model
from vqdemo.trainer import Control, TrainConfig, run_training


@pytest.fixture(scope="module")
def digits():
    d = load_data(DataConfig(name="digits"))
    return (d.train_x[:600], None), (d.val_x[:100], None)


def test_run_folder_has_everything_and_reloads(tmp_path, digits):
    model = build_model(tiny_config())
    result = run_training(model, *digits, TrainConfig(steps=40, val_every=20, log_every=5, batch_size=32),
                   out_dir=tmp_path, meta={"data": {"name": "digits"}})
    assert result.state == "done" and result.steps == 40
    for name in ("config.json", "status.json", "metrics.jsonl", runs.WEIGHTS, runs.LAST):
        assert (tmp_path / name).is_file(), name
    rows = runs.read_metrics(tmp_path)
    assert [r["step"] for r in rows if r["type"] == "val"] == [1, 10, 20, 40]   # early steps, then every val_every
    assert json.loads((tmp_path / "status.json").read_text())["state"] == "done"
    loaded, meta = runs.load_model(tmp_path)
    assert meta["data"] == {"name": "digits"} and meta["model"]["vq"]["k"] == 16
    x = digits[1][0][:8]
    best_step = result.best["step"]
    assert best_step in (1, 10, 20, 40)
    assert math.isclose(loaded.evaluate(digits[1][0], None, 64)["score"], result.best["score"], rel_tol=1e-4)
    assert loaded(x).x_hat.shape == x.shape


def test_same_seed_same_weights(digits):
    def once():
        torch.manual_seed(0)
        model = build_model(tiny_config())
        run_training(model, *digits, TrainConfig(steps=15, seed=3, batch_size=32, val_every=100))
        return model.state_dict()
    a, b = once(), once()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.integration
def test_pause_single_step_resume_and_stop_from_another_thread(digits):
    control = Control()
    control.pause()
    events = []
    model = build_model(tiny_config())
    worker = threading.Thread(target=lambda: events.append(
        run_training(model, *digits, TrainConfig(steps=10_000, batch_size=16, val_every=10_000), control=control,
              on_event=lambda e: events.append(e))))
    worker.start()
    time.sleep(0.5)
    assert not any(e.get("type") == "train" for e in events if isinstance(e, dict))
    control.step(3)
    time.sleep(1.5)
    steps = [e["step"] for e in events if isinstance(e, dict) and e.get("type") == "train"]
    assert steps == [1, 2, 3]
    control.resume()
    time.sleep(1.0)
    control.stop()
    worker.join(timeout=30)
    result = events[-1]
    assert result.state == "stopped" and result.steps > 3


def test_live_changes_apply_between_steps(digits):
    control = Control()
    control.set(beta=2.0, lr=5e-4, k=24)
    model = build_model(tiny_config())
    seen = []
    cfg = TrainConfig(steps=5, batch_size=16, val_every=100, schedule="constant")   # the live lr stays as set
    run_training(model, *digits, cfg, control=control, on_event=seen.append)
    assert model.config.vq.beta == 2.0 and model.codebook_sizes == [24]
    last = [e for e in seen if e["type"] == "train"][-1]
    assert last["lr"] == 5e-4 and last["beta"] == 2.0 and last["k"] == 24


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, digits):
    model = build_model(tiny_config())
    run_training(model, *digits, TrainConfig(steps=10, batch_size=16, val_every=5), out_dir=tmp_path)
    good = (tmp_path / runs.WEIGHTS).read_bytes()
    with torch.no_grad():
        model.decoder.net[-1].weight.fill_(float("nan"))
    result = run_training(model, *digits, TrainConfig(steps=10, batch_size=16, val_every=5), out_dir=tmp_path)
    assert result.state == "failed" and "learning rate" in result.reason and result.steps == 0
    assert (tmp_path / runs.WEIGHTS).read_bytes() == good
    assert json.loads((tmp_path / "status.json").read_text())["state"] == "failed"
    runs.load_model(tmp_path)


def test_huge_learning_rate_diverges_into_a_clear_failure(digits):
    model = build_model(tiny_config(codebook="grad", init="normal"))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1e18)
    result = run_training(model, *digits, TrainConfig(steps=50, batch_size=16, lr=1.0, val_every=100))
    assert result.state == "failed" and "diverged" in result.reason


def test_cosine_schedule_falls_to_zero_over_the_budget_and_a_live_lr_resets_its_top(digits):
    cfg = TrainConfig(steps=20, lr=1e-3, schedule="cosine", batch_size=16, val_every=100)
    assert cfg.lr_factor(0, 0.0) == 1.0 and cfg.lr_factor(10, 0.0) == pytest.approx(0.5)
    assert cfg.lr_factor(20, 0.0) == pytest.approx(0.0, abs=1e-12)
    timed = TrainConfig(seconds=40.0, steps=1000, schedule="cosine")  # whichever budget runs out first
    assert timed.lr_factor(10, 20.0) == pytest.approx(0.5) and timed.lr_factor(500, 1.0) == pytest.approx(0.5)
    assert TrainConfig(steps=20, schedule="constant").lr_factor(19, 0.0) == 1.0
    seen = []
    run_training(build_model(tiny_config()), *digits, cfg, on_event=seen.append)
    lrs = [e["lr"] for e in seen if e["type"] == "train"]
    assert lrs[0] == pytest.approx(1e-3) and lrs[10] == pytest.approx(0.5e-3) and lrs[-1] < 1e-5
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    control = Control()
    control.set(lr=4e-3)
    seen = []
    run_training(build_model(tiny_config()), *digits, cfg, control=control, on_event=seen.append)
    lrs = [e["lr"] for e in seen if e["type"] == "train"]
    assert lrs[0] == pytest.approx(4e-3) and lrs[10] == pytest.approx(2e-3)


def test_decay_is_the_default_schedule_of_autoencoders_not_of_priors():
    from vqdemo import prior
    assert TrainConfig().schedule == "decay"   # it won on seeds 0, 1 and 2 at the 45-s step count (README)
    assert 'schedule="constant"' in inspect.getsource(prior.train_prior)


def test_decay_schedule_holds_then_falls_linearly_to_zero_over_the_last_30_percent(digits):
    cfg = TrainConfig(steps=100, lr=1e-3, schedule="decay", batch_size=16, val_every=1000)
    assert [cfg.lr_factor(s, 0.0) for s in (0, 50, 70)] == [1.0, 1.0, 1.0]
    assert cfg.lr_factor(85, 0.0) == pytest.approx(0.5) and cfg.lr_factor(100, 0.0) == pytest.approx(0.0)
    timed = TrainConfig(seconds=10.0, schedule="decay")
    assert timed.lr_factor(5, 7.0) == pytest.approx(1.0) and timed.lr_factor(5, 8.5) == pytest.approx(0.5)
    seen = []
    run_training(build_model(tiny_config()), *digits, cfg, on_event=seen.append)
    lrs = [e["lr"] for e in seen if e["type"] == "train"]
    assert lrs[0] == pytest.approx(1e-3) and lrs[-1] < 1e-4
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_a_run_needs_a_budget():
    """Each field's bounds are tests/test_settings.py's; what is refused here is a run with neither budget."""
    with pytest.raises(ValueError, match="give a budget"):
        TrainConfig(steps=None, seconds=None).budgeted()


@pytest.mark.slow
def test_codes_started_far_from_the_data_collapse_and_near_ones_do_not(tmp_path):
    """The collapse contrast the app teaches: same net, same data, same steps; the gradient codebook without restarts
    collapses with N(0, 1) init (far from the encoder's outputs) and not with U(-1/K, 1/K) init (near them)."""
    used = {}
    recipes = {"default": None, "far": far_init_quantizer(k=32, dim=8), "near": near_init_quantizer(k=32, dim=8)}
    for name, vq in recipes.items():
        cfg = tiny_config(k=32)
        if vq is not None:
            cfg.vq = vq
        _, result = fit(cfg, DataConfig(name="digits"), TrainConfig(steps=150, batch_size=64, val_every=150))
        used[name] = result.last_val["used"]
    assert used["default"] >= 28 and used["far"] <= used["default"] / 2, used
    assert used["near"] > 2 * used["far"], used
