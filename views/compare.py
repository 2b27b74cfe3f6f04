"""Compare: two or more models side by side (say K=8 vs K=512, or a healthy codebook vs one started far from the data).

Their recorded curves overlaid, the same validation images reconstructed by each, and how each uses its
codebook on a few hundred validation images. The default view puts the shipped mnist-vq beside the other
shipped models, so the page teaches before any click. The selection lives in the URL (`?runs=a,b`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st
import torch

from ui import charts, state, text
from ui.describe import chart as chart_with_summary
from ui.describe import grid as grid_alt
from ui.describe import usage as usage_summary
from vqdemo import runs
from vqdemo.analysis import (
    PaidRate,
    encode_all,
    image_grid,
    paid_rate,
    posterior_sample_psnr,
    rate_line,
    reconstruct,
    usage,
)
from vqdemo.metrics import PSNR_MEANING, psnr_of
from vqdemo.prior import prior_figures
from vqdemo.quantize import perplexity_of

N_USAGE = 500   # validation images encoded for each usage histogram
N_SHOW = 8      # validation images reconstructed side by side
PER_ROW = 3
# Each compared model is loaded, run on validation images and drawn: one student's link or picks must not make the
# server load every run of the class (the model cache holds 16, so more would reload on every rerun).
MAX_COMPARE = 8


def mtime(path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


@st.cache_data(max_entries=64, show_spinner=False)
def metrics(path: str, stamp: float) -> list[dict]:
    """metrics.jsonl rows, re-read when the file changes (stamp: its mtime)."""
    return runs.read_metrics(path)


@st.cache_data(max_entries=32, show_spinner="Reconstructing validation images...")
def reconstructions(_choice: state.ModelChoice, path: str, stamp: float) -> tuple[np.ndarray, np.ndarray, float]:
    """The first N_SHOW validation images, the model's reconstructions and their PSNR (of the set)."""
    loaded = state.load_choice(_choice)
    x = loaded.data.val_x[:N_SHOW]
    x_hat, _ = reconstruct(loaded.model, x)
    return x.numpy(), x_hat.numpy(), psnr_of(x, x_hat)


@st.cache_data(max_entries=32, show_spinner="Decoding posterior samples...")
def sample_psnr(_choice: state.ModelChoice, path: str, stamp: float) -> float | None:
    """A VAE's validation PSNR from one posterior sample per image (seed 0): the latent its KL pays for."""
    loaded = state.load_choice(_choice)
    return posterior_sample_psnr(loaded.model, loaded.data.val_x, seed=0) if loaded.choice.kind == "vae" else None


@st.cache_data(max_entries=32, show_spinner="Encoding validation images...")
def code_usage(_choice: state.ModelChoice, path: str, stamp: float) -> np.ndarray | None:
    """How often each code (depth 1 for RQ) is picked over N_USAGE validation images; None for a VAE."""
    loaded = state.load_choice(_choice)
    if not loaded.model.codebook_sizes:
        return None
    codes = encode_all(loaded.model, loaded.data.val_x[:N_USAGE])  # (N, h, w) or (N, depth, h, w)
    if codes.dim() == 4:
        codes = codes[:, 0]
    return usage(codes, loaded.model.codebook_sizes[0]).numpy()


def default_selection(choices: list[state.ModelChoice]) -> list[str]:
    """The shipped mnist-vq first, then the other shipped models; this server's newest runs if that makes fewer
    than two."""
    shipped = sorted((c.id for c in choices if c.id.startswith("shipped:")), key=lambda i: i != state.DEFAULT_MODEL)
    return shipped + [c.id for c in choices if not c.id.startswith("shipped:")][: max(0, 2 - len(shipped))]


def rate_of(c: state.ModelChoice, best: dict) -> PaidRate | None:
    """Bits per image the model pays (codes: its prior's code length, else the uniform bound; VAE: its KL), or None
    if unknown."""
    loaded = state.load_choice(c)
    rate = paid_rate(loaded.model, best, prior_figures(c.path) if loaded.has_prior else None)
    return rate if np.isfinite(rate.bits) else None


def rate_summary(chosen: list[state.ModelChoice]) -> str:
    """Each model's PSNR at the rate it pays, computed from the table's numbers."""
    lines = []
    for c in chosen:
        best = runs.run_info(c.path).status.get("best") or {}
        rate = rate_of(c, best)
        if rate is None or "psnr" not in best:
            continue
        lines.append(rate_line(text.md(c.label), best["psnr"], rate, sample_psnr(c, *state.model_key(c))))
    return "; ".join(lines)


