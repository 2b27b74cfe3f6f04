"""Train: start a run in the background, watch the codebook learn, turn the knobs while it trains.

Runs live in the server's shared queue (`vqdemo.jobs`), not in this page: they keep training through page
switches, reloads and closed tabs, and a student finds their own again in any tab of the same browser
(`ui.identity`). The live panel is a fragment that redraws every second from a copy of the job's state;
worker threads never touch the page. New-run settings live in the URL so a teacher can share a setup.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import streamlit as st
import torch

from ui import charts, describe, state, text, theme
from ui import shared as shared_figures
from ui.collapse_pair import demo_section
from ui.identity import Student
from ui.jobs import job_queue, queue_note, shared_figure, student, tick_seconds
from ui.train_form import settings_form, title_of, zip_problem
from vqdemo import analysis, runs
from vqdemo.analysis import image_grid
from vqdemo.app_limits import BETA_MAX, KS
from vqdemo.data import DataConfig, data_shape
from vqdemo.jobs import ACTIVE, JobError, JobView
from vqdemo.metrics import psnr_of
from vqdemo.models import KINDS
from vqdemo.train_settings import LRS, SETTINGS, model_config
from vqdemo.trainer import TrainConfig

CHART_EVERY_S = 3.0
QUEUED_EVERY_S = 3.0   # a waiting run's place and estimate: a lecture hall's queue moves every few seconds
# A class run lasts seconds to minutes, so it validates, logs and snapshots more often than the library's defaults:
# the live charts and reconstructions move while the student watches.
LIVE_CADENCE = {"val_every": 100, "log_every": 5, "snapshot_every": 25}


def sweep_cell(me: Student) -> tuple[int, float] | None:
    """A teacher's sweep link (?sweep=NAME&ks=16,64,256&betas=0.1,0.25,1, made on the Class page) gives each
    student the next (K, beta) cell of the grid, the same one on every visit; it pre-fills this page once. A first
    visit waits (one rerun) until the browser holds its student's cookie: a second tab opened meanwhile must not
    be handed a cell of its own."""
    name, k_texts, beta_texts = state.sweep_from_url()
    if not name:
        return None
    ks = [k for k in map(SETTINGS["k"].parse, k_texts) if k]
    betas = [b for b in map(SETTINGS["beta"].parse, beta_texts) if b is not None]
    if not ks or not betas:
        st.warning("This sweep link names no usable K or beta values; ask your teacher for a new link.")
        return None
    if not me.confirmed:
        st.info("Finding your cell of the class sweep...")
        return None
    cells = [(k, b) for k in ks for b in betas]
    k, beta = cells[job_queue().sweep_cell(name, me.id, len(cells))]
    if st.session_state.get("tr_sweep") != (name, me.id):
        st.session_state.update(tr_sweep=(name, me.id), tr_k=k, tr_beta=beta)
    return k, beta


def start(v: dict, me: Student) -> None:
    """Queue a run with these settings; any bad value becomes a message, never a traceback."""
    try:   # limits first, before the zip is even scanned: a refused run costs nothing
        job_queue().check_limits(me.id, me.address, me.teacher)
        if v["data"] == "folder":
            if not st.session_state.get("tr_upload_path"):
                raise ValueError("upload a .zip of images first (or pick a built-in dataset)")
            data_cfg = DataConfig(name="folder", path=st.session_state["tr_upload_path"])
        else:
            data_cfg = DataConfig(name=v["data"])
        if data_cfg.name == "folder" and (problem := zip_problem(data_cfg.path)):
            raise ValueError(problem)
        cfg = model_config(v, *data_shape(data_cfg))   # the web server never decodes the data: the job's worker does
        train_cfg = TrainConfig(steps=v["steps"] if v["budget"] == "steps" else None,
                                seconds=float(v["secs"]) if v["budget"] == "seconds" else None, batch_size=v["batch"],
                                lr=v["lr"], seed=int(v["seed"]), **LIVE_CADENCE)
        title = st.session_state.get("tr_title") or title_of(v)
        job = job_queue().submit(me.id, title, cfg, data_cfg, train_cfg, normalize_recon=v["var"],
                                 address=me.address, teacher=me.teacher)
    except ValueError as e:
        st.error(f"Could not start: {text.md(e, 400)}")
        return
    st.session_state["tr_job"] = job.id
    view = job.view()
    if view.place:
        st.info(queue_note(view))


# ---- the live panel -------------------------------------------------------------------------------------------

def act(job_id: str, action: str, **kwargs) -> None:
    """Button callbacks: control a job this session's student started; a refusal becomes a message on the panel."""
    job, me = job_queue().get(job_id), student()
    try:
        if job is None:
            raise JobError("this run is no longer known to the server")
        job.check_control(me.id, me.teacher)
        if action == "restart":
            v = job.view()
            job.stop()
            new = job_queue().submit(v.owner, v.title, v.model_cfg, v.data_cfg, v.train_cfg, v.normalize_recon,
                                     address=me.address, teacher=v.teacher)
            st.session_state["tr_goto"] = new.id
        else:
            getattr(job, action)(**kwargs)
    except ValueError as e:
        st.session_state["tr_msg"] = str(e)


