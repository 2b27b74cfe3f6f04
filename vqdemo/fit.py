"""From settings to a trained run: healthy default configs, the seeds' collapsing baseline, and `fit`.

`fit` is what the CLI, the app's background jobs and the benchmark call: load the data, seed, build the
model, hand both to the one training loop in `train.py`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import torch

from .data import DataConfig, ImageData, load_data
from .models import ModelConfig, build_model
from .quantize import QuantizerConfig
from .train import Control, TrainConfig, TrainResult, train


def default_model_config(data: ImageData, kind: str = "vq", **overrides) -> ModelConfig:
    """The healthy side of the collapse contrast: k-means init, EMA codebook, dead-code restart.

    Measured on the 5,000 MNIST digits (see bench/train_quality.py): all 64 codes in use; the seed-style
    N(0, 1) + gradient codebook baseline uses a handful.
    """
    cfg = ModelConfig(kind=kind, channels=data.channels, image_size=data.image_size)
    if data.channels == 3:
        cfg.hidden, cfg.res_hidden = 96, 48
    for name, value in overrides.items():
        setattr(cfg, name, value)
    return cfg


def seed_style_quantizer(k: int = 64, dim: int = 16, beta: float = 0.25) -> QuantizerConfig:
    """The seeds' plain recipe: N(0, 1) nn.Embedding init, codebook learned by gradient, no restarts.

    One setting away from the default, it collapses onto a few codes: the contrast the app shows.
    """
    return QuantizerConfig(k=k, dim=dim, beta=beta, codebook="grad", init="normal", restart_dead=False)


def fit(
    model_cfg: ModelConfig,
    data_cfg: DataConfig,
    train_cfg: TrainConfig,
    *,
    out_dir: Path | None = None,
    normalize_recon: bool = False,
    command: str = "",
    control: Control | None = None,
    on_event: Callable[[dict], None] | None = None,
) -> tuple[torch.nn.Module, TrainResult]:
    """Train a fresh model on a dataset. With `normalize_recon`, divide the recon loss by the data variance (seed 000)."""
    data = load_data(data_cfg)
    model_cfg = dataclasses.replace(model_cfg, channels=data.channels, image_size=data.image_size)
    if normalize_recon:
        model_cfg.data_variance = float(data.train_x.var())
    torch.manual_seed(train_cfg.seed)
    model = build_model(model_cfg)
    meta = {"data": dataclasses.asdict(data_cfg), "command": command, "kind": model_cfg.kind}
    result = train(model, (data.train_x, data.train_y), (data.val_x, data.val_y), train_cfg,
                   out_dir=out_dir, meta=meta, control=control, on_event=on_event)
    return model, result
