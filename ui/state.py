"""What every page shares: the model picker, cached models and datasets, URL state and presenter mode.

Models and datasets are loaded once per server with `st.cache_resource` and shared by every session (a
whole class): they are only used for inference (eval mode, no_grad), which never mutates them.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st
import torch

from ui import text, theme
from vqdemo import runs, settings
from vqdemo.data import DataConfig, ImageData, data_config, load_data
from vqdemo.images import to_uint8, upscale_nearest
from vqdemo.models import KINDS
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

    @property
    def key(self) -> tuple[str, float]:
        """What the pages' caches of this model are keyed on (`model_key`)."""
        return model_key(self.choice)


def model_key(choice: ModelChoice) -> tuple[str, float]:
    """(folder, its weights' mtime): a page cache keyed on it is recomputed when a run is retrained in place.
    mtime 0.0 while the weights file is missing."""
    try:
        return str(choice.path), (choice.path / runs.WEIGHTS).stat().st_mtime
    except OSError:
        return str(choice.path), 0.0


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
        if info.has_weights and info.meta.get("kind") in KINDS:
            out.append(ModelChoice(f"run:{info.id}", run_label(info), info.path, info.meta["kind"]))
    return out


def run_label(info: runs.RunInfo) -> str:
    """What tells seven look-alike runs apart: title, start time, whose run, final K and best PSNR, state.

    e.g. "14:05, yours, K 64, 23.4 dB: VQ-VAE K=64 on mnist (done)": what differs first, so a narrow picker
    cuts the title, not the facts. The start time comes from the run id.
    """
    title = text.plain(info.meta.get("title") or info.id, 80)
    parts = []
    stamp = info.id.split("-")
    if len(stamp) >= 2 and len(stamp[1]) == 6 and stamp[1].isdigit():
        parts.append(f"{stamp[1][:2]}:{stamp[1][2:4]}")
    owner = str(info.meta.get("owner", ""))
    if owner:
        parts.append("yours" if owner == st.session_state.get("jobs_owner") else f"student {owner[:4]}")
    best = info.status.get("best") or {}
    k = best.get("k", info.status.get("k"))
    if isinstance(k, (int, float)) and info.meta.get("kind") != "vae":
        parts.append(f"K {int(k)}")
    if isinstance(best.get("psnr"), (int, float)) and np.isfinite(best["psnr"]):
        parts.append(f"{best['psnr']:.1f} dB")
    return ", ".join(parts) + (": " if parts else "") + f"{title} ({info.state})"


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
    """The model and its dataset. The data config comes from the checkpoint, so it goes through data_config
    (downloads off, unknown keys and odd values refused); a model that does not fit its data is refused here."""
    model, meta = _load_model(*model_key(choice))
    if model is None:
        raise runs.CheckpointError(meta)
    if model.config.kind != choice.kind:
        raise runs.CheckpointError(f"its config.json says {choice.kind} but its weights are a {model.config.kind} "
                                   "model; the run folder was edited or mixed up")
    data = load_dataset(data_config(meta, choice.label))
    runs.check_fits(model, data, choice.label)
    return Loaded(choice, model, meta, data)


def _param(name: str, default: str) -> str:
    return st.query_params.get(name, default)


# Streamlit's wide layout pads the page by 5rem a side: at 1024 px that leaves little room for figures.
# Captions: Streamlit draws them light grey (3.9:1 on white); WCAG 2.1 AA asks 4.5:1, so they take the text colour
# at 80% (6.7:1 on white, and as readable on a dark theme). A keyboard focus ring on links. .vq-sr: text for screen
# readers only (ui/describe.py's chart summaries), its element box taken out of the page's flow.
PAGE_CSS = """<style>
[data-testid=stMainBlockContainer] { padding-left: 2rem !important; padding-right: 2rem !important; }
[data-testid=stCaptionContainer] { color: inherit !important; opacity: 0.8; }
a:focus-visible { outline: 3px solid #1f77b4; outline-offset: 2px; }
[data-testid=stElementContainer]:has(.vq-sr) { position: absolute !important; width: 0 !important; height: 0;
  overflow: hidden; }
</style>"""
# Presenter mode: 20 px text; less padding around the page and smaller headings so the larger text still
# fits 1024x768 (Streamlit's padding is in rem, so it would grow with the text).
PRESENTER_CSS = """<style>
html { font-size: 20px; }
[data-testid=stMainBlockContainer] { padding: 3.2rem 1.2rem 2rem 1.2rem !important; }
[data-testid=stMain] h1 { font-size: 1.9rem !important; padding-top: 0.2rem !important; }
[data-testid=stMain] h2 { font-size: 1.45rem !important; }
</style>"""