def turn_knob(job_id: str, name: str, key: str, shown: float) -> None:
    """A live slider moved: send its value only if it differs from the value the slider was drawn at (the run's).

    A slider is always drawn at the run's current value (its default, under a key that names that value), so a
    slider the browser re-creates, a second tab or a stale one reports that same value and sends nothing. Only a
    person moving it sends a change."""
    value = st.session_state.get(key)
    if value is None or value == shown:
        return
    act(job_id, "set", **{name: value})


def last(rows: list[dict], key: str, kind: str | None = None):
    for r in reversed(rows):
        if (kind is None or r.get("type") == kind) and isinstance(r.get(key), (int, float)):
            return r[key]
    return None


def controls(v: JobView) -> None:
    cols = st.columns(4)
    if v.state == "paused":
        cols[0].button("Play", icon=":material/play_arrow:", key="tr_play", on_click=act, args=(v.id, "resume"),
                       width="stretch")
    else:
        cols[0].button("Pause", icon=":material/pause:", key="tr_pause", on_click=act, args=(v.id, "pause"),
                       width="stretch", disabled=v.state != "running")
    cols[1].button("Step", icon=":material/skip_next:", key="tr_step", on_click=act, args=(v.id, "step"),
                   width="stretch", disabled=v.state not in ("running", "paused"),
                   help="Train exactly one more batch, then hold.")
    cols[2].button("Stop", icon=":material/stop:", key="tr_stop", on_click=act, args=(v.id, "stop"), width="stretch",
                   disabled=not v.active or v.state == "stopping",
                   help="End the run; its best and last checkpoints stay (a queued run just leaves the queue).")
    cols[3].button("Restart", icon=":material/restart_alt:", key="tr_restart_job", on_click=act, args=(v.id, "restart"),
                   width="stretch",
                   help="Stop this run and queue a fresh one with the same settings.")


def live_values(v: JobView) -> dict[str, float]:
    """Where each live slider stands: the run's value, or the change it has been asked for and not applied yet,
    snapped to the slider's stops."""
    now = {**v.knobs, **v.pending}
    out = {"lr": min(LRS, key=lambda x: abs(x - now["lr"]))}
    if "beta" in now:
        out["beta"] = min(BETA_MAX, max(SETTINGS["beta"].lo, round(round(float(now["beta"]) / 0.05) * 0.05, 2)))
    if v.kind == "vq":
        out["k"] = min(KS, key=lambda x: abs(math.log2(x) - math.log2(max(1, int(now["k"])))))
    return out


