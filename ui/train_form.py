"""The Train page's new-run settings form: the codebook recipe, dataset (or an uploaded zip), model, bottleneck,
optimiser and budget, codebook and RQ options. Each widget's value lives in session state under `tr_<setting>`
and in the URL (only what differs from the defaults), so a teacher can share a setup."""

from __future__ import annotations

import math
from pathlib import Path

import streamlit as st

from ui import state, text
from vqdemo import run_store
from vqdemo.app_limits import BETA_MAX, MAX_ZIP_MB
from vqdemo.data import DATASETS, NATIVE_SIZE, DataConfig, DataError, check_source
from vqdemo.fit import far_init_quantizer, near_init_quantizer
from vqdemo.models import KINDS, ModelConfig
from vqdemo.quantize import CODEBOOK_UPDATES, INITS, STE_FORMS, QuantizerConfig
from vqdemo.train_settings import DOWN, SETTINGS

HEALTHY, FAR_INIT, NEAR_INIT = QuantizerConfig(), far_init_quantizer(), near_init_quantizer()
RECIPES = {"healthy": HEALTHY, "far": FAR_INIT, "near": NEAR_INIT}
PRESETS = {"healthy": "Healthy default", "far": "Codes start far: N(0, 1) (collapses)",
           "near": "Codes start near: U(-1/K, 1/K)"}
SAVED = "tr_saved"   # the settings this session last had, kept across page switches


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
    recipe_choice({name: st.session_state["tr_" + name] for name in SETTINGS})
    dataset_choice()
    kind = st.radio("Model", SETTINGS["kind"].options, format_func=KINDS.get, key="tr_kind", horizontal=True)
    size, h = architecture_choice()
    bottleneck_choice(kind, size, h)
    optimiser_choice()
    if kind in ("vq", "rq"):
        codebook_options()
    if kind == "rq":
        residual_options()
    more_options()
    v = save_settings()
    if preset_of(v) is None and kind in ("vq", "rq"):
        st.caption("Codebook options: custom (neither preset).")
    return v


def recipe_choice(v: dict) -> None:
    """The codebook recipe; a first visit starts at the recipe the settings `v` match (the healthy one if none)."""
    if "tr_preset" not in st.session_state:
        st.session_state["tr_preset"] = preset_of(v) or "healthy"
    st.radio("Codebook recipe", list(PRESETS), format_func=PRESETS.get, key="tr_preset", on_change=apply_preset,
             horizontal=True, help="Both 'start' recipes learn the codebook by gradient with no restarts; only "
             "where the codes start differs. N(0, 1) codes start about 4 from the encoder's outputs, each alone, and "
             "most are never picked; U(-1/K, 1/K) codes start bunched together a few tenths from them (only a few "
             "win at first) and get used as the outputs spread past the bunch. Healthy: k-means init on encoder "
             "outputs, EMA codebook (Razavi et al. 2019), dead-code restart.")


def dataset_choice() -> None:
    """The dataset, and the zip upload when the student picks their own images."""
    st.selectbox("Dataset", SETTINGS["data"].options, key="tr_data",
                 format_func=lambda n: f"{n}: {DATASETS[n]}" if n != "folder" else "your images: upload a .zip")
    if st.session_state["tr_data"] == "folder":
        upload_zip()


def upload_zip() -> None:
    """A zip of the student's images: stored once under the runs folder (its path in `tr_upload_path`); a zip too
    large, not storable or not trainable says why."""
    up = st.file_uploader(f"A .zip of images (sub-folders become classes; at most {MAX_ZIP_MB} MB)",
                          type=["zip"], key="tr_upload", max_upload_size=MAX_ZIP_MB)
    if up is None:
        return
    if up.size > MAX_ZIP_MB * 2**20:
        st.error(f"That zip is {up.size / 2**20:.0f} MB; the limit is {MAX_ZIP_MB} MB.")
        return
    try:
        stored = st.session_state.get("tr_upload_path")
        if st.session_state.get("tr_upload_id") != up.file_id or not (stored and Path(stored).is_file()):
            st.session_state["tr_upload_path"] = save_upload(up.getvalue())
            st.session_state["tr_upload_id"] = up.file_id
    except OSError as e:
        st.error(f"Could not store the upload under {state.runs_dir()} ({text.md(e, 400)}); the disk may be full.")
        return
    if problem := zip_problem(st.session_state["tr_upload_path"]):
        st.error(text.md(problem, 400))


