"""From settings to a trained run: healthy default configs, the far-from-the-data baseline that collapses, and `fit`.

`fit` is what the CLI, the app's background jobs and the benchmark call: load the data, seed, build the
model, hand both to the one training loop in `trainer.py`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

import torch

from .data import DataConfig, ImageData, load_data
from .files import atomic_write_bytes
from .models import ModelConfig, build_model, parameter_count
from .quantize import QuantizerConfig
from .runs import MAX_PARAMS
from .trainer import Control, Store, TrainConfig, TrainResult, run_training, validation_batch

APP_MAX_K = 1024      # the Train page's K slider stops here, and so does every other way into the app
APP_MAX_DEPTH = 8
APP_MAX_DIM = 64
APP_MAX_BATCH = 256


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


MAX_STEP_BYTES = 4 << 30  # one training step (or validation pass) may use this much memory; the server is shared by a class
SLACK_BYTES = 64 << 20    # allocator slack and the k-means init's transients, measured on small models


def step_bytes(cfg: ModelConfig, batch_size: int) -> int:
    """Peak memory of a training step or of a validation pass (trainer.validation_batch), whichever is larger.

    Activations: about 8 bytes per hidden channel per input pixel when training (kept for backward, plus their
    gradients), 4 when validating. Distances: nearest_code holds a few (positions, K) float32 tensors at once, one
    depth at a time, so the largest K counts, not their sum; measured 2-2.5 of them for VQ and up to 5 for RQ.
    tests/test_hardening_budget.py checks this against ru_maxrss of real steps."""
    codes = 0 if cfg.kind == "vae" else max(cfg.rq.codebook_sizes if cfg.kind == "rq" and not cfg.rq.shared else [cfg.vq.k])
    width = max(cfg.hidden, cfg.vq.dim)
    held = 4 if cfg.kind != "rq" else 8   # (positions, K) tensors alive at once, with margin
    per_image, per_latent_map = cfg.image_size ** 2, cfg.latent_size ** 2
    train = batch_size * (8 * per_image * width + 4 * held * per_latent_map * codes)
    val = validation_batch(batch_size, cfg.image_size) * (4 * per_image * width + 4 * held * per_latent_map * codes)
    return max(train, val) + SLACK_BYTES


def check_app_limits(model_cfg: ModelConfig, batch_size: int) -> None:
    """What the Train page's widgets allow, for settings that arrive another way (typed K per depth, ?sizes= in the
    URL, a job submitted through the API): every K in [2, APP_MAX_K], depth and D within the widgets' ranges."""
    sizes = [model_cfg.vq.k] + (list(model_cfg.rq.codebook_sizes) if model_cfg.kind == "rq" else [])
    for k in sizes:
        if not (isinstance(k, int) and not isinstance(k, bool) and 2 <= k <= APP_MAX_K):
            raise ValueError(f"each K must be a whole number from 2 to {APP_MAX_K} here, got {k!r}; "
                             "the command line allows larger codebooks")
    if model_cfg.kind == "rq" and not 1 <= model_cfg.rq.depth <= APP_MAX_DEPTH:
        raise ValueError(f"RQ depth must be from 1 to {APP_MAX_DEPTH} here, got {model_cfg.rq.depth!r}")
    if not 1 <= model_cfg.vq.dim <= APP_MAX_DIM:
        raise ValueError(f"code size D must be from 1 to {APP_MAX_DIM} here, got {model_cfg.vq.dim!r}")
    if not 1 <= batch_size <= APP_MAX_BATCH:
        raise ValueError(f"batch size must be from 1 to {APP_MAX_BATCH} here, got {batch_size!r}")


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


DATA_COPY = "data.zip"


def keep_data(zip_path: Path, out_dir: Path) -> Path:
    """A run trained on an uploaded zip keeps its own link to it (<run>/data.zip, a hard link where the file system
    allows, else a copy), so clearing <runs>/uploads/ between classes leaves every run loadable."""
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / DATA_COPY
    if not target.exists():
        try:
            os.link(zip_path, target)
        except OSError:
            atomic_write_bytes(target, zip_path.read_bytes())
    return target.resolve()


def fit(
    model_cfg: ModelConfig,
    data_cfg: DataConfig,
    train_cfg: TrainConfig,
    *,
    out_dir: Path | None = None,
    store: Store | None = None,
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
    if out_dir is not None and data_cfg.name == "folder" and Path(data_cfg.path).is_file():
        data_cfg = dataclasses.replace(data_cfg, path=str(keep_data(Path(data_cfg.path), Path(out_dir))))
    model_cfg = dataclasses.replace(model_cfg, channels=data.channels, image_size=data.image_size)
    if normalize_recon:
        model_cfg.data_variance = float(data.train_x.var())
    check_trainable(model_cfg, train_cfg.batch_size)
    torch.manual_seed(train_cfg.seed)
    model = build_model(model_cfg)
    meta = {**(meta or {}), "data": dataclasses.asdict(data_cfg), "command": command, "kind": model_cfg.kind}
    result = run_training(model, (data.train_x, data.train_y), (data.val_x, data.val_y), train_cfg,
                   out_dir=out_dir, store=store, meta=meta, control=control, on_event=on_event)
    return model, result
