"""Run storage: atomic writes, safetensors only, clear refusals of checkpoints that do not fit."""

import json
import pickle

import pytest
import torch
from safetensors.torch import save_file

from helpers import tiny_config
from vqdemo import files, runs
from vqdemo.models import build_model


def _save(tmp_path, cfg=None):
    cfg = cfg or tiny_config()
    model = build_model(cfg)
    path = tmp_path / runs.WEIGHTS
    runs.save_weights(path, model, {"model": cfg.to_dict(), "data": {"name": "digits"}})
    return model, path


def test_roundtrip_keeps_weights_and_config(tmp_path):
    model, path = _save(tmp_path)
    loaded, meta = runs.load_model(path)
    assert meta["data"] == {"name": "digits"}
    assert all(torch.equal(model.state_dict()[k], v) for k, v in loaded.state_dict().items())


def test_a_pickle_is_never_unpickled(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    bad = tmp_path / "evil.safetensors"
    bad.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(runs.CheckpointError, match="not a readable safetensors"):
        runs.load_model(bad)
    torch_file = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, torch_file)
    with pytest.raises(runs.CheckpointError):
        runs.load_model(torch_file)
    assert not marker.exists()


def test_wrong_shapes_missing_keys_and_dtypes_are_named(tmp_path):
    model, path = _save(tmp_path)
    meta = {"model": tiny_config().to_dict()}
    tensors = {k: v.clone() for k, v in model.state_dict().items()}
    key = "quantizer.codebook"
    for name, change, words in [
        ("shape", lambda t: t.update({key: torch.zeros(3, 3)}), "(3, 3)"),
        ("missing", lambda t: t.pop(key), "missing"),
        ("dtype", lambda t: t.update({key: t[key].double()}), "float64"),
        ("nan", lambda t: t.update({key: torch.full_like(t[key], float("nan"))}), "NaN"),
    ]:
        t = dict(tensors)
        change(t)
        f = tmp_path / f"{name}.safetensors"
        save_file(t, str(f), metadata={"vqdemo": json.dumps(meta)})
        with pytest.raises(runs.CheckpointError, match="fit|NaN") as err:
            runs.load_model(f)
        assert words in str(err.value), (name, str(err.value))


def test_truncated_file_and_absurd_config_are_refused(tmp_path):
    _, path = _save(tmp_path)
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(runs.CheckpointError):
        runs.load_model(tmp_path / "cut.safetensors")
    cfg = tiny_config()
    cfg.vq.k = 10**9
    save_file({"x": torch.zeros(1)}, str(tmp_path / "huge.safetensors"),
              metadata={"vqdemo": json.dumps({"model": cfg.to_dict()})})
    with pytest.raises(runs.CheckpointError):
        runs.load_model(tmp_path / "huge.safetensors")


def test_list_runs_skips_broken_folders_and_reads_torn_metrics(tmp_path):
    good = runs.new_run_dir(tmp_path)
    files.write_json(good / "config.json", {"kind": "vq"})
    (good / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "ps')
    broken = runs.new_run_dir(tmp_path)
    (broken / "config.json").write_text("{not json")
    listed = runs.list_runs(tmp_path)
    assert [r.path for r in listed] == [good] and listed[0].state == "unknown"
    assert [r["step"] for r in runs.read_metrics(good)] == [1, 2]


def test_run_info_follows_every_rewrite_of_its_files(tmp_path):
    run = runs.new_run_dir(tmp_path)
    files.write_json(run / runs.CONFIG, {"kind": "vq", "title": "first"})
    first = runs.run_info(run)
    assert runs.run_info(run) is first and first.state == "unknown"   # unchanged files: not read again
    files.write_json(run / runs.STATUS, {"state": "running", "step": 3})
    assert runs.run_info(run).status["step"] == 3                   # a status written since is seen
    files.write_json(run / runs.CONFIG, {"kind": "vq", "title": "second"})
    assert runs.run_info(run).meta["title"] == "second"
    (run / runs.STATUS).unlink()
    assert runs.run_info(run).state == "unknown"
    (run / runs.CONFIG).write_text("{not json")
    with pytest.raises(runs.CheckpointError):
        runs.run_info(run)


def test_new_run_dirs_never_collide(tmp_path):
    paths = {runs.new_run_dir(tmp_path) for _ in range(50)}
    assert len(paths) == 50