def architecture_choice() -> tuple[int, int]:
    """Encoder architecture and downsampling; returns (image side, latent grid side) for the captions below."""
    a, b = st.columns(2)
    arch = a.radio("Architecture", SETTINGS["arch"].options, key="tr_arch", horizontal=True,
                   help="conv: strided convolutions + residual blocks (van den Oord et al. 2017); patch: a patch MLP "
                        "(Conv2d with kernel = stride = patch)")
    if st.session_state["tr_down"] not in DOWN[arch]:
        st.session_state["tr_down"] = SETTINGS["down"].default
    down = b.selectbox("Downsample" if arch == "conv" else "Patch size", DOWN[arch], key="tr_down")
    size = NATIVE_SIZE[st.session_state["tr_data"]]
    return size, ModelConfig(arch=arch, image_size=size, downsample=down).latent_size


def bottleneck_choice(kind: str, size: int, h: int) -> None:
    """What sits between encoder and decoder: FSQ levels, or K and D (D alone for a VAE), then the KL weight of a
    VAE or the commitment weight beta; `size` and `h` (image and grid sides) go into the caption."""
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


def optimiser_choice() -> None:
    """Learning rate, batch size, and the budget in seconds or steps."""
    a, b = st.columns(2)
    a.select_slider("Learning rate", SETTINGS["lr"].options, key="tr_lr", format_func=lambda x: f"{x:g}")
    b.select_slider("Batch size", SETTINGS["batch"].options, key="tr_batch")
    a, b = st.columns(2)
    budget = a.radio("Budget", SETTINGS["budget"].options, key="tr_budget", horizontal=True)
    if budget == "seconds":
        b.slider("Seconds", SETTINGS["secs"].lo, SETTINGS["secs"].hi, step=5, key="tr_secs")
    else:
        b.number_input("Steps", SETTINGS["steps"].lo, SETTINGS["steps"].hi, step=100, key="tr_steps")


def codebook_options() -> None:
    """How a VQ or RQ codebook learns: update rule, init, dead-code restart, cosine, straight-through form."""
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


def residual_options() -> None:
    """RQ's own settings: depth, K per depth, shared codebook, residual normalisation, progressive depths."""
    with st.expander("Residual quantisation (RQ)", expanded=True):
        st.slider("Depth", SETTINGS["depth"].lo, SETTINGS["depth"].hi, key="tr_depth")
        st.text_input("K per depth", key="tr_sizes", placeholder="empty: K at every depth; e.g. 512,256,128,64")
        st.toggle("One codebook shared by every depth", key="tr_shared", help=SETTINGS["shared"].help)
        st.toggle("Normalise each residual (one running RMS per depth)", key="tr_norm", help=SETTINGS["norm"].help)
        st.number_input("Progressive: switch a depth on every N steps (0: all at once)", SETTINGS["prog"].lo,
                        SETTINGS["prog"].hi, step=100, key="tr_prog")


def more_options() -> None:
    """The seed and the recon loss's variance normalisation."""
    with st.expander("More", expanded=False):
        st.number_input("Seed", SETTINGS["seed"].lo, SETTINGS["seed"].hi, key="tr_seed", help=SETTINGS["seed"].help)
        st.toggle("Divide the recon loss by the data variance (as van den Oord et al. 2017's code does)", key="tr_var")


def title_of(v: dict) -> str:
    """A run's default title from its settings: the model, its quantizer's numbers, the dataset, a named init."""
    quantizer = {"vae": "", "fsq": f" levels {v['levels']}"}.get(v["kind"], f" K={v['k']} beta={v['beta']:g}")
    what = KINDS[v["kind"]] + quantizer
    inits = {"far": ", N(0,1) init", "near": ", U(-1/K,1/K) init"}
    recipe = inits.get(preset_of(v) or "custom", "") if v["kind"] in ("vq", "rq") else ""
    return f"{what} on {v['data']}{recipe}"

