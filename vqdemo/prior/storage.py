"""Where an autoencoder run's prior lives (its own prior/ folder, or the runs-folder mirror for a model the app must
not write into), and reading it back: the weights (safetensors only) and its validation figures."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import torch

from .. import runs
from .config import PriorConfig
from .model import _CodePrior, build_prior

PRIOR_DIR = "prior"  # an autoencoder run keeps its prior in <run>/prior/
SHIPPED = Path(__file__).resolve().parent.parent.parent / "checkpoints"  # the repository's models: read-only to the app
MIRRORS = "priors"   # <runs>/priors/<name>-<hash>/: priors the app trained for models in folders it must not write


def prior_mirror(ae_dir: Path | str, runs_root: Path | str | None = None) -> Path:
    """The runs-folder twin of <ae_dir>/prior/: <runs>/priors/<folder name>-<hash of its full path>/."""
    ae_dir = Path(ae_dir).resolve()
    key = hashlib.sha256(str(ae_dir).encode()).hexdigest()[:10]
    return Path(runs_root or runs.default_runs_dir()) / MIRRORS / f"{ae_dir.name}-{key}"


def prior_write_dir(ae_dir: Path | str, runs_root: Path | str | None = None) -> Path:
    """Where a new prior for the autoencoder in ae_dir is written: <ae_dir>/prior/, except for the shipped
    checkpoints/ (read-only to the app, a student's prior must not change the repository), whose priors go to
    the runs-folder mirror, as do those of a run whose prior/ is a link (it could point anywhere). The command
    line writes where it is told instead (`prior train` passes out_dir)."""
    ae_dir = Path(ae_dir)
    own = ae_dir / PRIOR_DIR
    elsewhere = ae_dir.resolve().is_relative_to(SHIPPED) or own.is_symlink()   # a planted link would lead the write
    return prior_mirror(ae_dir, runs_root) if elsewhere else own


def prior_dir(ae_dir: Path | str, runs_root: Path | str | None = None) -> Path:
    """Where the prior of the autoencoder in ae_dir is read from: its own prior/ when that holds weights, else the
    runs-folder mirror when that does, else where one would be written (prior_write_dir)."""
    for folder in (Path(ae_dir) / PRIOR_DIR, prior_mirror(ae_dir, runs_root)):
        if (folder / runs.WEIGHTS).is_file():
            return folder
    return prior_write_dir(ae_dir, runs_root)


def load_prior(ae_dir: Path, which: str = runs.WEIGHTS) -> tuple[_CodePrior, dict]:
    """prior_dir(ae_dir) -> (prior in eval mode, meta). Safetensors only; the config is checked before building."""
    file = prior_dir(ae_dir) / which
    if not file.is_file():
        raise runs.CheckpointError(f"{ae_dir} has no trained prior yet ({file} is missing): train one first.")
    tensors, meta = runs.read_weights(file)
    if not meta:
        meta = runs.read_json(file.parent / "config.json")
    if meta.get("role") != "prior":
        raise runs.CheckpointError(f"{file} is not a prior checkpoint.")
    try:
        cfg = PriorConfig(**meta["model"])
    except (KeyError, TypeError, ValueError) as e:
        raise runs.CheckpointError(f"{file} has no usable prior config ({e}).") from None
    with torch.device("meta"):  # count parameters without allocating them
        size = sum(p.numel() for p in build_prior(cfg).parameters())
    if size > runs.MAX_PARAMS:
        raise runs.CheckpointError(f"{file} describes a prior of {size:,} parameters: too large for this app.")
    prior = build_prior(cfg)
    runs.load_state(prior, tensors, str(file))
    return prior.eval(), meta


def prior_figures(run_dir: Path | str) -> dict[str, float] | None:
    """The prior's validation NLL (bits per code, bits per image, uniform bits per image, step), or None.

    Prefers status.json's best checkpoint (the weights that are loaded), else the last good val row.
    """
    folder = prior_dir(run_dir)
    keys = ("bits_per_code", "bits_per_image", "uniform_bits_per_image")

    def usable(row: dict) -> bool:
        return all(isinstance(row.get(k), (int, float)) and math.isfinite(row[k]) for k in keys)

    rows = [runs.read_status(folder).get("best", {})]   # cleaned: a planted status.json is a dict of floats here
    rows += reversed([r for r in runs.read_metrics(folder) if r.get("type") == "val"])
    best = next((r for r in rows if usable(r)), None)
    if best is None:
        return None
    return {**{k: float(best[k]) for k in keys}, "step": int(best.get("step", 0))}
