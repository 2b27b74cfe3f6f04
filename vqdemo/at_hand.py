"""A model for a notebook: a shipped checkpoint or a run folder when it is on this machine, else the same recipe
trained here.

A notebook exported from the app may run inside the repository (the checkpoints are there), in a copy of the
repository elsewhere, or in Colab after `pip install` from a git URL, where the package has no checkpoints: the
shipped models are 1-5 MB each, too large to ship as package data. So the notebook carries its model's recipe
(the run's config.json: model, data and training configs) and `load_or_train` trains that recipe for a short
budget when no folder is found; a GPU (device auto) makes that short. The folder it trains into is kept, so the next
run of the notebook loads it instead.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from . import runs
from .data import ImageData, data_config, load_data
from .fit import fit
from .models import ModelConfig
from .settings import specs
from .trainer import TrainConfig, resolve_device

CHECKPOINTS_ENV = "VQDEMO_CHECKPOINTS"   # a folder of shipped checkpoints, when they are somewhere else
SHIPPED = "shipped:"                     # the app's name of a shipped checkpoint: "shipped:mnist-vq"
RUN = "run:"                             # ... and of a run of its server: "run:<run id>"


@dataclass
class AtHand:
    """A loaded model, the data it was trained on and where it came from."""

    model: torch.nn.Module
    meta: dict          # the run's config.json
    data: ImageData
    path: Path          # the run folder it was loaded from (or trained into)
    trained_here: bool  # True when no folder was found and the recipe was trained in this process

    @property
    def kind(self) -> str:
        return self.model.config.kind


def checkpoint_folders() -> list[Path]:
    """Where shipped checkpoints are looked for, in order: $VQDEMO_CHECKPOINTS; checkpoints/ in the working folder
    or one above it (a notebook opened from docs/notebooks/ of a clone); the repository this package was imported
    from (a clone, or `pip install -e`)."""
    here = Path.cwd()
    found = [Path(os.environ[CHECKPOINTS_ENV])] if os.environ.get(CHECKPOINTS_ENV) else []
    found += [p / "checkpoints" for p in (here, *here.parents)]
    found.append(Path(__file__).resolve().parent.parent / "checkpoints")
    return list(dict.fromkeys(found))


def find_checkpoint(name: str) -> Path | None:
    """The folder of the shipped checkpoint `name` (e.g. "mnist-vq") with its weights, or None; relative to the
    working folder when it can be (a notebook's output then says ../../checkpoints/mnist-vq, not the owner's disk)."""
    found = next((d / name for d in checkpoint_folders() if (d / name / runs.WEIGHTS).is_file()), None)
    try:
        return None if found is None else Path(os.path.relpath(found))
    except ValueError:   # another drive (Windows)
        return found


def locate(source: str) -> Path | None:
    """"shipped:NAME", "run:ID" (under the runs folder) or a folder path -> the run folder if its weights are here."""
    if source.startswith(SHIPPED):
        return find_checkpoint(source[len(SHIPPED):])
    path = runs.default_runs_dir() / source[len(RUN):] if source.startswith(RUN) else Path(source)
    return path if (path / runs.WEIGHTS).is_file() else None


def recipe(run_dir: Path | str) -> dict:
    """What it takes to train a run again: its config.json's model, data and train configs (plain JSON)."""
    meta = runs.read_json(Path(run_dir) / runs.CONFIG)
    return {key: meta[key] for key in ("model", "data", "train") if key in meta}


def retrain_folder(source: str) -> Path:
    """Where `load_or_train` keeps a model it trained for `source`: notebook-<name> under the runs folder."""
    name = source.split(":", 1)[-1] if ":" in source else Path(source).name
    return runs.default_runs_dir() / f"notebook-{name}"


def load(path: Path, trained_here: bool = False) -> AtHand:
    """A run folder -> its best checkpoint and its dataset (downloads off), checked to fit each other."""
    model, meta = runs.load_model(path)
    data = load_data(data_config(meta, str(path)))
    runs.check_fits(model, data, str(path))
    return AtHand(model, meta, data, path, trained_here)


def load_or_train(source: str, recipe: dict | None = None, seconds: float = 60.0, seed: int | None = None,
                  device: str = "auto") -> AtHand:
    """The model `source` names ("shipped:mnist-vq", "run:<id>", a folder) if it is on this machine; else its
    `recipe` (see `recipe`) trained for at most `seconds` (and at most the recipe's own steps) on `device`, into
    `retrain_folder(source)`, which the next call loads. ValueError when neither is possible."""
    path = locate(source)
    if path is not None:
        return load(path)
    kept = retrain_folder(source)
    if (kept / runs.WEIGHTS).is_file():
        return load(kept, trained_here=True)
    if not recipe:
        raise ValueError(f"{source} is not on this machine and the notebook carries no recipe to train it; set "
                         f"{CHECKPOINTS_ENV} to the folder that holds it")
    model_cfg = ModelConfig.from_dict(recipe["model"])
    data_cfg = data_config(recipe, source)
    train = {**recipe.get("train", {}), "seconds": seconds, "device": device, "threads": None}
    train_cfg = TrainConfig(**{name: train[name] for name in specs(TrainConfig) if name in train})
    if seed is not None:
        train_cfg = dataclasses.replace(train_cfg, seed=seed)
    print(f"{source} is not on this machine: training its recipe for up to {seconds:g} s on "
          f"{resolve_device(device)} into {kept}")
    fit(model_cfg, data_cfg, train_cfg, out_dir=kept, command=f"vqdemo.load_or_train({source!r})")
    return load(kept, trained_here=True)
