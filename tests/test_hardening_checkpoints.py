"""Hostile and broken checkpoints: pickles never run (library, CLI, app), corrupt safetensors and absurd
configs are refused with a message that says what is wrong, and a huge config is refused before anything
is allocated."""

import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from helpers import tiny_config
from vqdemo import files, prior, runs
from vqdemo.models import build_model

REPO = Path(__file__).resolve().parents[1]


class Marker:
    """Unpickling this creates `path`: proof that code ran."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def evil_files(tmp_path: Path) -> tuple[Path, list[Path]]:
    """The marker path and the ways a pickle can come in: raw pickle, torch.save zip, both named .safetensors."""
    marker = tmp_path / "pwned"
    raw = tmp_path / "raw.safetensors"
    raw.write_bytes(pickle.dumps({"w": Marker(marker)}))
    zipped = tmp_path / "model.pt"
    torch.save({"state_dict": Marker(marker)}, zipped)
    disguised = tmp_path / "disguised.safetensors"
    disguised.write_bytes(zipped.read_bytes())
    return marker, [raw, zipped, disguised]


def run_dir(root: Path, name: str, weights: bytes | None = None, cfg=None) -> Path:
    """A run folder with a valid config.json; weights are `weights` if given, else a real tiny model."""
    cfg = cfg or tiny_config()
    d = root / name
    d.mkdir(parents=True)
    meta = {"kind": cfg.kind, "model": cfg.to_dict(), "data": {"name": "digits"}}
    files.write_json(d / "config.json", meta)
    files.write_json(d / "status.json", {"state": "done", "reason": "test", "step": 1})
    if weights is None:
        runs.save_weights(d / runs.WEIGHTS, build_model(cfg), meta)
    else:
        (d / runs.WEIGHTS).write_bytes(weights)
    return d


# ---- pickles never run ------------------------------------------------------------------------------------

def test_pickle_never_runs_through_load_model_or_load_prior(tmp_path):
    marker, files = evil_files(tmp_path)
    for f in files:
        with pytest.raises(runs.CheckpointError, match="not a readable safetensors"):
            runs.load_model(f)
        d = run_dir(tmp_path, f"run-{f.stem}", weights=f.read_bytes())
        with pytest.raises(runs.CheckpointError):
            runs.load_model(d)
        good = run_dir(tmp_path, f"good-{f.stem}")
        (good / prior.PRIOR_DIR).mkdir()
        (good / prior.PRIOR_DIR / runs.WEIGHTS).write_bytes(f.read_bytes())
        with pytest.raises(runs.CheckpointError, match="not a readable safetensors"):
            prior.load_prior(good)
    assert not marker.exists()


@pytest.mark.integration
def test_pickle_never_runs_from_the_cli(tmp_path):
    marker, files = evil_files(tmp_path)
    evil_run = run_dir(tmp_path, "evil-run", weights=files[0].read_bytes())
    good = run_dir(tmp_path, "good-run")
    (good / prior.PRIOR_DIR).mkdir()
    (good / prior.PRIOR_DIR / runs.WEIGHTS).write_bytes(files[1].read_bytes())
    for args in (["eval", str(files[1])], ["eval", str(evil_run)],
                 ["prior", "sample", str(good), "--out", str(tmp_path / "s.png")]):
        r = subprocess.run([sys.executable, "-m", "vqdemo", *args], capture_output=True, text=True, timeout=120,
                           cwd=REPO)
        assert r.returncode != 0
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in r.stderr, r.stderr
    assert not marker.exists()
    assert not (tmp_path / "s.png").exists()


@pytest.mark.integration
def test_pickle_never_runs_from_the_app(tmp_path, monkeypatch):
    """A run folder on the server whose weights are a pickle: the picker offers it, loading it only shows an error."""
    from streamlit.testing.v1 import AppTest

    marker, files = evil_files(tmp_path)
    root = tmp_path / "runs"
    run_dir(root, "20260101-000000-evil00", weights=files[1].read_bytes())
    monkeypatch.setenv("VQDEMO_RUNS_DIR", str(root))
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.query_params["model"] = "run:20260101-000000-evil00"
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert any("Could not load" in e.value and "safetensors" in e.value for e in at.error), [e.value for e in at.error]
    assert not marker.exists()


def test_cifar_batch_pickle_never_runs(tmp_path):
    """The one place a pickle format is read (CIFAR-10 batches): only numpy arrays can come out of it."""
    from vqdemo.data import DataConfig, DataError, load_data

    marker = tmp_path / "pwned"
    folder = tmp_path / "cifar"
    folder.mkdir()
    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": Marker(marker), b"labels": [0]}))
    with pytest.raises(DataError, match="refusing to load"):
        load_data(DataConfig(name="cifar10", path=str(folder)))
    assert not marker.exists()


# ---- broken safetensors -----------------------------------------------------------------------------------

@pytest.fixture
def good_file(tmp_path):
    cfg = tiny_config()
    model = build_model(cfg)
    path = tmp_path / "good.safetensors"
    runs.save_weights(path, model, {"model": cfg.to_dict()})
    return path, {k: v.clone() for k, v in model.state_dict().items()}, {"model": cfg.to_dict()}


def _write(path, tensors, meta):
    save_file(tensors, str(path), metadata={"vqdemo": json.dumps(meta)})
    return path


def test_wrong_shape_is_named(tmp_path, good_file):
    _, tensors, meta = good_file
    key = next(k for k in tensors if k.endswith("weight") and tensors[k].dim() == 4)
    tensors[key] = torch.zeros(3, 3, 3, 3)
    with pytest.raises(runs.CheckpointError, match=f"does not fit its config.*{key}.*file \\(3, 3, 3, 3\\)"):
        runs.load_model(_write(tmp_path / "shape.safetensors", tensors, meta))


def test_wrong_dtype_is_named(tmp_path, good_file):
    _, tensors, meta = good_file
    key = next(k for k in tensors if tensors[k].is_floating_point())
    tensors[key] = tensors[key].double()
    with pytest.raises(runs.CheckpointError, match="float64"):
        runs.load_model(_write(tmp_path / "dtype.safetensors", tensors, meta))


def test_missing_and_extra_keys_are_named(tmp_path, good_file):
    _, tensors, meta = good_file
    gone = sorted(tensors)[0]
    del tensors[gone]
    tensors["evil.extra"] = torch.zeros(1)
    with pytest.raises(runs.CheckpointError, match=f"missing \\['{gone}'\\].*unexpected \\['evil.extra'\\]"):
        runs.load_model(_write(tmp_path / "keys.safetensors", tensors, meta))


def test_nan_weights_are_refused(tmp_path, good_file):
    _, tensors, meta = good_file
    key = next(k for k in tensors if tensors[k].is_floating_point())
    tensors[key] = torch.full_like(tensors[key], float("nan"))
    with pytest.raises(runs.CheckpointError, match="NaN or inf"):
        runs.load_model(_write(tmp_path / "nan.safetensors", tensors, meta))


@pytest.mark.parametrize("cut", [0, 4, 8, 50, 0.5, -1])
def test_truncated_file_is_refused(tmp_path, good_file, cut):
    path, _, _ = good_file
    data = path.read_bytes()
    n = int(len(data) * cut) if isinstance(cut, float) else (len(data) + cut if cut < 0 else cut)
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(data[:n])
    with pytest.raises(runs.CheckpointError, match="not a readable safetensors checkpoint"):
        runs.load_model(bad)


def test_lying_header_is_refused(tmp_path, good_file):
    """A header that declares a huge tensor at offsets past the end of the file."""
    header = json.dumps({"w": {"dtype": "F32", "shape": [10**6, 10**6], "data_offsets": [0, 4 * 10**12]}}).encode()
    bad = tmp_path / "liar.safetensors"
    bad.write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 16)
    with pytest.raises(runs.CheckpointError, match="not a readable safetensors"):
        runs.load_model(bad)


def test_file_larger_than_any_model_is_refused_unread(tmp_path):
    big = tmp_path / "huge.safetensors"
    with open(big, "wb") as f:   # sparse: takes no disk
        f.truncate(runs.MAX_WEIGHTS_BYTES + 1)
    with pytest.raises(runs.CheckpointError, match="larger than any model this app can load"):
        runs.load_model(big)


# ---- configs ----------------------------------------------------------------------------------------------

def test_malformed_config_json_is_refused_and_skipped_by_list_runs(tmp_path):
    root = tmp_path / "runs"
    cases = {"garbage": b"{not json", "binary": b"\xff\xfe\x00", "list": b"[1, 2]",
             "deep": b"[" * 200_000, "deep-object": b'{"a":' * 100_000 + b"1" + b"}" * 100_000}
    for name, data in cases.items():
        d = run_dir(root, name)
        (d / "config.json").write_bytes(data)
        (d / runs.WEIGHTS).write_bytes(b"")  # no metadata in the weights either: config.json is the only source
        with pytest.raises(runs.CheckpointError, match="JSON|config"):
            runs.load_model(d)
    big = run_dir(root, "big")
    (big / "config.json").write_text(json.dumps({"pad": "x" * (runs.MAX_CONFIG_BYTES + 1)}))
    with pytest.raises(runs.CheckpointError, match="larger than"):
        runs.read_json(big / "config.json")
    ok = run_dir(root, "ok")
    assert [r.id for r in runs.list_runs(root)] == ["ok"]
    (ok / "metrics.jsonl").write_bytes(b'{"step": 1}\n' + b"[" * 200_000 + b"\n\xff\xfe\n" + b'{"step": 2}\n')
    assert runs.read_metrics(ok) == [{"step": 1}, {"step": 2}]


ABSURD = {
    "K=10^9": {"vq": {"k": 10**9}},
    "K=-1": {"vq": {"k": -1}},
    "D=10^6": {"vq": {"dim": 10**6}},
    "hidden=10^6": {"hidden": 10**6},
    "image 10^5": {"image_size": 100_000},
    "hidden 1024 x 8 blocks": {"hidden": 1024, "res_hidden": 1024, "res_blocks": 8},
    "K=65536 x D=1024": {"vq": {"k": 65536, "dim": 1024}},
    "RQ 16 x 65536": {"kind": "rq", "vq": {"k": 65536, "dim": 1024},
                      "rq": {"depth": 16, "codebook_sizes": [65536] * 16}},
    "hidden 64.5": {"hidden": 64.5},
    "channels 1.0": {"channels": 1.0},
    "res_blocks 2.5": {"res_blocks": 2.5},
    "image_size 28.5": {"image_size": 28.5},
    "image_size NaN": {"image_size": float("nan")},
    "hidden '64'": {"hidden": "64"},
    "kind list": {"kind": ["vq"]},
    "unknown key": {"evil": 1},
    "vq a string": {"vq": "x"},
}


@pytest.mark.parametrize("name", list(ABSURD))
def test_absurd_config_is_refused_before_building(tmp_path, monkeypatch, name):
    cfg = tiny_config().to_dict()
    for key, value in ABSURD[name].items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    path = _write(tmp_path / "absurd.safetensors", {"w": torch.zeros(1)}, {"model": cfg})

    def no_build(*a, **k):
        raise AssertionError("a refused config must not be built")

    monkeypatch.setattr(runs, "build_model", no_build)
    with pytest.raises(runs.CheckpointError, match="no usable model config|too large"):
        runs.load_model(path)


def test_absurd_prior_config_is_refused(tmp_path):
    d = run_dir(tmp_path, "ae")
    (d / prior.PRIOR_DIR).mkdir()
    cases = [{"kind": "evil"}, {"codebook_sizes": [10**9]}, {"channels": 10**6}, {"layers": -1},
             {"channels": 1024, "layers": 32}, {"height": 1.5}, "not a dict"]
    for model in cases:
        cfg = model if isinstance(model, str) else {**prior.PriorConfig().to_dict(), **model}
        _write(d / prior.PRIOR_DIR / runs.WEIGHTS, {"w": torch.zeros(1)}, {"role": "prior", "model": cfg})
        with pytest.raises(runs.CheckpointError, match="no usable prior config|too large"):
            prior.load_prior(d)