def live_knobs(v: JobView) -> None:
    """Beta, learning rate and K apply to the running model at its next step. Each slider's key names the value it
    is drawn at, so when the run's value changes (here, in another tab, or on the teacher's screen) the slider is
    drawn anew at it within one tick."""
    shown = live_values(v)
    stamp = "_".join(f"{shown[n]:g}" for n in sorted(shown))
    key = {n: f"tr_live_{n}_{v.id}_{stamp}" for n in shown}
    cols = st.columns(3 if v.kind == "vq" else 2)
    if "beta" in shown:
        cols[0].slider("beta (live)", float(SETTINGS["beta"].lo), BETA_MAX, value=shown["beta"], step=0.05,
                       key=key["beta"], on_change=turn_knob, args=(v.id, "beta", key["beta"], shown["beta"]))
    cols[-1 if v.kind == "vae" else 1].select_slider(
        "learning rate (live)", LRS, value=shown["lr"], key=key["lr"], format_func=lambda x: f"{x:g}",
        on_change=turn_knob, args=(v.id, "lr", key["lr"], shown["lr"]))
    if v.kind == "vq":
        cols[2].select_slider("K (live)", KS, value=shown["k"], key=key["k"], on_change=turn_knob,
                              args=(v.id, "k", key["k"], shown["k"]))
    st.caption("Beta and the learning rate apply at the next step."
               + (" K applies live too: K grows by splitting the busiest codes; shrinks by dropping the least used."
                  if v.kind == "vq" else " K is fixed for RQ (one per depth)." if v.kind == "rq" else ""))
    if v.pending:
        st.caption("Waiting to apply: " + ", ".join(f"{k}={x:g}" for k, x in v.pending.items())
                   + (" (the run is paused: press Step or Play)" if v.state == "paused" else ""))


def structural_note(v: JobView, settings: dict) -> None:
    """New-run settings that cannot change a running model say so."""
    cfg = v.model_cfg
    diffs = [label for label, now, then in [
        ("dataset", settings["data"], v.data_cfg.name), ("model", settings["kind"], cfg.kind),
        ("architecture", settings["arch"], cfg.arch), ("downsampling", settings["down"], cfg.downsample),
        ("D", settings["d"], cfg.vq.dim)] if now != then]
    if diffs and v.active:
        st.info(f"Your settings change the {', '.join(diffs)}: that needs a new run (press Start). "
                "Only beta, the learning rate and K change while a run trains.")


def metrics(v: JobView) -> None:
    val_psnr = [r["psnr"] for r in v.val if isinstance(r.get("psnr"), float)]
    src = v.val[-1] if v.val else v.latest
    k = src.get("k") or v.knobs.get("k")
    cols = st.columns(4)
    total = f" of {v.budget_steps:,}" if v.budget_steps else ""
    cols[0].metric("Step", f"{v.step:,}", help=f"training steps done{total}")
    cols[1].metric("Val PSNR", f"{val_psnr[-1]:.1f} dB" if val_psnr else "—",
                   delta=f"{val_psnr[-1] - val_psnr[-2]:+.2f} dB" if len(val_psnr) > 1 else None,
                   help="reconstruction quality on held-out images; higher is better")
    if v.kind != "vae" and k:
        cols[2].metric(f"Perplexity (K={k:.0f})", f"{src['perplexity']:.1f}" if "perplexity" in src else "—",
                       help="the effective number of codes in use: K when all are used evenly, 1 when one takes all")
        cols[3].metric("Codes used", f"{src['used']:.0f} / {k:.0f}" if "used" in src else "—",
                       help="codes picked at least once " + ("on the validation set" if v.val else "in the last batch"))
        where = (f"on the validation images at step {src.get('step', v.step):,}" if v.val
                 else f"in the last training batch (step {v.step:,}); validation starts at step 1")
        st.caption(f"Perplexity and codes used: {where}. The usage chart below counts a running average instead.")


