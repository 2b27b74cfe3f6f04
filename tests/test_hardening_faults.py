"""Training faults: a loss that goes NaN, a process killed in the middle of checkpoint writes, a read-only or full
runs folder, a server restart. Each ends in a clear failed state; what was saved before still loads."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
import torch

from helpers import tiny_config, wait_for
from vqdemo import files, jobs, run_store, runs
from vqdemo.data import DataConfig
from vqdemo.fit import fit
from vqdemo.jobs import JobError, JobQueue
from vqdemo.trainer import Control, TrainConfig

REPO = Path(__file__).resolve().parents[1]
DATA = DataConfig(name="digits", max_images=200)


def finite_weights(model) -> bool:
    return all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())


# ---- NaN ----------------------------------------------------------------------------------------------------

@pytest.fixture
def any_lr(monkeypatch):
    """Let a huge learning rate through (the bounds would refuse it) to force a divergence: the lr field's own
    bound is lifted, as are the live checks."""
    field = TrainConfig.__dataclass_fields__["lr"]
    monkeypatch.setattr(field, "metadata", {"spec": dataclasses.replace(field.metadata["spec"], hi=None)})


def test_nan_from_a_huge_learning_rate_fails_the_run_and_keeps_the_good_checkpoint(tmp_path, any_lr):
    control = Control()

    def on_event(e):
        if e["type"] == "train" and e["step"] == 10:
            control.set(lr=1e12)   # live, as a student's slider would

    out = tmp_path / "run"
    _, result = fit(tiny_config(), DATA, TrainConfig(steps=200, batch_size=16, val_every=5), out_dir=out,
                    control=control, on_event=on_event)
    assert result.state == "failed" and result.steps < 200
    assert "diverged" in result.reason and "Lower the learning rate" in result.reason and "kept" in result.reason
    status = runs.read_json(out / "status.json")
    assert status["state"] == "failed" and status["reason"] == result.reason
    model, _ = runs.load_model(out)            # the best checkpoint: saved before the divergence
    assert finite_weights(model) and result.best["step"] <= 10
    try:
        assert finite_weights(runs.load_model(out, runs.LAST)[0])
    except runs.CheckpointError as e:           # never: non-finite weights are not saved; if so, say so
        pytest.fail(f"last checkpoint unusable: {e}")
    assert [r for r in runs.read_metrics(out) if r.get("type") == "val"]


@pytest.mark.integration
def test_nan_in_a_job_fails_that_job_and_the_queue_goes_on(tmp_path, any_lr):
    q = JobQueue(1, tmp_path / "runs", threads=1)
    bad = q.submit("s1", "diverges", tiny_config(), DATA, TrainConfig(steps=50, batch_size=16, lr=1e12, val_every=10))
    good = q.submit("s2", "fine", tiny_config(), DATA, TrainConfig(steps=20, batch_size=16, val_every=10))
    wait_for(lambda: bad.state in jobs.FINISHED and good.state in jobs.FINISHED, "both jobs")
    assert bad.state == "failed" and "Lower the learning rate" in bad.view().reason
    assert good.state == "done" and runs.load_model(good.run_dir)[0] is not None
    assert runs.read_json(bad.run_dir / "status.json")["state"] == "failed"


# ---- killed mid-write ---------------------------------------------------------------------------------------

WRITER = textwrap.dedent("""
    import sys, torch
    sys.path.insert(0, {repo!r}); sys.path.insert(0, {tests!r})
    torch.set_num_threads(1)
    from helpers import tiny_config, wait_for
    from vqdemo import files, runs
    from vqdemo.models import build_model
    out = runs.Path({out!r}); cfg = tiny_config(); model = build_model(cfg)
    i = 0
    while True:   # nothing but checkpoint writes: a kill almost always lands inside one
        i += 1
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(i)
        runs.save_weights(out / runs.LAST, model, {{"model": cfg.to_dict(), "i": i}})
        files.write_json(out / "status.json", {{"state": "running", "i": i, "pad": "x" * 100000}})
        if i == 3:
            print("ready", flush=True)
