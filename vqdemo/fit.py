"""From settings to a trained run: healthy default configs, the far-from-the-data baseline that collapses, and `fit`.

`fit` is what the CLI, the app's background jobs and the benchmark call: load the data, seed, build the
model, hand both to the one training loop in `trainer.py`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import torch

from . import run_images, run_store
from .app_limits import KS, MAX_BATCH, MAX_DEPTH, MAX_DIM, MAX_K
from .data import DataConfig, ImageData, load_data
from .fsq import FSQConfig
from .models import ModelConfig, build_model, parameter_count
from .quantize import QuantizerConfig, ResidualConfig
from .runs import MAX_PARAMS
from .settings import int_list
from .trainer import Control, Store, TrainConfig, TrainResult, run_training, validation_batch

RGB_HIDDEN = 96   # colour images get a wider encoder/decoder than the grey digits' ModelConfig.hidden
QUANTIZER_FIELDS = tuple(f.name for f in dataclasses.fields(QuantizerConfig))
RESIDUAL_FIELDS = tuple(f.name for f in dataclasses.fields(ResidualConfig))
FSQ_FIELDS = tuple(f.name for f in dataclasses.fields(FSQConfig))
MODEL_FIELDS = tuple(f.name for f in dataclasses.fields(ModelConfig) if f.name not in ("vq", "rq", "fsq"))
# what a user sets, by field name, on the command line or the Train page: model_config's keyword arguments
USER_SETTINGS = QUANTIZER_FIELDS + RESIDUAL_FIELDS + FSQ_FIELDS + ("arch", "downsample", "kl_weight")


def codebook_sizes_of(sizes: list[int] | str | None) -> list[int]:
    """K per depth as given: a list, text as typed ("512,256,128") or none (an empty list: K at every depth)."""
    if not isinstance(sizes, str):
        return list(sizes or [])
    try:
        return int_list(sizes)
    except ValueError:
        raise ValueError("K per depth must be whole numbers separated by commas, e.g. 512,256,128; "
                         f"got {sizes!r}") from None


def model_config(kind: str = "vq", channels: int = 1, image_size: int = 28, *, hidden: int | None = None,
                 **settings) -> ModelConfig:
    """The one way from user settings (the command line's flags, the Train page's widgets) to a ModelConfig.

    `settings` are fields of ModelConfig (arch, downsample, kl_weight), QuantizerConfig (k, dim, beta, codebook,
    init, ...), ResidualConfig (depth, codebook_sizes, shared, ...) or FSQConfig (levels), each by its field name;
    one left out (or None) keeps the field's default. K per depth may be text ("512,256,128"); none means K at
    every depth. `hidden` sets the width (and the residual blocks' half of it); none gives colour images the wider
    RGB_HIDDEN. Every value is checked by the configs themselves (ValueError, one line)."""
    given = {name: value for name, value in settings.items() if value is not None}
    unknown = sorted(set(given) - set(QUANTIZER_FIELDS + RESIDUAL_FIELDS + FSQ_FIELDS + MODEL_FIELDS))
    if unknown:
        raise ValueError(f"unknown model setting(s): {', '.join(unknown)}")

    def pick(names: tuple[str, ...]) -> dict:
        return {n: given[n] for n in names if n in given}

    vq = QuantizerConfig(**pick(QUANTIZER_FIELDS))
    rq, fsq = ResidualConfig(), FSQConfig()
    if kind == "rq":
        rq_settings = pick(RESIDUAL_FIELDS)
        sizes = codebook_sizes_of(rq_settings.get("codebook_sizes"))
        rq_settings["codebook_sizes"] = sizes or [vq.k] * rq_settings.get("depth", rq.depth)
        rq = ResidualConfig(**rq_settings)
    if kind == "fsq":
        fsq = FSQConfig(**pick(FSQ_FIELDS))
    width = hidden if hidden is not None else RGB_HIDDEN if channels == 3 else None
    widths = {} if width is None else {"hidden": width, "res_hidden": max(4, width // 2)}
    return ModelConfig(**{**pick(MODEL_FIELDS), "kind": kind, "channels": channels, "image_size": image_size,
                          **widths, "vq": vq, "rq": rq, "fsq": fsq})


def default_model_config(data: ImageData, kind: str = "vq", **settings) -> ModelConfig:
    """The healthy side of the collapse contrast: k-means init, EMA codebook, dead-code restart.

    Measured on the 5,000 MNIST digits (see bench/train_quality.py): all 64 codes in use; the baseline whose
    codebook starts far from the encoder's outputs (N(0, 1) init, gradient codebook, no restart) uses a handful.
    """
    return model_config(kind, data.channels, data.image_size, **settings)


def far_init_quantizer(k: int = 64, dim: int = 16, beta: float = 0.25) -> QuantizerConfig:
    """A codebook that starts far from the encoder's outputs: N(0, 1) init (nn.Embedding's default), learned by
    gradient, no restarts. It collapses onto a few codes: the contrast the app shows.

    The cause is where the codes start, not the gradient codebook: a fresh encoder's outputs sit near 0 with a
    small spread, N(0, 1) codes in D = 16 sit about 4 away, so only the few nearest win any vector, and only
    winners move. The same recipe with U(-1/K, 1/K) init (the codes start bunched together a few tenths from the
    outputs, inside the ball the outputs grow into) used
    64 of 64 codes in 60 s on MNIST (22.8 dB, bench/train_quality.py); `analysis.init_geometry` shows why.
    """
    return QuantizerConfig(k=k, dim=dim, beta=beta, codebook="grad", init="normal", restart_dead=False)


def near_init_quantizer(k: int = 64, dim: int = 16, beta: float = 0.25) -> QuantizerConfig:
    """The same gradient codebook without restarts, but started at U(-1/K, 1/K), near the encoder's outputs:
    it does not collapse (the control for `far_init_quantizer`)."""
    return QuantizerConfig(k=k, dim=dim, beta=beta, codebook="grad", init="uniform", restart_dead=False)


PAIR_STEPS = 500   # the lesson's collapse pair: long enough for N(0, 1) to collapse and the default to pass 20 dB


def collapse_pair(steps: int = PAIR_STEPS, seed: int = 0) -> dict[str, tuple[ModelConfig, DataConfig, TrainConfig]]:
    """The lesson's central contrast as two runs that differ only in the codebook recipe: codes started far from the
    encoder's outputs (N(0, 1), gradient codebook, no restarts) against the healthy default, on MNIST.

    Both have a budget of steps, not seconds, so what the class sees at the end does not depend on how busy the
    server is: a loaded server only makes the same curves arrive later. {title: (model, data, train) configs}."""
    data = DataConfig(name="mnist")
    train = TrainConfig(steps=steps, seed=seed, val_every=max(10, steps // 10), log_every=5, snapshot_every=25)
    base = model_config("vq", 1, 28)
    return {title: (dataclasses.replace(base, vq=q), data, train) for title, q in (
        ("Codes start far: N(0, 1)", far_init_quantizer()), ("Healthy default", QuantizerConfig()))}


# one training step (or validation pass) may use this much memory; the server is shared by a class
MAX_STEP_BYTES = 4 << 30
SLACK_BYTES = 64 << 20    # allocator slack and the k-means init's transients, measured on small models


def step_bytes(cfg: ModelConfig, batch_size: int) -> int:
    """Peak memory of a training step or of a validation pass (trainer.validation_batch), whichever is larger.

    Activations: about 8 bytes per hidden channel per input pixel when training (kept for backward, plus their
    gradients), 4 when validating. Distances: nearest_code holds a few (positions, K) float32 tensors at once, one
    depth at a time, so the largest K counts, not their sum; measured 2-2.5 of them for VQ and up to 5 for RQ.
    tests/test_hardening_budget.py checks this against ru_maxrss of real steps."""
    sizes = cfg.rq.codebook_sizes if cfg.kind == "rq" and not cfg.rq.shared else [cfg.vq.k]
    codes = 0 if cfg.kind == "vae" else max(sizes)
    width = max(cfg.hidden, cfg.vq.dim)
    held = 4 if cfg.kind != "rq" else 8   # (positions, K) tensors alive at once, with margin
    per_image, per_latent_map = cfg.image_size ** 2, cfg.latent_size ** 2
    train = batch_size * (8 * per_image * width + 4 * held * per_latent_map * codes)
    val = validation_batch(batch_size, cfg.image_size) * (4 * per_image * width + 4 * held * per_latent_map * codes)
    return max(train, val) + SLACK_BYTES


ONE_THREAD_WORK = 2_400_000   # batch x pixels x hidden channels under which one torch thread outruns two


def train_threads(cfg: ModelConfig, batch_size: int, cores: int) -> int:
    """Torch threads for a training run given `cores`: one for small steps. Each op of a small step is too short
    to split: the two threads meet at a barrier after every op, and the wait costs more than the second core gives.
    Measured on 2 quiet cores, 20 s runs: MNIST's default (batch 32, 1.6 M) made 730 steps on one thread against
    517 on two; batch 64 (3.2 M) 240 against 241; colour shapes (batch 32, 3.1 M) 233 against 245. The count
    follows from the config alone, so a seed still gives the same run."""
    work = batch_size * cfg.image_size ** 2 * cfg.hidden
    return 1 if work < ONE_THREAD_WORK else max(1, cores)


def check_app_limits(model_cfg: ModelConfig, batch_size: int) -> None:
    """What the Train page's widgets allow, for settings that arrive another way (typed K per depth, ?sizes= in the
    URL, a restart or sweep cell): every K in [2, MAX_K], depth and D within the widgets' ranges (vqdemo/app_limits.py).
    The app's job queue (JobQueue(app_limits=True)) calls it on every submission."""
    rq = model_cfg.rq if model_cfg.kind == "rq" else None
    check_app_settings(model_cfg.kind, batch_size, k=model_cfg.vq.k, dim=model_cfg.vq.dim,
                       depth=rq.depth if rq else None, codebook_sizes=rq.codebook_sizes if rq else None)


