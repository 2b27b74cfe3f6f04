"""Background work for a whole class on one server: a FIFO queue that runs a few jobs at a time, out of the web
server's process.

One `JobQueue` is shared by every browser session (the app holds it in `st.cache_resource`), so its state sits
behind locks. A job is a task for `worker.py` (train an autoencoder, train a prior over codes, or a long
computation such as UMAP) run by a backend: `local` (a worker process per job on this machine, the default) or
`ray` (a Ray actor anywhere on a cluster, `VQDEMO_BACKEND=ray`). Either way the worker only sends messages; one
pump thread per running job here applies them: events into the job's bounded copy of what pages need (loss rows,
validation rows, the latest snapshot), store calls into the run folder through `runs.RunStore`. Pages only ever
read copies (`Job.view()`); controls (pause, single step, stop, live beta / lr / K) become messages to the worker.
Nothing here imports streamlit.

A server restart loses the live jobs but not their folders: a new queue finds the runs whose status.json still
says queued / running / paused, marks them "interrupted" and lists them; the ones that saved weights still load.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import math
import os
import re
import shutil
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import fit, runs
from ..data import DataConfig
from ..models import ModelConfig
from ..quantize import QuantizerConfig
from ..trainer import TrainConfig, check_lr
from . import limits
from .worker import JobSpec

ACTIVE = ("queued", "running", "paused", "stopping")
FINISHED = ("done", "stopped", "failed")
LIVE_STATES_ON_DISK = ("queued", "running", "paused")
MAX_PINNED_SWEEPS = 16   # teachers' sweeps remembered, the oldest forgotten (2,000 students each fit sweeps.json)
MAX_SWEEP_OWNERS = 2000  # students remembered per pinned sweep; later ones get a cell from their id's hash
SWEEPS_FILE = "sweeps.json"
POLL_S = 0.1            # how often a pump thread looks for a worker's messages
PAUSED_REASON = "paused: press play to go on, or step one batch at a time"


class JobError(ValueError):
    """A request the queue refuses (limits, bad knob values, wrong state); the message says what to do."""


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


def default_max_running() -> int:
    """How many jobs run at once: env VQDEMO_MAX_JOBS, else half the cores (at least 1)."""
    return _env_int("VQDEMO_MAX_JOBS", max(1, cpu_count() // 2), 1, 64)


def default_per_address() -> int:
    """Runs one network address may have queued or training: env VQDEMO_JOBS_PER_ADDRESS (0: no limit), else 12.

    A student is a browser, and a script can be any number of browsers; an address it cannot multiply so cheaply.
    Students behind one shared address (one NAT for the whole room) need the limit raised or off."""
    return _env_int("VQDEMO_JOBS_PER_ADDRESS", 12, 0, 10_000)


def make_backend(name: str | None = None):
    """The backend named by `name` or env VQDEMO_BACKEND: "local" (default), "ray" or "thread" (tests)."""
    name = (name or os.environ.get("VQDEMO_BACKEND") or "local").strip().lower()
    if name == "local":
        from .local import LocalBackend

        return LocalBackend()
    if name == "thread":
        from .local import ThreadBackend

        return ThreadBackend()
    if name == "ray":
        from .ray_backend import RayBackend

        return RayBackend()
    raise JobError(f"unknown job backend {name!r}: use local or ray")


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
        """A copy of the job's state; `light` leaves out the training rows and snapshot (tables of many jobs)."""
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
                model_cfg=copy.deepcopy(self.model_cfg), data_cfg=self.data_cfg,
                train_cfg=dataclasses.replace(self.train_cfg), normalize_recon=self.normalize_recon,
                created=self.created, version=self._version,
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
        clean: dict[str, float] = {}
        for name, value in changes.items():
            if name == "lr":
                try:
                    check_lr(value)
                except ValueError as e:
                    raise JobError(str(e)) from None
                clean["lr"] = float(value)
            elif name == "beta":
                if self.kind not in ("vq", "rq"):
                    raise JobError(f"a {self.kind.upper()} has no commitment weight beta; "
                                   "start a VQ or RQ run to try it")
                if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                        and 0 <= value <= 100):
                    raise JobError(f"beta must be a finite number in [0, 100], got {value!r}")
                clean["beta"] = float(value)
            elif name == "k":
                if self.kind != "vq":
                    raise JobError("K changes live only for VQ models; RQ has one K per depth and a VAE none. "
                                   "Start a new run")
                try:
                    QuantizerConfig(**{**self.model_cfg.vq.__dict__, "k": value}).validate()
                    if self._queue.app_limits:
                        fit.check_app_settings("vq", 1, k=int(value), dim=self.model_cfg.vq.dim)
                except ValueError as e:
                    raise JobError(str(e)) from None
                clean["k"] = int(value)
            else:
                raise JobError(f"{name!r} cannot change during a run (only beta, lr and k); start a new run")
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
        folder = self.store_dir
        try:
            meta = runs.read_json(folder / runs.CONFIG)
        except runs.CheckpointError:
            meta = {"kind": self.kind} | ({"model": self.model_cfg.to_dict(), "data": dataclasses.asdict(self.data_cfg)}
                                          if self.model_cfg is not None else {})
        if self.task == "train":
            meta.update(title=self.title, owner=self.owner, job=self.id)
        try:
            status = runs.read_json(folder / runs.STATUS)
        except runs.CheckpointError:
            status = {}
        status.update(state=state, reason=reason, updated=time.time())
        status.setdefault("step", self.step_count)
        if not runs.write_final({folder / runs.CONFIG: meta, folder / runs.STATUS: status}):
            return f"{reason} (its files will say so once the disk has space again)"
        return reason


