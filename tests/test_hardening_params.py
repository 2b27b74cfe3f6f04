"""Every CLI flag and config field at and beyond its bounds (0, negative, NaN, inf, huge, wrong type): refused
with one clear line before anything trains, allocates or writes; values at the bounds that fit still work."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import save_file

from helpers import shipped
from vqdemo import cli, runs
from vqdemo import fit as fitting
from vqdemo.data import DataConfig, DataError, load_data
from vqdemo.models import ModelConfig
from vqdemo.prior import PriorConfig, PriorError
from vqdemo.quantize import QuantizerConfig, ResidualConfig
from vqdemo.trainer import TrainConfig

REPO = Path(__file__).resolve().parents[1]
HUGE = [10**9, 10**12, 10**30]
NAN_INF = ["nan", "inf", "-inf"]

# (flag, bad values); every run also passes --steps/--seconds so the budget is not the thing refused
TRAIN_FLAGS = {
    "--k": ["0", "1", "-5", "65537", *map(str, HUGE), "2.5", "x"],
    "--dim": ["0", "-1", "1025", *map(str, HUGE)],
    "--hidden": ["0", "-1", "3", "1025", "1000000"],
    "--downsample": ["0", "-1", "3", "16", "1000"],
    "--image-size": ["0", "-1", "3", "257", "100000"],
    "--depth": ["0", "-1", "17", "100000"],
    "--ks": ["1000000000,2", "-3,2", "1,2", "2,2,2,2,2"],
    "--progressive-steps": ["-1", "1.5"],
    "--beta": ["-0.5", "101", "1e308", *NAN_INF],
    "--decay": ["0", "1", "2", "-1", *NAN_INF],
    "--dead-threshold": ["-1", "1e300", "1e7", *NAN_INF],   # 1e300 overflowed float32 in the usage buffer
    "--kl-weight": ["-1", "1e300", *NAN_INF],
    "--lr": ["0", "-1", "1.5", "1e9", *NAN_INF],
    "--seconds": ["0", "-1", "604801", "1e300", *NAN_INF],
    "--steps": ["0", "-1", "10000001", "1000000000000"],
    "--batch-size": ["0", "-1", "4097", "1000000000"],
    "--seed": ["-1", str(2**63), "99999999999999999999999", "1.5"],
    "--val-every": ["0", "-1"],
    "--threads": ["0", "-1", "257", "100000"],
}
CASES = [(flag, v) for flag, values in TRAIN_FLAGS.items() for v in values]
# bounds that fit each flag alone but not together: refused by the size and memory checks
COMBOS = [
    ["--k", "65536", "--dim", "1024"],                                            # 67M codebook parameters
    ["--hidden", "1024", "--batch-size", "4096"],                                 # a 27 GiB training step
    ["--image-size", "256", "--batch-size", "4096"],                              # 136 GiB
    ["--model", "rq", "--depth", "16", "--k", "65536", "--dim", "64"],             # 16 x 4M codes
    ["--arch", "patch", "--downsample", "1000"],                                  # patch larger than the image
    ["--dataset", "shapes", "--image-size", "256", "--batch-size", "4"],          # 6000 x 3 x 256^2 floats = 4.7 GB
]


def _args(flag: str, value: str) -> list[str]:
    extra = ["--model", "rq"] if flag in ("--depth", "--ks", "--progressive-steps") else []
    extra += ["--model", "vae"] if flag == "--kl-weight" else []
    extra += ["--depth", "2"] if flag == "--ks" else []
    budget = [] if flag in ("--steps", "--seconds") else ["--steps", "5"]
    return ["train", "--dataset", "digits", *budget, *extra, f"{flag}={value}"]


@pytest.fixture
def no_training(monkeypatch, tmp_path):
    """Fail the test if the CLI gets as far as training, making a run folder or writing anything."""
    def boom(*a, **k):
        raise AssertionError("a refused flag must not reach training")

    monkeypatch.setattr(fitting, "fit", boom)
    monkeypatch.setattr(cli, "new_run_dir", boom)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _one_line_refusal(capsys, argv) -> str:
    try:
        code = cli.main(argv)
    except SystemExit as e:   # argparse: exit(2) with its message already written
        code = e.code
    err = capsys.readouterr().err
    assert code not in (0, None), argv
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in err, (argv, err)
    return lines[0]


@pytest.mark.parametrize("flag,value", CASES, ids=[f"{f}={v}" for f, v in CASES])
def test_train_flag_out_of_bounds_is_one_line_before_training(no_training, capsys, flag, value):
    line = _one_line_refusal(capsys, _args(flag, value))
    assert len(line) < 300
    assert not list(no_training.rglob("*")), "nothing may be written"


@pytest.mark.parametrize("extra", COMBOS, ids=[" ".join(c) for c in COMBOS])
def test_bounds_that_do_not_fit_together_are_refused_before_allocating(no_training, capsys, extra):
    line = _one_line_refusal(capsys, ["train", "--steps", "5", *extra])
    assert any(w in line for w in ("parameters", "GiB", "patch size")), line


@pytest.mark.parametrize("argv", [
    ["prior", "sample", "RUN", "--n", "0"], ["prior", "sample", "RUN", "--n", "1000000000"],
    ["prior", "sample", "RUN", "--temperature", "0"], ["prior", "sample", "RUN", "--temperature", "nan"],
    ["prior", "sample", "RUN", "--temperature", "-1"], ["prior", "sample", "RUN", "--top-k", "0"],
    ["prior", "sample", "RUN", "--label", "-1"], ["prior", "sample", "RUN", "--label", "99999999999999999999"],
    ["prior", "sample", "RUN", "--seed", "-1"], ["prior", "sample", "RUN", "--label", "99"],
    ["prior", "train", "RUN", "--seconds", "-1"], ["prior", "train", "RUN", "--steps", "0"],
    ["prior", "train", "RUN", "--seed", "99999999999999999999999"], ["prior", "train", "RUN", "--seconds", "inf"],
])
def test_prior_flags_out_of_bounds(tmp_path, monkeypatch, capsys, argv):
    run = shipped("mnist-vq", prior=True)
    import vqdemo.prior.training as training

    monkeypatch.setattr(training, "run_training", lambda *a, **k: (_ for _ in ()).throw(AssertionError("trained")))
    monkeypatch.chdir(tmp_path)
    argv = [str(run) if a == "RUN" else a for a in argv] + ["--out", str(tmp_path / "s.png")] * (argv[1] == "sample")
    _one_line_refusal(capsys, argv)
    assert not (tmp_path / "s.png").exists()


@pytest.mark.integration
def test_the_real_entry_point_answers_fast_in_one_line(tmp_path):
    """Out of process, as a student types it: the brief's examples, no traceback, nothing written."""
    for args in (["--k", "1000000000"], ["--threads", "100000"]):
        r = subprocess.run([sys.executable, "-m", "vqdemo", "train", *args], capture_output=True, text=True,
                           timeout=60, cwd=tmp_path, env={**__import__("os").environ, "PYTHONPATH": str(REPO),
                                                          "VQDEMO_RUNS_DIR": str(tmp_path / "runs")})
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:"), (args, r.stderr)
    assert not (tmp_path / "runs").exists()


