"""The command line from a user's seat: train, eval --json, prior; bad input is one line, never a traceback."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration  # every test here opens a page in AppTest or starts a process

ENV_CMD = [sys.executable, "-m", "vqdemo"]


def run(*args, timeout=300):
    return subprocess.run([*ENV_CMD, *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    r = run("train", "--dataset", "digits", "--k", "16", "--hidden", "16", "--steps", "30", "--val-every", "15",
            "--threads", "1", "--out", str(out))
    assert r.returncode == 0, r.stderr
    return out


def test_train_then_eval_json(trained):
    r = run("eval", str(trained), "--json")
    assert r.returncode == 0, r.stderr
    figures = json.loads(r.stdout)
    for key in ("psnr", "mse", "perplexity", "usage", "dead_codes", "k"):
        assert key in figures
    assert figures["k"] == 16 and 0 < figures["usage"] <= 1 and figures["psnr"] > 5
    assert "python -m vqdemo train" in json.loads((trained / "config.json").read_text())["command"]


@pytest.mark.slow
def test_prior_train_and_sample(trained, tmp_path):
    r = run("prior", "train", str(trained), "--steps", "20")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "grid.png"
    r = run("prior", "sample", str(trained), "--n", "4", "--seed", "1", "--out", str(out), "--label", "3")
    assert r.returncode == 0, r.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_prior_train_with_dropout_keeps_the_class_conditioning(trained, tmp_path):
    r = run("prior", "train", str(trained), "--steps", "5", "--dropout", "0.25")
    assert r.returncode == 0, r.stderr
    model = json.loads((trained / "prior" / "config.json").read_text())["model"]
    assert model["dropout"] == 0.25 and model["num_classes"] == 10


# every flag's bounds, in process: tests/test_hardening_params.py; here the real entry point's other refusals
@pytest.mark.parametrize("args", [
    ["train", "--ste", "both", "--steps", "1"],          # an EMA codebook takes no gradient: refused, not ignored
    ["train", "--dataset", "folder", "--data-path", "/nonexistent", "--steps", "1"],
    ["eval", "/etc/hostname"],
    ["eval", "/nonexistent/run"],
])
def test_bad_input_exits_nonzero_with_one_line(args):
    r = run(*args, timeout=120)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