class _Pump:
    """Applies one running job's messages: events to the Job, store calls to its run folder."""

    def __init__(self, job: Job):
        self.job = job
        meta = {"title": job.title, "owner": job.owner, "job": job.id} if job.task == "train" else {}
        self.store = runs.RunStore(job.store_dir, meta) if job.store_dir is not None else None
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


class JobQueue:
    """FIFO queue of jobs shared by every session; at most `max_running` run at once, each in a worker."""

    def __init__(self, max_running: int | None = None, runs_dir: Path | str | None = None, *,
                 per_owner: int = 3, per_address: int | None = None, max_queued: int | None = None,
                 max_seconds: float = 600.0, threads: int | None = None, history: int = 2000,
                 keep_finished: int = 200, pause_limit_s: float = 600.0, backend=None, max_results: int = 16,
                 lock: bool = False, app_limits: bool = False, teacher_slots: int = 2):
        self.max_running = max_running or default_max_running()
        if self.max_running < 1:
            raise ValueError("max_running must be at least 1")
        self.runs_dir = Path(runs_dir) if runs_dir is not None else runs.default_runs_dir()
        self.per_owner = per_owner
        self.per_address = default_per_address() if per_address is None else per_address
        self.teacher_slots = teacher_slots   # workers kept for the teacher's runs: they never wait behind students
        self.max_queued = max_queued or limits.waiting_room(limits.class_size(), per_owner, self.max_running,
                                                            2 * teacher_slots, max_results)
        self.max_seconds = max_seconds
        self.threads = threads or max(1, cpu_count() // self.max_running)
        self.auto_threads = threads is None   # then a small model trains on one thread (fit.train_threads)
        self.history = history
        self.keep_finished = keep_finished
        self.pause_limit_s = pause_limit_s
        self.max_results = max_results
        self.app_limits = app_limits   # the app's queue: every size held to its widgets' bounds (fit.APP_MAX_*)
        # A server holds its runs folder (lock=True): a second server on it would mark this one's live runs
        # "interrupted" and count students' runs twice. runs.RunsDirBusy says which process holds it.
        self._runs_lock = runs.lock_runs_dir(self.runs_dir) if lock else None
        self.backend = backend if backend is not None else make_backend()
        self._lock = threading.RLock()
        self._jobs: dict[str, Job] = {}
        self._pending: deque[Job] = deque()
        self._running: set[str] = set()
        self._keyed: OrderedDict[Any, Job] = OrderedDict()   # prior and call jobs by what they compute
        self._sweeps: OrderedDict[str, dict] = self._read_sweeps()
        self._demo: list[str] = []
        self._interrupted = self._mark_interrupted()

    # ---- submit and schedule -------------------------------------------------------------------------

    def check_limits(self, owner: str, address: str | None = None, teacher: bool = False) -> None:
        """Raise JobError if this student may not queue another run now: per student, per network address (a
        script that makes up students still has one address) and per class; the teacher's lane has its own bound.
        Pages call it before costly preparation."""
        with self._lock:
            self._check_limits(owner, address, teacher)

    def _check_limits(self, owner: str, address: str | None, teacher: bool = False) -> None:
        active = [j for j in self._jobs.values() if j.state in ACTIVE and j.task != "call"]
        if teacher:
            lane = [j for j in active if j.teacher]
            if len(lane) >= 2 * self.teacher_slots:
                raise JobError(f"the teacher's lane already holds {len(lane)} runs; stop one first")
            return
        mine = [j for j in active if j.owner == owner]
        if len(mine) >= self.per_owner:
            raise JobError(f"you already have {len(mine)} runs queued or training (the limit is {self.per_owner} "
                           "per student); stop one or wait for one to finish")
        if address and self.per_address:
            same = [j for j in active if j.address == address]
            if len(same) >= self.per_address:
                raise JobError(f"{len(same)} runs from your network address are queued or training (the limit is "
                               f"{self.per_address}); wait for one to finish")
        if len(self._pending) >= self.max_queued:
            raise JobError(f"the class queue is full ({len(self._pending)} runs waiting); try again when some finish")

    def submit(self, owner: str, title: str, model_cfg: ModelConfig, data_cfg: DataConfig, train_cfg: TrainConfig,
               normalize_recon: bool = False, address: str | None = None, run_dir: Path | None = None,
               teacher: bool = False) -> Job:
        """Queue a training run (it starts at once when a worker is free). Raises ValueError/JobError with a clear
        message. `address` is the student's network address (per-address limit); `teacher` puts it in the teacher's
        lane (its own workers, ahead of every student's run); `run_dir` is a folder of the caller's choosing (the
        CLI's --out), else a new one under the runs folder."""
        owner = str(owner).strip()[:64]
        if not owner:
            raise JobError("a job needs an owner id")
        title = " ".join(str(title).split())[:80] or f"{model_cfg.kind} on {data_cfg.name}"
        model_cfg = copy.deepcopy(model_cfg)
        model_cfg.validate()
        if self.app_limits:   # a restart, a sweep cell or a typed K per depth: the same bounds as the widgets
            fit.check_app_limits(model_cfg, train_cfg.batch_size)
        seconds = min(train_cfg.seconds or self.max_seconds, self.max_seconds)
        threads = (fit.train_threads(model_cfg, train_cfg.batch_size, self.threads) if self.auto_threads
                   else self.threads)
        train_cfg = dataclasses.replace(train_cfg, seconds=seconds, threads=threads)
        train_cfg.validate()
        self._reap()
        with self._lock:
            self._check_limits(owner, address, teacher)
            try:
                if run_dir is not None:
                    run_dir.mkdir(parents=True, exist_ok=True)
                else:
                    run_dir = runs.new_run_dir(self.runs_dir)
                if data_cfg.name == "folder" and data_cfg.path and Path(data_cfg.path).is_file():
                    # the run keeps its own link to an uploaded zip: clearing <runs>/uploads/ leaves it loadable
                    data_cfg = dataclasses.replace(data_cfg, path=str(fit.keep_data(Path(data_cfg.path), run_dir)))
            except OSError as e:   # read-only or full runs folder: a message for the page, not a crash
                raise JobError(f"could not create a run folder in {self.runs_dir} ({e.strerror or e}); the disk may "
                               "be full or read-only") from None
            spec = JobSpec("train", threads, {
                "model": model_cfg, "data": data_cfg, "train": train_cfg, "normalize_recon": normalize_recon,
                "command": f"app job for {owner}", "meta": {"title": title, "owner": owner, "job": run_dir.name}})
            job = Job(self, spec, owner=owner, address=address, title=title, run_dir=run_dir, store_dir=run_dir,
                      model_cfg=model_cfg, data_cfg=data_cfg, train_cfg=train_cfg, normalize_recon=normalize_recon,
                      teacher=teacher)
            try:
                runs.write_json(run_dir / runs.JOB, {"owner": owner, "title": title, "created": job.created,
                                                     "teacher": teacher})
                runs.write_json(run_dir / runs.CONFIG, {
                    "kind": model_cfg.kind, "title": title, "owner": owner, "job": job.id,
                    "model": model_cfg.to_dict(), "data": dataclasses.asdict(data_cfg),
                    "train": dataclasses.asdict(train_cfg), "command": f"app job for {owner}"})
                runs.write_json(run_dir / runs.STATUS, {"state": "queued", "reason": "waiting", "step": 0,
                                                          "updated": time.time()})
            except OSError as e:
                shutil.rmtree(run_dir, ignore_errors=True)
                raise JobError(f"could not write the run folder {run_dir} ({e}); "
                               "the disk may be full or read-only") from None
            self._enqueue(job)
        return job

    def submit_prior(self, owner: str, model_dir: Path | str, out_dir: Path | str, seconds: float = 60.0,
                     seed: int = 0, address: str | None = None, teacher: bool = False) -> Job:
        """Queue training a prior over `model_dir`'s codes, written to `out_dir`; the same prior already queued or
        training is returned instead of a second one."""
        model_dir, out_dir = Path(model_dir), Path(out_dir)
        key = ("prior", str(out_dir.resolve()))
        with self._lock:
            same = self._keyed.get(key)
            if same is not None and same.state in ACTIVE:
                return same
            self._check_limits(owner, address, teacher)
            files = {}
            for name in (runs.WEIGHTS, runs.CONFIG):
                path = model_dir / name
                if path.is_file():
                    files[name] = path.read_bytes()
            if runs.WEIGHTS not in files:
                raise JobError(f"{model_dir.name} has no trained weights to fit a prior to")
            seconds = min(float(seconds), self.max_seconds)
            spec = JobSpec("prior", self.threads, {"files": files, "seconds": seconds, "seed": int(seed)})
            job = Job(self, spec, owner=owner, address=address, title=f"prior for {model_dir.name}", run_dir=None,
                      store_dir=out_dir, train_cfg=TrainConfig(seconds=seconds, seed=int(seed), val_every=100), key=key,
                      teacher=teacher)
            self._keep(key, job)
            self._enqueue(job)
        return job

    def compute(self, key: Any, fn: str, *args: Any, **kwargs: Any) -> Job:
        """Queue a named computation (see worker.CALLS) once per key; later calls with the same key return the same
        job, its result kept. It takes its place in the queue like any job and counts toward the class limit: pages
        can ask for many (one UMAP per model and depth), and a waiting student's run must not fall behind them."""
        with self._lock:
            job = self._keyed.get(key)
            if job is not None:
                self._keyed.move_to_end(key)
                return job
            if len(self._pending) >= self.max_queued:
                raise JobError(f"the class queue is full ({len(self._pending)} jobs waiting); try again when some "
                               "finish")
            spec = JobSpec("call", 1, {"fn": fn, "args": args, "kwargs": kwargs})
            job = Job(self, spec, owner="server", address=None, title=fn, run_dir=None, store_dir=None,
                      train_cfg=TrainConfig(seconds=min(limits.CALL_SECONDS, self.max_seconds)), key=key)
            self._keep(key, job)
            self._enqueue(job)
        return job

    def _keep(self, key: Any, job: Job) -> None:
        self._keyed[key] = job
        while len(self._keyed) > self.max_results:
            old_key, old = next(iter(self._keyed.items()))
            if old.state in ACTIVE:
                break
            del self._keyed[old_key]

    def keyed(self, key: Any) -> Job | None:
        with self._lock:
            return self._keyed.get(key)

    def _enqueue(self, job: Job) -> None:
        with self._lock:
            self._jobs[job.id] = job
            if job.teacher:   # behind the teacher's earlier runs, ahead of every student's
                self._pending.insert(sum(j.teacher for j in self._pending), job)
            else:
                self._pending.append(job)
            self._renumber()
            self._schedule()
            self._forget_old()

    def _schedule(self) -> None:
        """Start what may start: the teacher's runs on their own `teacher_slots` workers, everything else on
        `max_running`, each in queue order."""
        with self._lock:
            busy = {True: 0, False: 0}
            for job_id in self._running:
                busy[self._jobs[job_id].teacher] += 1
            room = {True: self.teacher_slots, False: self.max_running}
            for job in list(self._pending):
                if busy[job.teacher] >= room[job.teacher]:
                    continue
                self._pending.remove(job)
                self._running.add(job.id)
                busy[job.teacher] += 1
                with job._lock:
                    job._place, job._reason = None, "starting a worker"
                threading.Thread(target=self._work, args=(job,), name=f"vqdemo-pump-{job.id}", daemon=True).start()
            self._renumber()

    def _work(self, job: Job) -> None:
        try:
            state, reason = self._pump(job)
            job._finish(state, reason)
        finally:
            with self._lock:
                self._running.discard(job.id)
                self._schedule()

    def _pump(self, job: Job) -> tuple[str, str]:
        """Start the job's worker and apply its messages until it exits or dies."""
        try:
            handle = self.backend.start(job.spec)
        except JobError as e:   # e.g. the Ray cluster cannot be reached or must not be used: its message says why
            return "failed", str(e)
        except Exception as e:  # noqa: BLE001 - a backend that cannot start a worker fails the job, not the server
            return "failed", f"could not start a worker ({type(e).__name__}: {e})"
        job._started(handle)
        pump = _Pump(job)
        clock = limits.WallClock(limits.wall_cap_s(job.train_cfg.seconds or self.max_seconds, self.pause_limit_s))
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

    def _renumber(self) -> None:
        for i, job in enumerate(self._pending):
            with job._lock:
                job._place = i + 1

    def remove_queued(self, job: Job) -> bool:
        """Take a job that has not started out of the queue and delete its empty folder. False if it had started."""
        with self._lock:
            if job not in self._pending:
                return False
            self._pending.remove(job)
            self._renumber()
            with job._lock:
                job._state, job._reason, job._place = "stopped", "removed from the queue before it started", None
        if job.run_dir is not None:
            shutil.rmtree(job.run_dir, ignore_errors=True)
        return True

    def wait_estimate(self, job: Job) -> float | None:
        """At most how many seconds until a queued job starts (a run may end early on its step budget)."""
        with self._lock:
            if job not in self._pending:
                return None
            lane = [j for j in self._pending if j.teacher == job.teacher]
            ahead = [j.train_cfg.seconds or 0.0 for j in lane][: lane.index(job)]
            running = [j._remaining_s() for j in self._jobs.values() if j.id in self._running
                       and j.teacher == job.teacher]
        workers = self.teacher_slots if job.teacher else self.max_running
        free_at = sorted(running) + [0.0] * max(0, workers - len(running))
        for seconds in ahead:   # each job ahead takes the worker that frees first
            free_at[0] += seconds
            free_at.sort()
        return free_at[0]

    # ---- sweeps: one link, a different (K, beta) for each student ----------------------------------------

    def pin_sweep(self, sweep: str) -> None:
        """A teacher's sweep: its cells are handed out in turn (every cell used before any repeats), each student's
        kept for good, on disk too, so no later visitor, made-up student or other sweep moves it."""
        with self._lock:
            self._sweeps.setdefault(sweep, {})
            self._sweeps.move_to_end(sweep)
            while len(self._sweeps) > MAX_PINNED_SWEEPS:
                self._sweeps.popitem(last=False)
            self._write_sweeps()

    def pinned(self, sweep: str) -> bool:
        with self._lock:
            return sweep in self._sweeps

    def sweep_cell(self, sweep: str, owner: str, cells: int) -> int:
        """The cell of a sweep this student gets, the same on every visit: in turn for a teacher's (pinned) sweep,
        else a hash of (sweep, student), which depends on nothing else at all."""
        cells = max(1, cells)
        with self._lock:
            given = self._sweeps.get(sweep)
            if given is None or (owner not in given and len(given) >= MAX_SWEEP_OWNERS):
                return int(hashlib.blake2b(f"{sweep}\0{owner}".encode(), digest_size=4).hexdigest(), 16) % cells
            if owner not in given:
                given[owner] = len(given)
                self._write_sweeps()
            return given[owner] % cells

    def _read_sweeps(self) -> OrderedDict[str, dict]:
        try:
            kept = runs.read_json(self.runs_dir / SWEEPS_FILE)
        except runs.CheckpointError:
            return OrderedDict()
        return OrderedDict((str(name), {str(o): c for o, c in given.items() if isinstance(c, int) and c >= 0})
                           for name, given in list(kept.items())[-MAX_PINNED_SWEEPS:] if isinstance(given, dict))

    def _write_sweeps(self) -> None:
        try:
            runs.write_json(self.runs_dir / SWEEPS_FILE, dict(self._sweeps))
        except OSError:
            pass   # a read-only runs folder: the cells hold until the server stops

    # ---- the teacher's demo: a pair of runs everyone can watch ---------------------------------------

    def set_demo(self, job_ids: list[str]) -> None:
        with self._lock:
            self._demo = list(job_ids)

    def demo(self) -> list[Job]:
        """The teacher's latest demo pair (the lesson's collapse contrast), for every student's Train page."""
        with self._lock:
            return [self._jobs[i] for i in self._demo if i in self._jobs]

    # ---- housekeeping --------------------------------------------------------------------------------

    def _reap(self) -> None:
        """Stop a run paused for longer than pause_limit_s while others wait: a paused run holds a worker."""
        with self._lock:
            if not self._pending:
                return
            now = time.monotonic()
            stale = [j for j in self._jobs.values() if j.id in self._running and j._paused_since is not None
                     and now - j._paused_since > self.pause_limit_s]
        for job in stale:
            job.stop(f"stopped after {self.pause_limit_s / 60:.0f} min paused while others waited; "
                     "its checkpoints are kept")

    def _forget_old(self) -> None:
        finished = [j for j in self._jobs.values() if j.state in FINISHED and j.task == "train"]
        for job in finished[: max(0, len(finished) - self.keep_finished)]:
            del self._jobs[job.id]
        for job in [j for j in self._jobs.values() if j.task != "train" and j.state in FINISHED]:
            if job.key not in self._keyed or self._keyed[job.key] is not job:
                del self._jobs[job.id]

    def _mark_interrupted(self) -> list[Interrupted]:
        """Runs a previous server left queued / running / paused: say so on disk and remember them."""
        found = []
        for info in runs.list_runs(self.runs_dir):
            was = info.state
            if was not in LIVE_STATES_ON_DISK and was != "interrupted":
                continue
            try:
                job_meta = runs.read_json(info.path / runs.JOB)
            except runs.CheckpointError:
                job_meta = {}
            step = info.status.get("step", 0)
            step = step if isinstance(step, int) and not isinstance(step, bool) and step >= 0 else 0
            if was != "interrupted":
                kept = "; its last saved checkpoint is kept" if info.has_weights else "; it had saved no weights"
                status = dict(info.status, state="interrupted", was=was, updated=time.time(),
                              reason=f"the server stopped while this run was {was} at step {step}{kept}")
                runs.write_final({info.path / runs.STATUS: status})
            found.append(Interrupted(info.path, str(job_meta.get("title") or info.meta.get("title") or info.id),
                                     str(job_meta.get("owner") or info.meta.get("owner") or ""),
                                     str(info.status.get("was", was)), step, info.has_weights))
        return found

    # ---- reads ---------------------------------------------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        self._reap()
        with self._lock:
            return self._jobs.get(job_id)

    def list_jobs(self, owner: str | None = None, task: str = "train") -> list[Job]:
        """Jobs this server knows, oldest first (all of them, or one owner's), of one task."""
        self._reap()
        with self._lock:
            return [j for j in self._jobs.values() if (owner is None or j.owner == owner) and j.task == task]

    def interrupted(self, owner: str | None = None) -> list[Interrupted]:
        """Runs a previous server left unfinished (found when this queue was made)."""
        return [r for r in self._interrupted if owner is None or r.owner == owner]

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {"running": len(self._running), "queued": len(self._pending), "max_running": self.max_running}

    def close(self) -> None:
        """Stop every job and the backend's spare workers (tests, and a server shutting down)."""
        for job in list(self._jobs.values()):
            job.stop()
        self.backend.close()