# ---- config fields (what the app's pages and a config file reach) -----------------------------------------

BAD = [0, -1, math.nan, math.inf, -math.inf, 10**12, 1e300, "7", None, True, 2.5]


def _bad_values(field: str, allowed=()) -> list:
    return [v for v in BAD if not any(v is a or (type(v) is type(a) and v == a) for a in allowed)]


FIELDS = {
    TrainConfig: {"steps": (None,), "seconds": (None, 2.5), "batch_size": (), "lr": (), "seed": (0, -1, 10**12),
                  "val_every": (10**12,), "log_every": (10**12,), "snapshot_every": (10**12,), "threads": (None,)},
    QuantizerConfig: {"k": (), "dim": (), "decay": (), "beta": (0, 2.5), "dead_threshold": (0, 10**12, 1e300, 2.5)},
    ResidualConfig: {"depth": (), "progressive_steps": (0, 10**12)},
    ModelConfig: {"channels": (), "image_size": (), "hidden": (), "res_blocks": (0,), "res_hidden": (),
                  "downsample": (), "kl_weight": (0, 10**12, 1e300, 2.5), "data_variance": (10**12, 1e300, 2.5)},
}
MESSAGE = {"lr": "learning rate", "batch_size": "batch size", "k": "K", "dim": "D", "downsample": "downsampl"}


def _validate(cls, field, value):
    if cls is TrainConfig:
        cfg = TrainConfig(steps=None if field == "steps" else 10, seconds=1.0 if field == "steps" else None)
        setattr(cfg, field, value)
        cfg.validate()
    elif cls is ResidualConfig:
        rq = ResidualConfig()
        setattr(rq, field, value)
        ModelConfig(kind="rq", rq=rq).validate()
    elif cls is QuantizerConfig:
        vq = QuantizerConfig()
        setattr(vq, field, value)
        ModelConfig(vq=vq).validate()
    else:
        cfg = ModelConfig()
        setattr(cfg, field, value)
        cfg.validate()


FIELD_CASES = [(cls, f, v) for cls, fields in FIELDS.items() for f, ok in fields.items() for v in _bad_values(f, ok)
               if not (cls is QuantizerConfig and f == "dim" and v is True)]   # True == 1 is a valid D


@pytest.mark.parametrize("cls,field,value", FIELD_CASES, ids=[f"{c.__name__}.{f}={v!r}" for c, f, v in FIELD_CASES])
def test_config_field_out_of_bounds_raises_a_valueerror(cls, field, value):
    with pytest.raises(ValueError, match=MESSAGE.get(field, field.replace("_", "[_ ]"))):
        _validate(cls, field, value)


