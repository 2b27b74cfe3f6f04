"""The app side of a running job: start its worker, apply the worker's messages, enforce its wall-clock cap.

One pump thread per running job. Events go to the `Job` (what pages read), store calls to the run folder through
`run_store.RunStore`; a worker that dies, or overstays its cap, ends the job with a reason a student can read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import run_store
from . import limits
from .job import JobError

if TYPE_CHECKING:
    from .job import Job

POLL_S = 0.1            # how often a pump thread looks for a worker's messages


class Pump:
    """Applies one running job's messages: events to the Job, store calls to its run folder."""

    def __init__(self, job: Job):
        self.job = job
        meta = {"title": job.title, "owner": job.owner, "job": job.id} if job.task == "train" else {}
        self.store = run_store.RunStore(job.store_dir, meta) if job.store_dir is not None else None
        self.disk_error: str | None = None

    def apply(self, msg: tuple) -> tuple[str, str] | None:
        """One message; returns (state, reason) when the worker has finished."""
        kind = msg[0]
        if kind == "event":
            self.job._on_event(msg[1])
            if msg[1].get("type") == "changed" and self.store is not None and self.job.task == "train":
                self.store.meta["title"] = self.job.title   # a live K change retitles the run
        elif kind == "store" and self.store is not None and self.disk_error is None:
            name, *args = msg[1:]
            try:
                if name == "status":
                    *args, extra = args
                    self.store.status(*args, **extra)
                else:
                    getattr(self.store, name)(*args)
            except OSError as e:   # the runs folder filled up or went read-only mid-run
                self.disk_error = (f"could not write to the run folder ({e.strerror or e}); the disk may be full or "
                                   "read-only. Checkpoints saved before that are kept")
                self.job.stop(self.disk_error)
        elif kind == "exit":
            _, state, reason, result = msg
            self.job.result = result
            return ("failed", self.disk_error) if self.disk_error else (state, reason)
        return None


def drive(job: Job, backend, max_seconds: float, pause_limit_s: float) -> tuple[str, str]:
    """Start the job's worker and apply its messages until it exits or dies."""
    try:
        handle = backend.start(job.spec)
    except JobError as e:   # e.g. the Ray cluster cannot be reached or must not be used: its message says why
        return "failed", str(e)
    except Exception as e:  # noqa: BLE001 - a backend that cannot start a worker fails the job, not the server
        return "failed", f"could not start a worker ({type(e).__name__}: {e})"
    job._started(handle)
    pump = Pump(job)
    clock = limits.WallClock(limits.wall_cap_s(job.train_cfg.seconds or max_seconds, pause_limit_s))
    try:
        while True:
            due = clock.due()
            if due == "stop":
                job.stop(clock.reason(job.task != "call"))
            elif due == "kill":
                return "stopped", clock.reason(job.task != "call")
            messages = handle.poll(POLL_S)
            for msg in messages:
                if msg[0] == "died":
                    return "failed", msg[1]
                end = pump.apply(msg)
                if end is not None:
                    return end
            if not messages and not handle.alive():
                return "failed", handle.death()
    finally:
        handle.kill()
