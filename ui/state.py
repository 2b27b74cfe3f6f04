"""What every page shares: the model picker, cached models and datasets, URL state and presenter mode (its looks
are ui/theme.py's).

Models and datasets are loaded once per server with `st.cache_resource` and shared by every session (a
whole class): they are only used for inference (eval mode, no_grad), which never mutates them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np
import streamlit as st
import torch

from ui import shared, text, theme
from ui.notebook_button import notebook_button  # noqa: F401 - each page's one line: state.notebook_button(page)
from vqdemo import page_urls, run_images, runs, urlstate
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


@st.cache_resource(show_spinner="Loading the run's images...", max_entries=64)
def _run_images(folder: str, cfg: DataConfig, save: bool, stamp: tuple | None) -> ImageData:
    """A run on the user's images: its validation images only, from its small file (`vqdemo.run_images`); `stamp`
    (the file's inode, time and size, None while it is missing) keys a file written or replaced since."""
    return run_images.load(Path(folder), cfg, save=save)


def choice_data(choice: ModelChoice, cfg: DataConfig) -> ImageData:
    """What a model's pages show of its data. A run on the user's own images never has its zip decoded on a view:
    only its validation images are kept, once, in its folder (never in the shipped, read-only checkpoints/)."""
    if not run_images.costly(cfg):
        return load_dataset(cfg)
    return _run_images(str(choice.path), cfg, choice.id.startswith("run:"), runs.file_stamp(choice.path / runs.IMAGES))


def load_choice(choice: ModelChoice) -> Loaded:
    """The model and its dataset. The data config comes from the checkpoint, so it goes through data_config
    (downloads off, unknown keys and odd values refused); a model that does not fit its data is refused here."""
    model, meta = _load_model(*model_key(choice))
    if model is None:
        raise runs.CheckpointError(meta)
    if model.config.kind != choice.kind:
        raise runs.CheckpointError(f"its config.json says {choice.kind} but its weights are a {model.config.kind} "
                                   "model; the run folder was edited or mixed up")
    data = choice_data(choice, data_config(meta, choice.label))
    runs.check_fits(model, data, choice.label)
    return Loaded(choice, model, meta, data)


# ---- the URL: every query parameter the app reads or writes goes through the functions below ---------------------

def url_text(name: str, default: str = "") -> str:
    """One query parameter's raw text (a page that knows its bounds reads a `Param` instead)."""
    return st.query_params.get(name, default)


def url_list(name: str, most: int | None = None) -> list[str]:
    """A comma-separated query parameter (?runs=a,b, ?ks=16,64) as its (first `most`) stripped items."""
    return [item.strip() for item in url_text(name).split(",")[:most]]


def url_query() -> dict[str, str]:
    """Every query parameter of this page, as text (the notebook export reads the page's settings from it)."""
    return st.query_params.to_dict()


def take_from_url(name: str) -> str | None:
    """Read a query parameter and remove it from the address bar at once (a secret never stays there, nor on a
    projector); None when the URL has none."""
    value = st.query_params.get(name)
    if value is not None:
        del st.query_params[name]
    return value


def link(query: Mapping[str, str], page: str | None = None) -> str:
    """A full address to copy: this page (or the app's page at url path `page`) with `query`."""
    here = (st.context.url or "").split("?")[0]
    return f"{here if page is None else here.rsplit('/', 1)[0] + '/' + page}?{urlencode(query)}"


def page_link(page: str, query: Mapping[str, str], where: Any = st, **kwargs: Any) -> None:
    """Streamlit's link to another page of the app (`where`: a column or container) that opens it with `query`."""
    where.page_link(page, query_params=dict(query), **kwargs)


# A sweep link (made on the Class page, read by the Train page): ?sweep=NAME&ks=16,64&betas=0.1,1 and its budget.
SWEEP_NAME_CHARS = 40
SWEEP_MOST_VALUES = 12


def sweep_link(name: str, ks: list[int], betas: list[float], seconds: int) -> str:
    """The Train page's address that hands each student who opens it one (K, beta) cell of the sweep `name`."""
    query = {"sweep": name, "ks": ",".join(map(str, sorted(ks))), "betas": ",".join(f"{b:g}" for b in sorted(betas)),
             "budget": "seconds", "secs": str(seconds)}
    return link(query, page="train")


def sweep_from_url() -> tuple[str, list[str], list[str]]:
    """(name, K texts, beta texts) of this page's sweep link; the name is "" without one. The caller parses the
    values with its settings' bounds."""
    name = url_text("sweep")[:SWEEP_NAME_CHARS]
    return name, url_list("ks", SWEEP_MOST_VALUES), url_list("betas", SWEEP_MOST_VALUES)


def presenter_from_url() -> bool:
    """Presenter mode as this run sees it: the sidebar toggle once drawn, else the URL (?present=1).

    app.py asks before drawing the navigation, which moves to the top of the screen in presenter mode.
    """
    if "presenter_toggle" not in st.session_state:
        st.session_state["presenter_toggle"] = url_text("present", "0") == "1"
    st.session_state["presenter"] = bool(st.session_state["presenter_toggle"])
    return st.session_state["presenter"]


def _leave_presenter() -> None:
    st.session_state["presenter_toggle"] = False
    _presenter_to_url()


def _presenter_to_url() -> None:
    write_url({"present": "1" if st.session_state["presenter_toggle"] else "0"})


def _model_to_url() -> None:
    write_url({"model": st.session_state["model_picker"]})


def write_url(changes: dict[str, str | None]) -> None:
    """Set (or, for None, remove) query parameters, in one message and only if that changes the URL.

    Streamlit's frontend pushes a browser-history entry for every query string it is sent that differs from the
    address bar's, so each write that changes something is one more press of Back. The app writes the URL when a
    person changes a setting, never because a page was opened: a page opened from a link, the top bar or Back
    finds what it needs in its URL or its session, and its visit stays one entry. The sidebar's model and
    presenter mode ride along with any write (the top bar's links drop the query), so a link copied after a change
    reopens the same model and mode.
    """
    now = st.query_params.to_dict()
    sets = {k: v for k, v in changes.items() if v is not None and now.get(k) != v}
    drops = [k for k, v in changes.items() if v is None and k in now]
    if not sets and not drops:
        return
    ride = {"model": st.session_state.get("_model_in_url"),
            "present": "1" if st.session_state.get("presenter_toggle") else "0" if "present" in now else None}
    sets |= {k: v for k, v in ride.items() if v is not None and k not in changes and now.get(k) != v}
    if drops:
        st.query_params.from_dict({**{k: v for k, v in now.items() if k not in drops}, **sets})
    elif sets:
        st.query_params.update(sets)


def top_on_arrival(url_path: str) -> None:
    """Scroll to the top when this run opens another page than the last run showed: Streamlit keeps the main
    area's scroll position across pages, so a page opened from far down the Lesson began half-way down."""
    if st.session_state.get("_shown_page") != url_path:
        st.session_state["_shown_page"] = url_path
        scroll_to_top()


def scroll_to_top() -> None:
    """Scroll the main area to its top once, when this run's page reaches the browser (drawn in the sidebar, where
    an element that comes and goes moves nothing)."""
    st.session_state["_scrolls"] = st.session_state.get("_scrolls", 0) + 1
    # the count makes each script differ from the last one, so the browser runs it again
    st.sidebar.html(f"<script>/* {st.session_state['_scrolls']} */ "
                    "document.querySelector('[data-testid=stMain]')?.scrollTo(0, 0);</script>",
                    unsafe_allow_javascript=True)


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
        wanted = url_text("model", DEFAULT_MODEL)
        linked = st.query_params.get("model")
        if linked in ids and "model_picker" in st.session_state and linked != st.session_state.get("_model_in_url"):
            st.session_state["model_picker"] = linked   # a link (the Lesson's, a shared one) names another model
        index = ids.index(wanted) if wanted in ids else (ids.index(DEFAULT_MODEL) if DEFAULT_MODEL in ids else 0)
        picked = st.selectbox("Model", ids, index=index, format_func=lambda i: choices[ids.index(i)].label,
                              key="model_picker", on_change=_model_to_url, help="Shipped checkpoints and the runs "
                              "trained on this server: when each run started, who started it, its final K and "
                              "validation PSNR.")
        if st.query_params.get("model", picked) != picked:
            write_url({"model": picked})   # a model the URL named but that is gone: the URL says what is shown
        st.session_state["_model_in_url"] = picked
        st.toggle("Presenter mode", key="presenter_toggle", on_change=_presenter_to_url,
                  help="Larger text, images and charts for a projector; the page links move to the top bar.")
    st.markdown(theme.PAGE_CSS, unsafe_allow_html=True)
    if present:
        st.markdown(theme.PRESENTER_CSS, unsafe_allow_html=True)
        st.button("Leave presenter mode", icon=":material/close_fullscreen:", key="leave_presenter",
                  on_click=_leave_presenter, type="tertiary")
    choice = choices[ids.index(picked)]
    try:
        return load_choice(choice)
    except (runs.CheckpointError, ValueError, OSError) as e:
        st.error(f"Could not load {text.md(choice.label)}: {text.md(e, 400)}")
        return None


def current() -> Loaded | None:
    """The model the sidebar picked (set by app.py before the page runs).

    The page scripts live in views/, not pages/: with a pages/ folder next to app.py, Streamlit runs a deep
    link on a fresh server through its own pages/ fallback (its alphabetical page list) until some session
    has run st.navigation. A page run on its own (AppTest of a single file) still gets a sidebar here.
    """
    if "loaded" not in st.session_state:
        st.session_state["loaded"] = sidebar()
    return st.session_state["loaded"]


def _scale(images: torch.Tensor, width: int) -> int:
    """The integer upscale that brings images of this width closest to `width` pixels (at least 1)."""
    return max(1, round(width / images.shape[-1]))


def crisp(images: torch.Tensor, width: int = 112) -> np.ndarray | list[np.ndarray]:
    """Tiny images -> uint8 arrays upscaled with nearest neighbour (no blur), about `width` pixels wide.

    (C, H, W) -> one (H', W'[, 3]) array; (N, C, H, W) -> a list of them.
    """
    width = theme.scaled(width)
    if images.dim() == 4:
        return [crisp(im, width) for im in images]
    return upscale_nearest(to_uint8(images), _scale(images, width))


def crisp_width(images: torch.Tensor, width: int = 112) -> int:
    """How many pixels wide `crisp(images, width)` (and `image`) draws them."""
    return images.shape[-1] * _scale(images, theme.scaled(width))


def image(where: Any, images: torch.Tensor, size: int = 112, **kwargs: Any) -> None:
    """`where.image` of `crisp(images, size)` (one image (C, H, W) or a row of them (N, C, H, W)), as PNG bytes
    encoded once for the whole server (ui/shared.py): the key is the digest of the pixels themselves and the width
    in pixels, so a retrained model, another image or presenter mode's larger size is another picture, and a
    student's own image is only ever reused for the very same pixels. PNG: lossless, where Streamlit would
    re-encode an array as JPEG for every session (and blur the crisp edges). kwargs go to `where.image` (caption,
    alt, its display width)."""
    px = theme.scaled(size)
    images = images.detach().cpu()
    pics = [shared.png(("crisp", shared.digest(im), px), partial(crisp, im, size))
            for im in (images if images.dim() == 4 else [images])]
    where.image(pics if images.dim() == 4 else pics[0], output_format="PNG", **kwargs)


class Param(urlstate.Param):
    """A URL setting (vqdemo.urlstate.Param) read from this page's URL (`read`)."""

    def read(self, fallback: Any = None) -> Any:
        """This setting as the URL says, else the fallback (what the session had), else its default."""
        return self.lookup(st.query_params, fallback)


text_of = urlstate.text_of
field_param = partial(urlstate.field_param, kind=Param)


def page_param(page: str, name: str, **narrowed: Any) -> Param:
    """A page's URL setting as the library defines it once (`vqdemo.page_urls`, which the notebook export reads too),
    narrowed to what the loaded model allows (`hi=` its depth, `options=` without labels, `default=` its example)."""
    return Param(**{**asdict(page_urls.PARAMS[page][name]), **narrowed})


def url_value(key: str, param: urlstate.Param, fallback: Any = None) -> None:
    """Seed the widget `key` from the URL (else `fallback`, else the default) once, then keep it inside the param's
    bounds on every run (bounds that follow the loaded model, e.g. the image index up to its validation set's size,
    may have changed)."""
    if key not in st.session_state:
        st.session_state[key] = param.lookup(st.query_params, fallback)
    else:
        st.session_state[key] = param.clamp(st.session_state[key])


def to_url(*pairs: tuple[urlstate.Param, Any], drop_defaults: bool = False) -> None:
    """Write settings into the URL where they differ from what it says (a missing setting says its default), in
    one message: a page that shows what its URL asked for writes nothing (see `write_url`). With `drop_defaults`
    a setting moved back to its default leaves the URL (shorter links)."""
    changes = {}
    for param, value in pairs:
        said = param.parse(st.query_params.get(param.name))
        if value == (param.default if said is None else said):
            continue
        changes[param.name] = None if drop_defaults and value == param.default else text_of(value)
    write_url(changes)


def session_id() -> str:
    """A stable id for this browser session, to keep a student's own runs their own."""
    if "sid" not in st.session_state:
        st.session_state["sid"] = os.urandom(6).hex()
    return st.session_state["sid"]