@pytest.mark.parametrize("field,value", [("image_size", 3), ("image_size", 257), ("image_size", 28.5),
                                         ("channels", 2), ("channels", True), ("val_fraction", 0),
                                         ("val_fraction", 1), ("val_fraction", math.nan), ("max_images", 1),
                                         ("max_images", -1), ("seed", -1), ("seed", math.nan), ("seed", "7"),
                                         ("name", "imagenet"), ("path", None)])
def test_data_config_out_of_bounds_is_a_dataerror(field, value):
    cfg = {"name": "folder" if field == "path" else "digits", field: value}
    with pytest.raises(DataError, match={"name": "unknown", "path": "needs a path"}.get(field, field)):
        load_data(DataConfig(**cfg))


def test_dataset_too_big_for_memory_is_refused_before_loading(monkeypatch):
    import vqdemo.data as data_mod

    monkeypatch.setattr(data_mod, "draw_shapes", lambda *a, **k: (_ for _ in ()).throw(AssertionError("drawn")))
    with pytest.raises(DataError, match="GiB"):
        load_data(DataConfig(name="shapes", image_size=256))
    monkeypatch.setattr(data_mod, "MAX_DATA_BYTES", 2**20)   # 5,000 digits at 28x28 are 15 MB
    monkeypatch.setattr(data_mod, "_fit", lambda *a, **k: (_ for _ in ()).throw(AssertionError("resized")))
    with pytest.raises(DataError, match="5,000 mnist images at 28x28"):
        load_data(DataConfig(name="mnist", seed=7))


def test_at_the_bounds_that_fit_training_still_runs(tmp_path):
    """The edges that are allowed: K=2, D=1, batch 1, one step, patch size = image size, depth 1."""
    from vqdemo.fit import fit

    cfg = ModelConfig(hidden=4, res_hidden=4, res_blocks=0, vq=QuantizerConfig(k=2, dim=1))
    _, result = fit(cfg, DataConfig(name="digits", image_size=4, max_images=20), TrainConfig(steps=1, batch_size=1),
                    out_dir=tmp_path / "a")
    assert result.state == "done" and result.steps == 1
    cfg = ModelConfig(kind="rq", arch="patch", downsample=8, hidden=4, res_hidden=4,
                      vq=QuantizerConfig(k=2, dim=1), rq=ResidualConfig(depth=1, codebook_sizes=[2]))
    _, result = fit(cfg, DataConfig(name="digits", image_size=8, max_images=20), TrainConfig(steps=1, batch_size=1),
                    out_dir=tmp_path / "b")
    assert result.state == "done"
    assert runs.load_model(tmp_path / "b")[0].latent_shape == (1, 1)


def test_prior_config_bounds():
    for bad in ({"kind": "x"}, {"codebook_sizes": [1]}, {"codebook_sizes": [10**9]}, {"codebook_sizes": []},
                {"height": 0}, {"width": 65}, {"channels": 10**6}, {"layers": 0}, {"kernel": 4}, {"kernel": 17},
                {"num_classes": 0}, {"dropout": 1.0}, {"dropout": math.nan}, {"height": 2.5}, {"layers": True}):
        with pytest.raises(PriorError):
            PriorConfig(**bad)


def test_eval_of_a_checkpoint_with_a_hostile_data_config_is_one_line(tmp_path, capsys):
    """A checkpoint's data config cannot crash eval, nor make it download and write where it points."""
    from helpers import tiny_config
    from vqdemo.models import build_model

    cfg = tiny_config()
    tensors = {k: v.contiguous() for k, v in build_model(cfg).state_dict().items()}
    target = tmp_path / "written-here"
    for data in ({"evil": 1}, "x", {"name": "cifar10", "path": str(target), "download": True}, {"seed": "x"}):
        f = tmp_path / "ckpt.safetensors"
        save_file(tensors, str(f), metadata={"vqdemo": json.dumps({"model": cfg.to_dict(), "data": data})})
        _one_line_refusal(capsys, ["eval", str(f)])
    assert not target.exists()


@pytest.mark.integration
def test_a_run_title_is_shown_as_text_on_other_students_pages(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from helpers import tiny_config
    from vqdemo.fit import fit

    out = tmp_path / "runs" / "20260101-000000-title0"
    fit(tiny_config(), DataConfig(name="digits", max_images=40), TrainConfig(steps=1, batch_size=4), out_dir=out,
        meta={"title": "[answers](http://evil.example) ![x](http://evil.example/t.png)"})
    monkeypatch.setenv("VQDEMO_RUNS_DIR", str(tmp_path / "runs"))
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.query_params["model"] = f"run:{out.name}"
    at.run()
    assert not at.exception
    shown = [m.value for m in at.markdown] + [c.value for c in at.caption]
    assert not [s for s in shown if "](http://evil.example" in s and "\\]" not in s and "\\[" not in s]
