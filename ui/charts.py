"""Plotly figures the pages share: training curves, runs overlaid, codebook usage.

Plain functions from event rows (the dicts of `vqdemo.trainer`: {"type", "step", ...}) or usage vectors to
`go.Figure`, so any page can draw the same picture the same way. No streamlit in here: pass the figure to
`st.plotly_chart`. Long runs are thinned to `MAX_POINTS` per line so a live panel stays cheap to redraw.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from ui import theme
from ui.shared import shared
from vqdemo.settings import finite

MAX_POINTS = 400
HEIGHT = 260
TERM_COLORS = {"recon": "#1f77b4", "codebook": "#2ca02c", "commit": "#ff7f0e", "kl": "#9467bd", "loss": "#555555"}
USED, DEAD = "#1f77b4", theme.DEAD
DEAD_TEXT = "#b91c1c"   # dead codes' label: a darker red, 6.5:1 on white (text needs 4.5:1)
REFERENCE = "#374151"   # K and other reference lines: dark grey (red is kept for dead codes)
SELECTED = "#111827"    # the outline of the highlighted code (near black: amber is the perplexity line here)
DIM = 0.6               # how far the other codes fade towards white while one is highlighted
X_AXES = {"step": "step", "fraction": "fraction of the run", "time": "seconds"}


def thin(rows: Sequence[dict], max_points: int = MAX_POINTS) -> list[dict]:
    """At most max_points rows, evenly spaced, always keeping the last one."""
    if len(rows) <= max_points:
        return list(rows)
    idx = np.linspace(0, len(rows) - 1, max_points).round().astype(int)
    return [rows[i] for i in sorted(set(idx.tolist()))]


def series(rows: Sequence[dict], key: str, kind: str | None = None, x: str = "step") -> tuple[list[float], list[float]]:
    """(x, values) of one stat over rows (of one event type), skipping rows without a finite value.

    x: "step", "time" (seconds since the run started) or "fraction" (step / the run's last step, so a
    200-step run and a 3,000-step run share one axis from 0 to 1).
    """
    picked = [r for r in rows if (kind is None or r.get("type") == kind) and finite(r.get(key)) is not None]
    picked = thin(picked)
    if x == "fraction":
        last = max((r["step"] for r in rows if finite(r.get("step")) is not None), default=1) or 1
        xs = [r["step"] / last for r in picked]
    elif x == "time":
        picked = [r for r in picked if finite(r.get("time")) is not None]
        xs = [float(r["time"]) for r in picked]
    else:
        xs = [r["step"] for r in picked]
    return xs, [float(r[key]) for r in picked]


def _layout(fig: go.Figure, title: str, y_title: str, log_y: bool = False, height: int = HEIGHT,
            title_chars: int | None = None) -> go.Figure:
    """Title (wrapped to title_chars a line, never cut), a one-row legend between it and the plot, text sized
    for the mode (theme.style), readable log ticks (0.1, 0.01, ... or 0.02, 0.05: never a bare 2 or 5)."""
    title = theme.wrap(title, limit=title_chars)
    legend = len(fig.data) > 1 and fig.layout.showlegend is not False
    fig.update_layout(title=theme.title(title),
                      height=height + (max(0, theme.top_margin(title, legend) - 58) if theme.presenter() else 0),
                      margin=dict(l=10, r=10, t=theme.top_margin(title, legend), b=10),
                      legend=dict(orientation="h", yanchor="bottom", y=1.01, xanchor="left", x=0.0),
                      xaxis_title="step", yaxis_title=y_title, hovermode="x unified")
    if log_y:
        values = [v for tr in fig.data for v in (tr.y or ()) if finite(v) is not None and v > 0]
        ticks = log_ticks(min(values), max(values)) if values else []
        fig.update_yaxes(type="log", tickvals=ticks or None, ticktext=[f"{t:g}" for t in ticks] or None)
    return theme.style(fig)


def log_ticks(lo: float, hi: float) -> list[float]:
    """Tick values for a log axis spanning [lo, hi], every one labelled in full: powers of ten when the data
    span two decades or more, else 1-2-5 steps (so never "0.1, 5, 2, 0.01")."""
    e0, e1 = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    mantissas = (1,) if e1 - e0 >= 2 else (1, 2, 5)
    ticks = [m * 10.0 ** e for e in range(e0, e1 + 1) for m in mantissas]
    inside = [float(f"{t:.3g}") for t in ticks if lo / 1.001 <= t <= hi * 1.001]
    return inside if len(inside) >= 2 else [float(f"{t:.3g}") for t in ticks if lo / 10 <= t <= hi * 10]


def _marks(fig: go.Figure, marks: Iterable[dict]) -> None:
    """Dotted vertical lines where a knob changed during the run, labelled with the new values."""
    for m in marks:
        label = ", ".join(f"{k}={v:g}" for k, v in m.items() if k != "step" and finite(v) is not None)
        fig.add_vline(x=m["step"], line=dict(dash="dot", color="#888", width=1),
                      annotation=dict(text=label, font=dict(size=10), textangle=-90, yanchor="top"))


@shared
def loss_curves(rows: Sequence[dict], terms: Sequence[str] = ("recon", "codebook", "commit", "kl"),
                marks: Iterable[dict] = (), title: str = "Loss terms (training batches)") -> go.Figure:
    """One line per loss term present in the train rows, log scale; knob changes drawn as dotted lines."""
    fig = go.Figure()
    for term in terms:
        x, y = series(rows, term, "train")
        if any(v > 0 for v in y):   # an EMA codebook has no codebook loss: leave the flat zero out
            fig.add_trace(go.Scatter(x=x, y=[max(v, 1e-8) for v in y], name=term, mode="lines",
                                     line=dict(color=TERM_COLORS.get(term), width=1.5)))
    _marks(fig, marks)
    return _layout(fig, title, "loss", log_y=True)


@shared
def metric_curve(rows: Sequence[dict], key: str, title: str, y_title: str, kinds: Sequence[str] = ("val",),
                 reference: float | None = None, reference_name: str = "") -> go.Figure:
    """One stat over steps, for each event type in kinds (e.g. val PSNR beside batch PSNR), with an optional
    horizontal reference line (K for perplexity and codes used)."""
    fig = go.Figure()
    for kind in kinds:
        x, y = series(rows, key, kind)
        style = dict(width=2.5) if kind == "val" else dict(width=1, color="#aaa")
        fig.add_trace(go.Scatter(x=x, y=y, name="validation" if kind == "val" else "training batch",
                                 mode="lines+markers" if kind == "val" and len(x) < 60 else "lines", line=style))
    if reference is not None:
        fig.add_hline(y=reference, line=dict(dash="dash", color=REFERENCE), annotation_text=reference_name,
                      annotation_position="top left")
    return _layout(fig, title, y_title)


@shared
def codebook_curve(rows: Sequence[dict], key: str, title: str, y_title: str) -> go.Figure:
    """Perplexity or codes used per training batch against K (K can change live, so it is drawn as a line)."""
    fig = go.Figure()
    x, y = series(rows, key, "train")
    fig.add_trace(go.Scatter(x=x, y=y, name=y_title, mode="lines", line=dict(color=USED, width=1.5)))
    kx, ky = series(rows, "k", "train")
    fig.add_trace(go.Scatter(x=kx, y=ky, name="K (codebook size)", mode="lines",
                             line=dict(color=REFERENCE, dash="dash", width=1.5)))
    fig.update_yaxes(rangemode="tozero")
    return _layout(fig, title, y_title)


def run_colors(labels: Sequence[str]) -> dict[str, str]:
    """One colour per run, in order, the same on every chart of a page (no red: red means dead codes)."""
    return {label: theme.RUN_COLORS[i % len(theme.RUN_COLORS)] for i, label in enumerate(labels)}


@shared
def overlay(runs: Mapping[str, Sequence[dict]], key: str, title: str, y_title: str, kind: str = "val",
            log_y: bool = False, x: str = "step", colors: Mapping[str, str] | None = None,
            legend: bool = True) -> go.Figure:
    """The same stat for several runs on one chart (Compare): {label: rows}; x as in `series`. legend=False where
    the page shows one colour key for all its charts (six run names in a half-width chart's legend take more
    room than the plot on a projector)."""
    colors = colors or run_colors(list(runs))
    fig = go.Figure(layout=dict(showlegend=False) if not legend else None)
    for label, rows in runs.items():
        xs, y = series(rows, key, kind, x)
        if xs:
            fig.add_trace(go.Scatter(x=xs, y=y, name=label, mode="lines+markers" if len(xs) < 40 else "lines",
                                     line=dict(color=colors.get(label))))
    _layout(fig, title, y_title, log_y=log_y)
    fig.update_xaxes(title=X_AXES.get(x, x))
    if x == "fraction":
        fig.update_xaxes(range=[0, 1.02], tickformat=".0%")
    return fig


# "Dead" is usage below `dead_below`, never at it: the quantizer's own test (VectorQuantizer._update). Counts of
# uses are dead below NEVER_USED, i.e. never picked; running usage (Train) below the quantizer's dead_threshold.
NEVER_USED = 1


def alive_codes(usage: Sequence[float] | np.ndarray, dead_below: float = NEVER_USED) -> int:
    """How many codes are at or above the dead threshold: what a usage chart's heading says above it."""
    return int((np.asarray(usage, dtype=float).reshape(-1) >= dead_below).sum())


