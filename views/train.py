"""Train: start a run in the background, watch the codebook learn, turn the knobs while it trains.

Runs live in the server's shared queue (`vqdemo.jobs`), not in this page: they keep training through page
switches, reloads and closed tabs, and a student finds their own again in any tab of the same browser
(`ui.identity`). The live panel is a fragment that redraws every second from a copy of the job's state;
worker threads never touch the page. New-run settings live in the URL so a teacher can share a setup.
"""

from __future__ import annotations

import math
from pathlib import Path
from urllib.parse import urlencode

import pandas as pd
import streamlit as st
import torch

from ui import charts, describe, state, text
from ui import shared as shared_figures
from ui.identity import Student
from ui.jobs import job_queue, queue_note, shared_figure, student, thin, tick_seconds
from vqdemo import analysis, fit, run_store, runs
from vqdemo.analysis import image_grid
from vqdemo.data import DATASETS, NATIVE_SIZE, DataConfig, DataError, check_source, data_shape
from vqdemo.fit import far_init_quantizer, near_init_quantizer
from vqdemo.jobs import ACTIVE, JobError, JobView
from vqdemo.metrics import psnr_of
from vqdemo.models import KINDS, ModelConfig
from vqdemo.quantize import CODEBOOK_UPDATES, INITS, STE_FORMS, QuantizerConfig
from vqdemo.train_settings import BETA_MAX, DOWN, KS, LRS, SETTINGS, model_config
from vqdemo.trainer import TrainConfig

HEALTHY, FAR_INIT, NEAR_INIT = QuantizerConfig(), far_init_quantizer(), near_init_quantizer()
RECIPES = {"healthy": HEALTHY, "far": FAR_INIT, "near": NEAR_INIT}
PRESETS = {"healthy": "Healthy default", "far": "Codes start far: N(0, 1) (collapses)",
           "near": "Codes start near: U(-1/K, 1/K)"}
MAX_UPLOAD_MB = 64
SAVED = "tr_saved"
CHART_EVERY_S = 3.0
# A class run lasts seconds to minutes, so it validates, logs and snapshots more often than the library's defaults:
# the live charts and reconstructions move while the student watches.
LIVE_CADENCE = {"val_every": 100, "log_every": 5, "snapshot_every": 25}

def init_settings() -> None:
    """Widget state from (in order) this session, the URL, what this session had before a page switch, defaults."""
    saved = st.session_state.get(SAVED, {})
    for name, param in SETTINGS.items():
        state.url_value("tr_" + name, param, fallback=saved.get(name))


def save_settings() -> dict:
    """Current settings -> session (for page switches) and URL (only what differs from the defaults)."""
    values = {name: st.session_state.get("tr_" + name, p.default) for name, p in SETTINGS.items()}
    st.session_state[SAVED] = values
    state.to_url(*((SETTINGS[name], value) for name, value in values.items()), drop_defaults=True)
    return values


def apply_preset() -> None:
    q = RECIPES.get(st.session_state["tr_preset"], HEALTHY)
    st.session_state.update(tr_cb=q.codebook, tr_init=q.init, tr_restart=q.restart_dead, tr_cosine=q.cosine,
                            tr_ste=q.ste)


def preset_of(v: dict) -> str | None:
    chosen = (v["cb"], v["init"], v["restart"], v["cosine"], v["ste"])
    for name, q in RECIPES.items():
        if chosen == (q.codebook, q.init, q.restart_dead, q.cosine, q.ste):
            return name
    return None


def sweep_cell(me: Student) -> tuple[int, float] | None:
    """A teacher's sweep link (?sweep=NAME&ks=16,64,256&betas=0.1,0.25,1, made on the Class page) gives each
    student the next (K, beta) cell of the grid, the same one on every visit; it pre-fills this page once. A first
    visit waits (one rerun) until the browser holds its student's cookie: a second tab opened meanwhile must not
    be handed a cell of its own."""
    name = st.query_params.get("sweep", "")[:40]
    if not name:
        return None
    ks = [k for k in (SETTINGS["k"].parse(x.strip()) for x in st.query_params.get("ks", "").split(",")[:12]) if k]
    betas = [b for b in (SETTINGS["beta"].parse(x.strip()) for x in st.query_params.get("betas", "").split(",")[:12])
             if b is not None]
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


