"""Background work for a whole class on one server: a FIFO queue that runs a few jobs at a time, out of the web
server's process.

- `jobqueue.py`: the `JobQueue` every session shares (limits, scheduling, the teacher's lane, housekeeping);
- `job.py`: one `Job` (its state machine and controls) and the `JobView` copies pages read;
- `pump.py`: the app side of a running job (the worker's messages applied, its wall-clock cap);
- `sweeps.py`: one link, a cell of (K, beta) per student; `limits.py`: wall-clock caps;
- `backends.py` picks `local.py` (a worker process per job) or `ray_backend.py` (a Ray cluster);
- `worker.py`: what runs in the worker (train, fit a prior, a long computation).

Names are re-exported here lazily (PEP 562): `python -m vqdemo.jobs`, a local worker, imports this package first,
and must reach `runtime.configure()` before anything loads torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "JobQueue": "jobqueue", "LIVE_STATES_ON_DISK": "jobqueue",
    "Job": "job", "JobView": "job", "JobError": "job", "Interrupted": "job", "retitle": "job",
    "ACTIVE": "job", "FINISHED": "job", "PAUSED_REASON": "job",
    "make_backend": "backends", "cpu_count": "backends", "default_max_running": "backends",
    "default_per_address": "backends",
    "MAX_PINNED_SWEEPS": "sweeps", "MAX_SWEEP_OWNERS": "sweeps",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
