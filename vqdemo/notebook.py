"""A page's setup as a runnable Jupyter notebook: the page's settings (its URL), the model it showed, the figure it
drew and the knob to turn, as cells that call the public vqdemo API, with the page's explanations as markdown and
exercises at the end. `python -m vqdemo notebook --page PAGE --url QUERY -o FILE.ipynb` and the pages' "Open as a
notebook" button both build through `build`.

A notebook runs inside the repository and in Colab after `pip install` from a git URL: the model cell loads the
shipped checkpoint or run folder when it is on that machine and otherwise trains the run's own recipe, which the
notebook carries (`at_hand.load_or_train`). Device `auto`: Colab's GPU when there is one.
"""

from __future__ import annotations

import os
import pprint
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from . import at_hand, page_urls, runs
from .data import DataConfig, data_shape
from .files import atomic_write_text
from .train_settings import model_config
from .urlstate import text_of

REPO_ENV = "VQDEMO_GIT_URL"   # the git URL a notebook installs vqdemo from when it is not installed
REPO_URL = "https://git.example.invalid/vqdemo.git"   # a placeholder that installs nothing: name your clone's URL
RETRAIN_SECONDS = 60.0        # a notebook away from its model's folder trains the recipe this long (a GPU: plenty)
NEEDS = {"codebook": ("vq", "rq", "fsq"), "paint": ("vq", "rq"), "sample": ("vq", "rq")}
SETUP = '''\
# Colab or a fresh environment: install the library from its repository (skipped when vqdemo is installed).
import importlib.util
VQDEMO_GIT = "git+{repo}"   # your course's copy of the vqdemo repository
if importlib.util.find_spec("vqdemo") is None:
    %pip install -q {{VQDEMO_GIT}}
import vqdemo
vqdemo.runtime.configure()   # process set-up before torch loads (vqdemo/runtime.py says why)
import plotly.express as px
import torch

from vqdemo.images import to_uint8, upscale_nearest

DEVICE = "auto"   # a GPU when there is one (in Colab: Runtime > Change runtime type), else the CPU
print("vqdemo", vqdemo.__version__, "- training runs on", vqdemo.resolve_device(DEVICE))


def picture(images, title, nrow=None, scale=3):
    """(N, C, H, W) images in [0, 1] -> one figure, each pixel a scale x scale block (tiny images stay crisp)."""
    grid = upscale_nearest(to_uint8(vqdemo.analysis.image_grid(images.detach().cpu(), nrow)), scale)
    fig = px.imshow(grid, binary_string=True, title=title)
    fig.update_xaxes(visible=False).update_yaxes(visible=False)
    return fig'''
MODEL = '''\
SOURCE = {source!r}   # the model the page showed
RETRAIN_SECONDS = {seconds:g}   # used only when SOURCE is not on this machine: its recipe is trained this long
RECIPE = {recipe}
at = vqdemo.load_or_train(SOURCE, RECIPE, seconds=RETRAIN_SECONDS, device=DEVICE)
model, data = at.model, at.data
print(f"a {{at.kind}} model from {{at.path}}{{' (trained here from its recipe)' if at.trained_here else ''}}; "
      f"{{len(data.val_x)}} validation images of {{data.image_size}}x{{data.image_size}}")'''
MODEL_MD = ("**The model.** The cell below loads the model the page showed: {where}. When that folder is not on this "
            "machine (Colab after `pip install`), it trains the same recipe (the run's own model, data and training "
            "settings, kept in `RECIPE`) for `RETRAIN_SECONDS` and keeps it under `runs/`, so the next run loads it.")


@dataclass(frozen=True)
class Context:
    """What a page's cells are written from."""

    page: str
    values: dict[str, Any]      # the page's settings by URL name (page_urls.page_settings)
    source: str | None          # the model: "shipped:<name>", "run:<id>" or a run folder; None for Playground
    recipe: dict | None         # its config.json's model, data and train (at_hand.recipe)
    from_run: bool              # a run's notebook (--run): reproduce that run's figures
    retrain_seconds: float

    @property
    def kind(self) -> str:
        return (self.recipe or {}).get("model", {}).get("kind", self.values.get("kind", "vq"))


