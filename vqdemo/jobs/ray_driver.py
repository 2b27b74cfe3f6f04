"""The Ray driver: the one process of the app that imports Ray, started by `ray_backend.RayBackend` (a fresh
interpreter that calls `main(FD)`) and talking to the web server over the socket FD.

Why a process of its own: a Ray driver that loses its cluster's head ends its whole process ("Failed to connect to
GCS within 60 seconds ... The program will terminate"), and `ray.init` to an address where nothing answers waits
about 40 s per try. Here that ends or blocks only this helper; the web server sees its socket close, fails the
running jobs with a reason, and starts a new driver for the next job (so it reconnects once the head is back).

Before connecting it checks, each with a message that says what to do: that something answers at the address
(within seconds, not Ray's 40 s), that this machine has the cluster's token, and that the cluster refuses a client
without one (`ray_probe.py`, in a process with no token). Then `ray.init` with token authentication on.

An actor asks Ray for the job's CPUs (and one GPU when the cluster has any) and runs the job the same way the
local backend does: in a spawned worker process of its own, so the training loop has the main thread of a fresh
interpreter whatever Ray does with its threads. An actor whose job ended is kept for the next job of the same size
for `IDLE_KEEP_S`, its next worker already started (torch imported while the last job trained): in a lecture hall's
queue of short runs a Ray worker process starts once per slot, not once per run, and a run starts training at once.

There is no shared filesystem: the spec carries everything the job needs, and events and checkpoints come back by
polling the actor, relayed to the web server. So a node that
dies (a worker machine switched off) loses only what it had not yet sent: the job fails with a reason that names
the lost machine, its checkpoints already in the app's run folder stay there, and jobs on other nodes go on.

Messages in (web server -> driver): ("start", job, spec), ("send", job, message), ("kill", job).
Messages out: ("ready", address, cpus) or ("refused", why) first, then ("msg", job, [worker messages]),
("cluster", cpus) when the cluster's CPUs change (a node joined or left) and, if the head stops answering,
("lost", why) before this process exits.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ["RAY_AUTH_MODE"] = "token"   # before ray is imported: it reads the mode then. This app never runs without

import ray  # noqa: E402
from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError, RayError  # noqa: E402

from . import worker  # noqa: E402
from .local import LocalBackend  # noqa: E402
from .ray_backend import unreachable  # noqa: E402

PACKAGE = Path(__file__).resolve().parents[1]    # vqdemo/, shipped to the cluster's workers with each job
POLL_TIMEOUT_S = 30.0   # a Ray worker that does not answer a poll for this long has failed its job
UNAVAILABLE_RETRY_S = 1.0   # a dropped connection to an actor is retried this often (within POLL_TIMEOUT_S)
SILENT = f"the Ray worker running this job stopped answering for {POLL_TIMEOUT_S:.0f} s"
NODE_LOST = ("the machine running this run stopped (its Ray node was lost); checkpoints saved before that are kept "
             "and the cluster's other machines take new runs")
ACTOR_POLL_S = 0.2      # how long one poll of an actor waits for messages
PROBE_TIMEOUT_S = 60.0
HEALTH_EVERY_S = 2.0    # the head's address is checked this often while connected ...
HEALTH_MISSES = 3       # ... and this many misses in a row mean the head has gone
CLUSTER_EVERY_S = 5.0   # the cluster's CPUs are read this often, so the app's queue follows nodes that come and go
IDLE_KEEP_S = 60.0      # an actor whose job ended waits this long for the next job before it gives its CPUs back
START_TIMEOUT_S = 120.0  # a job's actor (a new Ray worker process on a busy node) must take it within this


class Refused(Exception):
    """The cluster cannot or must not be used; the message says why and what to do."""


def resolve(address: str) -> str:
    """host:port of the cluster: RAY_ADDRESS as given, or ("auto" / empty) the head `ray start` made here."""
    from ray._private.services import canonicalize_bootstrap_address_or_die

    if address and address != "auto":
        return address   # as the teacher wrote it, so messages name it
    try:
        return canonicalize_bootstrap_address_or_die(address or "auto")
    except (ConnectionError, ValueError) as e:
        raise Refused(f"no Ray cluster found ({str(e).splitlines()[0][:200]}): set RAY_ADDRESS to the head's "
                      "HOST:PORT, as the README's Ray commands do") from None


def check_token_required(address: str) -> None:
    """Refuse a cluster that lets in a client without a token: anyone who can reach it could run code on it."""
    from ray._raylet import AuthenticationTokenLoader

    if not AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True):
        raise Refused("this machine has no Ray token: set RAY_AUTH_TOKEN to the output of `ray get-auth-token` on "
                      "the head (or copy the head's ~/.ray/auth_token here)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH_TOKEN")}
    with tempfile.TemporaryDirectory(prefix="vqdemo-probe-") as home:   # no ~/.ray/auth_token to find
        try:
            probe = subprocess.run([sys.executable, str(Path(__file__).with_name("ray_probe.py")), address],
                                   env={**env, "RAY_AUTH_MODE": "disabled", "HOME": home}, capture_output=True,
                                   text=True, timeout=PROBE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise Refused(f"the Ray cluster at {address} did not answer a check within {PROBE_TIMEOUT_S:.0f} s") \
                from None
    if probe.returncode == 0:
        raise Refused(f"the Ray cluster at {address} does not require a token, so anyone who can reach it can run "
                      "code on it; restart its head with token authentication as the README's Ray commands do "
                      "(RAY_AUTH_MODE=token)")
    if probe.returncode != 3:
        raise Refused(f"could not check the Ray cluster at {address} ({probe.stderr.strip()[-300:]})")
    from ray._raylet import GcsClient
    from ray.exceptions import AuthenticationError

    try:
        GcsClient(address=address)   # this process, with the token here: at once, where ray.init retries a while
    except AuthenticationError:
        raise Refused(f"the Ray cluster at {address} refused the token here: set RAY_AUTH_TOKEN to the output of "
                      "`ray get-auth-token` on the head") from None


def connect(address: str) -> str:
    """Check the cluster, then connect this process to it as a driver; returns host:port."""
    address = resolve(address)
    why = unreachable(address)
    if why is not None:
        raise Refused(why)
    check_token_required(address)
    try:
        ray.init(address=address, log_to_driver=False,
                 runtime_env={"py_modules": [str(PACKAGE)], "env_vars": {"OMP_WAIT_POLICY": "PASSIVE"}})
    except Exception as e:  # noqa: BLE001 - whatever Ray raises, the web server gets one line
        raise Refused(f"could not join the Ray cluster at {address} ({type(e).__name__}: "
                      f"{str(e).splitlines()[0][:200] if str(e) else ''})") from None
    return address


@ray.remote(max_restarts=0, max_concurrency=4)
class JobActor:
    """Runs jobs one after another on a Ray node, each in a fresh worker process, with the next worker kept warm."""

    def __init__(self):
        self._backend = LocalBackend(spares=1)
        self._handle = None

    def begin(self, spec: worker.JobSpec) -> None:
        self._handle = self._backend.start(spec)

    def command(self, msg: worker.Message) -> None:
        self._handle.send(msg)

    def poll(self, timeout: float) -> list[worker.Message]:
        out = self._handle.poll(timeout)
        if not out and not self._handle.alive():
            out.append(("died", self._handle.death()))
        return out

    def node(self) -> str:
        """The id of the Ray node this actor runs on: the driver asks at once, so it still knows once the node dies."""
        return ray.get_runtime_context().get_node_id()

    def stop(self) -> None:
        self._handle.kill()


@dataclass
class Slot:
    """An actor and what it was made for: jobs of the same size may reuse it."""

    actor: Any
    size: tuple[int, int]               # (CPUs, GPUs) it holds
    node: Any                           # ObjectRef of its node's id, asked at once
    idle_since: float = 0.0


class RayHandle:
    """One job's actor, as this driver sees it."""

    def __init__(self, slot: Slot, begun):
        self.slot = slot
        self.actor = slot.actor
        self._node = slot.node
        self._begun = begun     # ObjectRef of the actor's begin(spec): polls wait for it (a threaded actor's calls
        self._dead: str | None = None   # may run in any order, and a kept actor still holds its last job's worker)
        self._unavailable_since: float | None = None

    def started(self) -> str | None:
        """None once the actor has taken the job, else why the job could not start."""
        try:
            ray.get(self._begun, timeout=START_TIMEOUT_S)
            return None
        except GetTimeoutError:
            self._dead = (f"the Ray cluster gave this run no worker within {START_TIMEOUT_S:.0f} s; start it again "
                          "when fewer runs train")
        except RayActorError as e:
            self._dead = NODE_LOST if self._node_lost(e) else (
                f"the Ray worker for this run could not start ({str(e).splitlines()[0][:160]})")
        except RayError as e:
            self._dead = f"the Ray cluster could not start this run ({type(e).__name__})"
        return self._dead

    def send(self, msg: worker.Message) -> None:
        if self._dead is None:
            self.actor.command.remote(msg)

    def poll(self, timeout: float) -> list[worker.Message]:
        if self._dead is not None:
            return [("died", self._dead)]
        try:
            messages = ray.get(self.actor.poll.remote(timeout), timeout=timeout + POLL_TIMEOUT_S)
            self._unavailable_since = None
            return messages
        except ActorUnavailableError:   # the connection dropped: the actor may answer again, or its node be dead
            if self._node_lost():
                self._dead = NODE_LOST
            else:
                since = self._unavailable_since = self._unavailable_since or time.monotonic()
                if time.monotonic() - since < POLL_TIMEOUT_S:
                    time.sleep(UNAVAILABLE_RETRY_S)
                    return []
                self._dead = SILENT
        except RayActorError as e:
            self._dead = NODE_LOST if self._node_lost(e) else (
                f"the Ray worker running this job died ({str(e).splitlines()[0][:160]}); checkpoints saved before "
                "that are kept")
        except GetTimeoutError:
            self._dead = SILENT
        except RayError as e:
            self._dead = f"the Ray cluster failed this job ({type(e).__name__}); checkpoints saved before that are kept"
        return [("died", self._dead)]

    def _node_lost(self, error: RayActorError | None = None) -> bool:
        """Whether the node that held this actor has left the cluster: Ray's error says so, or the cluster's node
        list shows it dead. False when the actor died before it said where it ran."""
        if error is not None and "node has died" in str(error):
            return True
        try:
            node = ray.get(self._node, timeout=POLL_TIMEOUT_S)
            return not any(n["NodeID"] == node and n["Alive"] for n in ray.nodes())
        except RayError:
            return False

    def kill(self) -> None:
        kill(self.actor)