def save_upload(data: bytes) -> str:
    """An uploaded zip, stored once under the runs folder by content hash; vqdemo.images checks what is inside."""
    return str(run_store.save_upload(state.runs_dir(), data))


@st.cache_data(max_entries=64, show_spinner="Checking the zip...")
def zip_problem(path: str) -> str:
    """Why a stored upload cannot train ("" when it may), from its file list and two image headers
    (`data.check_source`), never a decode. Cached by path, which names the upload's content (`save_upload`)."""
    try:
        check_source(DataConfig(name="folder", path=path))
    except DataError as e:
        return str(e)
    return ""


def settings_form() -> dict:
    """The new-run controls; returns the settings (also kept in the URL)."""
    init_settings()
    v = {name: st.session_state["tr_" + name] for name in SETTINGS}
    if "tr_preset" not in st.session_state:
        st.session_state["tr_preset"] = preset_of(v) or "healthy"
    st.radio("Codebook recipe", list(PRESETS), format_func=PRESETS.get, key="tr_preset", on_change=apply_preset,
             horizontal=True, help="Both 'start' recipes learn the codebook by gradient with no restarts; only "
             "where the codes start differs. N(0, 1) codes start about 4 from the encoder's outputs, each alone, and "
             "most are never picked; U(-1/K, 1/K) codes start bunched together a few tenths from them (only a few "
             "win at first) and get used as the outputs spread past the bunch. Healthy: k-means init on encoder "
             "outputs, EMA codebook (Razavi et al. 2019), dead-code restart.")
    st.selectbox("Dataset", SETTINGS["data"].options, key="tr_data",
                 format_func=lambda n: f"{n}: {DATASETS[n]}" if n != "folder" else "your images: upload a .zip")
    if st.session_state["tr_data"] == "folder":
        up = st.file_uploader(f"A .zip of images (sub-folders become classes; at most {MAX_UPLOAD_MB} MB)",
                              type=["zip"], key="tr_upload", max_upload_size=MAX_UPLOAD_MB)
        if up is not None:
            if up.size > MAX_UPLOAD_MB * 2**20:
                st.error(f"That zip is {up.size / 2**20:.0f} MB; the limit is {MAX_UPLOAD_MB} MB.")
            else:
                try:
                    stored = st.session_state.get("tr_upload_path")
                    if st.session_state.get("tr_upload_id") != up.file_id or not (stored and Path(stored).is_file()):
                        st.session_state["tr_upload_path"] = save_upload(up.getvalue())
                        st.session_state["tr_upload_id"] = up.file_id
                except OSError as e:
                    st.error(f"Could not store the upload under {state.runs_dir()} ({text.md(e, 400)}); the disk may "
                             "be full.")
                else:
                    if problem := zip_problem(st.session_state["tr_upload_path"]):
                        st.error(text.md(problem, 400))
    kind = st.radio("Model", SETTINGS["kind"].options, format_func=KINDS.get, key="tr_kind", horizontal=True)
    a, b = st.columns(2)
    arch = a.radio("Architecture", SETTINGS["arch"].options, key="tr_arch", horizontal=True,
                   help="conv: strided convolutions + residual blocks (van den Oord et al. 2017); patch: a patch MLP "
                        "(Conv2d with kernel = stride = patch)")
    if st.session_state["tr_down"] not in DOWN[arch]:
        st.session_state["tr_down"] = SETTINGS["down"].default
    down = b.selectbox("Downsample" if arch == "conv" else "Patch size", DOWN[arch], key="tr_down")
    size = NATIVE_SIZE[st.session_state["tr_data"]]
    h = ModelConfig(arch=arch, image_size=size, downsample=down).latent_size
    a, b = st.columns(2)
    if kind == "fsq":
        a.selectbox("Levels per channel", SETTINGS["levels"].options, key="tr_levels",
                    format_func=lambda s: f"{s} ({math.prod(int(n) for n in s.split(','))} codes)",
                    help="Finite scalar quantisation (Mentzer et al. 2023): each latent channel is bounded and rounded "
                         "to this many levels; the codes are the grid's points. Nothing to learn, nothing to collapse.")
        levels = [int(n) for n in st.session_state["tr_levels"].split(",")]
        st.caption(f"A {size}×{size} image becomes a {h}×{h} grid of {len(levels)}-vectors, each channel rounded "
                   f"to its levels: one of {math.prod(levels)} grid points. No codebook loss, no commitment loss.")
    else:
        if kind != "vae":
            a.select_slider("Codebook size K", SETTINGS["k"].options, key="tr_k", help=SETTINGS["k"].help)
        b.select_slider("Code size D" if kind != "vae" else "Latent channels D", SETTINGS["d"].options, key="tr_d",
                        help=SETTINGS["d"].help)
        snapped = f", each snapped to one of {st.session_state['tr_k']} codes." if kind != "vae" else " (no codebook)."
        st.caption(f"A {size}×{size} image becomes a {h}×{h} grid of {st.session_state['tr_d']}-vectors{snapped}")
    if kind == "vae":
        st.select_slider("KL weight", SETTINGS["kl"].options, key="tr_kl", format_func=lambda x: f"{x:g}",
                  help="Lower sends more bits per image (its KL to N(0, I)): sharper reconstructions, "
                       "worse noise samples.")
    elif kind != "fsq":
        st.slider("Commitment weight beta", float(SETTINGS["beta"].lo), BETA_MAX, step=0.05, key="tr_beta",
                  help=SETTINGS["beta"].help)
    a, b = st.columns(2)
    a.select_slider("Learning rate", SETTINGS["lr"].options, key="tr_lr", format_func=lambda x: f"{x:g}")
    b.select_slider("Batch size", SETTINGS["batch"].options, key="tr_batch")
    a, b = st.columns(2)
    budget = a.radio("Budget", SETTINGS["budget"].options, key="tr_budget", horizontal=True)
    if budget == "seconds":
        b.slider("Seconds", SETTINGS["secs"].lo, SETTINGS["secs"].hi, step=5, key="tr_secs")
    else:
        b.number_input("Steps", SETTINGS["steps"].lo, SETTINGS["steps"].hi, step=100, key="tr_steps")
    if kind in ("vq", "rq"):
        with st.expander("Codebook options", expanded=False):
            st.radio("Codebook update", SETTINGS["cb"].options, key="tr_cb", horizontal=True,
                     format_func=CODEBOOK_UPDATES.get, help=SETTINGS["cb"].help)
            st.radio("Init", SETTINGS["init"].options, key="tr_init", horizontal=True, format_func=INITS.get,
                     help=SETTINGS["init"].help)
            st.toggle("Restart dead codes", key="tr_restart", help=SETTINGS["restart"].help)
            st.toggle("Cosine codebook (unit vectors)", key="tr_cosine", help=SETTINGS["cosine"].help)
            st.radio("Straight-through form", SETTINGS["ste"].options, key="tr_ste", horizontal=True,
                     format_func=STE_FORMS.get,
                     help="The second form also sends the decoder's gradient to the codebook; an EMA codebook takes "
                          "no gradient, so it needs the gradient codebook update.")
            if st.session_state["tr_ste"] == "both" and st.session_state["tr_cb"] == "ema":
                st.warning("An EMA codebook takes no gradient, so z_q + (z_e - sg(z_e)) would train exactly like "
                           "the paper's form. Pick the gradient codebook update, or the paper's form.")
    if kind == "rq":
        with st.expander("Residual quantisation (RQ)", expanded=True):
            st.slider("Depth", SETTINGS["depth"].lo, SETTINGS["depth"].hi, key="tr_depth")
            st.text_input("K per depth", key="tr_sizes", placeholder="empty: K at every depth; e.g. 512,256,128,64")
            st.toggle("One codebook shared by every depth", key="tr_shared", help=SETTINGS["shared"].help)
            st.toggle("Normalise each residual (one running RMS per depth)", key="tr_norm", help=SETTINGS["norm"].help)
            st.number_input("Progressive: switch a depth on every N steps (0: all at once)", SETTINGS["prog"].lo,
                            SETTINGS["prog"].hi, step=100, key="tr_prog")
    with st.expander("More", expanded=False):
        st.number_input("Seed", SETTINGS["seed"].lo, SETTINGS["seed"].hi, key="tr_seed", help=SETTINGS["seed"].help)
        st.toggle("Divide the recon loss by the data variance (as van den Oord et al. 2017's code does)", key="tr_var")
    v = save_settings()
    if preset_of(v) is None and kind in ("vq", "rq"):
        st.caption("Codebook options: custom (neither preset).")
    return v


