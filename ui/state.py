"""What every page shares: the model picker, cached models and datasets, URL state and presenter mode.

Models and datasets are loaded once per server with `st.cache_resource` and shared by every session (a
whole class): they are only used for inference (eval mode, no_grad), which never mutates them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import streamlit as st
import torch

from ui import text
from vqdemo import runs
from vqdemo.data import DataConfig, ImageData, load_data
from vqdemo.images import to_uint8, upscale_nearest
from vqdemo.prior import prior_dir

CHECKPOINTS = Path(__file__).resolve().parent.parent / "checkpoints"
DEFAULT_MODEL = "shipped:mnist-vq"


@dataclass(frozen=True)
class ModelChoice:
    id: str          # "shipped:<name>" or "run:<run id>"
    label: str
    path: Path
    kind: str        # vq | rq | fsq | vae


@dataclass
class Loaded:
    choice: ModelChoice
    model: torch.nn.Module
    meta: dict
    data: ImageData

    @property
    def kind(self) -> str:
        return self.choice.kind

    @property
    def has_prior(self) -> bool:
        return (prior_dir(self.choice.path) / runs.WEIGHTS).is_file()


def runs_dir() -> Path:
    return runs.default_runs_dir()


def model_choices() -> list[ModelChoice]:
    """Shipped checkpoints first, then finished or checkpointed runs of this server, newest first."""
    out = []
    for info in runs.list_runs(CHECKPOINTS):
        if info.has_weights:
            kind = info.meta.get("model", {}).get("kind", "vq")
            out.append(ModelChoice(f"shipped:{info.id}", f"{info.id} (shipped)", info.path, kind))
    out.sort(key=lambda c: c.id)
    for info in runs.list_runs(runs_dir()):
        if info.has_weights and info.meta.get("kind") in ("vq", "rq", "fsq", "vae"):
            title = text.plain(info.meta.get("title") or info.id, 80)
            out.append(ModelChoice(f"run:{info.id}", f"{title} ({info.state})", info.path, info.meta["kind"]))
    return out


@st.cache_resource(show_spinner="Loading model...", max_entries=16)
def _load_model(path: str, mtime: float) -> tuple[torch.nn.Module | None, dict | str]:
    """(model, meta), or (None, why) for a refused checkpoint: refusals are cached too (per file version), so a
    planted checkpoint that takes seconds to refuse costs them once, not on every rerun of every page."""
    try:
        return runs.load_model(path)
    except runs.CheckpointError as e:
        return None, str(e)


@st.cache_resource(show_spinner="Loading dataset...", max_entries=8)
def load_dataset(cfg: DataConfig) -> ImageData:
    return load_data(cfg)


def load_choice(choice: ModelChoice) -> Loaded:
    """The model and its dataset. The data config comes from the checkpoint, so it goes through runs.data_config
    (downloads off, unknown keys and odd values refused); a model that does not fit its data is refused here."""
    weights = choice.path / runs.WEIGHTS
    model, meta = _load_model(str(choice.path), weights.stat().st_mtime)
    if model is None:
        raise runs.CheckpointError(meta)
    if model.config.kind != choice.kind:
        raise runs.CheckpointError(f"its config.json says {choice.kind} but its weights are a {model.config.kind} "
                                   "model; the run folder was edited or mixed up")
    data = load_dataset(runs.data_config(meta, choice.label))
    runs.check_fits(model, data, choice.label)
    return Loaded(choice, model, meta, data)


def _param(name: str, default: str) -> str:
    return st.query_params.get(name, default)


def sidebar() -> Loaded | None:
    """The model picker and presenter toggle; the choice lives in the URL so it holds across pages and can be shared."""
    choices = model_choices()
    with st.sidebar:
        if not choices:
            st.error("No models found: the shipped checkpoints/ folder is missing. Re-clone the repository or train a run.")
            return None
        ids = [c.id for c in choices]
        wanted = _param("model", DEFAULT_MODEL)
        index = ids.index(wanted) if wanted in ids else (ids.index(DEFAULT_MODEL) if DEFAULT_MODEL in ids else 0)
        picked = st.selectbox("Model", ids, index=index, format_func=lambda i: choices[ids.index(i)].label,
                              key="model_picker", help="Shipped checkpoints and the runs trained on this server.")
        st.query_params["model"] = picked
        present = st.toggle("Presenter mode", value=_param("present", "0") == "1",
                            help="Larger images and fonts; controls tucked away.")
        st.query_params["present"] = "1" if present else "0"
        st.session_state["presenter"] = present
    if present:
        st.markdown("<style>html { font-size: 20px; } [data-testid=stSidebar] { display: none; }</style>",
                    unsafe_allow_html=True)
    choice = choices[ids.index(picked)]
    try:
        return load_choice(choice)
    except (runs.CheckpointError, ValueError, OSError) as e:
        st.error(f"Could not load {text.md(choice.label)}: {text.md(e, 400)}")
        return None


def presenter() -> bool:
    return bool(st.session_state.get("presenter", False))


def current() -> Loaded | None:
    """The model the sidebar picked (set by app.py before the page runs).

    On a fresh server the first visit to a deep link (say /codebook?img=3) runs the page file without app.py:
    Streamlit's pages/ folder fallback, until some session has run st.navigation. Then the page draws the
    sidebar itself, so shared links work from the first second.
    """
    if "loaded" not in st.session_state:
        st.session_state["loaded"] = sidebar()
    return st.session_state["loaded"]


def crisp(images: torch.Tensor, width: int = 112) -> np.ndarray | list[np.ndarray]:
    """Tiny images -> uint8 arrays upscaled with nearest neighbour (no blur), about `width` pixels wide.

    (C, H, W) -> one (H', W'[, 3]) array; (N, C, H, W) -> a list of them.
    """
    if presenter():
        width = int(width * 1.6)
    if images.dim() == 4:
        return [crisp(im, width) for im in images]
    scale = max(1, round(width / images.shape[-1]))
    return upscale_nearest(to_uint8(images), scale)


def int_param(name: str, default: int, lo: int, hi: int) -> int:
    """An integer from the URL, clamped to [lo, hi]; junk falls back to the default."""
    try:
        return min(hi, max(lo, int(_param(name, str(default)))))
    except ValueError:
        return default


def float_param(name: str, default: float, lo: float, hi: float) -> float:
    try:
        value = float(_param(name, str(default)))
    except ValueError:
        return default
    return min(hi, max(lo, value)) if np.isfinite(value) else default


def session_id() -> str:
    """A stable id for this browser session, to keep a student's own runs their own."""
    if "sid" not in st.session_state:
        st.session_state["sid"] = os.urandom(6).hex()
    return st.session_state["sid"]
