"""Background work for a whole class on one server: a FIFO queue that runs a few jobs at a time, out of the web
server's process.

One `JobQueue` is shared by every browser session (the app holds it in `st.cache_resource`), so its state sits
behind locks. A job is a task for `worker.py` (train an autoencoder, train a prior over codes, or a long
computation such as UMAP) run by a backend: `local` (a worker process per job on this machine, the default) or
`ray` (a Ray actor anywhere on a cluster, `VQDEMO_BACKEND=ray`). Either way the worker only sends messages; one
pump thread per running job here applies them: events into the job's bounded copy of what pages need (loss rows,
validation rows, the latest snapshot), store calls into the run folder through `run_store.RunStore`. Pages only ever
read copies (`Job.view()`); controls (pause, single step, stop, live beta / lr / K) become messages to the worker.
Nothing here imports streamlit.

A server restart loses the live jobs but not their folders: a new queue finds the runs whose status.json still
says queued / running / paused, marks them "interrupted" and lists them; the ones that saved weights still load.
"""

from __future__ import annotations

import copy
import dataclasses
import heapq
import shutil
import threading
import time
from collections import OrderedDict, deque
from pathlib import Path
from typing import Any

from .. import fit, run_store, runs
from ..data import DataConfig
from ..models import ModelConfig
from ..trainer import TrainConfig
from . import limits
from .backends import cpu_count, default_max_running, default_per_address, make_backend
from .job import ACTIVE, FINISHED, Interrupted, Job, JobError
from .pump import drive
from .sweeps import Sweeps
from .worker import JobSpec

LIVE_STATES_ON_DISK = ("queued", "running", "paused")
ESTIMATES_EVERY_S = 1.0   # waiting jobs' estimates are worked out again at least this often


class JobQueue:
    """FIFO queue of jobs shared by every session; at most `max_running` run at once, each in a worker."""

    def __init__(self, max_running: int | None = None, runs_dir: Path | str | None = None, *,
                 per_owner: int = 3, per_address: int | None = None, max_queued: int | None = None,
                 max_seconds: float = 600.0, threads: int | None = None, history: int = 2000,
                 keep_finished: int = 200, pause_limit_s: float = 600.0, backend=None, max_results: int = 16,
                 lock: bool = False, app_limits: bool = False, teacher_slots: int = 2):
        if max_running is not None and max_running < 1:
            raise ValueError("max_running must be at least 1")
        self._max_running = max_running
        self.runs_dir = Path(runs_dir) if runs_dir is not None else runs.default_runs_dir()
        self.per_owner = per_owner
        self.per_address = default_per_address() if per_address is None else per_address
        self.teacher_slots = teacher_slots   # workers kept for the teacher's runs: they never wait behind students
        self.max_seconds = max_seconds
        self.auto_threads = threads is None   # then a small model trains on one thread (fit.train_threads)
        self.history = history
        self.keep_finished = keep_finished
        self.pause_limit_s = pause_limit_s
        self.max_results = max_results
        self.app_limits = app_limits   # the app's queue: every size held to its widgets' bounds (vqdemo/app_limits.py)
        # A server holds its runs folder (lock=True): a second server on it would mark this one's live runs
        # "interrupted" and count students' runs twice. run_store.RunsDirBusy says which process holds it.
        self._runs_lock = run_store.lock_runs_dir(self.runs_dir) if lock else None
        self.backend = backend if backend is not None else make_backend()
        # the waiting room and a job's threads from the limit at start (a Ray cluster's size is not known yet: each
        # small run trains on one thread whatever this says, fit.train_threads)
        self.max_queued = max_queued or limits.waiting_room(limits.class_size(), per_owner, self.max_running,
                                                            2 * teacher_slots, max_results)
        self.threads = threads or max(1, cpu_count() // self.max_running)
        self._lock = threading.RLock()
        self._jobs: dict[str, Job] = {}
        self._pending: deque[Job] = deque()
        self._running: set[str] = set()
        self._keyed: OrderedDict[Any, Job] = OrderedDict()   # prior and call jobs by what they compute
        self._sweeps = Sweeps(self.runs_dir)
        self._demo: list[str] = []
        self._generation = 0
        self._estimates: tuple[float, int, dict[str, float]] = (0.0, -1, {})
        self._interrupted = self._mark_interrupted()
        watch = getattr(self.backend, "on_capacity", None)   # a cluster that grows starts waiting jobs at once
        if watch is not None:
            watch(self._schedule)

    @property
    def max_running(self) -> int:
        """Students' jobs training at once: as given, else env VQDEMO_MAX_JOBS, else what the backend says it holds
        now (a Ray cluster's CPUs: the limit follows nodes that join or leave), else half this machine's cores."""
        if self._max_running is not None:
            return self._max_running
        capacity = getattr(self.backend, "capacity", None)   # only backends that know a cluster have it
        return default_max_running(capacity() if capacity else None)

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
                    kept = run_store.keep_data(Path(data_cfg.path), run_dir)
                    data_cfg = dataclasses.replace(data_cfg, path=str(kept))
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
                run_store.RunStore(run_dir).queued(
                    {"owner": owner, "title": title, "created": job.created, "teacher": teacher},
                    {"kind": model_cfg.kind, "title": title, "owner": owner, "job": job.id,
                     "model": model_cfg.to_dict(), "data": dataclasses.asdict(data_cfg),
                     "train": dataclasses.asdict(train_cfg), "command": f"app job for {owner}"})
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
            state, reason = drive(job, self.backend, self.max_seconds, self.pause_limit_s)
            job._finish(state, reason)
        finally:
            with self._lock:
                self._running.discard(job.id)
                self._schedule()

    def _renumber(self) -> None:
        self._generation += 1   # the waiting jobs or their order changed: estimates are worked out again
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
        """At most how many seconds until a queued job starts (a run may end early on its step budget); None once
        it has started. Every waiting job's estimate is worked out in one pass, again when the queue changes and
        at most every ESTIMATES_EVERY_S otherwise: a page listing a lecture hall's runs asks for each of them."""
        with self._lock:
            now = time.monotonic()
            made, generation, estimates = self._estimates
            if generation != self._generation or now - made > ESTIMATES_EVERY_S:
                estimates = self._estimate_all()
                self._estimates = (now, self._generation, estimates)
            return estimates.get(job.id)

    def _estimate_all(self) -> dict[str, float]:
        """Each waiting job's wait, lane by lane: every job ahead takes the worker that frees first and holds it
        for its whole time budget (caller holds self._lock)."""
        out = {}
        for teacher, workers in ((True, self.teacher_slots), (False, self.max_running)):
            running = [self._jobs[i]._remaining_s() for i in self._running if self._jobs[i].teacher == teacher]
            free_at = running + [0.0] * max(0, workers - len(running))
            heapq.heapify(free_at)
            for job in self._pending:
                if job.teacher == teacher:
                    out[job.id] = free_at[0]
                    heapq.heapreplace(free_at, free_at[0] + (job.train_cfg.seconds or 0.0))
        return out

    # ---- sweeps: one link, a different (K, beta) for each student (see sweeps.py) ---------------------------

    def pin_sweep(self, sweep: str) -> None:
        """Make `sweep` a teacher's sweep: cells handed out in turn, each student's kept for good."""
        self._sweeps.pin(sweep)

    def pinned(self, sweep: str) -> bool:
        return self._sweeps.pinned(sweep)

    def sweep_cell(self, sweep: str, owner: str, cells: int) -> int:
        """The cell of a sweep this student gets, the same on every visit."""
        return self._sweeps.cell(sweep, owner, cells)

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
                run_store.mark_interrupted(info, step)
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
