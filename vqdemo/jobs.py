"""Background training jobs for a whole class on one server: a FIFO queue that trains a few at a time.

One `JobQueue` is shared by every browser session (the app holds it in `st.cache_resource`), so all of
its state sits behind locks. Each job trains in its own worker thread through `vqdemo.fit.fit`, which
calls back `on_event` with every step; the job keeps a bounded copy of what the pages need (loss rows,
validation rows, the latest snapshot) and pages only ever read copies (`Job.view()`). Controls (pause,
single step, stop, live beta / lr / K) go through the job's `Control`, which the loop reads between steps.
Nothing here imports streamlit, and no job thread ever touches a page.

A server restart loses the live jobs but not their folders: a new queue finds the runs whose status.json
still says queued / running / paused, marks them "interrupted" and lists them (`interrupted()`); the ones
that saved weights stay loadable.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import shutil
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import fit as fitting
from . import runs
from .data import DataConfig
from .models import ModelConfig
from .quantize import QuantizerConfig
from .train import Control, TrainConfig, check_lr

ACTIVE = ("queued", "running", "paused")
FINISHED = ("done", "stopped", "failed")
LIVE_STATES_ON_DISK = ("queued", "running", "paused")
JOB_FILE = "job.json"   # owner and title, written at submit (config.json is rewritten by the training loop)


class JobError(ValueError):
    """A request the queue refuses (limits, bad knob values, wrong state); the message says what to do."""


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_max_running() -> int:
    """How many jobs train at once: env VQDEMO_MAX_JOBS, else half the cores (at least 1)."""
    fallback = max(1, cpu_count() // 2)
    try:
        return min(64, max(1, int(os.environ.get("VQDEMO_MAX_JOBS", fallback))))
    except ValueError:
        return fallback


@dataclass
class JobView:
    """A copy of a job's state at one moment, safe to read and keep on a page."""

    id: str
    owner: str
    title: str
    kind: str
    run_dir: Path
    state: str                   # queued | running | paused | done | stopped | failed
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
    snapshot: dict | None        # {"step", "x", "x_hat", "codes", "usage"} CPU tensors (read-only)
    latest: dict                 # the last train event (every step)
    model_cfg: ModelConfig
    data_cfg: DataConfig
    train_cfg: TrainConfig
    normalize_recon: bool
    created: float

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


