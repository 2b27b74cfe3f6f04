"""Plotly figures the pages share: training curves, runs overlaid, codebook usage.

Plain functions from event rows (the dicts of `vqdemo.train`: {"type", "step", ...}) or usage vectors to
`go.Figure`, so any page can draw the same picture the same way. No streamlit in here: pass the figure to
`st.plotly_chart`. Long runs are thinned to `MAX_POINTS` per line so a live panel stays cheap to redraw.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

MAX_POINTS = 400
HEIGHT = 260
TERM_COLORS = {"recon": "#1f77b4", "codebook": "#2ca02c", "commit": "#ff7f0e", "kl": "#9467bd", "loss": "#555555"}
USED, DEAD = "#1f77b4", "#d62728"


def thin(rows: Sequence[dict], max_points: int = MAX_POINTS) -> list[dict]:
    """At most max_points rows, evenly spaced, always keeping the last one."""
    if len(rows) <= max_points:
        return list(rows)
    idx = np.linspace(0, len(rows) - 1, max_points).round().astype(int)
    return [rows[i] for i in sorted(set(idx.tolist()))]


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def series(rows: Sequence[dict], key: str, kind: str | None = None) -> tuple[list[int], list[float]]:
    """(steps, values) of one stat over rows (of one event type), skipping rows without a finite value."""
    picked = [r for r in rows if (kind is None or r.get("type") == kind) and _finite(r.get(key))]
    picked = thin(picked)
    return [r["step"] for r in picked], [float(r[key]) for r in picked]


def _layout(fig: go.Figure, title: str, y_title: str, log_y: bool = False, height: int = HEIGHT) -> go.Figure:
    fig.update_layout(title=dict(text=title, font=dict(size=14), y=0.98, yanchor="top"), height=height,
                      margin=dict(l=10, r=10, t=58, b=10),
                      legend=dict(orientation="h", yanchor="bottom", y=1.01, xanchor="left", x=0.0, font=dict(size=11)),
                      xaxis_title="step", yaxis_title=y_title, hovermode="x unified")
    if log_y:
        fig.update_yaxes(type="log")
    return fig


def _marks(fig: go.Figure, marks: Iterable[dict]) -> None:
    """Dotted vertical lines where a knob changed during the run, labelled with the new values."""
    for m in marks:
        label = ", ".join(f"{k}={v:g}" for k, v in m.items() if k != "step" and _finite(v))
        fig.add_vline(x=m["step"], line=dict(dash="dot", color="#888", width=1),
                      annotation=dict(text=label, font=dict(size=10), textangle=-90, yanchor="top"))


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
        fig.add_hline(y=reference, line=dict(dash="dash", color=DEAD), annotation_text=reference_name,
                      annotation_position="top left")
    return _layout(fig, title, y_title)


def codebook_curve(rows: Sequence[dict], key: str, title: str, y_title: str) -> go.Figure:
    """Perplexity or codes used per training batch against K (K can change live, so it is drawn as a line)."""
    fig = go.Figure()
    x, y = series(rows, key, "train")
    fig.add_trace(go.Scatter(x=x, y=y, name=y_title, mode="lines", line=dict(color=USED, width=1.5)))
    kx, ky = series(rows, "k", "train")
    fig.add_trace(go.Scatter(x=kx, y=ky, name="K (codebook size)", mode="lines",
                             line=dict(color=DEAD, dash="dash", width=1.5)))
    fig.update_yaxes(rangemode="tozero")
    return _layout(fig, title, y_title)


def overlay(runs: Mapping[str, Sequence[dict]], key: str, title: str, y_title: str, kind: str = "val",
            log_y: bool = False) -> go.Figure:
    """The same stat for several runs on one chart (Compare): {label: rows}."""
    fig = go.Figure()
    for label, rows in runs.items():
        x, y = series(rows, key, kind)
        if x:
            fig.add_trace(go.Scatter(x=x, y=y, name=label, mode="lines+markers" if len(x) < 40 else "lines"))
    return _layout(fig, title, y_title, log_y=log_y)


def usage_histogram(usage: Sequence[float] | np.ndarray, dead_below: float = 0.0, title: str = "Codebook usage",
                    y_title: str = "uses", sort: bool = False, height: int = HEIGHT) -> go.Figure:
    """One bar per code; codes at or below `dead_below` are dead, drawn as short red stubs so a collapsed
    codebook shows its long dead tail. `sort`: most used first (bars then show the shape of the distribution)."""
    u = np.asarray(usage, dtype=float).reshape(-1)
    codes = np.arange(len(u))
    if sort:
        order = np.argsort(-u, kind="stable")
        u, codes = u[order], codes[order]
    dead = u <= dead_below
    stub = max(float(u.max(initial=0.0)), 1e-9) * 0.03
    x = np.arange(len(u))
    fig = go.Figure()
    for name, mask, color, bars in (("in use", ~dead, USED, u), ("dead", dead, DEAD, np.maximum(u, stub))):
        if mask.any():
            fig.add_trace(go.Bar(x=x[mask], y=bars[mask], name=name, marker_color=color,
                                 customdata=np.stack([codes[mask], u[mask]], 1),
                                 hovertemplate="code %{customdata[0]}: %{customdata[1]:.3g}<extra>" + name + "</extra>"))
    fig.update_layout(bargap=0.05 if len(u) < 128 else 0, barmode="overlay")
    _layout(fig, f"{title}: {int((~dead).sum())} of {len(u)} codes alive", y_title, height=height)
    fig.update_xaxes(title="codes, most used first" if sort else "code id", showticklabels=not sort)
    fig.update_layout(hovermode="closest", showlegend=False)
    return fig