def figures(v: JobView) -> None:
    a, b = st.columns(2)
    with a:
        st.plotly_chart(shared_figure(v, "loss", lambda: charts.loss_curves(charts.thin(v.train), marks=v.changes)),
                        key="tr_fig_loss")
        st.caption("Recon should fall steadily; commit (beta's term) shows how far encoder outputs sit from their "
                   "codes. Dotted lines mark live changes.")
    with b:
        st.plotly_chart(shared_figure(v, "psnr", lambda: charts.metric_curve(
            charts.thin(v.train) + v.val, "psnr", "PSNR", "dB", kinds=("train", "val"))), key="tr_fig_psnr")
        st.caption("Validation PSNR (bold) is the honest score: it climbs while the decoder and codebook learn.")
    if v.kind == "vae":
        st.caption("A VAE has no codebook: no usage, no perplexity. Compare its reconstructions with a VQ run.")
    else:
        a, b = st.columns(2)
        with a:
            st.plotly_chart(shared_figure(v, "ppl", lambda: charts.codebook_curve(
                charts.thin(v.train), "perplexity", "Perplexity vs K", "perplexity")), key="tr_fig_ppl")
            st.caption("Perplexity near the dashed K line means every code pulls its weight; far below it is collapse."
                       + analysis.perplexity_dip_note(v.train, v.knobs.get("k") or v.model_cfg.vq.k))
        with b:
            st.plotly_chart(shared_figure(v, "used", lambda: charts.codebook_curve(
                charts.thin(v.train), "used", "Codes used per batch", "codes used")), key="tr_fig_used")
            st.caption("How many different codes one batch picked" + (" (depth 1)" if v.kind == "rq" else "") + ".")
        usage = v.snapshot.get("usage") if v.snapshot else None
        upkeep = v.snapshot.get("upkeep") if v.snapshot else None
        if usage is not None and upkeep:
            dead_below = upkeep["dead_below"]   # the run's own quantizer's test, never another quantizer's setting
            st.markdown(f"**Running usage per code**: {charts.alive_codes(usage, dead_below)} of {len(usage)} "
                        "codes alive")
            st.plotly_chart(shared_figure(v, "usage", lambda: charts.usage_histogram(
                usage, dead_below, "vectors per step")), key="tr_fig_usage")
            st.caption(analysis.usage_note(upkeep, v.kind == "rq"))
    if v.snapshot and v.snapshot.get("x_hat") is not None:
        x, x_hat = v.snapshot["x"], v.snapshot["x_hat"]
        grid = image_grid(torch.cat([x, x_hat]), nrow=len(x))
        st.image(state.crisp(grid, width=720), caption=f"Top: validation images. Bottom: the model's reconstructions "
                 f"at step {v.snapshot['step']:,}.",
                 alt=describe.grid(len(x), f"validation images above their reconstructions at step "
                                   f"{v.snapshot['step']:,}", psnr_of(x, x_hat)))


def status_panel(job_id: str, settings: dict) -> None:
    """Redrawn every second: state, step counter, buttons and live knobs (kept light so clicks land)."""
    job = job_queue().get(job_id)
    if job is None:
        st.info("This run is no longer held by the server; find it in the list of runs below.")
        return
    v = job.view(light=True)
    retitled = st.session_state.get("tr_titles", {}).get(job_id, v.title) != v.title
    was = st.session_state.get("tr_live_state")
    if "tr_goto" in st.session_state or retitled or (was in ACTIVE) != v.active or (was == "queued") != (
            v.state == "queued"):
        st.session_state["tr_live_state"] = v.state
        st.rerun()   # a run was queued, started, ended or retitled live: redraw the whole page (its lists, its ticks)
    if msg := st.session_state.pop("tr_msg", None):
        st.warning(text.md(msg, 400))
    st.markdown(f"**{text.md(v.title)}** · {v.state.upper()}" + (f" (place {v.place})" if v.place else "")
                + f" · {text.md(v.reason)}")
    if v.state == "queued":
        counts = job_queue().counts()
        st.info(f"{queue_note(v)} {counts['running']} run(s) training now (at most {counts['max_running']} at once).")
    elif v.budget_steps:
        st.progress(min(1.0, max(v.step / v.budget_steps, v.elapsed / v.budget_s)),
                    text=f"step {v.step:,} of {v.budget_steps:,} ({v.elapsed:.0f} s; at most {v.budget_s:.0f} s)")
    elif v.budget_s:
        st.progress(min(1.0, v.elapsed / v.budget_s),
                    text=f"{v.elapsed:.0f} s of {v.budget_s:.0f} s, {v.step:,} steps")
    controls(v)
    if v.state in ("queued", "running", "paused"):
        live_knobs(v)
        structural_note(v, settings)
    metrics(v)


def chart_panel(job_id: str) -> None:
    """Redrawn every few seconds: the figures cost more to build and to draw."""
    job = job_queue().get(job_id)
    if job is None:
        return
    v = job.view()
    if v.train or v.val:
        figures(v)
    elif v.active:
        st.caption("The curves appear here after the first steps.")


