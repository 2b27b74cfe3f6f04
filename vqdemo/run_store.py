"""Every write into a run folder, in one place: the training loop's files (`RunStore`), the queue's own (a run
queued, a run's final state, a run a stopped server left), final writes a full disk refused (`write_final`), and the
one server's hold on the runs folder (`lock_runs_dir`). Reading and checking runs is `runs.py`.

Each file is written atomically (a temp file, then a rename), so a page never reads half a file.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from .files import FILE_MODE, atomic_write_bytes, atomic_write_text, write_json
from .runs import (
    CONFIG,
    IMAGES,
    JOB,
    LAST,
    LOCK_FILE,
    METRICS,
    RETRY_S,
    STATUS,
    WEIGHTS,
    CheckpointError,
    RunInfo,
    default_runs_dir,
    read_json,
)


class _LateWrites:
    """Final files of runs (state, reason) that a full or read-only disk refused, written again every RETRY_S
    until the disk takes them, by one daemon thread while any wait. Without it a run that ended on a full disk
    stayed "running" on disk for everyone else, and a restart called it "interrupted"."""

    def __init__(self):
        self._lock = threading.Lock()
        self._pending: dict[Path, dict] = {}   # in the order given: a run's config before its status
        self._thread: threading.Thread | None = None

    def add(self, files: dict[Path, dict]) -> None:
        with self._lock:
            for path, obj in files.items():
                self._pending.pop(path, None)
                self._pending[path] = obj
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, daemon=True, name="vqdemo-late-writes")
                self._thread.start()

    def drop(self, paths) -> None:
        """Forget waiting versions of these files: a newer one is being written."""
        with self._lock:
            for path in paths:
                self._pending.pop(path, None)

    def pending(self) -> list[Path]:
        with self._lock:
            return list(self._pending)

    def _loop(self) -> None:
        while True:
            time.sleep(RETRY_S)
            with self._lock:   # held while writing: a newer version dropped meanwhile is never overwritten
                for path, obj in list(self._pending.items()):
                    try:
                        if path.parent.is_dir():   # a run folder deleted meanwhile needs nothing more
                            write_json(path, obj)
                    except OSError:
                        continue
                    del self._pending[path]
                if not self._pending:
                    self._thread = None
                    return


LATE_WRITES = _LateWrites()


def write_final(files: dict[Path, dict]) -> bool:
    """Write a run's final JSON files in order; when the disk refuses one (full, read-only), keep trying it and the
    rest in the background (`LATE_WRITES`) and return False. A later write_final of the same file replaces the
    waiting one."""
    items = list(files.items())
    LATE_WRITES.drop(files)
    for n, (path, obj) in enumerate(items):
        try:
            write_json(path, obj)
        except OSError:
            LATE_WRITES.add(dict(items[n:]))
            return False
    return True


class RunStore:
    """The one writer of a run folder: config.json, status.json, metrics.jsonl and the weights, each atomically.

    The training loop calls it directly in the CLI; for the app's jobs the loop runs in a worker process (or on a
    Ray node) and a forwarding store sends the same calls back here, so one class writes every run folder.
    """

    def __init__(self, path: Path, meta: dict | None = None):
        self.path = Path(path)
        self.meta = dict(meta or {})
        self.rows: list[dict] = []
        self._status: dict[str, Any] = {}

    def open(self, meta: dict) -> None:
        """The run's config (model, data, training settings); fields given at construction (title, owner) stay."""
        self.path.mkdir(parents=True, exist_ok=True)
        self.meta = {**meta, **self.meta}
        write_json(self.path / CONFIG, self.meta)

    def queued(self, job: dict, config: dict) -> None:
        """A run the queue accepted: who asked (job.json, written once), what it is, and that it waits."""
        self.path.mkdir(parents=True, exist_ok=True)
        write_json(self.path / JOB, job)
        self.open(config)
        self.status("queued", "waiting", 0)

    def finish(self, state: str, reason: str, step: int, config: dict) -> bool:
        """A run's final state into status.json, with `config` merged into config.json (or written, if the loop never
        wrote one: its data failed to load). False when the disk refused: the files follow once it takes them."""
        try:
            meta = read_json(self.path / CONFIG)
        except CheckpointError:
            meta = {}
        try:
            status = read_json(self.path / STATUS)
        except CheckpointError:
            status = {}
        status.update(state=state, reason=reason, updated=time.time())
        status.setdefault("step", step)
        return write_final({self.path / CONFIG: {**config, **meta, **{k: config[k] for k in ("title", "owner", "job")
                                                                       if k in config}},
                            self.path / STATUS: status})

    def status(self, state: str, reason: str, step: int, **extra: Any) -> None:
        self._status = {"state": state, "reason": reason, "step": step, "updated": time.time(), **extra}
        write_json(self.path / STATUS, self._status)

    def metrics(self, rows: list[dict]) -> None:
        """New metric rows since the last call; the file is rewritten whole (atomic), never appended in place."""
        self.rows.extend(rows)
        atomic_write_text(self.path / METRICS, "".join(json.dumps(r) + "\n" for r in self.rows))

    def images(self, blob: bytes) -> None:
        """The validation images the pages show (`run_images.to_bytes`), for a run on the user's own images."""
        atomic_write_bytes(self.path / IMAGES, blob)

    def checkpoint(self, model_meta: dict, blob: bytes, improved: bool, step: int, best: dict | None = None) -> None:
        """The latest weights (safetensors bytes), also as the best ones when `improved`. config.json follows the best
        weights, which every page loads, and is written after them (K may have changed live); status.json's step and
        best follow every checkpoint, so a killed run says where it got."""
        atomic_write_bytes(self.path / LAST, blob)
        if improved:
            atomic_write_bytes(self.path / WEIGHTS, blob)
            self.meta["model"] = model_meta
            write_json(self.path / CONFIG, self.meta)
        if self._status:
            self._status.update(step=step, updated=time.time(), **({"best": best} if best else {}))
            write_json(self.path / STATUS, self._status)