def presenter_from_url() -> bool:
    """Presenter mode as this run sees it: the sidebar toggle once drawn, else the URL (?present=1).

    app.py asks before drawing the navigation, which moves to the top of the screen in presenter mode.
    """
    if "presenter_toggle" not in st.session_state:
        st.session_state["presenter_toggle"] = _param("present", "0") == "1"
    st.session_state["presenter"] = bool(st.session_state["presenter_toggle"])
    return st.session_state["presenter"]


def _leave_presenter() -> None:
    st.session_state["presenter_toggle"] = False


def sidebar() -> Loaded | None:
    """The model picker and presenter toggle; the choice lives in the URL so it holds across pages and can be shared.

    In presenter mode the page links move to a bar at the top of the screen (always visible), the sidebar keeps
    the model picker and the toggle, and a "Leave presenter mode" button sits at the top of every page.
    """
    present = presenter_from_url()
    choices = model_choices()
    with st.sidebar:
        if not choices:
            st.error("No models found: the shipped checkpoints/ folder is missing. "
                     "Re-clone the repository or train a run.")
            return None
        ids = [c.id for c in choices]
        wanted = _param("model", DEFAULT_MODEL)
        linked = st.query_params.get("model")
        if linked in ids and "model_picker" in st.session_state and linked != st.session_state.get("_model_in_url"):
            st.session_state["model_picker"] = linked   # a link (the Lesson's, a shared one) names another model
        index = ids.index(wanted) if wanted in ids else (ids.index(DEFAULT_MODEL) if DEFAULT_MODEL in ids else 0)
        picked = st.selectbox("Model", ids, index=index, format_func=lambda i: choices[ids.index(i)].label,
                              key="model_picker", help="Shipped checkpoints and the runs trained on this server: "
                              "when each run started, who started it, its final K and validation PSNR.")
        st.query_params["model"] = picked
        st.session_state["_model_in_url"] = picked
        st.toggle("Presenter mode", key="presenter_toggle",
                  help="Larger text, images and charts for a projector; the page links move to the top bar.")
        st.query_params["present"] = "1" if present else "0"
    st.markdown(PAGE_CSS, unsafe_allow_html=True)
    if present:
        st.markdown(PRESENTER_CSS, unsafe_allow_html=True)
        st.button("Leave presenter mode", icon=":material/close_fullscreen:", key="leave_presenter",
                  on_click=_leave_presenter, type="tertiary")
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

    The page scripts live in views/, not pages/: with a pages/ folder next to app.py, Streamlit runs a deep
    link on a fresh server through its own pages/ fallback (its alphabetical page list) until some session
    has run st.navigation. A page run on its own (AppTest of a single file) still gets a sidebar here.
    """
    if "loaded" not in st.session_state:
        st.session_state["loaded"] = sidebar()
    return st.session_state["loaded"]


def crisp(images: torch.Tensor, width: int = 112) -> np.ndarray | list[np.ndarray]:
    """Tiny images -> uint8 arrays upscaled with nearest neighbour (no blur), about `width` pixels wide.

    (C, H, W) -> one (H', W'[, 3]) array; (N, C, H, W) -> a list of them.
    """
    width = theme.scaled(width)
    if images.dim() == 4:
        return [crisp(im, width) for im in images]
    scale = max(1, round(width / images.shape[-1]))
    return upscale_nearest(to_uint8(images), scale)


@dataclass(frozen=True)
class Param:
    """One setting kept in the URL as ?name=value: the one mechanism every page uses to read and write its settings.

    Its text is read by `parse`: one of `options`, or a number clamped to [lo, hi]; junk (and NaN, inf) reads
    as None, so the default applies. `field` names the config field it sets, when it is one (see `field_param`).
    """

    name: str
    default: Any
    options: tuple = ()
    lo: float | None = None
    hi: float | None = None
    cast: type = str             # int, float, bool or str
    field: str | None = None     # the config field this setting is (the Train page hands these to fit.model_config)
    help: str | None = None      # the field's help, for the widget

    def parse(self, raw: str | None) -> Any:
        if raw is None:
            return None
        if self.options:
            return next((o for o in self.options if raw in (str(o), text_of(o))), None)
        if self.cast is bool:
            return {"1": True, "0": False}.get(raw)
        try:
            value = self.cast(raw)
        except ValueError:
            return None
        if self.cast is str:
            return value[: int(self.hi)] if self.hi else value
        return self._within(value) if math.isfinite(value) else None

    def read(self, fallback: Any = None) -> Any:
        """This setting as the URL says, else the fallback (what the session had), else its default."""
        value = self.parse(st.query_params.get(self.name))
        return value if value is not None else fallback if fallback is not None else self.default

    def clamp(self, value: Any) -> Any:
        """A value already held (in a widget) kept inside the bounds or options, which may have changed with the
        model (a label colouring for a model without labels)."""
        if self.options:
            return value if value in self.options else self.default
        return self._within(self.cast(value)) if self.cast in (int, float) else value

    def _within(self, value: float) -> float:
        if self.lo is not None:
            value = max(self.lo, value)
        return value if self.hi is None else min(self.hi, value)


def text_of(value: Any) -> str:
    """How a URL spells a value: 1/0 for a switch, 0.25 not 0.250000."""
    if isinstance(value, bool):
        return "1" if value else "0"
    return f"{value:g}" if isinstance(value, float) else str(value)


def field_param(name: str, cls: type, field: str, *, options: tuple | list = (), lo: float | None = None,
                hi: float | None = None, default: Any = None) -> Param:
    """A config field's URL setting: default, help, choices and bounds from the field's metadata (settings.py).

    A page may offer fewer values (`options`, e.g. K in powers of two up to the slider's end) or a narrower range
    (`lo`, `hi`), never a value the field refuses, and may start elsewhere (`default`, e.g. 500 steps where the
    field's default is no step budget)."""
    s, (base, _) = settings.spec(cls, field), settings.kind_of(cls, field)
    options = tuple(options) or s.choices
    refused = [o for o in options if not settings.accepts(cls, field, o)]
    if refused:
        raise ValueError(f"{cls.__name__}.{field} refuses the page's options {refused}")
    if options and (settings.default(cls, field) if default is None else default) not in options:
        raise ValueError(f"{cls.__name__}.{field}'s default is not among the page's options {options}")
    cast = {"int": int, "float": float, "bool": bool}.get(base, str)

    def bound(given: float | None, field_bound: float | None) -> float | None:
        # in the field's own type: st.slider refuses mixed types (a Spec's lo=0 beside a float field's hi=2.0)
        b = field_bound if given is None else given
        return cast(b) if b is not None and cast in (int, float) else b

    lo, hi = bound(lo, s.lo), bound(hi, s.hi)
    value = settings.default(cls, field) if default is None else default
    return Param(name, value, options, lo, hi, cast, field, s.help or None)


def url_value(key: str, param: Param, fallback: Any = None) -> None:
    """Seed the widget `key` from the URL (else `fallback`, else the default) once, then keep it inside the param's
    bounds on every run (bounds that follow the loaded model, e.g. the image index up to its validation set's size,
    may have changed)."""
    if key not in st.session_state:
        st.session_state[key] = param.read(fallback)
    else:
        st.session_state[key] = param.clamp(st.session_state[key])


def to_url(*pairs: tuple[Param, Any], drop_defaults: bool = False) -> None:
    """Write settings into the URL; with `drop_defaults` a setting at its default leaves it (shorter links)."""
    for param, value in pairs:
        if drop_defaults and value == param.default:
            st.query_params.pop(param.name, None)
        else:
            st.query_params[param.name] = text_of(value)


def session_id() -> str:
    """A stable id for this browser session, to keep a student's own runs their own."""
    if "sid" not in st.session_state:
        st.session_state["sid"] = os.urandom(6).hex()
    return st.session_state["sid"]