class Job:
    """One training run in the queue. Public reads return copies; controls are safe from any thread."""

    def __init__(self, queue: JobQueue, owner: str, title: str, run_dir: Path, model_cfg: ModelConfig,
                 data_cfg: DataConfig, train_cfg: TrainConfig, normalize_recon: bool, history: int):
        self.id = run_dir.name
        self.owner = owner
        self.title = title
        self.kind = model_cfg.kind
        self.run_dir = run_dir
        self.model_cfg = model_cfg
        self.data_cfg = data_cfg
        self.train_cfg = train_cfg
        self.normalize_recon = normalize_recon
        self.created = time.time()
        self.control = Control()
        self._queue = queue
        self._lock = threading.Lock()
        self._state = "queued"
        self._reason = "waiting for a free trainer"
        self._place: int | None = None
        self._step = 0
        self._paused_at: int | None = None
        self._elapsed = 0.0
        self._train: deque[dict] = deque(maxlen=history)
        self._val: deque[dict] = deque(maxlen=history)
        self._changes: list[dict] = []
        self._snapshot: dict | None = None
        self._latest: dict = {}
        vq = model_cfg.vq
        self._knobs = {"lr": train_cfg.lr} | ({"beta": vq.beta} if self.kind != "vae" else {}) | (
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

    def view(self) -> JobView:
        wait_s = self._queue.wait_estimate(self)  # before taking our lock: the queue lock always comes first
        with self._lock:
            return JobView(
                id=self.id, owner=self.owner, title=self.title, kind=self.kind, run_dir=self.run_dir,
                state=self._state, reason=self._reason, place=self._place, wait_s=wait_s,
                step=self._step, paused_at=self._paused_at, elapsed=self._elapsed, budget_s=self.train_cfg.seconds or 0.0,
                budget_steps=self.train_cfg.steps, knobs=dict(self._knobs), pending=dict(self._pending),
                train=[dict(r) for r in self._train], val=[dict(r) for r in self._val],
                changes=[dict(c) for c in self._changes],
                snapshot=dict(self._snapshot) if self._snapshot else None, latest=dict(self._latest),
                model_cfg=copy.deepcopy(self.model_cfg), data_cfg=self.data_cfg,
                train_cfg=dataclasses.replace(self.train_cfg), normalize_recon=self.normalize_recon,
                created=self.created,
            )

    def _remaining_s(self) -> float:
        """Training seconds left: the time budget, or the step budget at the speed so far if that ends sooner."""
        left = max(0.0, (self.train_cfg.seconds or 0.0) - self._elapsed)
        if self.train_cfg.steps and self._step and self._elapsed > 0:
            left = min(left, (self.train_cfg.steps - self._step) * self._elapsed / self._step)
        return left

    # ---- controls ------------------------------------------------------------------------------------

    def pause(self) -> None:
        with self._lock:
            if self._state == "queued":
                raise JobError("a queued run cannot be paused; stop it to leave the queue")
            if self._state != "running":
                return
            self.control.pause()
            self._state, self._reason = "paused", "paused: press play to go on, or step one batch at a time"
            self._paused_since = time.monotonic()

    def resume(self) -> None:
        with self._lock:
            if self._state != "paused":
                return
            self.control.resume()
            self._state, self._reason = "running", "training"
            self._paused_since = None

    def step(self, n: int = 1) -> None:
        """Train exactly n more steps, then stay paused (pauses a running job first)."""
        if not (isinstance(n, int) and 1 <= n <= 10_000):
            raise JobError(f"step count must be an integer in [1, 10000], got {n!r}")
        self.pause()
        with self._lock:
            if self._state == "paused":
                self.control.step(n)

    def stop(self, reason: str | None = None) -> None:
        """Stop training (the best and last checkpoints stay); a queued job just leaves the queue."""
        if self._queue.remove_queued(self):
            return
        with self._lock:
            if self._state in FINISHED:
                return
            self._stop_reason = reason
            self.control.stop()

    def set(self, **changes: float) -> None:
        """Live knobs: beta (VQ/RQ), lr (all), k (VQ only: the codebook is resized). Applied before the next step."""
        clean: dict[str, float] = {}
        for name, value in changes.items():
            if name == "lr":
                try:
                    check_lr(value)
                except ValueError as e:
                    raise JobError(str(e)) from None
                clean["lr"] = float(value)
            elif name == "beta":
                if self.kind == "vae":
                    raise JobError("a VAE has no commitment weight beta; its KL weight is fixed for the run")
                if not (isinstance(value, (int, float)) and math.isfinite(value) and 0 <= value <= 100):
                    raise JobError(f"beta must be a finite number in [0, 100], got {value!r}")
                clean["beta"] = float(value)
            elif name == "k":
                if self.kind != "vq":
                    raise JobError("K changes live only for VQ models; RQ has one K per depth and a VAE none. Start a new run")
                try:
                    QuantizerConfig(**{**self.model_cfg.vq.__dict__, "k": value}).validate()
                except ValueError as e:
                    raise JobError(str(e)) from None
                clean["k"] = int(value)
            else:
                raise JobError(f"{name!r} cannot change during a run (only beta, lr and k); start a new run")
        with self._lock:
            if self._state in FINISHED:
                raise JobError(f"this run has ended ({self._state}); start a new run")
            self._pending.update(clean)
            self.control.set(**clean)

    # ---- the worker side -----------------------------------------------------------------------------

    def _on_event(self, event: dict[str, Any]) -> None:
        """Called by the training loop in the worker thread for every event."""
        kind = event.get("type")
        with self._lock:
            step = int(event.get("step", self._step))
            self._step = step
            if "time" in event:
                self._elapsed = float(event["time"])
            if kind == "train":
                self._paused_at = None
                self._latest = dict(event)
                if self._state == "running":
                    self._reason = "training"
                if step % self.train_cfg.log_every == 0:
                    self._train.append(dict(event))
            elif kind == "val":
                self._val.append(dict(event))
            elif kind == "snapshot":
                self._snapshot = {k: event.get(k) for k in ("step", "x", "x_hat", "codes", "usage")}
            elif kind == "paused":
                self._paused_at = step
                if self._state == "running":
                    self._state, self._paused_since = "paused", time.monotonic()
                    self._reason = "paused: press play to go on, or step one batch at a time"
            elif kind == "changed":
                applied = {k: v for k, v in event.items() if k in ("beta", "lr", "k")}
                self._knobs.update(applied)
                for k in applied:
                    self._pending.pop(k, None)
                self._changes.append({"step": step, **applied})
            elif kind == "failed":
                self._reason = str(event.get("reason", "training failed"))

    def _run(self) -> None:
        with self._lock:
            self._state, self._reason, self._place = "running", "loading data and building the model", None
        state, reason = "failed", "training did not finish"
        try:
            _, result = fitting.fit(copy.deepcopy(self.model_cfg), self.data_cfg, self.train_cfg, out_dir=self.run_dir,
                                    normalize_recon=self.normalize_recon, command=f"app job for {self.owner}",
                                    meta={"title": self.title, "owner": self.owner, "job": self.id},
                                    control=self.control, on_event=self._on_event)
            state, reason = result.state, result.reason   # the model's own config changes with live K / beta
        except ValueError as e:   # DataError, ImageError, config errors: the message says what to do
            reason = str(e)
        except OSError as e:      # the runs folder filled up or went read-only mid-run
            reason = (f"could not write to the run folder ({e.strerror or e}); the disk may be full or read-only. "
                      "Checkpoints saved before that are kept")
        except Exception as e:    # noqa: BLE001 - a worker must report, never die silently
            reason = f"{type(e).__name__}: {e}. This is a bug or the machine ran out of memory; try a smaller run"
        with self._lock:
            if state == "stopped" and self._stop_reason:
                reason = self._stop_reason
        reason = self._finish_files(state, reason)  # files first: a finished state means its files are final
        with self._lock:
            self._state, self._reason, self._paused_since, self._paused_at = state, reason, None, None

    def _finish_files(self, state: str, reason: str) -> str:
        """The final state into status.json; config.json too if the loop never wrote one (data failed to load)."""
        try:
            meta = runs.read_json(self.run_dir / "config.json")
        except runs.CheckpointError:
            meta = {"kind": self.kind, "model": self.model_cfg.to_dict(), "data": dataclasses.asdict(self.data_cfg)}
        meta.update(title=self.title, owner=self.owner, job=self.id)
        try:
            status = runs.read_json(self.run_dir / "status.json")
        except runs.CheckpointError:
            status = {}
        status.update(state=state, reason=reason, updated=time.time())
        status.setdefault("step", self.step_count)
        try:
            runs.write_json(self.run_dir / "config.json", meta)
            runs.write_json(self.run_dir / "status.json", status)
        except OSError as e:
            return f"{reason} (and its files could not be updated: {e})"
        return reason


class JobQueue:
    """FIFO queue of training jobs shared by every session; at most `max_running` train at once."""

    def __init__(self, max_running: int | None = None, runs_dir: Path | str | None = None, *,
                 per_owner: int = 3, max_queued: int = 40, max_seconds: float = 600.0, threads: int | None = None,
                 history: int = 2000, keep_finished: int = 200, pause_limit_s: float = 600.0):
        self.max_running = max_running or default_max_running()
        if self.max_running < 1:
            raise ValueError("max_running must be at least 1")
        self.runs_dir = Path(runs_dir) if runs_dir is not None else runs.default_runs_dir()
        self.per_owner = per_owner
        self.max_queued = max_queued
        self.max_seconds = max_seconds
        self.threads = threads or max(1, cpu_count() // self.max_running)
        self.history = history
        self.keep_finished = keep_finished
        self.pause_limit_s = pause_limit_s
        self._lock = threading.RLock()
        self._jobs: dict[str, Job] = {}
        self._pending: deque[Job] = deque()
        self._running: set[str] = set()
        self._interrupted = self._mark_interrupted()

    # ---- submit and schedule -------------------------------------------------------------------------

    def submit(self, owner: str, title: str, model_cfg: ModelConfig, data_cfg: DataConfig, train_cfg: TrainConfig,
               normalize_recon: bool = False) -> Job:
        """Queue a run (it starts at once when a trainer is free). Raises ValueError/JobError with a clear message."""
        owner = str(owner).strip()[:64]
        if not owner:
            raise JobError("a job needs an owner id")
        title = " ".join(str(title).split())[:80] or f"{model_cfg.kind} on {data_cfg.name}"
        model_cfg = copy.deepcopy(model_cfg)
        model_cfg.validate()
        seconds = min(train_cfg.seconds or self.max_seconds, self.max_seconds)
        train_cfg = dataclasses.replace(train_cfg, seconds=seconds, threads=self.threads)
        train_cfg.validate()
        self._reap()
        with self._lock:
            mine = [j for j in self._jobs.values() if j.owner == owner and j.state in ACTIVE]
            if len(mine) >= self.per_owner:
                raise JobError(f"you already have {len(mine)} runs queued or training (the limit is {self.per_owner} "
                               "per student); stop one or wait for one to finish")
            if len(self._pending) >= self.max_queued:
                raise JobError(f"the class queue is full ({len(self._pending)} runs waiting); try again when some finish")
            try:
                run_dir = runs.new_run_dir(self.runs_dir)
            except OSError as e:   # read-only or full runs folder: a message for the page, not a crash
                raise JobError(f"could not create a run folder in {self.runs_dir} ({e.strerror or e}); the disk may "
                               "be full or read-only") from None
            job = Job(self, owner, title, run_dir, model_cfg, data_cfg, train_cfg, normalize_recon, self.history)
            try:
                runs.write_json(run_dir / JOB_FILE, {"owner": owner, "title": title, "created": job.created})
                runs.write_json(run_dir / "config.json", {
                    "kind": model_cfg.kind, "title": title, "owner": owner, "job": job.id,
                    "model": model_cfg.to_dict(), "data": dataclasses.asdict(data_cfg),
                    "train": dataclasses.asdict(train_cfg), "command": f"app job for {owner}"})
                runs.write_json(run_dir / "status.json", {"state": "queued", "reason": "waiting", "step": 0,
                                                          "updated": time.time()})
            except OSError as e:
                shutil.rmtree(run_dir, ignore_errors=True)
                raise JobError(f"could not write the run folder {run_dir} ({e}); the disk may be full or read-only") from None
            self._jobs[job.id] = job
            self._pending.append(job)
            self._renumber()
            self._schedule()
            self._forget_old()
        return job

    def _schedule(self) -> None:
        with self._lock:
            while self._pending and len(self._running) < self.max_running:
                job = self._pending.popleft()
                self._running.add(job.id)
                threading.Thread(target=self._work, args=(job,), name=f"vqdemo-job-{job.id}", daemon=True).start()
            self._renumber()

    def _work(self, job: Job) -> None:
        try:
            job._run()
        finally:
            with self._lock:
                self._running.discard(job.id)
                self._schedule()

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
        shutil.rmtree(job.run_dir, ignore_errors=True)
        return True

    def wait_estimate(self, job: Job) -> float | None:
        """At most how many seconds until a queued job starts (a run may end early on its step budget)."""
        with self._lock:
            if job not in self._pending:
                return None
            ahead = [j.train_cfg.seconds or 0.0 for j in self._pending][: self._pending.index(job)]
            running = [j._remaining_s() for j in self._jobs.values() if j.id in self._running]
        free_at = sorted(running) + [0.0] * (self.max_running - len(running))
        for seconds in ahead:   # each job ahead takes the trainer that frees first
            free_at[0] += seconds
            free_at.sort()
        return free_at[0]

    # ---- housekeeping --------------------------------------------------------------------------------

    def _reap(self) -> None:
        """Stop a run paused for longer than pause_limit_s while others wait: a paused run holds a trainer."""
        with self._lock:
            if not self._pending:
                return
            now = time.monotonic()
            stale = [j for j in self._jobs.values() if j.id in self._running and j._paused_since is not None
                     and now - j._paused_since > self.pause_limit_s]
        for job in stale:
            job.stop(f"stopped after {self.pause_limit_s / 60:.0f} min paused while others waited; its checkpoints are kept")

    def _forget_old(self) -> None:
        finished = [j for j in self._jobs.values() if j.state in FINISHED]
        for job in finished[: max(0, len(finished) - self.keep_finished)]:
            del self._jobs[job.id]

    def _mark_interrupted(self) -> list[Interrupted]:
        """Runs a previous server left queued / running / paused: say so on disk and remember them."""
        found = []
        for info in runs.list_runs(self.runs_dir):
            was = info.state
            if was not in LIVE_STATES_ON_DISK and was != "interrupted":
                continue
            try:
                job_meta = runs.read_json(info.path / JOB_FILE)
            except runs.CheckpointError:
                job_meta = {}
            if was != "interrupted":
                status = dict(info.status, state="interrupted", was=was, updated=time.time(),
                              reason=f"the server stopped while this run was {was} at step {info.status.get('step', 0)}"
                              + ("; its last saved checkpoint is kept" if info.has_weights else "; it had saved no weights"))
                try:
                    runs.write_json(info.path / "status.json", status)
                except OSError:
                    pass
            found.append(Interrupted(info.path, str(job_meta.get("title") or info.meta.get("title") or info.id),
                                     str(job_meta.get("owner") or info.meta.get("owner") or ""),
                                     str(info.status.get("was", was)), int(info.status.get("step", 0) or 0),
                                     info.has_weights))
        return found

    # ---- reads ---------------------------------------------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        self._reap()
        with self._lock:
            return self._jobs.get(job_id)

    def list_jobs(self, owner: str | None = None) -> list[Job]:
        """Jobs this server knows, oldest first (all of them, or one owner's)."""
        self._reap()
        with self._lock:
            return [j for j in self._jobs.values() if owner is None or j.owner == owner]

    def interrupted(self, owner: str | None = None) -> list[Interrupted]:
        """Runs a previous server left unfinished (found when this queue was made)."""
        return [r for r in self._interrupted if owner is None or r.owner == owner]

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {"running": len(self._running), "queued": len(self._pending), "max_running": self.max_running}