""")


@pytest.mark.integration
@pytest.mark.parametrize("seed", [0, 1])
def test_sigkill_during_checkpoint_writes_leaves_a_loadable_checkpoint(tmp_path, seed):
    out = tmp_path / "run"
    out.mkdir()
    script = WRITER.format(repo=str(REPO), tests=str(REPO / "tests"), out=str(out))
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        time.sleep(random.Random(seed).uniform(0.05, 0.6))
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(30)
    model, meta = runs.load_model(out / runs.LAST)
    values = {float(v.float().mean()) for k, v in model.state_dict().items() if "weight" in k or "bias" in k}
    assert values == {float(meta["i"])}, "every tensor from the same save: never a mix of two"
    assert runs.read_json(out / "status.json")["i"] >= meta["i"] - 1
    assert [r.id for r in runs.list_runs(tmp_path)] == []   # no config.json: not a run, and temp files are no runs


@pytest.mark.integration
def test_killed_cli_run_then_a_server_restart_lists_and_loads_it(tmp_path):
    """SIGKILL a real `python -m vqdemo train` at a random moment after its first checkpoint; a new JobQueue
    (a restarted server) marks it interrupted, lists it, and it loads. A finished run is listed as done."""
    root = tmp_path / "runs"
    finished = root / "20260101-000000-done00"
    fit(tiny_config(), DATA, TrainConfig(steps=5, batch_size=16, val_every=5), out_dir=finished)
    killed = root / "20260101-000001-kill00"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.Popen([sys.executable, "-m", "vqdemo", "train", "--dataset", "digits", "--hidden", "16",
                          "--k", "16", "--steps", "100000", "--val-every", "2", "--threads", "1", "--out", str(killed)],
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: (killed / runs.WEIGHTS).is_file() or p.poll() is not None, "the first checkpoint", 120)
        time.sleep(random.Random(7).uniform(0.0, 1.0))
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(30)
    assert runs.read_json(killed / "status.json")["state"] == "running"

    q = JobQueue(1, root, threads=1)   # the restarted server
    listed = {r.id: r.state for r in runs.list_runs(root)}
    assert listed == {killed.name: "interrupted", finished.name: "done"}
    lost = {r.id: r for r in q.interrupted()}
    assert set(lost) == {killed.name} and lost[killed.name].has_weights and lost[killed.name].was == "running"
    for run in (killed, finished):
        model, meta = runs.load_model(run)
        assert finite_weights(model) and meta["model"]["vq"]["k"] == 16
    assert "the server stopped" in runs.read_json(killed / "status.json")["reason"]
    assert JobQueue(1, root, threads=1).interrupted()[0].id == killed.name   # a second restart: still listed
    assert_the_app_lists(root, {killed.name: "interrupted", finished.name: "done"})


def assert_the_app_lists(root: Path, expected: dict[str, str]) -> None:
    """The restarted app: both runs in the sidebar's model picker and in the Train page's table, with their state."""
    from streamlit.testing.v1 import AppTest

    os.environ["VQDEMO_RUNS_DIR"] = str(root)   # the autouse fixture restores it after the test
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.switch_page("views/train.py").run()
    assert not at.exception, [e.message for e in at.exception]
    # labels: "<time, owner, K, PSNR>: <title or id> (<state>)"
    picker = at.sidebar.selectbox(key="model_picker").options
    for run_id, state in expected.items():
        assert any(label.endswith(f"{run_id} ({state})") for label in picker), picker
    table = next(df.value for df in at.dataframe if "loadable" in df.value.columns)
    rows = {r["id"]: r for r in table.to_dict("records")}
    for run_id, state in expected.items():
        assert rows[run_id]["state"].startswith(state) and rows[run_id]["loadable"], rows[run_id]


# ---- read-only and full runs folders ------------------------------------------------------------------------

@pytest.fixture
def unwritable(monkeypatch):
    """Make every file creation under a folder fail as a read-only (EROFS) or full (ENOSPC) disk would.
    (The suite runs as root, for whom chmod 0o555 does not stop writes, so the failure is injected.)"""
    def make(root: Path, code: int = errno.EROFS):
        root = Path(root).resolve()
        real_mkstemp, real_mkdir = tempfile.mkstemp, Path.mkdir

        def inside(p) -> bool:
            return str(Path(p).resolve()).startswith(str(root))

        def mkstemp(*a, dir=None, **k):
            if dir is not None and inside(dir):
                raise OSError(code, os.strerror(code), str(dir))
            return real_mkstemp(*a, dir=dir, **k)

        def mkdir(self, *a, **k):
            if inside(self) and self.resolve() != root:
                raise OSError(code, os.strerror(code), str(self))
            return real_mkdir(self, *a, **k)

        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
        monkeypatch.setattr(Path, "mkdir", mkdir)
    return make


def test_read_only_runs_folder_from_the_cli_is_one_line(tmp_path, unwritable, capsys):
    from vqdemo import cli

    root = tmp_path / "runs"
    root.mkdir()
    unwritable(root)
    code = cli.main(["train", "--dataset", "digits", "--steps", "2", "--out", str(root / "x")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "Read-only file system" in err[0]


@pytest.mark.integration
def test_disk_full_mid_run_fails_the_job_clearly_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    """The first checkpoint is written; then the disk fills: the job fails with a reason, the server's queue
    goes on, the earlier checkpoint still loads and no temp file is left behind."""
    q = JobQueue(1, tmp_path / "runs", threads=1)
    writes = {"n": 0}
    real_write = run_store.atomic_write_bytes

    def atomic_write_bytes(path, data):
        if str(path).endswith(".safetensors"):
            writes["n"] += 1
            if writes["n"] > 2:   # last + best at step 1, then the disk is full
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(path, data)

    monkeypatch.setattr(run_store, "atomic_write_bytes", atomic_write_bytes)
    job = q.submit("s1", "fills the disk", tiny_config(), DATA, TrainConfig(steps=40, batch_size=16, val_every=5))
    wait_for(lambda: job.state in jobs.FINISHED, "the job to end")
    v = job.view()
    assert v.state == "failed" and "No space left on device" in v.reason
    model, _ = runs.load_model(job.run_dir)
    assert finite_weights(model)
    assert not [p.name for p in job.run_dir.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.setattr(run_store, "atomic_write_bytes", real_write)
    after = q.submit("s2", "disk freed", tiny_config(), DATA, TrainConfig(steps=5, batch_size=16, val_every=5))
    wait_for(lambda: after.state in jobs.FINISHED, "the next job")
    assert after.state == "done"


def test_full_disk_json_write_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "status.json"
    files.write_json(target, {"state": "done"})

    class Full:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    real_fdopen = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda fd, mode="r", *a, **k: Full(real_fdopen(fd, mode, *a, **k)))
    with pytest.raises(OSError, match="No space left"):
        files.write_json(target, {"state": "running"})
    assert runs.read_json(target) == {"state": "done"}
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]


def test_read_only_runs_folder_refuses_a_job_with_a_clear_message(tmp_path, unwritable):
    """A student presses Start while the runs folder is read-only: a JobError (the page shows it), not a crash."""
    root = tmp_path / "runs"
    q = JobQueue(1, root, threads=1)
    (root).mkdir(exist_ok=True)
    unwritable(root)
    with pytest.raises(JobError, match="read-only|could not"):
        q.submit("s1", "nowhere to go", tiny_config(), DATA, TrainConfig(steps=5, batch_size=16))
    assert q.counts()["running"] == 0 and q.list_jobs() == []


def test_restart_on_a_read_only_runs_folder_still_lists_runs(tmp_path, unwritable):
    root = tmp_path / "runs"
    run = root / "20260101-000000-ro0000"
    fit(tiny_config(), DATA, TrainConfig(steps=5, batch_size=16, val_every=5), out_dir=run)
    files.write_json(run / "status.json", {"state": "running", "step": 5})
    unwritable(root)
    q = JobQueue(1, root, threads=1)
    assert [r.id for r in q.interrupted()] == [run.name]
    assert runs.load_model(run)[0] is not None
    assert json.loads((run / "status.json").read_text())["state"] == "running"   # could not be rewritten: unchanged