class RunsDirBusy(RuntimeError):
    """Another server already holds this runs folder."""


class RunsLock:
    """An exclusive hold on a runs folder (fcntl.flock on `<runs>/.server.lock`), released by `release()` or
    when the process ends, kill -9 included: the kernel drops flock locks with the file descriptor."""

    def __init__(self, root: Path, fd: int):
        self.root, self._fd = root, fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunsLock:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def lock_runs_dir(root: Path | None = None) -> RunsLock:
    """Hold the runs folder for this server, or raise RunsDirBusy saying which process holds it.

    Two servers on one folder would each mark the other's live runs "interrupted" and count students' runs twice."""
    root = Path(root or default_runs_dir())
    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EACCES, errno.EAGAIN):
            raise RunsDirBusy(f"the runs folder {root} is in use by another vqdemo server (pid {holder}); stop it, or "
                              "give this one its own folder with VQDEMO_RUNS_DIR") from None
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return RunsLock(root, fd)


def mark_interrupted(info: RunInfo, step: int) -> None:
    """A run a previous server left queued / running / paused: say so on disk, and whether its weights are kept."""
    was = info.state
    kept = "; its last saved checkpoint is kept" if info.has_weights else "; it had saved no weights"
    write_final({info.path / STATUS: dict(info.status, state="interrupted", was=was, updated=time.time(),
                                          reason=f"the server stopped while this run was {was} at step {step}{kept}")})


DATA_COPY = "data.zip"


def keep_data(zip_path: Path, out_dir: Path) -> Path:
    """A run trained on an uploaded zip keeps its own link to it (<run>/data.zip, a hard link where the file system
    allows, else a copy), so clearing <runs>/uploads/ between classes leaves every run loadable."""
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / DATA_COPY
    if not target.exists():
        try:
            os.link(zip_path, target)
        except OSError:
            atomic_write_bytes(target, zip_path.read_bytes())
    return target.resolve()


def save_upload(root: Path, data: bytes) -> Path:
    """An uploaded zip, stored once under <runs>/uploads/ by content hash (so its name says what it holds)."""
    path = root / "uploads" / f"{hashlib.sha256(data).hexdigest()[:16]}.zip"
    if not path.is_file():
        atomic_write_bytes(path, data)
    return path
