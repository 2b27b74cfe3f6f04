"""Items 4, 5, 6, 8 and the Low file items of the second review: what a planted or odd run folder can do.

The runs folder is shown to the whole class, so a FIFO, a link to /dev/zero, a huge file, an unreadable file or a
status.json of the wrong types must cost one run its place in the list, never hang or crash the list (the sidebar
of every page), the Train page's table or the job queue.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from helpers import tiny_config
from vqdemo import files, prior, run_store, runs
from vqdemo.data import DataConfig
from vqdemo.trainer import TrainConfig

REPO = Path(__file__).resolve().parents[1]
FILES = ["config.json", "status.json", "job.json", "metrics.jsonl"]


def within(seconds: float, fn, *args):
    """fn(*args) in a daemon thread; fail (instead of hanging the suite) if it blocks longer than `seconds`."""
    box: dict = {}

    def go():
        try:
            box["value"] = fn(*args)
        except BaseException as e:  # noqa: BLE001 - handed to the test
            box["error"] = e

    t = threading.Thread(target=go, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"{getattr(fn, '__name__', fn)} blocked for more than {seconds} s"
    if "error" in box:
        raise box["error"]
    return box["value"]


def good_run(root: Path, name: str = "20260101-000000-good00") -> Path:
    run = root / name
    run.mkdir(parents=True)
    files.write_json(run / "config.json", {"kind": "vq", "title": "fine"})
    files.write_json(run / "status.json", {"state": "done", "reason": "ok", "step": 5})
    files.atomic_write_text(run / "metrics.jsonl", json.dumps({"type": "val", "step": 5, "psnr": 20.0}) + "\n")
    return run


def plant(path: Path, kind: str) -> None:
    path.unlink(missing_ok=True)
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dev-zero":
        path.symlink_to("/dev/zero")
    elif kind == "huge":   # sparse: 2 GiB of zeros on no disk, and st_size says so
        with open(path, "wb") as f:
            f.truncate(2 << 30)
    elif kind == "folder":
        path.mkdir()
    elif kind == "dangling":
        path.symlink_to(path.parent / "nowhere")


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "huge", "folder", "dangling"])
@pytest.mark.parametrize("name", FILES)
def test_planted_special_files_cost_one_run_not_the_list(tmp_path, name, kind):
    good = good_run(tmp_path)
    bad = good_run(tmp_path, "20260101-000001-bad000")
    plant(bad / name, kind)
    listed = within(10, runs.list_runs, tmp_path)
    assert good in [r.path for r in listed]
    if name == "config.json":
        assert bad not in [r.path for r in listed]
    if name == "status.json":
        assert next(r for r in listed if r.path == bad).state == "unknown"
    with pytest.raises(runs.CheckpointError):
        within(10, runs.read_json, bad / name)
    assert within(10, runs.read_metrics, bad) == ([] if name == "metrics.jsonl" else runs.read_metrics(good))


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "huge"])
def test_read_capped_never_trusts_st_size(tmp_path, kind):
    path = tmp_path / "f"
    plant(path, kind)
    with pytest.raises(runs.CheckpointError, match="not a regular file|larger than"):
        within(10, runs.read_capped, path, 1 << 20)


def test_a_file_that_lies_about_its_size_is_capped(tmp_path):
    proc = Path("/proc/self/environ")   # a regular file whose st_size is 0, whatever it holds
    if not proc.is_file():
        pytest.skip("no /proc here")
    data = runs.read_capped(proc, 1 << 20)
    assert len(data) <= 1 << 20
    big = tmp_path / "big.jsonl"
    big.write_bytes(b'{"type": "val", "step": 1}\n' * 5000)
    assert len(runs.read_capped(big, 1000, truncate=True)) == 1000
    with pytest.raises(runs.CheckpointError, match="larger than"):
        runs.read_capped(big, 1000)


def test_a_huge_metrics_file_is_read_up_to_its_cap(tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "MAX_METRICS_BYTES", 4096)
    run = good_run(tmp_path)
    rows = "".join(json.dumps({"type": "train", "step": i}) + "\n" for i in range(2000))
    files.atomic_write_text(run / "metrics.jsonl", rows)
    rows = runs.read_metrics(run)
    assert 0 < len(rows) < 2000 and rows[0]["step"] == 0


def test_an_unreadable_run_never_breaks_listing(tmp_path, monkeypatch):
    """The suite runs as root, for whom mode 0000 still reads: the refusal of the kernel is injected."""
    good = good_run(tmp_path)
    bad = good_run(tmp_path, "20260101-000001-bad000")
    real_open = os.open

    def deny(path, *a, **k):
        if str(path).startswith(str(bad)):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr(os, "open", deny)
    assert [r.path for r in runs.list_runs(tmp_path)] == [good]
    with pytest.raises(runs.CheckpointError, match="permissions"):
        runs.read_json(bad / "config.json")


@pytest.mark.integration
@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_run_files_get_the_umasks_mode_not_0600(tmp_path, umask):
    """In a fresh process with that umask, as another account's server would read them."""
    code = ("import os, sys, torch; from pathlib import Path; from vqdemo import files, runs; d = Path(sys.argv[1]);"
            "files.write_json(d / 'config.json', {});"
            "runs.save_weights(d / 'model.safetensors', torch.nn.Linear(1, 1), {});"
            "print(oct(files.FILE_MODE))")
    shell = f'umask {umask:03o} && exec "$0" -c "$1" "$2"'
    out = subprocess.run(["sh", "-c", shell, sys.executable, code, str(tmp_path)], cwd=REPO, capture_output=True,
                         text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    for name in ("config.json", "model.safetensors"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask, name


HOSTILE_STATUS = [
    {"best": {"psnr": "high"}}, {"best": [1, 2]}, {"best": "best"}, {"best": {"psnr": float("nan")}},
    {"best": {"psnr": 1e309}}, {"best": {"step": "7", "psnr": 3}}, {"step": "12"}, {"step": [1]}, {"step": -3},
    {"step": 2.5}, {"step": 1e300}, {"step": True}, {"step": None}, {"state": 7}, {"state": "pwned"},
    {"state": ["running"]}, {"reason": ["a"]}, {"reason": "x" * 100_000}, {"updated": "yesterday"},
    {"updated": float("inf")}, {"was": {"a": 1}}, [], "running", 42, None,
]


@pytest.mark.parametrize("raw", HOSTILE_STATUS, ids=[f"status{i}" for i in range(len(HOSTILE_STATUS))])
def test_status_fields_always_have_clean_types(tmp_path, raw):
    run = good_run(tmp_path)
    (run / "status.json").write_text(json.dumps(raw))
    [info] = runs.list_runs(tmp_path)
    s = info.status
    assert s["state"] in runs.STATES and isinstance(s["reason"], str) and len(s["reason"]) <= runs.MAX_TEXT_CHARS
    assert type(s["step"]) is int and s["step"] >= 0
    assert all(type(v) is float and v == v and abs(v) != float("inf")
               for k, v in s.get("best", {}).items() if k != "step")
    assert type(s.get("best", {}).get("step", 0)) is int
    assert "updated" not in s or type(s["updated"]) is float
    assert s.get("was", "done") in runs.STATES


HOSTILE_META = [
    {"kind": "vq", "title": ["a"]}, {"kind": "vq", "title": {"x": 1}}, {"kind": "vq", "owner": 5},
    {"kind": ["vq"]}, {"kind": "vq", "model": [1]}, {"kind": "vq", "data": "mnist"},
    {"kind": "vq", "title": "t" * 10_000},
]


@pytest.mark.parametrize("raw", HOSTILE_META, ids=[f"meta{i}" for i in range(len(HOSTILE_META))])
def test_config_fields_pages_read_have_clean_types(tmp_path, raw):
    run = good_run(tmp_path)
    files.write_json(run / "config.json", raw)
    [info] = runs.list_runs(tmp_path)
    for key in ("title", "owner", "kind"):
        assert isinstance(info.meta.get(key, ""), str) and len(info.meta.get(key, "")) <= runs.MAX_TEXT_CHARS
    for key in ("model", "data", "train"):
        assert isinstance(info.meta.get(key, {}), dict)


BAD_LINES = ['[1, 2]', '"text"', '42', 'null', '{"type": 5, "step": 1}', '{"type": "val", "step": "3"}',
             '{"type": "val", "step": [1]}', '{"type": "val", "step": 1.5}', '{"type": "val"}', '[' * 100_000]


def test_non_object_metrics_lines_are_skipped(tmp_path):
    run = good_run(tmp_path)
    good = {"type": "val", "step": 2, "psnr": 21.0, "note": "text dropped", "flag": True}
    files.atomic_write_text(run / "metrics.jsonl", "\n".join(BAD_LINES + [json.dumps(good)]) + "\n")
    assert runs.read_metrics(run) == [{"type": "val", "step": 2, "psnr": 21.0}]


@pytest.mark.integration
def test_train_page_and_sidebar_survive_a_class_of_planted_runs(tmp_path, monkeypatch):
    """Every hostile status and config above, each in its own run, on one server: the Train page's table of
    runs, the sidebar's model list and a fresh job queue (which marks runs interrupted) all come up."""
    from streamlit.testing.v1 import AppTest

    root = tmp_path / "runs"
    monkeypatch.setenv("VQDEMO_RUNS_DIR", str(root))
    for i, raw in enumerate(HOSTILE_STATUS):
        run = good_run(root, f"20260101-0000{i:02d}-st{i:04d}")
        (run / "status.json").write_text(json.dumps(raw))
    for i, raw in enumerate(HOSTILE_META):
        run = good_run(root, f"20260102-0000{i:02d}-mt{i:04d}")
        files.write_json(run / "config.json", raw)
    plant(good_run(root, "20260103-000000-fifo00") / "status.json", "fifo")
    plant(good_run(root, "20260103-000001-zero00") / "job.json", "dev-zero")
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.switch_page("views/train.py")
    within(120, at.run)
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


def test_a_checkpoint_writes_the_step_into_status(tmp_path):
    """After a kill -9 the run says the step of its last checkpoint, not "step 0"."""
    from vqdemo.fit import fit

    seen = []

    def on_event(e):
        if e["type"] == "val":   # the checkpoint is written right after this event
            seen.append(e["step"])

    def check(e):
        if e["type"] == "train" and seen and e["step"] == seen[-1] + 1:
            assert runs.read_status(tmp_path / "run")["step"] == seen[-1]
        on_event(e)

    fit(tiny_config(), DataConfig(name="digits", max_images=60), TrainConfig(steps=12, batch_size=8, val_every=4),
        out_dir=tmp_path / "run", on_event=check)
    assert seen[:3] == [1, 4, 8]   # step 1 is an early validation (a live run shows a score at once)


def test_after_a_live_k_change_config_json_describes_the_loaded_weights(tmp_path):
    """A K change is saved in last.safetensors at once; config.json follows model.safetensors, the best weights that
    every page loads, so Compare never shows one K beside weights of another."""
    from vqdemo.models import build_model
    from vqdemo.trainer import model_meta

    def save(model, improved: bool) -> None:
        meta = {"kind": "vq", "model": model_meta(model)}
        store.checkpoint(meta["model"], runs.weights_bytes(model, meta), improved, 1, {"score": 1.0})

    model = build_model(tiny_config())
    store = run_store.RunStore(tmp_path / "run")
    store.open({"kind": "vq", "model": model_meta(model)})
    save(model, True)
    model.resize_codebook(2)                      # live, from 16
    save(model, False)                            # not better: model.safetensors keeps K = 16
    best, _ = runs.load_model(tmp_path / "run")
    last, _ = runs.load_model(tmp_path / "run", runs.LAST)
    assert runs.read_json(tmp_path / "run" / "config.json")["model"]["vq"]["k"] == best.config.vq.k == 16
    assert last.config.vq.k == 2
    save(model, True)
    assert runs.read_json(tmp_path / "run" / "config.json")["model"]["vq"]["k"] == 2


def test_runs_lock_refuses_a_second_server(tmp_path):
    lock = run_store.lock_runs_dir(tmp_path)
    with pytest.raises(run_store.RunsDirBusy, match=f"pid {os.getpid()}"):
        run_store.lock_runs_dir(tmp_path)
    lock.release()
    with run_store.lock_runs_dir(tmp_path):
        pass
    assert (tmp_path / runs.LOCK_FILE).is_file()
    assert [r.path for r in runs.list_runs(tmp_path)] == []


@pytest.mark.integration
def test_runs_lock_is_freed_when_its_server_is_killed(tmp_path):
    code = ("import sys, time; from vqdemo import run_store; run_store.lock_runs_dir(sys.argv[1]); "
            "print('held', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(run_store.RunsDirBusy, match=f"pid {proc.pid}"):
            run_store.lock_runs_dir(tmp_path)
    finally:
        proc.kill()
        proc.wait()
    run_store.lock_runs_dir(tmp_path).release()   # kill -9 released it


def shipped_without_prior(tmp_path, monkeypatch) -> Path:
    """A shipped checkpoint folder that has no prior (every shipped VQ / RQ model now ships one): shapes-vq's model,
    in a stand-in for checkpoints/."""
    fake = tmp_path / "checkpoints" / "shapes-vq"
    fake.mkdir(parents=True)
    for name in (runs.WEIGHTS, runs.CONFIG):
        (fake / name).write_bytes((prior.SHIPPED / "shapes-vq" / name).read_bytes())
    monkeypatch.setattr(prior.storage, "SHIPPED", fake.parent)   # where prior_write_dir looks
    return fake


def test_shipped_checkpoints_are_read_only_to_the_app(tmp_path, monkeypatch):
    """A prior for a shipped model goes to the runs folder's mirror; the repository's folder is untouched."""
    root = tmp_path / "runs"
    monkeypatch.setenv("VQDEMO_RUNS_DIR", str(root))
    real = prior.SHIPPED
    # a shipped prior is read in place
    assert prior.prior_dir(real / "mnist-vq") == real / "mnist-vq" / prior.PRIOR_DIR
    shipped = shipped_without_prior(tmp_path, monkeypatch)
    assert prior.prior_write_dir(shipped).is_relative_to(root / prior.MIRRORS)
    assert prior.prior_write_dir(tmp_path / "run") == tmp_path / "run" / prior.PRIOR_DIR
    mirror = prior.prior_write_dir(shipped)
    mirror.mkdir(parents=True)
    (mirror / runs.WEIGHTS).write_bytes((real / "mnist-vq" / prior.PRIOR_DIR / runs.WEIGHTS).read_bytes())
    assert prior.prior_dir(shipped) == mirror
    before = sorted(shipped.rglob("*"))
    assert not (shipped / prior.PRIOR_DIR).exists() and before == sorted(shipped.rglob("*"))


@pytest.mark.slow
def test_training_a_prior_for_a_shipped_model_writes_under_the_runs_folder(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    monkeypatch.setenv("VQDEMO_RUNS_DIR", str(root))
    shipped = shipped_without_prior(tmp_path, monkeypatch)
    out = prior.train_prior(shipped, steps=1, batch_size=8)
    assert out.is_relative_to(root) and (out / runs.WEIGHTS).is_file()
    assert not (shipped / prior.PRIOR_DIR).exists()
    assert prior.load_prior(shipped)[1]["role"] == "prior"
    from vqdemo.prior import prior_figures
    assert prior_figures(shipped) is not None


@pytest.mark.parametrize("best", [[1, 2], "best", {"bits_per_code": "2"}, 5])
def test_a_priors_planted_status_falls_back_to_its_metrics(tmp_path, best):
    from vqdemo.prior import prior_figures

    folder = tmp_path / prior.PRIOR_DIR
    folder.mkdir()
    row = {"type": "val", "step": 9, "bits_per_code": 3.0, "bits_per_image": 147.0, "uniform_bits_per_image": 294.0}
    files.atomic_write_text(folder / "metrics.jsonl", json.dumps(row) + "\n")
    (folder / "status.json").write_text(json.dumps({"best": best}))
    assert prior_figures(tmp_path)["step"] == 9


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "folder"])
def test_dataset_files_that_are_not_regular_are_refused(tmp_path, kind):
    """A checkpoint's data config may point mnist-full at a folder someone planted: never block on it."""
    from vqdemo.data import DataError, load_data

    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                 "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        plant(tmp_path / name, kind)
    with pytest.raises(DataError):
        within(10, load_data, DataConfig(name="mnist-full", path=str(tmp_path)))