def describe(c: state.ModelChoice) -> dict:
    """One row of the table: the model as its loaded weights describe it (validated when they loaded, while
    config.json is only a file in the runs folder), the dataset and scores from the cleaned config and status."""
    info, cfg = runs.run_info(c.path), state.load_choice(c).model.config
    best = info.status.get("best") or {}
    vq, rq = cfg.vq, cfg.rq
    sizes = "none" if c.kind == "vae" else (
        f"{vq.k} shared x {rq.depth}" if c.kind == "rq" and rq.shared
        else ",".join(map(str, rq.codebook_sizes)) if c.kind == "rq" else str(vq.k))
    data = info.meta.get("data", {}).get("name", "?")
    rate = rate_of(c, best)
    sampled = sample_psnr(c, *state.model_key(c))
    # the outcome first (a narrow screen scrolls the table's right side away), then what differs; blank: not this kind
    return {
        "model": c.label, "best val PSNR": round(best["psnr"], 2) if "psnr" in best else "",
        "bits per image": round(rate.bits) if rate else "", "counted as": rate.how if rate else "",
        "uniform bound": round(rate.bound) if rate and rate.bound else "",
        "PSNR, posterior sample": round(sampled, 2) if sampled is not None else "",
        "kind": c.kind.upper(), "data": text.plain(data, 40),
        "K": sizes if c.kind != "fsq" else "x".join(map(str, cfg.fsq.levels)), "D": cfg.code_dim,
        "beta": vq.beta if c.kind in ("vq", "rq") else "",
        "codebook": "" if c.kind not in ("vq", "rq") else f"{vq.codebook}, {vq.init} init"
        + (", restarts" if vq.restart_dead else ""),
        "KL weight": cfg.kl_weight if c.kind == "vae" else "",
        "steps": info.status.get("step"),
    }


X_AXES = {"fraction": "fraction of each run", "time": "seconds", "step": "steps"}


def colour_key(chosen: list[state.ModelChoice], colors: dict[str, str]) -> None:
    """One legend for every chart of the page (each run keeps its colour on all of them). Run names are user text:
    markdown-escaped (`text.md` also escapes < and >), so only the coloured squares are HTML."""
    square = '<span style="color: {}; font-size: 1.4em">&#9632;</span>'
    keys = [f'<span style="white-space: nowrap">{square.format(color)} {text.md(label)}</span>'
            for label, color in ((c.label, colors[text.plotly(c.label)]) for c in chosen)]
    st.markdown("&emsp; ".join(keys), unsafe_allow_html=True)


def curves(chosen: list[state.ModelChoice], colors: dict[str, str]) -> None:
    rows = {text.plotly(c.label): metrics(str(c.path), mtime(c.path / runs.METRICS)) for c in chosen}
    X = state.Param("x", "fraction", options=tuple(X_AXES))
    state.url_value("cmp_x", X)
    x = st.radio("x axis", X.options, format_func=X_AXES.get, key="cmp_x", horizontal=True,
                 help="Runs of different lengths (200 steps against 3,000) share one axis as a fraction of each run.")
    state.to_url((X, x))
    colour_key(chosen, colors)
    style = dict(x=x, colors=colors, legend=False)   # one colour per run on every chart, keyed once above
    a, b = st.columns(2)
    with a:
        chart_with_summary(st, charts.overlay(rows, "psnr", "Validation PSNR", "dB", **style), key="cmp_psnr")
        st.caption("Higher is better: which model rebuilds held-out images best, and how fast it got there.")
    with b:
        chart_with_summary(st, charts.overlay(rows, "perplexity", "Perplexity (validation)", "perplexity", **style),
                           key="cmp_ppl")
        st.caption("The effective number of codes in use: a collapsed codebook stays flat near the bottom.")
    a, b = st.columns(2)
    with a:
        chart_with_summary(st, charts.overlay(rows, "used", "Codes used (validation)", "codes", **style),
                           key="cmp_used")
        st.caption("Distinct codes picked on the validation set (depth 1 for RQ); compare it with each model's K.")
    with b:
        chart_with_summary(st, charts.overlay(rows, "loss", "Training loss", "loss", kind="train", log_y=True,
                                          **style), key="cmp_loss")
        st.caption("Training loss on a log scale; lower is better, but only compare models trained on the same data.")