def dimmed(color: str, amount: float = DIM) -> str:
    """`color` faded towards white: the codes that are not the highlighted one."""
    r, g, b = (int(color[i:i + 2], 16) for i in (1, 3, 5))
    return "#" + "".join(f"{round(v + (255 - v) * amount):02x}" for v in (r, g, b))


@shared
def usage_histogram(usage: Sequence[float] | np.ndarray, dead_below: float = NEVER_USED, y_title: str = "uses",
                    sort: bool = False, height: int = HEIGHT, color: str | Sequence[str] = USED,
                    perplexity: float | None = None, selected: int | None = None) -> go.Figure:
    """One bar per code; codes below `dead_below` are dead, drawn as short red stubs so a collapsed
    codebook shows its long dead tail. `sort`: most used first (bars then show the shape of the distribution).
    `color`: the live bars' colour (Compare gives each run its own), or one colour per code id (the Codebook
    page's code colours). `perplexity` (with sort): a dashed line after that many codes, and a dotted even-use
    line. `selected`: a code id to highlight (outlined and labelled, the other bars faded). No title: the page
    says what the chart is above it (a two-line Plotly title over a narrow chart takes a third of its height).
    customdata of each bar is [code id, uses], so a click tells the page which code it was."""
    u = np.asarray(usage, dtype=float).reshape(-1)
    codes = np.arange(len(u))
    if sort:
        order = np.argsort(-u, kind="stable")
        u, codes = u[order], codes[order]
    dead = u < dead_below
    stub = max(float(u.max(initial=0.0)), 1e-9) * 0.03
    x = np.arange(len(u))
    fills = np.array(color if not isinstance(color, str) else [color] * len(u))[codes]
    fills = np.where(dead, DEAD, fills)
    picked = codes == selected
    if picked.any():
        fills = np.array([c if p else dimmed(c) for c, p in zip(fills, picked)])
    outline = np.where(picked, 3, 0) if picked.any() else np.zeros(len(u), int)
    fig = go.Figure()
    for name, mask, bars in (("in use", ~dead, u), ("dead", dead, np.maximum(u, stub))):
        if mask.any():
            fig.add_trace(go.Bar(x=x[mask], y=bars[mask], name=name, marker_color=list(fills[mask]),
                                 marker_line=dict(color=SELECTED, width=outline[mask]),
                                 width=0.9 if len(u) < 128 else 1.0,
                                 customdata=np.stack([codes[mask], u[mask]], 1),
                                 hovertemplate="code %{customdata[0]}: %{customdata[1]:.3g}"
                                               "<extra>" + name + "</extra>",
                                 selected=dict(marker=dict(opacity=1)), unselected=dict(marker=dict(opacity=1))))
    fig.update_layout(bargap=0.05 if len(u) < 128 else 0, barmode="overlay", showlegend=False)
    if perplexity is not None:
        fig.add_vline(x=perplexity - 0.5, line=dict(color=theme.ARGMIN, dash="dash", width=2))
        fig.add_annotation(x=perplexity - 0.5, y=0.9, yref="paper", text=f"perplexity {perplexity:.1f}",
                           showarrow=False, xanchor="left", font=dict(color="#92400e"),
                           bgcolor="rgba(255,255,255,0.8)")
        even = float(u.sum()) / max(len(u), 1)
        fig.add_hline(y=even, line=dict(color="#6b7280", dash="dot", width=1))
        fig.add_annotation(x=len(u) - 0.5, y=even, text="even use", showarrow=False, xanchor="right",
                           yanchor="bottom", font=dict(color="#6b7280"))
    if dead.any():   # dead codes named in text, not by their red alone (WCAG 1.4.1)
        n_dead, start = int(dead.sum()), int(x[dead].min())
        over_tail = sort and start < len(u) * 0.75   # sorted: the dead are the tail; label it where it starts
        fig.add_annotation(x=start - 0.5 if sort else len(u) - 0.5, y=0.3, yref="paper", showarrow=False,
                           text=f"{n_dead} dead" + ("" if over_tail or not sort else " →"),
                           xanchor="left" if over_tail else "right",
                           font=dict(color=DEAD_TEXT), bgcolor="rgba(255,255,255,0.85)")
    if picked.any():
        i = int(np.flatnonzero(picked)[0])
        fig.add_annotation(x=int(x[i]), y=float(max(u[i], stub)), text=f"#{selected}", showarrow=True, arrowhead=2,
                           ax=24 if i < len(u) / 2 else -24, ay=-30,   # leaning inwards, clear of the y axis
                           font=dict(color=SELECTED), bgcolor="rgba(255,255,255,0.85)")
    _layout(fig, "", y_title, height=height)
    fig.update_xaxes(title="codes, most used first" if sort else "code id", showticklabels=not sort,
                     range=[-0.5, len(u) - 0.5])
    fig.update_layout(hovermode="closest", showlegend=False, clickmode="event+select", dragmode=False)
    return fig