def kill(actor) -> None:
    try:
        ray.kill(actor, no_restart=True)
    except RayError:
        pass


class Driver:
    """Starts each job on an actor (a kept one of its size, else a new one) and relays its messages to the web
    server."""

    def __init__(self, conn, address: str):
        self.conn = conn
        self.address = address
        self.gpus = ray.cluster_resources().get("GPU", 0) > 0
        self.handles: dict[str, RayHandle] = {}
        self._idle: list[Slot] = []
        self._idle_lock = threading.Lock()
        self._send_lock = threading.Lock()

    def send(self, msg: tuple) -> None:
        with self._send_lock:
            self.conn.send(msg)

    def _slot(self, size: tuple[int, int]) -> Slot:
        """A kept actor of this size on a live node, else a new one. With none of this size kept, the kept ones are
        let go first, so their CPUs are free for the new one."""
        with self._idle_lock:
            pick = [s for s in self._idle if s.size == size][:1]
            gone = [] if pick else self._idle
            self._idle = [s for s in self._idle if s not in pick + gone]
        for slot in gone:
            kill(slot.actor)
        for slot in pick:
            try:
                if ray.get(slot.node, timeout=POLL_TIMEOUT_S) in {n["NodeID"] for n in ray.nodes() if n["Alive"]}:
                    return slot
            except RayError:
                pass
            kill(slot.actor)   # its node has left the cluster
        actor = JobActor.options(num_cpus=size[0], num_gpus=size[1]).remote()
        return Slot(actor, size, actor.node.remote())

    def start(self, job: str, spec: worker.JobSpec) -> None:
        try:
            slot = self._slot((spec.threads, 1 if self.gpus and spec.task != "call" else 0))
            begun = slot.actor.begin.remote(spec)
        except Exception as e:  # noqa: BLE001 - one job fails, the driver goes on
            self.send(("msg", job, [("died", f"the Ray cluster could not start this job ({type(e).__name__}: {e})")]))
            return
        handle = self.handles[job] = RayHandle(slot, begun)
        threading.Thread(target=self._relay, args=(job, handle), daemon=True, name=f"relay-{job}").start()

    def _keep(self, slot: Slot) -> None:
        slot.idle_since = time.monotonic()
        with self._idle_lock:
            self._idle.append(slot)

    def let_go_idle(self) -> None:
        """Kill the actors kept longer than IDLE_KEEP_S without a job: their CPUs go back to the cluster."""
        while True:
            time.sleep(IDLE_KEEP_S / 4)
            now = time.monotonic()
            with self._idle_lock:
                old = [s for s in self._idle if now - s.idle_since > IDLE_KEEP_S]
                self._idle = [s for s in self._idle if s not in old]
            for slot in old:
                kill(slot.actor)

    def _relay(self, job: str, handle: RayHandle) -> None:
        why = handle.started()
        if why is not None:
            with contextlib.suppress(OSError, EOFError):
                self.send(("msg", job, [("died", why)]))
            return
        while self.handles.get(job) is handle:
            messages = handle.poll(ACTOR_POLL_S)
            ended = any(m[0] == "exit" for m in messages)
            if ended and self.handles.pop(job, None) is handle:   # before the web server hears it and says "kill"
                self._keep(handle.slot)   # ended cleanly: its actor takes the next job of its size
            try:
                if messages:
                    self.send(("msg", job, messages))
            except (OSError, EOFError):
                return   # the web server has gone: serve() ends and kills the actors
            if ended or any(m[0] == "died" for m in messages):
                return

    def cpus(self) -> int:
        """CPUs of the cluster's live nodes now (the head's 0 included)."""
        return int(sum(n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"]))

    def watch_cluster(self, cpus: int) -> None:
        """Say ("cluster", cpus) whenever the cluster's CPUs change: the app's queue runs as many jobs as it has."""
        while True:
            time.sleep(CLUSTER_EVERY_S)
            try:
                now = self.cpus()
            except RayError:
                continue   # the head may be going: watch_head says so
            if now != cpus:
                cpus = now
                with contextlib.suppress(OSError, EOFError):
                    self.send(("cluster", cpus))

    def watch_head(self) -> None:
        """Say "lost" and end this process when the head's address stops answering (Ray would end it anyway, a
        minute later, and the web server should not keep sending jobs to a dead cluster that long)."""
        misses = 0
        while True:
            time.sleep(HEALTH_EVERY_S)
            why = unreachable(self.address)
            misses = misses + 1 if why is not None else 0
            if misses >= HEALTH_MISSES:
                try:
                    self.send(("lost", f"the Ray head at {self.address} stopped answering"))
                finally:
                    os._exit(0)

    def serve(self, cpus: int) -> None:
        """Commands until the web server goes away; then every actor of this driver is killed."""
        threading.Thread(target=self.watch_head, daemon=True, name="watch-head").start()
        threading.Thread(target=self.watch_cluster, args=(cpus,), daemon=True, name="watch-cluster").start()
        threading.Thread(target=self.let_go_idle, daemon=True, name="let-go-idle").start()
        while True:
            try:
                name, job, *args = self.conn.recv()
            except (EOFError, OSError):
                break
            if name == "start":
                self.start(job, args[0])
            elif name == "send" and (handle := self.handles.get(job)) is not None:
                handle.send(args[0])
            elif name == "kill" and (handle := self.handles.pop(job, None)) is not None:
                handle.kill()
        for handle in list(self.handles.values()):
            handle.kill()
        with self._idle_lock:
            idle, self._idle = self._idle, []
        for slot in idle:
            kill(slot.actor)


def main(fd: int) -> None:
    from multiprocessing.connection import Connection

    from .local import Channel

    conn = Channel(Connection(fd))
    try:
        address = connect(os.environ.get("RAY_ADDRESS", ""))
    except Refused as e:
        with contextlib.suppress(OSError, EOFError):   # the web server may have gone meanwhile
            conn.send(("refused", str(e)))
        return
    driver = Driver(conn, address)
    cpus = driver.cpus()
    try:
        conn.send(("ready", address, cpus))
    except (OSError, EOFError):
        return
    driver.serve(cpus)


if __name__ == "__main__":
    main(int(sys.argv[1]))
