"""The class's one job queue when several web processes serve it: a named, detached Ray actor that owns the
`JobQueue`, and the relay process through which one web process reaches it.

Why an actor: two `streamlit run` replicas behind a proxy must agree on one queue (its limits, its order, the
teacher's demo pair, pinned sweeps) and every student's run must be reachable, watched and controlled, from
whichever replica serves them. A Ray actor is one object the whole cluster can name: the first replica creates it
(`get_if_exists=True`), the others find it by name. It runs on the node of the replica that made it, where the runs
folder is, so run folders are written where every replica reads them.

Why a relay: the web server never imports Ray (a Ray driver that loses its head ends its whole process; see
ray_driver.py). Each replica starts this module as a helper process, like the job backend's driver, with the same
checks (the cluster is there, the token is here, the cluster refuses clients without one). It forwards each call
from `shared_queue.SharedQueue` to the actor and each answer back over its socket.

Messages in (web server -> relay): (call id, job id or None, name, args, kwargs). Out: ("ready", address) or
("refused", why) first, then (call id, ("ok", value) or ("error", exception)).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from functools import partial
from multiprocessing.connection import Connection
from typing import Any

os.environ["RAY_AUTH_MODE"] = "token"   # before ray is imported, as in ray_driver.py

import ray  # noqa: E402
from ray.exceptions import RayActorError, RayError  # noqa: E402
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # noqa: E402

from ..app_limits import RUN_SECONDS  # noqa: E402
from .backends import make_backend  # noqa: E402
from .job import ACTIVE, Job, JobError  # noqa: E402
from .jobqueue import JobQueue  # noqa: E402
from .local import Channel  # noqa: E402
from .ray_backend import RayBackend  # noqa: E402
from .ray_driver import Refused, connect  # noqa: E402
from .shared_queue import JobRef  # noqa: E402

NAMESPACE = "vqdemo"
NAME = "vqdemo-queue"
FIND_TIMEOUT_S = 120.0   # making the actor: its queue reads the runs folder and starts its backend
QUEUE_CALLS = frozenset({"submit", "submit_prior", "compute", "keyed", "get", "list_jobs", "interrupted", "counts",
                         "check_limits", "pin_sweep", "pinned", "sweep_cell", "set_demo", "demo"})
JOB_CALLS = frozenset({"view", "check_control", "pause", "resume", "step", "stop", "set", "result"})


def ref(job: Job) -> JobRef:
    return JobRef(job.id, job.owner, job.title, job.teacher, job.task, job.kind, job.run_dir, job.state,
                  job.step_count, job.version)


def wire(value: Any) -> Any:
    """What an answer becomes for the web process: jobs become `JobRef`s (views and plain data cross as they are)."""
    if isinstance(value, Job):
        return ref(value)
    if isinstance(value, list):
        return [wire(v) for v in value]
    return value


@ray.remote(num_cpus=0, max_restarts=0, max_concurrency=64)
class QueueActor:
    """Owns the class's `JobQueue` (thread-safe, so the actor answers many replicas' calls at once)."""

    def __init__(self, runs_dir: str, backend: str, address: str, settings: dict[str, str]):
        os.environ.update(settings)   # the class's limits (VQDEMO_MAX_JOBS ...) as the first replica was given them
        self.runs_dir = runs_dir
        jobs_backend = RayBackend(address) if backend == "ray" else make_backend(backend)
        self.queue = JobQueue(runs_dir=runs_dir, lock=True, app_limits=True, max_seconds=RUN_SECONDS[1],
                              backend=jobs_backend)

    def runs_folder(self) -> str:
        return self.runs_dir

    def call(self, job_id: str | None, name: str, args: tuple, kwargs: dict) -> tuple[str, Any]:
        """One page call: on the queue (job_id None) or on one of its jobs. Errors come back as values, so the web
        process raises the very exception (JobError, ValueError ...) the local queue would have."""
        try:
            if job_id is None:
                if name not in QUEUE_CALLS:
                    raise JobError(f"the class queue has no call {name!r}")
                return "ok", wire(getattr(self.queue, name)(*args, **kwargs))
            if name not in JOB_CALLS:
                raise JobError(f"a run has no call {name!r}")
            job = self.queue.get(job_id)
            if job is None:
                raise JobError("this run is no longer known to the class queue")
            attr = getattr(job, name)
            return "ok", wire(attr(*args, **kwargs) if callable(attr) else attr)
        except Exception as e:  # noqa: BLE001 - the caller's page shows it as the local queue's would be shown
            return "error", e

    def active(self) -> int:
        """Jobs queued or training (tests and the bench wait for none)."""
        return sum(j.state in ACTIVE for j in self.queue.list_jobs())


def settings() -> dict[str, str]:
    """This replica's VQDEMO_* settings, for the queue it makes (the queue reads its limits from its environment)."""
    return {k: v for k, v in os.environ.items() if k.startswith("VQDEMO_") and k != "VQDEMO_QUEUE"}


def find_or_make(runs_dir: str, backend: str, address: str):
    """The cluster's queue actor: made here, on this node, by the first replica; found by the others."""
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    actor = QueueActor.options(name=NAME, namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
                               scheduling_strategy=here).remote(runs_dir, backend, address, settings())
    try:
        held = ray.get(actor.runs_folder.remote(), timeout=FIND_TIMEOUT_S)
    except RayError as e:
        raise Refused(f"the class queue could not start on the Ray cluster ({type(e).__name__}: "
                      f"{str(e).strip().splitlines()[-1][:300] if str(e).strip() else ''})") from None
    if held != runs_dir:
        raise Refused(f"the class queue on this Ray cluster keeps its runs in {held}, not {runs_dir}: start every "
                      "replica with the same VQDEMO_RUNS_DIR")
    return actor


class Relay:
    """Forwards a web process's calls to the queue actor; answers go back as they come, in any order."""

    def __init__(self, conn: Channel, actor):
        self.conn, self.actor = conn, actor
        self._send_lock = threading.Lock()
        self.gone = threading.Event()   # the actor died: this relay ends, the web process starts a new one

    def send(self, msg: tuple) -> None:
        with self._send_lock, contextlib.suppress(OSError, EOFError):
            self.conn.send(msg)

    def _answer(self, call_id: int, future) -> None:
        try:
            out = future.result()
        except RayActorError as e:
            self.gone.set()
            out = "error", JobError(f"the class queue on the Ray cluster has gone ({str(e).splitlines()[0][:160]}); "
                                    "reload the page to start a new one")
        except RayError as e:
            out = "error", JobError(f"the class queue on the Ray cluster failed this call ({type(e).__name__})")
        self.send((call_id, out))
        if self.gone.is_set():
            self.conn.close()

    def serve(self) -> None:
        while not self.gone.is_set():
            try:
                call_id, job_id, name, args, kwargs = self.conn.recv()
            except (EOFError, OSError):
                return
            future = self.actor.call.remote(job_id, name, args, kwargs).future()
            future.add_done_callback(partial(self._answer, call_id))


def main(fd: int, runs_dir: str, backend: str) -> None:
    conn = Channel(Connection(fd))
    try:
        address = connect(os.environ.get("RAY_ADDRESS", ""))
        actor = find_or_make(runs_dir, backend, address)
    except Refused as e:
        with contextlib.suppress(OSError, EOFError):
            conn.send(("refused", str(e)))
        return
    relay = Relay(conn, actor)
    relay.send(("ready", address))
    relay.serve()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3])