def repo_url() -> str:
    return os.environ.get(REPO_ENV, REPO_URL)


def _source(page: str, values: dict, run: str | Path | None) -> tuple[str | None, dict | None]:
    """The model a page's notebook uses, and its recipe, read now: a missing or unreadable folder is refused here,
    in one line, rather than in the notebook."""
    if run is None and page not in page_urls.TAKES_MODEL:
        return None, None
    source = str(run) if run is not None else values["model"]
    folder = at_hand.locate(source)
    if folder is None:
        raise ValueError(f"no model with weights at {source}: give a run folder (or run:<id> of the runs folder) "
                         "or a shipped checkpoint such as shipped:mnist-vq (looked for in checkpoints/ here, in the "
                         f"repository and in ${at_hand.CHECKPOINTS_ENV})")
    try:
        recipe = at_hand.recipe(folder)
    except runs.CheckpointError as e:
        raise ValueError(f"{source} has no readable config.json ({e})") from None
    kind = recipe.get("model", {}).get("kind")
    if page in NEEDS and kind not in NEEDS[page]:
        raise ValueError(f"the {page} notebook needs a {' or '.join(k.upper() for k in NEEDS[page])} model; {source} "
                         f"is a {str(kind).upper()}")
    if recipe.get("data", {}).get("name") == "folder":
        raise ValueError(f"{source} was trained on uploaded images, which a notebook cannot reach; pick a model "
                         "trained on a built-in dataset")
    return source, recipe


def build(page: str, query: str | dict = "", run: str | Path | None = None, *, strict: bool = True,
          retrain_seconds: float = RETRAIN_SECONDS) -> nbformat.NotebookNode:
    """The notebook of `page` set up as `query` (the page's URL or its query) says; `run`: a run folder (or
    run:<id>) whose notebook reproduces that run. ValueError, one line, for an unknown page or a bad setting."""
    from .notebook_cells import CELLS

    values = page_urls.page_settings(page, query, strict=strict)
    if page == "train" and run is None:
        if values["data"] == "folder":
            raise ValueError("data=folder is an upload to the app, which a notebook cannot reach; pick a built-in "
                             "dataset")
        model_config(values, *data_shape(DataConfig(name=values["data"])))   # refused here, as the page refuses it
    source, recipe = _source(page, values, run)
    ctx = Context(page, values, source, recipe, run is not None, retrain_seconds)
    nb = new_notebook(metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
        "vqdemo": {"page": page, "settings": {k: v for k, v in values.items() if v is not None},
                   "source": source}})
    cells = [("code", SETUP.format(repo=repo_url()))]
    if source is not None:
        where = f"the run folder `{source}`" if run is not None else f"`{source}`"
        cells += [("md", MODEL_MD.format(where=where)),
                  ("code", MODEL.format(source=source, seconds=retrain_seconds, recipe=literal(recipe)))]
    first, *rest = CELLS[page](ctx)
    nb.cells = [new_markdown_cell(text) if kind == "md" else new_code_cell(text)
                for kind, text in [first, *cells, *rest]]
    return nb


def literal(value: Any) -> str:
    """A Python literal of plain JSON data, wrapped for a cell."""
    return pprint.pformat(value, width=100, sort_dicts=False)


def to_text(nb: nbformat.NotebookNode) -> str:
    nbformat.validate(nb)
    return nbformat.writes(nb)


def write(nb: nbformat.NotebookNode, path: Path | str) -> Path:
    """Write a notebook atomically (temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, to_text(nb))
    return path


def query_text(values: dict) -> str:
    """k=64&beta=0.25: the settings as the page's URL spells them (those with a value)."""
    return "&".join(f"{k}={text_of(v)}" for k, v in values.items() if v is not None)

