"""The lesson's collapse pair on the Train page: the teacher starts both codebook recipes (codes started far from
the data, N(0, 1), against the healthy default) with one click, in the teacher's lane and with a budget of steps, and
every student's Train page draws the two runs side by side."""

from __future__ import annotations

import streamlit as st

from ui import charts, text
from ui import shared as shared_figures
from ui.identity import Student
from ui.jobs import job_queue, student, tick_seconds
from vqdemo import fit
from vqdemo.jobs import ACTIVE, JobView
from vqdemo.train_settings import SETTINGS


def start_pair() -> None:
    """The teacher's one click: both recipes at once, in the teacher's lane, with a budget of steps."""
    me, queue = student(), job_queue()
    if not me.teacher:
        st.session_state["tr_pair_msg"] = "Only the teacher can start the lesson's pair."
        return
    started = []
    try:
        for title, (model_cfg, data_cfg, train_cfg) in fit.collapse_pair().items():
            started.append(queue.submit(me.id, f"Lesson demo: {title}", model_cfg, data_cfg, train_cfg,
                                        address=me.address, teacher=True).id)
    except ValueError as e:
        st.session_state["tr_pair_msg"] = f"Could not start the pair: {e}"
    if started:
        queue.set_demo(started)


def pair_caption(views: list[JobView]) -> str:
    """What the pair shows so far, read off its numbers."""
    parts = []
    for v in views:
        val = v.val[-1] if v.val else {}
        used, psnr = val.get("used"), val.get("psnr")
        if isinstance(used, (int, float)) and isinstance(psnr, float):
            k = v.knobs.get("k", SETTINGS["k"].default)
            parts.append(f"{v.title.removeprefix('Lesson demo: ')} uses {used:.0f} of {k:.0f} "
                         f"codes at {psnr:.1f} dB (step {val.get('step', v.step):,})")
    if not parts:
        return "The curves start at the first validation (every 50 steps)."
    return "On the validation images: " + "; ".join(parts) + ". Same network, same data, same steps: only where " \
        "the codes start, and how they learn, differ."


def pair_panel(ids: list[str]) -> None:
    """The teacher's pair on one chart each for codes used and PSNR, one colour per run, redrawn every tick."""
    jobs = [j for j in (job_queue().get(i) for i in ids) if j is not None]
    if not jobs:
        return
    views = [j.view() for j in jobs]
    rows = {v.title.removeprefix("Lesson demo: "): v.train + v.val for v in views}
    lines = [f"**{text.md(name)}**: {v.state}, step {v.step:,} of {v.budget_steps or 0:,} ({v.elapsed:.0f} s)"
             for name, v in zip(rows, views)]
    st.markdown(" · ".join(lines))
    key = ("pair", *((v.id, v.version) for v in views))
    a, b = st.columns(2)
    a.plotly_chart(shared_figures.figure((*key, "used"), lambda: charts.overlay(
        rows, "used", "Codes used on the validation images", "codes used")), key="tr_pair_used")
    b.plotly_chart(shared_figures.figure((*key, "psnr"), lambda: charts.overlay(
        rows, "psnr", "Validation PSNR", "dB")), key="tr_pair_psnr")
    st.caption(pair_caption(views))


def demo_section(me: Student) -> None:
    """The lesson's collapse pair: the teacher starts it with one click; every student's Train page shows it."""
    pair = job_queue().demo()
    if not me.teacher and not pair:
        return
    st.subheader("The lesson's demo: where the codes start")
    if me.teacher:
        st.button(f"Start the collapse pair: N(0, 1) against the healthy default, {fit.PAIR_STEPS} steps each",
                  key="tr_pair_start", on_click=start_pair, type="primary" if not pair else "secondary",
                  help="Two MNIST runs on the teacher's own workers (they never wait behind the class), each with a "
                       "budget of steps, so the result does not depend on how busy the server is.")
        if msg := st.session_state.pop("tr_pair_msg", None):
            st.error(text.md(msg, 400))
    if pair:
        active = any(j.state in ACTIVE for j in pair)
        st.fragment(pair_panel, run_every=tick_seconds(1.0) if active else None)([j.id for j in pair])
    st.divider()
