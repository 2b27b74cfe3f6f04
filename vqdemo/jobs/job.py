"""One job of the class queue: its state machine, the controls a page may send, and the copies pages read.

A job's worker only sends messages; the pump (`pump.py`) hands its events to `Job._on_event` here, so a page reading
`Job.view()` gets a consistent copy taken under the job's lock. Controls (pause, single step, stop, live beta / lr /
K) are checked here, then become messages to the worker.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import app_limits, knobs, run_store
from ..data import DataConfig
from ..models import ModelConfig
from ..trainer import TrainConfig
from .worker import JobSpec

if TYPE_CHECKING:
    from .jobqueue import JobQueue

ACTIVE = ("queued", "running", "paused", "stopping")
FINISHED = ("done", "stopped", "failed")
PAUSED_REASON = "paused: press play to go on, or step one batch at a time"


class JobError(ValueError):
    """A request the queue refuses (limits, bad knob values, wrong state); the message says what to do."""


@dataclass
class JobView:
    """A copy of a job's state at one moment, safe to read and keep on a page."""

    id: str
    owner: str
    title: str
    teacher: bool                # started in the teacher's lane
    task: str                    # train | prior | call
    kind: str                    # the model kind for train jobs (vq | rq | vae); the task otherwise
    run_dir: Path | None
    state: str                   # queued | running | paused | stopping | done | stopped | failed
    reason: str
    place: int | None            # 1-based place in the queue while queued
    wait_s: float | None         # rough wait before it starts, while queued
    step: int
    paused_at: int | None        # the step where the loop is holding (None while it trains)
    elapsed: float               # training seconds (pauses not counted)
    budget_s: float              # the job never trains longer than this
    budget_steps: int | None
    knobs: dict[str, float]      # beta, lr, k as the loop last applied them
    pending: dict[str, float]    # changes asked for but not applied yet (e.g. while paused)
    train: list[dict]            # train rows every log_every steps, the last `history` of them
    val: list[dict]              # validation rows
    changes: list[dict]          # {"step", beta/lr/k} each time a live change was applied
    snapshot: dict | None        # {"step", "x", "x_hat", "codes", "usage"} CPU tensors, "upkeep" (read-only)
    latest: dict                 # the last train event (every step)
    model_cfg: ModelConfig | None
    data_cfg: DataConfig | None
    train_cfg: TrainConfig
    normalize_recon: bool
    created: float
    version: int                 # grows with every event: (id, version) names what a figure was drawn from

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    @property
    def best_psnr(self) -> float | None:
        values = [r["psnr"] for r in self.val if isinstance(r.get("psnr"), float) and math.isfinite(r["psnr"])]
        return max(values) if values else None


@dataclass
class Interrupted:
    """A run folder left queued / running / paused by a server that stopped."""

    path: Path
    title: str
    owner: str
    was: str          # the state it was in
    step: int
    has_weights: bool

    @property
    def id(self) -> str:
        return self.path.name


def retitle(title: str, changes: dict[str, float]) -> str:
    """A run's title after a live change says the K and beta it has now (where the title names them)."""
    if "k" in changes:
        title, n = re.subn(r"\bK=\d+", f"K={int(changes['k'])}", title)
        title = title if n else f"{title} (K={int(changes['k'])})"
    if "beta" in changes:
        title = re.sub(r"\bbeta=[0-9.eE+-]+", f"beta={changes['beta']:g}", title)
    return title