def my_runs_table(me: str) -> None:
    rows = [{"run": v.title, "state": v.state, "place": v.place, "step": v.step,
             "best PSNR": round(v.best_psnr, 2) if v.best_psnr else None, "id": v.id}
            for v in (j.view(light=True) for j in reversed(job_queue().list_jobs(me)))]
    if rows:
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    counts = job_queue().counts()
    st.caption(f"The class queue: {counts['running']} training, {counts['queued']} waiting; at most "
               f"{counts['max_running']} train at once so the server stays responsive.")


def finished_runs(me: str) -> None:
    """Every run on this server, newest first: finished ones are in the sidebar's model picker."""
    live = {j.id: j.view(light=True) for j in job_queue().list_jobs()}
    interrupted = {r.id: r for r in job_queue().interrupted()}
    rows = []
    for info in runs.list_runs(state.runs_dir())[:100]:
        if info.meta.get("kind") not in KINDS:
            continue
        v, lost = live.get(info.id), interrupted.get(info.id)
        best = info.status.get("best") or {}
        psnr = v.best_psnr if v else best.get("psnr")
        rows.append({
            "run": v.title if v else lost.title if lost else info.meta.get("title") or info.id,
            "who": "you" if (v.owner if v else lost.owner if lost else info.meta.get("owner")) == me else "class",
            "model": KINDS[info.meta["kind"]],
            "state": v.state if v else f"interrupted (was {lost.was})" if lost else info.state,
            "step": v.step if v else info.status.get("step"),
            "best PSNR": round(psnr, 2) if psnr else None, "loadable": info.has_weights, "id": info.id})
    if rows:
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
        every = f"Refreshed every {tick_seconds(CHART_EVERY_S):g} s while runs train, so a live run's step here can " \
                "trail your run's panel above. " if any(x.active for x in live.values()) else ""
        st.caption(f"{every}Runs with weights appear in the sidebar's model picker: pick one to explore it on the "
                   "other pages. Interrupted runs were cut off by a server restart; their last checkpoint still loads.")
    else:
        st.caption("No runs on this server yet.")


def trend(first: float, final: float) -> str:
    return "rises" if final > first * 1.05 else "falls" if final < first / 1.05 else "stays level"


def trend_caption(rows: list[dict]) -> str:
    """What the two example curves show, read off the recorded numbers (never assumed)."""
    loss = [r["loss"] for r in rows if r.get("type") == "train" and isinstance(r.get("loss"), (int, float))]
    ppl = [(r["step"], r["perplexity"]) for r in rows
           if r.get("type") == "val" and isinstance(r.get("perplexity"), (int, float))]
    k = last(rows, "k")
    parts = []
    if len(loss) > 1:
        parts.append(f"Left: the training loss {trend(loss[0], loss[-1])}, from {loss[0]:.3g} to {loss[-1]:.3g}.")
    if len(ppl) > 1 and k:
        (s0, p0), (s1, p1) = ppl[0], ppl[-1]
        parts.append(f"Right: validation perplexity {trend(p0, p1)}, from {p0:.1f} at step {s0} to {p1:.1f} at step "
                     f"{s1}, against K = {k:g}: about {p1 / k:.0%} of the codebook is effectively in use.")
    parts.append("Try the recipe whose codes start far from the data (N(0, 1)) to see how few codes it keeps.")
    return " ".join(parts)


@st.cache_resource(max_entries=4, show_spinner=False)
def example_rows(folder: str, stamp: tuple | None) -> list[dict]:
    """A shipped run's recorded metrics, read once per version of its file for the whole server (read-only)."""
    return runs.read_metrics(Path(folder))


