"""The command line's layer of bounds: every flag that is a config field below, at and above its Spec's bounds
(read from vqdemo/settings.py, never repeated here), refused in one clear line before anything trains, allocates,
loads data or writes; sizes that fit each flag alone but not together refused before the data loads; values at the
bounds that fit still train. Each config field's own bounds are tests/test_settings.py's."""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import save_file

from helpers import shipped
from tests import bounds
from tests.bounds import bounded_fields
from vqdemo import cli, runs, settings
from vqdemo import fit as fitting
from vqdemo.data import DataConfig, DataError, load_data
from vqdemo.models import ModelConfig
from vqdemo.quantize import QuantizerConfig, ResidualConfig
from vqdemo.trainer import TrainConfig

REPO = Path(__file__).resolve().parents[1]
# bounds that fit each flag alone but not together: refused by the size and memory checks, from the data's shape
# alone (the dataset is never loaded)
COMBOS = [
    ["--k", "65536", "--dim", "1024"],                                            # 67M codebook parameters
    ["--hidden", "1024", "--batch-size", "4096"],                                 # a 27 GiB training step
    ["--image-size", "256", "--batch-size", "4096"],                              # 136 GiB
    ["--model", "rq", "--depth", "16", "--k", "65536", "--dim", "64"],             # 16 x 4M codes
    ["--arch", "patch", "--downsample", "1000"],                                  # patch larger than the image
]


def subcommand(parser: argparse.ArgumentParser, *path: str) -> argparse.ArgumentParser:
    for name in path:
        parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
    return parser


def flag_fields(*path: str) -> list[tuple[str, type, str]]:
    """(flag, config, field) for every flag of `python -m vqdemo <path>` that is a config field with bounds or
    choices: found by the flag's name and its help, which settings.add_flags copies from the field's Spec."""
    out = []
    for action in subcommand(cli.build_parser(), *path)._actions:
        for cls, name in bounded_fields():
            spec = settings.spec(cls, name)
            if (action.dest == name and settings.flag_name(cls, name) in action.option_strings and spec.help
                    and spec.help in (action.help or "")):
                out.append((action.option_strings[0], cls, name))
                break
    return out


def as_text(value) -> str:
    """A value as a person types it after the flag (floats in full, so the next float past a bound stays past it)."""
    if isinstance(value, list):
        return ",".join(map(as_text, value))
    return repr(value) if isinstance(value, float) else str(value)


WRONG_TEXT = {"int": ["2.5", "x", "nan"], "float": ["nan", "inf", "-inf", "x"], "list": ["2.5", "x,y"]}
COMMANDS = {"train": ["train", "--dataset", "digits"], "prior train": ["prior", "train", "RUN"]}
FLAG_CASES = [(command, flag, cls, name) for command in COMMANDS for flag, cls, name in flag_fields(*command.split())]


@pytest.mark.parametrize("command, flag, cls, field", FLAG_CASES,
                         ids=[f"{c} {f}" for c, f, _, _ in FLAG_CASES])
def test_every_config_flag_takes_its_bounds_and_refuses_past_them(no_training, capsys, command, flag, cls, field):
    """The command line's layer: below, at and above each bound of the field's Spec (its choices, and text of the
    wrong kind): a value at a bound is parsed as that value; one past it is refused in one line naming the flag,
    before anything trains, allocates or writes."""
    base = settings.kind_of(cls, field)[0]
    cases = bounds.field_edges(cls, field) + [(text, False) for text in WRONG_TEXT.get(base, [])]
    for value, taken in cases:
        argv = [*COMMANDS[command], f"{flag}={as_text(value)}"]
        if taken:
            assert getattr(cli.build_parser().parse_args(argv), field) == value, argv
            continue
        line = _one_line_refusal(capsys, argv)
        assert flag in line and len(line) < 300, line
    assert not list(no_training.rglob("*")), "nothing may be written"


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


@pytest.mark.parametrize("extra", COMBOS, ids=[" ".join(c) for c in COMBOS])
def test_bounds_that_do_not_fit_together_are_refused_before_the_data_loads(no_training, monkeypatch, capsys, extra):
    loads = []
    monkeypatch.setattr(cli, "load_data", lambda cfg: loads.append(cfg) or fitting.load_data(cfg))
    line = _one_line_refusal(capsys, ["train", "--steps", "5", *extra])
    assert any(w in line for w in ("parameters", "GiB", "patch size")), line
    assert loads == [], "the size is checked before any data is decoded"


@pytest.mark.parametrize("extra", [["--downsample", "3"], ["--model", "rq", "--depth", "2", "--ks", "2,2,2,2,2"],
                                   ["--codebook", "ema", "--ste", "both"]])
def test_flags_that_break_a_rule_between_fields_are_one_line_before_the_data_loads(no_training, monkeypatch, capsys,
                                                                                    extra):
    monkeypatch.setattr(cli, "load_data", lambda cfg: (_ for _ in ()).throw(AssertionError("data loaded")))
    _one_line_refusal(capsys, ["train", "--steps", "5", *extra])


def test_a_dataset_too_big_to_hold_is_refused_before_a_run_folder(no_training, capsys):
    # 6000 x 3 x 256^2 floats = 4.7 GB: the model fits, the data does not (load_data's own check, before decoding)
    line = _one_line_refusal(capsys, ["train", "--steps", "5", "--dataset", "shapes", "--image-size", "256",
                                      "--batch-size", "4"])
    assert "GiB" in line


@pytest.mark.parametrize("argv", [
    ["prior", "sample", "RUN", "--n", "0"], ["prior", "sample", "RUN", "--n", "1000000000"],
    ["prior", "sample", "RUN", "--temperature", "0"], ["prior", "sample", "RUN", "--temperature", "nan"],
    ["prior", "sample", "RUN", "--temperature", "-1"], ["prior", "sample", "RUN", "--top-k", "0"],
    ["prior", "sample", "RUN", "--label", "-1"], ["prior", "sample", "RUN", "--label", "99999999999999999999"],
    ["prior", "sample", "RUN", "--seed", "-1"], ["prior", "sample", "RUN", "--label", "99"],
])   # prior train's flags are config fields: test_every_config_flag_takes_its_bounds_and_refuses_past_them
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


# ---- config fields (each field's bounds: tests/test_settings.py) ----------------------------------------

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