def check_app_settings(kind: str, batch_size: int, *, k: int, dim: int, depth: int | None = None,
                       codebook_sizes: list[int] | str | None = None, **_: object) -> None:
    """check_app_limits on the settings themselves, before a config is built from them: a K per depth of 99999
    is named as over the app's slider, not as over the library's bound."""
    for size in [k] + (codebook_sizes_of(codebook_sizes) if kind == "rq" else []):
        if not (isinstance(size, int) and not isinstance(size, bool) and KS[0] <= size <= MAX_K):
            raise ValueError(f"each K must be a whole number from {KS[0]} to {MAX_K} here, got {size!r}; "
                             "the command line allows larger codebooks")
    if kind == "rq" and depth is not None and not 1 <= depth <= MAX_DEPTH:
        raise ValueError(f"RQ depth must be from 1 to {MAX_DEPTH} here, got {depth!r}")
    if not 1 <= dim <= MAX_DIM:
        raise ValueError(f"code size D must be from 1 to {MAX_DIM} here, got {dim!r}")
    if not 1 <= batch_size <= MAX_BATCH:
        raise ValueError(f"batch size must be from 1 to {MAX_BATCH} here, got {batch_size!r}")


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
                         f"{MAX_STEP_BYTES / 2**30:.0f} GiB allowed; "
                         "use a smaller batch size, image size, K or hidden width")


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
        data_cfg = dataclasses.replace(data_cfg, path=str(run_store.keep_data(Path(data_cfg.path), Path(out_dir))))
    if store is None and out_dir is not None:
        store = run_store.RunStore(Path(out_dir))
    if store is not None and run_images.costly(data_cfg):   # the pages never decode the user's images again
        store.images(run_images.to_bytes(data))
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