def example() -> None:
    """What the panel will show, from the shipped mnist-vq's recorded run, so the page teaches before any click.
    Its charts are named by the file's version: a later student's idle Train page neither reads nor digests the
    run's rows again."""
    folder = state.CHECKPOINTS / "mnist-vq"
    key = ("train-example", str(folder), runs.file_stamp(folder / runs.METRICS))
    rows = example_rows(*key[1:])
    if not rows:
        return
    st.markdown("**What a healthy run looks like** (the shipped mnist-vq, recorded when it was trained):")
    a, b = st.columns(2)
    a.plotly_chart(shared_figures.figure((*key, "loss"), lambda: charts.loss_curves(rows)), key="tr_ex_loss")
    b.plotly_chart(shared_figures.figure((*key, "ppl"), lambda: charts.metric_curve(
        rows, "perplexity", "Perplexity (validation)", "perplexity", reference=last(rows, "k"), reference_name="K")),
        key="tr_ex_ppl")
    st.caption(trend_caption(rows))


# ---- the page ---------------------------------------------------------------------------------------------

state.current()  # draws the sidebar when a deep link on a fresh server runs this page without app.py
st.title("Train")
st.caption("Train a VQ-VAE, RQ-VAE or VAE in the background and watch its codebook learn. Runs keep going when you "
           "switch pages or close the tab; come back from any tab of this browser.")
me = student()
queue = job_queue()
if cell := sweep_cell(me):
    st.info(f"**Class sweep:** your cell is K = {cell[0]}, beta = {cell[1]:g}. Press Start training; the Class page "
            "shows every student's result on one chart.")
demo_section(me)
presenter = theme.presenter()
if st.session_state.pop("tr_fold_settings", False):
    st.session_state["tr_settings_open"] = False
    state.scroll_to_top()
settings_box, live_box = ((st.expander("New run settings", key="tr_settings_open", on_change="rerun"), st.container())
                          if presenter else st.columns([1, 1.5], gap="medium"))

with settings_box:
    settings = settings_form()
    st.text_input("Title (optional)", key="tr_title", placeholder=title_of(settings), max_chars=80)
    if st.button("Start training", type="primary", key="tr_start", width="stretch"):
        before = st.session_state.get("tr_job")
        start(settings, me)
        if presenter and st.session_state.get("tr_job") != before:   # started: fold the settings so the run's
            st.session_state["tr_fold_settings"] = True               # live panel is on the projector's first screen
            st.rerun()
    with st.expander("Share this setup"):
        st.code(state.link(state.url_query()), language=None, wrap_lines=True)
        st.caption("The link carries these settings, not your runs.")

with live_box:
    mine = list(reversed(queue.list_jobs(me.id)))
    if goto := st.session_state.pop("tr_goto", None):
        st.session_state["tr_job"] = goto
    if not mine:
        st.info("Nothing of yours is training. Pick settings and press **Start training**; with the codes started "
                "far from the data (N(0, 1)) you will see most codes die, with them started near it "
                "(U(-1/K, 1/K)) not.")
        example()
    else:
        ids = [j.id for j in mine]
        if st.session_state.get("tr_job") not in ids:
            st.session_state["tr_job"] = ids[0]
        titles = {j.id: text.plain(j.title, 80) for j in mine}   # the state is on the live panel below
        st.session_state["tr_titles"] = {j.id: j.title for j in mine}
        job_id = st.selectbox("Your run", ids, key="tr_job", format_func=titles.get)
        view = queue.get(job_id).view(light=True)
        st.session_state["tr_live_state"] = view.state
        # a waiting run only moves up the queue: its place is redrawn every few seconds, its curves not at all
        waiting = view.state == "queued"
        st.fragment(status_panel, run_every=tick_seconds(QUEUED_EVERY_S if waiting else 1.0) if view.active
                    else None)(job_id, settings)
        st.fragment(chart_panel, run_every=tick_seconds(CHART_EVERY_S) if view.active and not waiting else None)(job_id)
        with st.expander("Your runs in the queue", expanded=len(mine) > 1):
            st.fragment(my_runs_table, run_every=tick_seconds(CHART_EVERY_S) if view.active else None)(me.id)

st.divider()
st.subheader("Runs on this server")
busy = any(j.state in ACTIVE for j in queue.list_jobs())
st.fragment(finished_runs, run_every=tick_seconds(CHART_EVERY_S) if busy else None)(me.id)

state.notebook_button("train")   # this setup as a Jupyter notebook (ui/notebook_button.py)
