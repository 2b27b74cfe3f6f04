"""How long one job may hold a worker, by the wall clock, and how many jobs the class queue holds waiting.

A run's time budget counts training seconds only, and the pause limit only stops a run paused for that long in
one go while others wait: a student pressing Play and Pause in turn could keep the only worker for ever. So every
job also has a wall-clock cap from the moment a worker takes it: its budget, plus the pause limit once, plus a
margin for loading data and building the model. At the cap the job is stopped (it saves its last checkpoint,
which is kept); a worker that does not end within a grace period after that is killed.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

START_MARGIN_S = 30.0    # loading data and building the model before the first step, on a busy machine
STOP_GRACE_S = 30.0      # after the stop at the cap, how long a worker has to save its last checkpoint
CALL_SECONDS = 180.0     # a named computation's budget: UMAP of 5,000 points took ~31 s here, its import ~11 s
CLASS_SIZE = 300         # students the queue makes room for unless VQDEMO_CLASS_SIZE says otherwise (a lecture hall)


def class_size() -> int:
    """Students the server is sized for: env VQDEMO_CLASS_SIZE (1..10,000), else CLASS_SIZE."""
    try:
        return min(10_000, max(1, int(os.environ.get("VQDEMO_CLASS_SIZE", CLASS_SIZE))))
    except ValueError:
        return CLASS_SIZE


def waiting_room(students: int, per_student: int, workers: int, teacher_runs: int = 0, computations: int = 0) -> int:
    """How many jobs may wait in the class queue: every student's allowed runs, less those the workers are training,
    plus the teacher's lane and the page computations (UMAP) that queue beside them.

    A fixed cap refused students while the cluster still had room (58 of 100 with 40 places). The per-student and
    per-address limits are what stop one person or one script filling the queue; this cap only bounds the whole,
    so it is sized from the class and the workers rather than picked. A waiting job is a few configs in memory."""
    return max(1, students * per_student - workers) + teacher_runs + computations


def wall_cap_s(budget_s: float, pause_limit_s: float) -> float:
    """The most wall-clock seconds a job with this training budget may hold a worker."""
    return budget_s + pause_limit_s + START_MARGIN_S


@dataclass
class WallClock:
    """A running job's wall-clock cap; `due()` says what to do now: nothing, stop it, or kill its worker."""

    cap_s: float
    started: float = field(default_factory=time.monotonic)
    stopped_at: float | None = None

    def due(self) -> str | None:
        now = time.monotonic()
        if self.stopped_at is not None:
            return "kill" if now - self.stopped_at > STOP_GRACE_S else None
        if now - self.started > self.cap_s:
            self.stopped_at = now
            return "stop"
        return None

    def reason(self, kept: bool) -> str:
        """Why the job ended; `kept` when it is a run whose saved checkpoints stay."""
        return (f"stopped after {self.cap_s / 60:.1f} min on a worker, pauses included (a job may hold one for its "
                "time budget plus the pause limit)" + ("; its checkpoints are kept" if kept else ""))
