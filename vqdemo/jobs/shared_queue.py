"""One job queue for several web processes (`VQDEMO_QUEUE=ray-actor`): what a replica's pages hold instead of a
`JobQueue` of their own.

`SharedQueue` has the calls pages make on the queue and hands out `SharedJob`s with the calls pages make on a job;
each is forwarded to the cluster's one queue actor (`queue_actor.py`) through a helper process, so this web process
never imports Ray. Views (`JobView`) come back as the plain copies they are; a job is its id plus what it was when
it was read (state, step, title), re-read on every page run, as pages ask the queue again each time.

A helper that cannot join the cluster, or that ends (the head went down, the actor died), fails the calls waiting
on it with a message that says why; the next call, after RETRY_S, starts a new helper, which finds the actor again
or makes a new one (that one marks runs it did not finish "interrupted", as a restarted server does).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from .job import JobError, JobView
from .local import PACKAGE_ROOT, Channel

MODE_ENV = "VQDEMO_QUEUE"
MODE = "ray-actor"
CALL_TIMEOUT_S = 60.0     # one call: the actor answers in milliseconds; a stuck cluster costs a message, not a page
READY_TIMEOUT_S = 180.0   # the helper's checks, ray.init and finding (or making) the actor
RETRY_S = 10.0            # a refusal is repeated for this long before a new helper tries again
LAUNCH = "import sys; from vqdemo.jobs.queue_actor import main; main(int(sys.argv[1]), sys.argv[2], sys.argv[3])"


@dataclass(frozen=True)
class JobRef:
    """A job as it crosses from the queue actor: its id, what never changes, and its state when it was read (defined
    here, not in queue_actor.py, so that unpickling one never imports Ray)."""

    id: str
    owner: str
    title: str
    teacher: bool
    task: str
    kind: str
    run_dir: Path | None
    state: str
    step: int
    version: int


def wanted() -> bool:
    """Whether this web process shares the cluster's queue (env VQDEMO_QUEUE=ray-actor) rather than holding one.
    Any other value but empty or "local" is refused, so a typo never silently gives a replica a queue of its own."""
    mode = os.environ.get(MODE_ENV, "").strip().lower()
    if mode in ("", "local"):
        return False
    if mode != MODE:
        raise JobError(f"{MODE_ENV}={mode!r} is not a queue: use {MODE} (several web processes) or leave it unset")
    return True


class _Helper:
    """One relay process and the thread that hands its answers to the calls waiting for them."""

    def __init__(self, runs_dir: str, backend: str):
        ours, theirs = socket.socketpair()
        path = os.pathsep.join(p for p in (str(PACKAGE_ROOT), os.environ.get("PYTHONPATH", "")) if p)
        env = {**os.environ, "PYTHONPATH": path, "RAY_AUTH_MODE": "token", "OMP_WAIT_POLICY": "PASSIVE"}
        self.proc = subprocess.Popen([sys.executable, "-c", LAUNCH, str(theirs.fileno()), runs_dir, backend],
                                     pass_fds=[theirs.fileno()], env=env, stdin=subprocess.DEVNULL)
        theirs.close()
        self._sock = ours
        self._conn = Channel(Connection(os.dup(ours.fileno())))
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._waiting: dict[int, list] = {}     # call id -> [Event, answer]
        self._ready = threading.Event()
        self.why: str | None = None             # why it refused or ended
        self.ended_at: float | None = None
        threading.Thread(target=self._read, daemon=True, name="vqdemo-queue-relay").start()

    def _read(self) -> None:
        try:
            while True:
                msg = self._conn.recv()
                if msg[0] == "ready":
                    self._ready.set()
                elif msg[0] == "refused":
                    self.why = msg[1]
                else:
                    with self._lock:
                        slot = self._waiting.pop(msg[0], None)
                    if slot is not None:
                        slot[1] = msg[1]
                        slot[0].set()
        except (EOFError, OSError):
            pass
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        self.why = self.why or (f"the helper that reaches the class queue ended (exit code {self.proc.poll()})"
                                if self._ready.is_set() else "the helper that reaches the class queue ended before "
                                "it joined the Ray cluster")
        self.ended_at = time.monotonic()
        self._ready.set()
        with self._lock:
            orphans, self._waiting = list(self._waiting.values()), {}
        for slot in orphans:
            slot[1] = "error", JobError(f"{self.why}; try again in a moment")
            slot[0].set()

    def call(self, job_id: str | None, name: str, args: tuple, kwargs: dict) -> Any:
        if not self._ready.wait(READY_TIMEOUT_S):
            raise JobError(f"the class queue on the Ray cluster was not reached within {READY_TIMEOUT_S:.0f} s")
        if self.ended_at is not None:
            raise JobError(self.why)
        slot: list = [threading.Event(), None]
        with self._lock:
            call_id = next(self._ids)
            self._waiting[call_id] = slot
            try:
                self._conn.send((call_id, job_id, name, args, kwargs))
            except (OSError, EOFError):
                self._waiting.pop(call_id, None)
                raise JobError(f"lost the helper that reaches the class queue ({self.why or 'it ended'})") from None
        if not slot[0].wait(CALL_TIMEOUT_S):
            with self._lock:
                self._waiting.pop(call_id, None)
            raise JobError(f"the class queue did not answer within {CALL_TIMEOUT_S:.0f} s; try again in a moment")
        kind, value = slot[1]
        if kind == "error":
            raise value
        return value

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._sock.close()


class SharedQueue:
    """The calls pages make on a `JobQueue`, answered by the cluster's one queue (see the module's docstring)."""

    def __init__(self, runs_dir: Path | str, backend: str | None = None):
        self.runs_dir = Path(runs_dir).resolve()
        self.backend_name = (backend or os.environ.get("VQDEMO_BACKEND") or "ray").strip().lower()
        self._lock = threading.Lock()
        self._helper = _Helper(str(self.runs_dir), self.backend_name)   # joins at once, in the background

    def _call(self, job_id: str | None, name: str, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            old = self._helper
            if old.ended_at is not None and time.monotonic() - old.ended_at > RETRY_S:
                self._helper = _Helper(str(self.runs_dir), self.backend_name)
            helper = self._helper
        return helper.call(job_id, name, args, kwargs)

    def _job(self, ref) -> SharedJob | None:
        return SharedJob(self, ref) if ref is not None else None

    def _jobs(self, refs) -> list[SharedJob]:
        return [SharedJob(self, r) for r in refs]

    def submit(self, *args: Any, **kwargs: Any) -> SharedJob:
        return self._job(self._call(None, "submit", *args, **kwargs))

    def submit_prior(self, *args: Any, **kwargs: Any) -> SharedJob:
        return self._job(self._call(None, "submit_prior", *args, **kwargs))

    def compute(self, key: Any, fn: str, *args: Any, **kwargs: Any) -> SharedJob:
        return self._job(self._call(None, "compute", key, fn, *args, **kwargs))

    def keyed(self, key: Any) -> SharedJob | None:
        return self._job(self._call(None, "keyed", key))

    def get(self, job_id: str) -> SharedJob | None:
        return self._job(self._call(None, "get", job_id))

    def list_jobs(self, owner: str | None = None, task: str = "train") -> list[SharedJob]:
        return self._jobs(self._call(None, "list_jobs", owner, task))

    def demo(self) -> list[SharedJob]:
        return self._jobs(self._call(None, "demo"))

    def interrupted(self, owner: str | None = None) -> list:
        return self._call(None, "interrupted", owner)

    def counts(self) -> dict[str, int]:
        return self._call(None, "counts")

    def check_limits(self, owner: str, address: str | None = None, teacher: bool = False) -> None:
        self._call(None, "check_limits", owner, address, teacher)

    def pin_sweep(self, sweep: str) -> None:
        self._call(None, "pin_sweep", sweep)

    def pinned(self, sweep: str) -> bool:
        return self._call(None, "pinned", sweep)

    def sweep_cell(self, sweep: str, owner: str, cells: int) -> int:
        return self._call(None, "sweep_cell", sweep, owner, cells)

    def set_demo(self, job_ids: list[str]) -> None:
        self._call(None, "set_demo", list(job_ids))

    def close(self) -> None:
        """End this web process's helper; the queue, the class's, goes on serving the other replicas."""
        self._helper.close()


class SharedJob:
    """A job of the shared queue: what it was when read, and its calls forwarded by id."""

    def __init__(self, queue: SharedQueue, ref: JobRef):
        self._queue = queue
        self.id, self.owner, self.title, self.teacher = ref.id, ref.owner, ref.title, ref.teacher
        self.task, self.kind, self.run_dir = ref.task, ref.kind, ref.run_dir
        self.state, self.step_count, self.version = ref.state, ref.step, ref.version

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self._queue._call(self.id, name, *args, **kwargs)

    @property
    def result(self) -> Any:
        return self._call("result")

    def view(self, light: bool = False) -> JobView:
        return self._call("view", light)

    def check_control(self, owner: str, teacher: bool = False) -> None:
        self._call("check_control", owner, teacher)

    def pause(self) -> None:
        self._call("pause")

    def resume(self) -> None:
        self._call("resume")

    def step(self, n: int = 1) -> None:
        self._call("step", n)

    def stop(self, reason: str | None = None) -> None:
        self._call("stop", reason)

    def set(self, **changes: float) -> None:
        self._call("set", **changes)
