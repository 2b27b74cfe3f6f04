"""What the training loop reports, one kind of event each, and the messages between the app and a job's worker.

The loop (`trainer.run_training`) emits these to whoever watches: the command line prints them, a job's worker
sends them to the app as `("event", event)`, where `Job._on_event` keeps what pages need. They are plain dicts on
the wire (pickled to a worker process or a Ray node, JSON in metrics.jsonl); these types say which keys each kind
has. A model's own numbers (loss, PSNR, perplexity, codes used, bits per code...) ride along in train and val
events under their own names.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict


class TrainEvent(TypedDict, total=False):
    """After every step: training seconds so far (pauses not counted), lr and beta in force, the model's stats."""

    type: Literal["train"]
    step: int
    time: float
    lr: float
    beta: float


class ValEvent(TypedDict, total=False):
    """A validation: the model's scores on the held-out set (`val_images` of them when time allowed only part)."""

    type: Literal["val"]
    step: int
    time: float
    score: float
    val_images: int


class SnapshotEvent(TypedDict, total=False):
    """A few validation images with their reconstructions, codes and the codebook's use, for the live pictures."""

    type: Literal["snapshot"]
    step: int
    x: Any
    x_hat: Any
    codes: Any
    usage: Any
    upkeep: dict


class PausedEvent(TypedDict):
    type: Literal["paused"]
    step: int


class ChangedEvent(TypedDict, total=False):
    """A live change applied before this step (only the knobs that changed)."""

    type: Literal["changed"]
    step: int
    beta: float
    lr: float
    k: int


class FailedEvent(TypedDict):
    type: Literal["failed"]
    step: int
    reason: str


class EndEvent(TypedDict):
    type: Literal["end"]
    step: int
    state: str
    reason: str


Event = TrainEvent | ValEvent | SnapshotEvent | PausedEvent | ChangedEvent | FailedEvent | EndEvent

# Messages between the app and a worker: tuples, pickled as they are over a local socket or through a Ray actor.
Command = (tuple[Literal["pause", "resume", "stop"]] | tuple[Literal["step"], int]
           | tuple[Literal["set"], dict[str, float]])                                    # app -> worker
StoreCall = tuple[Literal["store"], *tuple[Any, ...]]   # ("store", a RunStore method's name, *its arguments)
Report = (tuple[Literal["event"], Event] | StoreCall | tuple[Literal["exit"], str, str, Any]   # worker -> app
          | tuple[Literal["died"], str])   # the backend's own word when a worker vanished
