"""Text alternatives computed from the data a picture shows: what a screen reader says instead of the pixels.

WCAG 2.1 (1.1.1) asks every image for a text alternative that serves the same purpose. Here the purpose is the
numbers behind the picture: a reconstruction says which image it is and its PSNR, a code map its grid size and
most used codes, a decoded code its id and how often it is used, a usage chart how many codes are used and the
perplexity. Never a fixed string: the sentence changes when the picture does.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
import torch

from ui import text
from vqdemo.quantize import perplexity_of


def label(class_names: Sequence[str] | None, y: torch.Tensor | None, index: int) -> str:
    """The class of validation image `index` as a phrase (" (a 7)"), or "" when the dataset has no labels."""
    if y is None or not class_names:
        return ""
    return f" ({text.plain(class_names[int(y[index])], 60)})"


def image(what: str, psnr: float | None = None) -> str:
    """One picture: 'reconstruction of validation image 3 (7), PSNR 24.1 dB'; for several, the PSNR of their mean
    squared error (metrics.psnr_of), the one PSNR the app shows."""
    if psnr is None or not np.isfinite(psnr):
        return what
    return f"{what}, PSNR {psnr:.1f} dB"


def tile(code: int, uses: int | None = None, where: str = "validation vectors") -> str:
    """A code decoded alone: its id and how often it is used (`where` names what was counted)."""
    if uses is None:
        return f"code #{code} decoded on its own"
    return f"code #{code} decoded on its own; " + (f"used by {uses} {where}" if uses else f"dead: no {where} use it")


def most_used(counts: np.ndarray, top: int = 3) -> str:
    """'#3 (10), #17 (6), #40 (5)': the most used codes and their counts."""
    order = np.argsort(-counts, kind="stable")[:top]
    return ", ".join(f"#{int(c)} ({int(counts[c])})" for c in order if counts[c] > 0)


def code_map(codes: np.ndarray | torch.Tensor, k: int, top: int = 3) -> str:
    """A grid of code ids: its size, how many of the K codes it uses, and the most used ones."""
    codes = np.asarray(codes)
    h, w = codes.shape[-2:]
    maps = codes.reshape(-1, h, w)   # (n, h, w): several maps (images, RQ depths) are counted together
    counts = np.bincount(maps.reshape(-1).astype(np.int64), minlength=k)
    n = f"{len(maps)} " if len(maps) > 1 else ""
    return (f"{n}{h}x{w} code map{'s' if n else ''} using {int((counts > 0).sum())} of {k} codes; "
            f"most used: {most_used(counts, top)}")


def usage(counts: np.ndarray | torch.Tensor, what: str = "codes") -> str:
    """A usage histogram: how many codes are used and the perplexity (the effective number of codes)."""
    counts_t = torch.as_tensor(np.asarray(counts)).flatten()
    k, used = len(counts_t), int((counts_t > 0).sum())
    return (f"{used} of {k} {what} used ({k - used} dead), perplexity {perplexity_of(counts_t):.1f}; "
            f"most used: {most_used(counts_t.numpy())}")


def channels(z: torch.Tensor, name: str) -> str:
    """A (D, h, w) tensor shown as a mosaic of its channels: its shape and value range."""
    d, h, w = z.shape
    lo, hi = float(z.min()), float(z.max())
    return f"{name}: {d} channels of {h}x{w} shown side by side, values from {lo:.2f} to {hi:.2f}"


def grid(n: int, what: str, psnr: float | None = None) -> str:
    """A grid of n pictures: 'grid of 16 samples from the prior' (psnr: of the set, metrics.psnr_of)."""
    return image(f"grid of {n} {what}", psnr)


def _short(v: float) -> str:
    return f"{v:.3g}"


def _numbers(data: Any) -> np.ndarray:
    """The finite numbers of a trace's data column, flattened; empty for none or for text categories."""
    if data is None:
        return np.zeros(0)
    try:
        values = np.asarray(data, dtype=float).ravel()
    except (TypeError, ValueError):
        return np.zeros(0)
    return values[np.isfinite(values)]


def figure(fig: go.Figure, limit: int = 6) -> str:
    """Any Plotly figure read from its data: its title, axes, and per trace its size and range of values."""
    title = html.unescape(" ".join(re.sub(r"<[^>]+>", " ", str(fig.layout.title.text or "")).split()))
    xt, yt = fig.layout.xaxis.title.text, fig.layout.yaxis.title.text
    parts = [f"Chart{': ' + title if title else ''}" + (f" ({yt} against {xt})" if xt and yt else "")]
    for trace in fig.data[:limit]:
        z = getattr(trace, "z", None)
        name = html.unescape(trace.name or trace.type)   # Plotly's names are HTML-escaped (ui/text.plotly)
        if z is not None and np.ndim(z) == 2:
            values = _numbers(z)
            rows, cols = np.shape(z)
            parts.append(f"{name}: {rows}x{cols} grid" + (f", values {_short(values.min())} to {_short(values.max())}"
                                                          if values.size else ""))
            continue
        # y, else x (a horizontal box or bar): the first numeric axis
        values = next((v for v in (_numbers(getattr(trace, a, None)) for a in ("y", "x")) if v.size), np.zeros(0))
        if not values.size:
            continue
        spread = f"{values.size} values from {_short(values.min())} to {_short(values.max())}"
        parts.append(f"{name}: {spread}, median {_short(np.median(values))}" if trace.type in ("box", "histogram")
                     else f"{name}: {spread}, last {_short(values[-1])}")
    if len(fig.data) > limit:
        parts.append(f"and {len(fig.data) - limit} more traces")
    return "; ".join(parts) + "."


def say(where: Any, sentence: str) -> None:
    """Text for screen readers only, in `where` (st, a column): still in the accessibility tree, but its element's
    box has no size and leaves the page's flow (ui/theme.py's PAGE_CSS hides what holds a `.vq-sr` span)."""
    # The sentence holds user text (class names, run titles in trace names): escaped as markdown like any user
    # string; the empty span only marks the element for the CSS.
    where.markdown(text.md(sentence, 2000) + ' <span class="vq-sr"></span>', unsafe_allow_html=True)


def chart(where: Any, fig: go.Figure, summary: str | None = None, **kwargs: Any) -> Any:
    """`where.plotly_chart(fig, **kwargs)` preceded by a summary a screen reader reaches (WCAG 1.1.1): `summary`,
    else one read from the figure's data. Returns what plotly_chart returns (the selection event)."""
    say(where, summary or _summary(fig))
    return where.plotly_chart(fig, **kwargs)


def _summary(fig: go.Figure) -> str:
    """`figure(fig)`, read once per figure object: a figure shared by every session (ui/shared.py) is read-only, so
    its summary is too, and a later student's page skips walking Plotly's property tree."""
    if getattr(fig, "_summary", None) is None:
        fig._summary = figure(fig)
    return fig._summary