def title_of(v: dict) -> str:
    quantizer = {"vae": "", "fsq": f" levels {v['levels']}"}.get(v["kind"], f" K={v['k']} beta={v['beta']:g}")
    what = KINDS[v["kind"]] + quantizer
    inits = {"far": ", N(0,1) init", "near": ", U(-1/K,1/K) init"}
    recipe = inits.get(preset_of(v) or "custom", "") if v["kind"] in ("vq", "rq") else ""
    return f"{what} on {v['data']}{recipe}"


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
        out["beta"] = min(BETA_MAX, max(0.0, round(round(float(now["beta"]) / 0.05) * 0.05, 2)))
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
        cols[0].slider("beta (live)", 0.0, BETA_MAX, value=shown["beta"], step=0.05, key=key["beta"],
                       on_change=turn_knob, args=(v.id, "beta", key["beta"], shown["beta"]))
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
        st.plotly_chart(shared_figure(v, "loss", lambda: charts.loss_curves(thin(v.train), marks=v.changes)),
                        key="tr_fig_loss")
        st.caption("Recon should fall steadily; commit (beta's term) shows how far encoder outputs sit from their "
                   "codes. Dotted lines mark live changes.")
    with b:
        st.plotly_chart(shared_figure(v, "psnr", lambda: charts.metric_curve(
            thin(v.train) + v.val, "psnr", "PSNR", "dB", kinds=("train", "val"))), key="tr_fig_psnr")
        st.caption("Validation PSNR (bold) is the honest score: it climbs while the decoder and codebook learn.")
    if v.kind == "vae":
        st.caption("A VAE has no codebook: no usage, no perplexity. Compare its reconstructions with a VQ run.")
    else:
        a, b = st.columns(2)
        with a:
            st.plotly_chart(shared_figure(v, "ppl", lambda: charts.codebook_curve(
                thin(v.train), "perplexity", "Perplexity vs K", "perplexity")), key="tr_fig_ppl")
            st.caption("Perplexity near the dashed K line means every code pulls its weight; far below it is collapse."
                       + analysis.perplexity_dip_note(v.train, v.knobs.get("k") or v.model_cfg.vq.k))
        with b:
            st.plotly_chart(shared_figure(v, "used", lambda: charts.codebook_curve(
                thin(v.train), "used", "Codes used per batch", "codes used")), key="tr_fig_used")
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
    if "tr_goto" in st.session_state or retitled or (st.session_state.get("tr_live_state") in ACTIVE) != v.active:
        st.session_state["tr_live_state"] = v.state
        st.rerun()   # a run started, ended or was retitled live: redraw the whole page (its picker and lists)
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