def side_by_side_reconstructions(chosen: list[state.ModelChoice]) -> None:
    groups: dict[str, list[state.ModelChoice]] = {}
    for c in chosen:
        groups.setdefault(repr(sorted(runs.run_info(c.path).meta.get("data", {}).items())), []).append(c)
    for members in groups.values():
        x, _, _ = reconstructions(members[0], *state.model_key(members[0]))
        st.image(state.crisp(image_grid(torch.from_numpy(x), nrow=N_SHOW), width=600), caption="validation images",
                 alt=grid_alt(len(x), "validation images in a row"))
        for c in members:
            _, x_hat, psnr = reconstructions(c, *state.model_key(c))
            rate = rate_of(c, runs.run_info(c.path).status.get("best") or {})   # cleaned: a planted status is a dict
            st.image(state.crisp(image_grid(torch.from_numpy(x_hat), nrow=N_SHOW), width=600),
                     caption=f"{text.md(c.label)}: PSNR {psnr:.1f} dB"
                     + (f" at {rate.bits:.0f} bits per image ({rate.how})" if rate is not None else ""),
                     alt=grid_alt(len(x_hat), f"reconstructions by {c.label}") + f", PSNR {psnr:.1f} dB")
    st.caption("The same validation images through each model: look at thin strokes and edges, where a small "
               "or collapsed codebook blurs first." + (" Models trained on different data get their own originals."
                                                       if len(groups) > 1 else ""))


def usage_histograms(chosen: list[state.ModelChoice], colors: dict[str, str]) -> None:
    for start in range(0, len(chosen), PER_ROW):
        cols = st.columns(PER_ROW, vertical_alignment="bottom")   # labels of 1 to 3 lines: the charts stay level
        for col, c in zip(cols, chosen[start:start + PER_ROW]):
            with col:
                counts = code_usage(c, *state.model_key(c))
                if counts is None:
                    st.info(f"{text.md(c.label)}: a VAE has no codebook.")
                    continue
                st.markdown(f"**{text.md(c.label)}**: {charts.alive_codes(counts)} of {len(counts)} codes alive")
                chart_with_summary(st, charts.usage_histogram(counts, charts.NEVER_USED, "uses", sort=True, height=240,
                                                              color=colors[text.plotly(c.label)]),
                                   usage_summary(counts), key=f"cmp_usage_{c.id}")
                st.caption(f"Perplexity {perplexity_of(torch.from_numpy(counts)):.1f} of K={len(counts)}"
                           + (" (depth 1)" if c.kind == "rq" else "") + ".")
    st.caption(f"Each model's codes sorted from most to least used over {N_USAGE} validation images; red codes were "
               "never picked. A long red tail is a collapsed codebook: K was paid for, few codes work.")


state.current()  # draws the sidebar when a deep link on a fresh server runs this page without app.py
st.title("Compare")
st.caption("Put models side by side: shipped checkpoints and the runs trained on this server.")
choices = state.model_choices()
by_id = {c.id: c for c in choices}
default = default_selection(choices)
if "cmp_runs" not in st.session_state:
    wanted = list(dict.fromkeys(i for i in state.url_list("runs") if i in by_id))  # ?runs=a,a: once
    if len(wanted) > MAX_COMPARE:
        st.info(f"The link names {len(wanted)} models; the first {MAX_COMPARE} are compared.")
    st.session_state["cmp_runs"] = wanted[:MAX_COMPARE] or default
picked = st.multiselect("Models to compare", list(by_id), key="cmp_runs", format_func=lambda i: by_id[i].label,
                        max_selections=MAX_COMPARE,
                        help=f"Two to {MAX_COMPARE}; runs appear here once they have saved weights.")
state.write_url({"runs": None if picked == default else ",".join(picked)})

if len(picked) < 2:
    st.info("Pick two or more models to compare (for example a K=8 run and a K=512 run, or a healthy codebook "
            "vs one started far from the data).")
    st.stop()

chosen = [by_id[i] for i in picked]
try:
    st.dataframe(pd.DataFrame([describe(c) for c in chosen]), hide_index=True, width="stretch")
    st.caption("What differs between them: read this row by row before reading the curves. Compare PSNR only "
               "beside the bits per image each model pays, counted the same way: a code model pays what its own "
               "prior needs to code its code map (the uniform bound h·w·log2 K beside it; without a prior only the "
               "bound is known); a VAE pays its KL to N(0, I), which buys a posterior sample, so its PSNR from a "
               f"sample is the one to compare (decoding the mean is free quality the rate does not pay for). "
               f"{PSNR_MEANING}.")
    if summary := rate_summary(chosen):
        st.markdown(f"**At the rates each pays:** {summary}.")
    colors = charts.run_colors([text.plotly(c.label) for c in chosen])   # one colour per run on every chart of the page
    st.subheader("Training curves")
    curves(chosen, colors)
    st.subheader("Reconstructions")
    side_by_side_reconstructions(chosen)
    st.subheader("Codebook usage")
    usage_histograms(chosen, colors)
except (runs.CheckpointError, ValueError, OSError) as e:
    st.error(f"Could not compare these models: {text.md(e, 400)}")
