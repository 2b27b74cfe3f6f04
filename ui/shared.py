"""Figures and pictures built once for the whole server and drawn by every session that shows the same thing.

Under a class most of a page's server time went into building Plotly figures (Plotly validates every property
as it is set): 30 students opening Codebook built the same 2,000-point map 30 times. A figure here is keyed by
what it shows (its builder and a digest of its arguments, or a key the caller names) and by the session's display
mode, built once while the others asking for it wait, and shared read-only: `st.plotly_chart` copies a figure to
JSON and never changes it, and no page changes a figure after building it. What `st.plotly_chart` then asks of
a figure, its dict (a deep copy with every array turned into base64), is made once per figure too
(`SharedFigure`), and pictures are encoded to PNG once (`png`): after the first student, a page's charts and
images cost the server little more than sending them.
"""

from __future__ import annotations

import functools
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

import numpy as np
import plotly.graph_objects as go
import torch

from ui import theme
from vqdemo.images import png_bytes

F = TypeVar("F", bound=Callable[..., go.Figure])
V = TypeVar("V")
MAX_FIGURES = 512   # a few MB: the largest figure (a 2,000-point map) is about 100 kB, twice that with its dict
MAX_PNG_BYTES = 32 * 2**20   # pictures: a page's are 1-10 kB each, so thousands of them


class SharedCache(Generic[V]):
    """A bounded, least-recently-used store; one build per key even when many sessions ask at once.

    Bounded by `size` items, or with `weigh` by a total weight of `size` (e.g. bytes): the least recently used
    items go first, though the newest item always stays."""

    def __init__(self, size: int = MAX_FIGURES, weigh: Callable[[V], int] | None = None):
        self._lock = threading.Lock()
        self._items: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()
        self._building: dict[Hashable, threading.Lock] = {}
        self._size = size
        self._weigh = weigh or (lambda _: 1)
        self._total = 0

    def _hit(self, key: Hashable) -> V | None:
        item = self._items.get(key)
        if item is None:
            return None
        self._items.move_to_end(key)
        return item[0]

    def _store(self, key: Hashable, value: V) -> None:
        weight = self._weigh(value)
        self._items[key] = (value, weight)
        self._total += weight
        while self._total > self._size and len(self._items) > 1:
            _, (_, gone) = self._items.popitem(last=False)
            self._total -= gone

    def get(self, key: Hashable, build: Callable[[], V]) -> V:
        with self._lock:
            if (value := self._hit(key)) is not None:
                return value
            building = self._building.setdefault(key, threading.Lock())
        with building:   # the first asker builds; the others wait here, then find it stored
            with self._lock:
                if (value := self._hit(key)) is not None:
                    return value
            try:
                value = build()
                with self._lock:
                    self._store(key, value)
            finally:
                with self._lock:
                    self._building.pop(key, None)
        return value

    def __len__(self) -> int:
        return len(self._items)

    @property
    def weight(self) -> int:
        """The stored items' total weight (their count without `weigh`)."""
        return self._total


class SharedFigure(go.Figure):
    """A figure every session draws as it is. `st.plotly_chart` turns a figure into a dict (`to_dict`: a deep copy,
    every numpy array to base64), then JSON; for a shared figure that dict is made once, by the first session, and
    handed to every later one, read-only like the figure."""

    _shared_dict: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        if self._shared_dict is None:
            self._shared_dict = super().to_dict()
        return self._shared_dict


def _shareable(fig: go.Figure) -> go.Figure:
    if type(fig) is go.Figure:
        fig.__class__ = SharedFigure   # the same object (nothing copied or validated again), its dict kept
    return fig


CACHE: SharedCache[go.Figure] = SharedCache(MAX_FIGURES)
PICTURES: SharedCache[bytes] = SharedCache(MAX_PNG_BYTES, weigh=len)
_named = threading.local()   # depth > 0 while a figure under a named key is being built


class Unkeyable(TypeError):
    """An argument with no stable digest (a function, a model): the figure is built for this session alone."""


def _feed(h: hashlib.blake2b, obj: object) -> None:
    if isinstance(obj, torch.Tensor):
        obj = obj.detach().cpu().numpy()
    if isinstance(obj, np.ndarray):
        h.update(f"a{obj.dtype}{obj.shape}".encode())
        h.update(np.ascontiguousarray(obj).tobytes())
    elif obj is None or isinstance(obj, (bool, int, float, str, bytes, np.generic)):
        h.update(f"{type(obj).__name__}:{obj!r};".encode())
    elif isinstance(obj, (list, tuple)):
        h.update(f"{type(obj).__name__}{len(obj)}(".encode())
        for item in obj:
            _feed(h, item)
        h.update(b")")
    elif isinstance(obj, dict):
        h.update(f"d{len(obj)}(".encode())
        for k in sorted(obj, key=repr):
            _feed(h, k)
            _feed(h, obj[k])
        h.update(b")")
    else:
        raise Unkeyable(type(obj).__name__)


def digest(*parts: object) -> str:
    """A digest of numbers, strings, arrays, tensors and containers of them; Unkeyable for anything else."""
    h = hashlib.blake2b(digest_size=16)
    for p in parts:
        _feed(h, p)
    return h.hexdigest()


def figure(key: Hashable, build: Callable[[], go.Figure]) -> go.Figure:
    """`build()` once per key and display mode for the whole server (read-only for the caller). For figures whose
    inputs are big but named by a small key, such as a live run's curves by (job id, event count). A `@shared`
    builder called inside `build` builds directly: the figure is stored once, under the caller's key, not again
    under a digest of arguments that are never asked for again."""
    def build_named() -> go.Figure:
        _named.depth = getattr(_named, "depth", 0) + 1
        try:
            return _shareable(build())
        finally:
            _named.depth -= 1
    return CACHE.get((key, theme.presenter()), build_named)


def shared(fn: F) -> F:
    """Decorate a figure builder: calls with the same arguments in the same display mode share one figure."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if getattr(_named, "depth", 0):
            return fn(*args, **kwargs)
        try:
            key = (fn.__module__, fn.__qualname__, digest(args, kwargs))
        except Unkeyable:
            return fn(*args, **kwargs)
        return figure(key, lambda: fn(*args, **kwargs))
    return wrapper  # type: ignore[return-value]


def png(key: Hashable, pixels: Callable[[], np.ndarray]) -> bytes:
    """The PNG bytes of `pixels()` (uint8 (H, W) or (H, W, 3)), encoded once per key for the whole server. The key
    must name everything the pixels depend on (`ui.state.image` uses the pixels' own digest)."""
    return PICTURES.get(key, lambda: png_bytes(pixels()))
