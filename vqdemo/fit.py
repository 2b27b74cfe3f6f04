"""From settings to a trained run: healthy default configs, the far-from-the-data baseline that collapses, and `fit`.

`fit` is what the CLI, the app's background jobs and the benchmark call: load the data, seed, build the
model, hand both to the one training loop in `train.py`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import torch

from .data import DataConfig, ImageData, load_data
from .models import ModelConfig, build_model, parameter_count
from .quantize import QuantizerConfig
from .runs import MAX_PARAMS
from .train import Control, TrainConfig, TrainResult, train


def default_model_config(data: ImageData, kind: str = "vq", **overrides) -> ModelConfig:
    """The healthy side of the collapse contrast: k-means init, EMA codebook, dead-code restart.

    Measured on the 5,000 MNIST digits (see bench/train_quality.py): all 64 codes in use; the baseline whose
    codebook starts far from the encoder's outputs (N(0, 1) init, gradient codebook, no restart) uses a handful.
    """
    cfg = ModelConfig(kind=kind, channels=data.channels, image_size=data.image_size)
    if data.channels == 3:
        cfg.hidden, cfg.res_hidden = 96, 48
    for name, value in overrides.items():
        setattr(cfg, name, value)
    return cfg


def far_init_quantizer(k: int = 64, dim: int = 16, beta: float = 0.25) -> QuantizerConfig:
    """A codebook that starts far from the encoder's outputs: N(0, 1) init (nn.Embedding's default), learned by
    gradient, no restarts. It collapses onto a few codes: the contrast the app shows.

    The cause is where the codes start, not the gradient codebook: a fresh encoder's outputs sit near 0 with a
    small spread, N(0, 1) codes in D = 16 sit about 4 away, so only the few nearest win any vector, and only
    winners move. The same recipe with U(-1/K, 1/K) init (the codes start at the centre of the outputs) used
    64 of 64 codes in 60 s on MNIST (22.8 dB, bench/train_quality.py); `analysis.init_geometry` shows why.
    """
    return QuantizerConfig(k=k, dim=dim, beta=beta, codebook="grad", init="normal", restart_dead=False)


def near_init_quantizer(k: int = 64, dim: int = 16, beta: float = 0.25) -> QuantizerConfig:
    """The same gradient codebook without restarts, but started at U(-1/K, 1/K), near the encoder's outputs:
    it does not collapse (the control for `far_init_quantizer`)."""
    return QuantizerConfig(k=k, dim=dim, beta=beta, codebook="grad", init="uniform", restart_dead=False)


MAX_STEP_BYTES = 4 << 30  # one training step may use this much memory; the server is shared by a class


def step_bytes(cfg: ModelConfig, batch_size: int) -> int:
    """Rough peak memory of one training step. Measured on the CPU build: about 8 bytes per hidden channel per
    input pixel of the batch (activations kept for backward, and their gradients), plus the (B*h*w, K) distances."""
    pixels = batch_size * cfg.image_size ** 2
    positions = batch_size * cfg.latent_size ** 2
    codes = sum(cfg.rq.codebook_sizes) if cfg.kind == "rq" and not cfg.rq.shared else cfg.vq.k * (cfg.kind != "vae")
    return 8 * pixels * max(cfg.hidden, cfg.vq.dim) + 8 * positions * codes


def check_trainable(model_cfg: ModelConfig, batch_size: int = 1) -> None:
    """Refuse, before allocating, a model this app could not load back (runs.MAX_PARAMS), e.g. K=65536 x D=1024,
    or one whose training step would not fit in memory (e.g. batch 4096 of 256x256 images)."""
    model_cfg.validate()
    size = parameter_count(model_cfg)
    if size > MAX_PARAMS:
        raise ValueError(f"this model would have {size:,} parameters, over the {MAX_PARAMS:,} this app can train "
                         "and load; use a smaller K, D or hidden width")
    need = step_bytes(model_cfg, batch_size)
    if need > MAX_STEP_BYTES:
        raise ValueError(f"a training step would need about {need / 2**30:.1f} GiB of memory, over the "
                         f"{MAX_STEP_BYTES / 2**30:.0f} GiB allowed; use a smaller batch size, image size, K or hidden width")


def fit(
    model_cfg: ModelConfig,
    data_cfg: DataConfig,
    train_cfg: TrainConfig,
    *,
    out_dir: Path | None = None,
    normalize_recon: bool = False,
    command: str = "",
    meta: dict | None = None,
    control: Control | None = None,
    on_event: Callable[[dict], None] | None = None,
) -> tuple[torch.nn.Module, TrainResult]:
    """Train a fresh model on a dataset. With `normalize_recon`, divide the recon loss by the data variance (as the
    VQ-VAE reference implementation of van den Oord et al. 2017 does).

    `meta` adds fields (a title, an owner) to the run's config.json.
    """
    data = load_data(data_cfg)
    model_cfg = dataclasses.replace(model_cfg, channels=data.channels, image_size=data.image_size)
    if normalize_recon:
        model_cfg.data_variance = float(data.train_x.var())
    check_trainable(model_cfg, train_cfg.batch_size)
    torch.manual_seed(train_cfg.seed)
    model = build_model(model_cfg)
    meta = {**(meta or {}), "data": dataclasses.asdict(data_cfg), "command": command, "kind": model_cfg.kind}
    result = train(model, (data.train_x, data.train_y), (data.val_x, data.val_y), train_cfg,
                   out_dir=out_dir, meta=meta, control=control, on_event=on_event)
    return model, result
