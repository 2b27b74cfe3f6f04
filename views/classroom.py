"""Class: every run on this server as one point, live, so the class sees together what K and beta do.

K on a log axis, beta on the other, colour = validation PSNR or codebook use (perplexity / K). The teacher hands
out a sweep: one link that gives each student a different (K, beta) cell, pre-filled on the Train page. Clicking
a point opens that run on the other pages.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from ui import describe, state, text, theme
from ui.identity import Student
from ui.jobs import job_queue, student, tick_seconds
from vqdemo import classroom
from vqdemo.app_limits import KS
from vqdemo.jobs import ACTIVE

BETAS = [0.0, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0]
SWEEP_SECONDS = 30   # each student's sweep run trains this long
COLOURS = {"psnr": ("Validation PSNR (dB)", "Viridis"), "use": ("Codebook use: perplexity / K", "Cividis")}


def scatter(points: list[classroom.RunPoint], colour: str, me: str) -> go.Figure:
    """One marker per run; rings for runs still training, a star for the viewer's own."""
    label, scale = COLOURS[colour]
    rng = np.random.default_rng(0)   # a little fixed jitter so runs in one cell do not hide each other
    x = [p.k * 2 ** rng.uniform(-0.12, 0.12) for p in points]
    y = [p.beta + rng.uniform(-0.02, 0.02) for p in points]
    values = [p.psnr if colour == "psnr" else p.use for p in points]
    fig = go.Figure(go.Scatter(
        x=x, y=y, mode="markers", customdata=[p.id for p in points],
        marker=dict(size=[18 if p.owner == me else 13 for p in points],
                    symbol=["star" if p.owner == me else "circle-open" if p.state in ACTIVE else "circle"
                            for p in points],
                    color=[v if v is not None else np.nan for v in values], colorscale=scale, showscale=True,
                    colorbar=dict(title=dict(text=label, side="right")), line=dict(width=1, color="#444")),
        text=[f"{text.plotly_template(p.title, 80)}<br>{p.kind.upper()} K={p.k} beta={p.beta:g} · "
              f"{p.state} at step {p.step:,}<br>"
              + (f"PSNR {p.psnr:.1f} dB" if p.psnr is not None else "no score yet")
              + (f" · uses {p.use:.0%} of its codes" if p.use is not None else "") for p in points],
        hovertemplate="%{text}<extra></extra>"))
    title = "Every run on this server"
    fig.update_layout(height=460, margin=dict(l=10, r=10, t=theme.top_margin(title, False), b=10),
                      title=theme.title(title),
                      xaxis=dict(title="codebook size K (log scale)", type="log", tickvals=KS,
                                 ticktext=[str(k) for k in KS],
                                 range=[np.log10(KS[0] / 1.5), np.log10(KS[-1] * 1.5)]),   # the whole K range, always
                      yaxis=dict(title="commitment weight beta", range=[-0.05, max(1.05, max(y) + 0.1)]))
    return theme.style(fig)   # projector-sized text in presenter mode, as on every chart


def live_points() -> dict[str, classroom.RunPoint]:
    views = (j.view(light=True) for j in job_queue().list_jobs())
    return {p.id: p for p in (classroom.live_point(v) for v in views if v.active) if p is not None}


def board(colour: str, me: str) -> None:
    """Redrawn every few seconds while runs train; a click on a point offers that run on the other pages."""
    live = live_points()
    points = classroom.run_points(state.runs_dir(), live)
    if not points:
        st.info("No VQ-VAE or RQ-VAE runs on this server yet. Hand out a sweep (below) or start one on the Train page.")
        return
    event = describe.chart(st, scatter(points, colour, me), key="cl_board", on_select="rerun", selection_mode="points")
    st.caption("Each point is one run (yours is a star; open rings are still training). Look along a row: does a "
               "bigger K always help? Look down a column: what does a larger beta do to codebook use?")
    if summary := classroom.summary(points):
        st.markdown(summary)   # numbers only, computed from the points
    picked = [p["customdata"] for p in (event.selection.points if event and event.selection else [])
              if p.get("customdata")]
    if picked:
        chosen = next((p for p in points if p.id == picked[0]), None)
        if chosen is not None:
            st.text(f"Picked: {chosen.title} ({chosen.state})")
            query = {"model": f"run:{chosen.id}"}
            cols = st.columns(4)
            pages = [("views/reconstruct.py", "Reconstruct"), ("views/codebook.py", "Codebook"),
                     ("views/paint.py", "Paint"), ("views/compare.py", "Compare")]
            for col, (page, label) in zip(cols, pages):
                state.page_link(page, query if page != "views/compare.py" else {"runs": chosen.id}, where=col,
                                label=f"Open in {label}")
            if chosen.state in ACTIVE:
                st.caption("This run is still training: the other pages can open it once it has saved a checkpoint.")


def sweep_maker(me: Student) -> None:
    """A sweep link: each student who opens it gets a (K, beta) cell on the Train page. The teacher's sweeps are
    pinned on the server: cells handed out in turn, every cell used before any repeats, each kept for good."""
    with st.expander("Hand out a sweep", expanded=False):
        a, b = st.columns(2)
        ks = a.multiselect("K values", KS, default=[16, 64, 256], key="cl_ks")
        betas = b.multiselect("beta values", BETAS, default=[0.1, 0.25, 1.0], key="cl_betas")
        name = st.text_input("Sweep name", value="k-vs-beta", max_chars=state.SWEEP_NAME_CHARS, key="cl_name")
        if not ks or not betas or not name.strip():
            st.caption("Pick at least one K and one beta, and name the sweep.")
            return
        st.code(state.sweep_link(name.strip(), ks, betas, SWEEP_SECONDS), language=None, wrap_lines=True)
        cells = len(ks) * len(betas)
        if me.teacher:
            job_queue().pin_sweep(name.strip())
            how = "students who open this link get them in turn, every cell before any repeats"
        elif job_queue().pinned(name.strip()):
            how = "your teacher pinned this sweep: students get its cells in turn"
        else:
            how = ("each student gets one by a hash of their id (only the teacher's sweeps hand out every cell in "
                   "turn: sign in as the teacher in the sidebar)")
        st.caption(f"{cells} cells: {how}; the same cell on every visit, with a {SWEEP_SECONDS} s budget. Their runs "
                   "appear on the chart above as they train.")


state.current()  # draws the sidebar when a deep link on a fresh server runs this page without app.py
st.title("Class")
st.caption("Every run trained on this server, live: what K and beta did, for everyone at once.")
me = student()
colour = st.radio("Colour by", list(COLOURS), format_func=lambda c: COLOURS[c][0], horizontal=True, key="cl_colour")
training = any(j.state in ACTIVE for j in job_queue().list_jobs())
st.fragment(board, run_every=tick_seconds(3.0) if training else None)(colour, me.id)
sweep_maker(me)
