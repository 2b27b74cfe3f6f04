"""Which backend runs the jobs, and how many at once: from the environment, with bounds.

Imported lazily (by `vqdemo.jobs`), so a worker process that only needs `worker.py` never loads torch before
`runtime.configure()`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from .job import JobError

MAX_JOBS = 1024   # jobs at once, whatever the environment or the cluster says


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _env_int(name: str, fallback: int, lo: int, hi: int) -> int:
    try:
        return min(hi, max(lo, int(os.environ.get(name, fallback))))
    except ValueError:
        return fallback


def default_max_running(capacity: int | None = None) -> int:
    """How many jobs run at once: env VQDEMO_MAX_JOBS, else the backend's capacity (a Ray cluster's CPUs now), else
    half the cores (at least 1)."""
    return _env_int("VQDEMO_MAX_JOBS", min(MAX_JOBS, capacity) if capacity else max(1, cpu_count() // 2), 1, MAX_JOBS)


def default_per_address() -> int:
    """Runs one network address may have queued or training: env VQDEMO_JOBS_PER_ADDRESS (0: no limit), else 12.

    A student is a browser, and a script can be any number of browsers; an address it cannot multiply so cheaply.
    Students behind one shared address (one NAT for the whole room) need the limit raised or off."""
    return _env_int("VQDEMO_JOBS_PER_ADDRESS", 12, 0, 10_000)


def _local():
    from .local import LocalBackend

    return LocalBackend()


def _ray():
    from .ray_backend import RayBackend

    return RayBackend()


BACKENDS: dict[str, Callable[[], Any]] = {"local": _local, "ray": _ray}   # the tests add their in-process "thread"


def make_backend(name: str | None = None):
    """The backend named by `name` or env VQDEMO_BACKEND: "local" (a worker process per job, the default) or "ray"."""
    name = (name or os.environ.get("VQDEMO_BACKEND") or "local").strip().lower()
    if name not in BACKENDS:
        raise JobError(f"unknown job backend {name!r}: use local or ray")
    return BACKENDS[name]()
