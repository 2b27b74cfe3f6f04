"""Fitting a prior to the codes a trained autoencoder gives its own dataset, through the one training loop."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn
from torch import Tensor

from .. import runs
from ..data import data_config, load_data
from ..trainer import Control, Store, TrainConfig, run_training
from .config import PriorConfig, PriorError, _check_fits, _code_kind, prior_config_for
from .model import build_prior
from .storage import prior_write_dir

# A prior's run is short (a minute from the Sample page): validating, and keeping the best, every 100 steps
# rather than the autoencoder's 250 gives it enough checkpoints to pick from.
PRIOR_VAL_EVERY = 100


def encode_codes(ae: nn.Module, x: Tensor, batch_size: int = 256) -> Tensor:
    """Images (N, C, H, W) -> codes on the CPU, (N, h, w) for VQ or (N, D, h, w) for RQ, in batches."""
    device = next(ae.parameters()).device
    return torch.cat([ae.encode_codes(x[i : i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)])


def train_prior(
    ae_dir: Path,
    *,
    seconds: float | None = None,
    steps: int | None = None,
    seed: int = 0,
    prior_cfg: PriorConfig | None = None,
    control: Control | None = None,
    on_event: Callable[[dict], None] | None = None,
    batch_size: int = 64,
    lr: float = 1e-3,
    out_dir: Path | None = None,
    store: Store | None = None,
) -> Path:
    """Fit a prior to the codes an autoencoder run gives its own dataset; write it to out_dir, by default
    prior_write_dir(ae_dir) (<ae_dir>/prior/, or the runs-folder mirror for a shipped checkpoint).

    The default prior is class-conditional when the dataset has labels. Training goes through the one loop
    of trainer.py (seeds, pause/stop via `control`, events, best checkpoint by bits per code); how it ended
    is in <out_dir>/status.json and the final "end" event. Returns out_dir. With `store`, the run's files go there
    instead (a job's worker sends them back to the app).
    """
    train_cfg = TrainConfig(steps=steps, seconds=seconds, batch_size=batch_size, lr=lr, seed=seed,
                            val_every=PRIOR_VAL_EVERY, schedule="constant")   # as the shipped priors were trained
    train_cfg.budgeted()  # no budget is refused before the dataset is loaded and encoded (bad values on construction)
    ae_dir = Path(ae_dir)
    ae, ae_meta = runs.load_model(ae_dir)
    _code_kind(ae)
    if not isinstance(ae_meta.get("data"), dict):
        raise PriorError(f"{ae_dir} records no data config, so its dataset cannot be encoded; retrain the autoencoder.")
    data = load_data(data_config(ae_meta, str(ae_dir)))
    labelled = data.train_y is not None and data.val_y is not None
    cfg = prior_cfg or prior_config_for(ae, data.num_classes if labelled else None)
    _check_fits(cfg, ae)
    if cfg.num_classes is not None:
        if not labelled:
            raise PriorError(f"the prior is conditioned on {cfg.num_classes} classes but {data.name} has no labels; "
                             "set num_classes=None.")
        top = int(max(data.train_y.max(), data.val_y.max()))
        if top >= cfg.num_classes:
            raise PriorError(f"{data.name} has labels up to {top}, more than num_classes={cfg.num_classes} allows.")
    train_y, val_y = (data.train_y, data.val_y) if cfg.num_classes is not None else (None, None)

    torch.manual_seed(seed)  # the prior's initial weights
    prior = build_prior(cfg)
    out_dir = Path(out_dir) if out_dir is not None else prior_write_dir(ae_dir)
    meta = {"role": "prior", "autoencoder": ae_meta.get("model"), "data": ae_meta["data"]}
    run_training(
        prior,
        (encode_codes(ae, data.train_x), train_y),  # (N, C, H, W) -> (N, [D,] h, w)
        (encode_codes(ae, data.val_x), val_y),
        train_cfg,
        out_dir=None if store else out_dir,
        store=store,
        meta=meta,
        control=control,
        on_event=on_event,
    )
    return out_dir