def example() -> None:
    """What the panel will show, from the shipped mnist-vq's recorded run, so the page teaches before any click."""
    rows = runs.read_metrics(state.CHECKPOINTS / "mnist-vq")
    if not rows:
        return
    st.markdown("**What a healthy run looks like** (the shipped mnist-vq, recorded when it was trained):")
    a, b = st.columns(2)
    a.plotly_chart(charts.loss_curves(rows), key="tr_ex_loss")
    b.plotly_chart(charts.metric_curve(rows, "perplexity", "Perplexity (validation)", "perplexity",
                                       reference=last(rows, "k"), reference_name="K"), key="tr_ex_ppl")
    st.caption(trend_caption(rows))


# ---- the teacher's collapse pair -----------------------------------------------------------------------------

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
            parts.append(f"{v.title.removeprefix('Lesson demo: ')} uses {used:.0f} of {v.knobs.get('k', 64):.0f} "
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
presenter = state.presenter()
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
        st.code(f"{st.context.url or ''}?{urlencode(st.query_params.to_dict())}", language=None, wrap_lines=True)
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
        st.fragment(status_panel, run_every=tick_seconds(1.0) if view.active else None)(job_id, settings)
        st.fragment(chart_panel, run_every=tick_seconds(CHART_EVERY_S) if view.active else None)(job_id)
        with st.expander("Your runs in the queue", expanded=len(mine) > 1):
            st.fragment(my_runs_table, run_every=tick_seconds(CHART_EVERY_S) if view.active else None)(me.id)

st.divider()
st.subheader("Runs on this server")
busy = any(j.state in ACTIVE for j in queue.list_jobs())
st.fragment(finished_runs, run_every=tick_seconds(CHART_EVERY_S) if busy else None)(me.id)

state.notebook_button("train")   # this setup as a Jupyter notebook (ui/notebook_button.py)
