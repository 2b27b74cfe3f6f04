"""Figures built once for the whole server and drawn by every session that shows the same thing.

Under a class most of a page's server time went into building Plotly figures (Plotly validates every property
as it is set): 30 students opening Codebook built the same 2,000-point map 30 times. A figure here is keyed by
what it shows (its builder and a digest of its arguments, or a key the caller names) and by the session's display
mode, built once while the others asking for it wait, and shared read-only: `st.plotly_chart` copies a figure to
JSON and never changes it, and no page changes a figure after building it.
"""

from __future__ import annotations

import functools
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import TypeVar

import numpy as np
import plotly.graph_objects as go
import torch

from ui import theme

F = TypeVar("F", bound=Callable[..., go.Figure])
MAX_FIGURES = 512   # a few MB: the largest figure (a 2,000-point map) is about 100 kB


class FigureCache:
    """A bounded, least-recently-used store of figures; one build per key even when many sessions ask at once."""

    def __init__(self, size: int = MAX_FIGURES):
        self._lock = threading.Lock()
        self._items: OrderedDict[Hashable, go.Figure] = OrderedDict()
        self._building: dict[Hashable, threading.Lock] = {}
        self._size = size

    def _hit(self, key: Hashable) -> go.Figure | None:
        fig = self._items.get(key)
        if fig is not None:
            self._items.move_to_end(key)
        return fig

    def get(self, key: Hashable, build: Callable[[], go.Figure]) -> go.Figure:
        with self._lock:
            if (fig := self._hit(key)) is not None:
                return fig
            building = self._building.setdefault(key, threading.Lock())
        with building:   # the first asker builds; the others wait here, then find it stored
            with self._lock:
                if (fig := self._hit(key)) is not None:
                    return fig
            try:
                fig = build()
                with self._lock:
                    self._items[key] = fig
                    while len(self._items) > self._size:
                        self._items.popitem(last=False)
            finally:
                with self._lock:
                    self._building.pop(key, None)
        return fig

    def __len__(self) -> int:
        return len(self._items)


CACHE = FigureCache()
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
            return build()
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
