"""The Ray backend: each job in a Ray actor on any node of a cluster, for a class that outgrows one machine.

The cluster is found the way Ray finds it: `RAY_ADDRESS` (or a head started on this machine with
`ray start --head`). Token authentication, on by default in this Ray version, stays on: every node and this app
use the cluster's token (`ray get-auth-token`, `RAY_AUTH_TOKEN` or Ray's default token file).

An actor asks Ray for the job's CPUs (and one GPU when the cluster has any) and runs the job the same way the
local backend does: in a spawned worker process of its own, so the training loop has the main thread of a fresh
interpreter whatever Ray does with its threads. There is no shared filesystem: the spec carries everything the
job needs, and events and checkpoints come back by polling the actor, into this machine's runs folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayError

from . import worker
from .local import LocalBackend

PACKAGE = Path(__file__).resolve().parents[1]    # vqdemo/, shipped to the cluster's workers with each job
POLL_TIMEOUT_S = 30.0


@ray.remote(max_restarts=0, max_concurrency=4)
class JobActor:
    """Holds one job's worker process on a Ray node and relays its messages."""

    def __init__(self, spec: worker.JobSpec):
        self._handle = LocalBackend(spare=False).start(spec)

    def command(self, msg: worker.Message) -> None:
        self._handle.send(msg)

    def poll(self, timeout: float) -> list[worker.Message]:
        out = self._handle.poll(timeout)
        if not out and not self._handle.alive():
            out.append(("died", self._handle.death()))
        return out

    def pid(self) -> int:
        """The actor's process id (tests kill it to check that a dead node fails the job cleanly)."""
        return os.getpid()

    def stop(self) -> None:
        self._handle.kill()


class RayHandle:
    def __init__(self, actor):
        self.actor = actor
        self._dead: str | None = None

    def send(self, msg: worker.Message) -> None:
        if self._dead is None:
            self.actor.command.remote(msg)

    def poll(self, timeout: float) -> list[worker.Message]:
        if self._dead is not None:
            return [("died", self._dead)]
        try:
            return ray.get(self.actor.poll.remote(timeout), timeout=timeout + POLL_TIMEOUT_S)
        except RayActorError as e:
            self._dead = ("the Ray worker running this job died "
                          f"({str(e).splitlines()[0][:160]}); checkpoints saved before that are kept")
        except GetTimeoutError:
            self._dead = f"the Ray worker running this job stopped answering for {POLL_TIMEOUT_S:.0f} s"
        except RayError as e:
            self._dead = f"the Ray cluster failed this job ({type(e).__name__}); checkpoints saved before that are kept"
        return [("died", self._dead)]

    def alive(self) -> bool:
        return self._dead is None

    def death(self) -> str:
        return self._dead or "the Ray worker ended without a result"

    def kill(self) -> None:
        try:
            ray.kill(self.actor, no_restart=True)
        except RayError:
            pass


class RayBackend:
    """Connects to the cluster once (RAY_ADDRESS, else a head on this machine); starts one actor per job."""

    name = "ray"

    def __init__(self, address: str | None = None):
        if not ray.is_initialized():
            ray.init(address=address or os.environ.get("RAY_ADDRESS") or "auto", log_to_driver=False,
                     runtime_env={"py_modules": [str(PACKAGE)], "env_vars": {"OMP_WAIT_POLICY": "PASSIVE"}})
        self.gpus = ray.cluster_resources().get("GPU", 0) > 0

    def start(self, spec: worker.JobSpec) -> RayHandle:
        actor = JobActor.options(num_cpus=spec.threads, num_gpus=1 if self.gpus and spec.task != "call" else 0,
                                 name=None).remote(spec)
        return RayHandle(actor)

    def close(self) -> None:
        pass