class Job:
    """One job in the queue. Public reads return copies; controls are safe from any thread."""

    def __init__(self, queue: JobQueue, spec: JobSpec, *, owner: str, address: str | None, title: str,
                 run_dir: Path | None, store_dir: Path | None, model_cfg: ModelConfig | None = None,
                 data_cfg: DataConfig | None = None, train_cfg: TrainConfig | None = None,
                 normalize_recon: bool = False, key: Any = None, teacher: bool = False):
        self.id = run_dir.name if run_dir is not None else f"{spec.task}-{os.urandom(4).hex()}"
        self.spec = spec
        self.task = spec.task
        self.owner = owner
        self.address = address
        self.teacher = teacher
        self.title = title
        self.key = key                       # what the job computes, for prior and call jobs
        self.kind = model_cfg.kind if model_cfg is not None else spec.task
        self.run_dir = run_dir
        self.store_dir = store_dir           # where its files go (a prior's folder is not its model's)
        self.model_cfg = model_cfg
        self.data_cfg = data_cfg
        self.train_cfg = train_cfg or TrainConfig(seconds=float(spec.args.get("seconds") or 0) or None)
        self.normalize_recon = normalize_recon
        self.created = time.time()
        self.result: Any = None
        self._queue = queue
        self._lock = threading.Lock()
        self._handle = None
        self._early: list[tuple] = []        # commands given before the worker started
        self._state = "queued"
        self._reason = "waiting for a free worker"
        self._place: int | None = None
        self._step = 0
        self._paused_at: int | None = None
        self._elapsed = 0.0
        self._version = 0
        self._train: deque[dict] = deque(maxlen=queue.history)
        self._val: deque[dict] = deque(maxlen=queue.history)
        self._changes: list[dict] = []
        self._snapshot: dict | None = None
        self._latest: dict = {}
        vq = model_cfg.vq if model_cfg is not None else None
        self._knobs = {"lr": self.train_cfg.lr} | ({"beta": vq.beta} if vq and self.kind in ("vq", "rq") else {}) | (
            {"k": vq.k} if self.kind == "vq" else {})
        self._pending: dict[str, float] = {}
        self._paused_since: float | None = None
        self._stop_reason: str | None = None

    # ---- reads (copies) -------------------------------------------------------------------------------

    @property
    def state(self) -> str:
        with self._lock:
            return self._state

    @property
    def step_count(self) -> int:
        with self._lock:
            return self._step

    @property
    def version(self) -> int:
        with self._lock:
            return self._version

    def view(self, light: bool = False) -> JobView:
        """A copy of the job's state; `light` leaves out the training rows and snapshot and shares the job's configs
        instead of copying them (tables of a lecture hall's jobs, redrawn every few seconds): read those, never
        change them."""
        wait_s = self._queue.wait_estimate(self)  # before taking our lock: the queue lock always comes first
        with self._lock:
            return JobView(
                id=self.id, owner=self.owner, title=self.title, teacher=self.teacher, task=self.task, kind=self.kind,
                run_dir=self.run_dir,
                state=self._state, reason=self._reason, place=self._place, wait_s=wait_s,
                step=self._step, paused_at=self._paused_at, elapsed=self._elapsed,
                budget_s=self.train_cfg.seconds or 0.0,
                budget_steps=self.train_cfg.steps, knobs=dict(self._knobs), pending=dict(self._pending),
                train=[] if light else [dict(r) for r in self._train], val=[dict(r) for r in self._val],
                changes=[dict(c) for c in self._changes],
                snapshot=dict(self._snapshot) if self._snapshot and not light else None, latest=dict(self._latest),
                model_cfg=self.model_cfg if light else copy.deepcopy(self.model_cfg), data_cfg=self.data_cfg,
                train_cfg=self.train_cfg if light else dataclasses.replace(self.train_cfg),
                normalize_recon=self.normalize_recon, created=self.created, version=self._version,
            )

    def _remaining_s(self) -> float:
        """Training seconds left: the time budget, or the step budget at the speed so far if that ends sooner."""
        left = max(0.0, (self.train_cfg.seconds or 0.0) - self._elapsed)
        if self.train_cfg.steps and self._step and self._elapsed > 0:
            left = min(left, (self.train_cfg.steps - self._step) * self._elapsed / self._step)
        return left

    # ---- controls: messages to the worker --------------------------------------------------------------

    def check_control(self, owner: str, teacher: bool = False) -> None:
        """Only the student who started a job (or the teacher) may control it; pages call this before any control.
        `owner` is the id of a session that holds its browser's secret, never one read from a URL."""
        if owner != self.owner and not teacher:
            raise JobError("this run is not yours: only the student who started it, or the teacher, can control it")

    def _command(self, *msg: Any) -> None:
        """Send a command now, or when the worker starts (caller holds self._lock)."""
        if self._handle is not None:
            self._handle.send(msg)
        else:
            self._early.append(msg)

    def pause(self) -> None:
        with self._lock:
            if self._state == "queued":
                raise JobError("a queued run cannot be paused; stop it to leave the queue")
            if self._state != "running":
                return
            self._command("pause")
            self._state, self._reason = "paused", PAUSED_REASON
            self._paused_since = time.monotonic()

    def resume(self) -> None:
        with self._lock:
            if self._state != "paused":
                return
            self._command("resume")
            self._state, self._reason = "running", "training"
            self._paused_since = None

    def step(self, n: int = 1) -> None:
        """Train exactly n more steps, then stay paused (pauses a running job first)."""
        if not (isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= 10_000):
            raise JobError(f"step count must be an integer in [1, 10000], got {n!r}")
        self.pause()
        with self._lock:
            if self._state == "paused":
                self._command("step", n)

    def stop(self, reason: str | None = None) -> None:
        """Stop (the best and last checkpoints stay); a queued job just leaves the queue. The state says
        "stopping" at once and "stopped" when the worker has saved its last checkpoint."""
        if self._queue.remove_queued(self):
            return
        with self._lock:
            if self._state in FINISHED:
                return
            self._stop_reason = reason
            self._command("stop")
            self._state, self._reason = "stopping", "stopping: saving the last checkpoint"
            self._paused_since = None

    def set(self, **changes: float) -> None:
        """Live knobs: beta (VQ/RQ), lr (all), k (VQ only: the codebook is resized). Applied before the next step."""
        if self.task != "train":
            raise JobError("only training runs have live knobs")
        try:
            clean = knobs.check(self.kind, changes, k_max=app_limits.MAX_K if self._queue.app_limits else None)
        except ValueError as e:
            raise JobError(str(e)) from None
        with self._lock:
            if self._state in FINISHED or self._state == "stopping":
                raise JobError(f"this run has ended ({self._state}); start a new run")
            self._pending.update(clean)
            self._command("set", clean)

    # ---- the app side of a running job: messages from the worker ---------------------------------------

    def _started(self, handle) -> None:
        with self._lock:
            self._handle, self._place = handle, None
            if self._state == "queued":
                self._state, self._reason = "running", "loading data and building the model"
            for msg in self._early:
                handle.send(msg)
            self._early.clear()

    def _on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        with self._lock:
            self._version += 1
            step = int(event.get("step", self._step))
            self._step = step
            if "time" in event:
                self._elapsed = float(event["time"])
            if kind == "train":
                self._paused_at = None
                self._latest = dict(event)
                if self._state == "running":
                    self._reason = "training"
                if step % self.train_cfg.log_every == 0 or step == 1:
                    self._train.append(dict(event))
            elif kind == "val":
                self._val.append(dict(event))
            elif kind == "snapshot":
                self._snapshot = {k: event.get(k) for k in ("step", "x", "x_hat", "codes", "usage", "upkeep")}
            elif kind == "paused":
                self._paused_at = step
                if self._state == "running":
                    self._state, self._paused_since, self._reason = "paused", time.monotonic(), PAUSED_REASON
            elif kind == "changed":
                applied = {k: v for k, v in event.items() if k in ("beta", "lr", "k")}
                self._knobs.update(applied)
                for k in applied:
                    self._pending.pop(k, None)
                self._changes.append({"step": step, **applied})
                self.title = retitle(self.title, applied)
            elif kind == "failed":
                self._reason = str(event.get("reason", "training failed"))

    def _finish(self, state: str, reason: str) -> None:
        with self._lock:
            if state == "stopped" and self._stop_reason:
                reason = self._stop_reason
        if self.task != "call":
            reason = self._finish_files(state, reason)  # files first: a finished state means its files are final
        with self._lock:
            self._state, self._reason, self._paused_since, self._paused_at = state, reason, None, None
            self._version += 1
            self._handle = None

    def _finish_files(self, state: str, reason: str) -> str:
        """The final state into status.json; config.json too if the loop never wrote one (data failed to load)."""
        config = {"kind": self.kind} | ({"model": self.model_cfg.to_dict(), "data": dataclasses.asdict(self.data_cfg)}
                                        if self.model_cfg is not None else {})
        if self.task == "train":
            config.update(title=self.title, owner=self.owner, job=self.id)
        if not run_store.RunStore(self.store_dir).finish(state, reason, self.step_count, config):
            return f"{reason} (its files will say so once the disk has space again)"
        return reason
