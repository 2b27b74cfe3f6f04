"""Command line: `python -m vqdemo train | eval | prior train | prior sample | notebook` (installed: `vqdemo ...`).

Bad arguments and unusable files end with a one-line message and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from pathlib import Path

from tqdm import tqdm

from .analysis import rate_bits
from .data import DataConfig, DataError, data_config, data_shape, load_data
from .fit import USER_SETTINGS, model_config
from .fsq import FSQConfig
from .images import ImageError
from .models import ModelConfig
from .page_urls import PAGES
from .prior import PriorConfig
from .quantize import QuantizerConfig, ResidualConfig
from .runs import CheckpointError, check_fits, load_model, new_run_dir
from .settings import add_flags, specs
from .trainer import TrainConfig

DEFAULT_SECONDS = 60.0   # a run's budget when neither --steps nor --seconds is given


def _int_in(lo: int, hi: int):
    """An argparse type: an integer in [lo, hi], refused in one line otherwise (before anything loads)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{value} is outside [{lo}, {hi}]")
        return value
    return parse


SEED = _int_in(0, 2**63 - 1)


def _number_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line instead of the whole usage text."""

    def error(self, message: str) -> None:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    prog = "vqdemo" if Path(sys.argv[0]).name == "vqdemo" else "python -m vqdemo"   # the installed command, or -m
    p = _Parser(prog=prog, description="Train and inspect VQ-VAE / RQ-VAE / VAE models; export notebooks.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train a model into a run folder")
    # Every config field's flag, help, type check, bounds and default come from the field (settings.py).
    add_flags(t, DataConfig, ["name", "path", "image_size", "download"])
    add_flags(t, ModelConfig, ["kind"])
    add_flags(t, FSQConfig, defaults=False)
    add_flags(t, ModelConfig, ["arch", "downsample"])
    add_flags(t, ModelConfig, ["hidden"], defaults=False)
    add_flags(t, QuantizerConfig)
    add_flags(t, ResidualConfig, ["depth"])
    add_flags(t, ResidualConfig, ["codebook_sizes"], defaults=False)
    add_flags(t, ResidualConfig, ["shared", "norm_residual", "progressive_steps"])
    add_flags(t, ModelConfig, ["kl_weight"])
    t.add_argument("--normalize-recon", action="store_true",
                   help="divide the recon loss by the data variance (as van den Oord et al. 2017's code does)")
    add_flags(t, TrainConfig)
    t.add_argument("--out", type=Path, help="run folder (default: a new folder under runs/)")
    t.add_argument("--backend", default="here", choices=["here", "ray"],
                   help="here: train in this process; ray: on the Ray cluster at RAY_ADDRESS (files come back here)")

    e = sub.add_parser("eval", help="print validation figures of a run")
    e.add_argument("run", type=Path)
    e.add_argument("--json", action="store_true")

    pr = sub.add_parser("prior", help="train or sample the prior over codes")
    psub = pr.add_subparsers(dest="prior_command", required=True, parser_class=_Parser)
    pt = psub.add_parser("train")
    pt.add_argument("run", type=Path)
    add_flags(pt, TrainConfig, ["seconds", "steps", "seed"])
    pt.add_argument("--unconditional", action="store_true", help="ignore class labels")
    add_flags(pt, PriorConfig, ["dropout"])
    add_flags(pt, PriorConfig, ["label_drop"], defaults=False)
    ps = psub.add_parser("sample")
    ps.add_argument("run", type=Path)
    ps.add_argument("--n", type=_int_in(1, 1024), default=16)
    ps.add_argument("--temperature", type=_number_arg, default=None,
                    help="below 1 favours the prior's likelier codes (default: the library's DEFAULT_TEMPERATURE)")
    ps.add_argument("--top-k", type=_int_in(1, 65536))
    ps.add_argument("--guidance", type=_number_arg, default=None,
                    help="classifier-free guidance (Ho & Salimans 2022) for a prior trained with label dropout: 1 is "
                         "the plain class-conditional prior, higher follows the class more (default: the library's "
                         "DEFAULT_GUIDANCE when the prior supports it, else 1)")
    ps.add_argument("--seed", type=SEED, default=0)
    ps.add_argument("--label", type=_int_in(0, 9999))
    ps.add_argument("--out", type=Path, default=Path("samples.png"))

    nb = sub.add_parser("notebook", help="write a page's setup as a runnable Jupyter notebook (homework)")
    nb.add_argument("--page", required=True, choices=PAGES, help="the app page whose setup the notebook repeats")
    nb.add_argument("--url", default="", help="the page's URL or its query, e.g. 'k=16&beta=0.5' (quote the &): its "
                                              "settings; the rest keep the page's defaults")
    nb.add_argument("--run", help="a run folder (or run:<id> of the runs folder) whose notebook reproduces that run")
    nb.add_argument("-o", "--out", type=Path, required=True, help="the .ipynb file to write")
    nb.add_argument("--retrain-seconds", type=_number_arg, default=None,
                    help="how long the notebook trains its model's recipe where the model's folder is missing "
                         "(Colab after pip install; default: the library's RETRAIN_SECONDS)")
    return p


def _progress(total_steps: int | None, seconds: float | None):
    """A tqdm bar drawn from the first event on, so an error before training starts stays a one-line message."""
    bar = None

    def on_event(event: dict) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total_steps or (int(seconds) if seconds else None), unit="step" if total_steps else "s",
                       dynamic_ncols=True)
        if event["type"] == "train":
            bar.n = event["step"] if total_steps else min(int(event["time"]), bar.total or 0)
            if event["step"] % 10 == 0:
                shown = {k: event[k] for k in ("loss", "psnr", "perplexity", "used") if k in event}
                bar.set_postfix({k: f"{v:.3g}" for k, v in shown.items()}, refresh=False)
                bar.refresh()
        elif event["type"] == "val":
            if "psnr" in event:
                bar.write(f"step {event['step']}: val psnr {event['psnr']:.2f} dB, recon mse {event['score']:.5f}")
            else:
                bar.write(f"step {event['step']}: val {event['score']:.3f} bits per code")
        elif event["type"] == "end":
            bar.close()

    return on_event


def model_settings(a: argparse.Namespace) -> dict:
    """The parsed flags -> the builder's keyword arguments (by field name), as the Train page hands them over."""
    return {name: getattr(a, name) for name in USER_SETTINGS}


def cmd_train(a: argparse.Namespace) -> int:
    import dataclasses

    import torch

    from .fit import check_trainable, fit, train_threads

    if a.seconds is None and a.steps is None:
        a.seconds = DEFAULT_SECONDS
    data_cfg = DataConfig(name=a.name, path=a.path, image_size=a.image_size, download=a.download)
    train_cfg = TrainConfig(**{name: getattr(a, name) for name in specs(TrainConfig) if hasattr(a, name)})
    # every bound, the parameter count and a step's memory, from the data's shape alone: refused before anything is
    # decoded or allocated (data_shape is what load_data will give)
    model_cfg = model_config(a.kind, *data_shape(data_cfg), hidden=a.hidden, **model_settings(a))
    check_trainable(model_cfg, train_cfg.batch_size)
    load_data(data_cfg)   # the dataset's own refusals (missing files, too big to hold) before a run folder exists
    if train_cfg.threads is None:   # as the app's queue chooses: one thread for a small model's steps
        train_cfg = dataclasses.replace(train_cfg, threads=train_threads(model_cfg, train_cfg.batch_size,
                                                                          torch.get_num_threads()))
    out = a.out or new_run_dir()
    command = "python -m vqdemo " + " ".join(shlex.quote(s) for s in sys.argv[1:])
    if a.backend == "ray":
        return _train_on_ray(model_cfg, data_cfg, train_cfg, out, a)
    _, result = fit(model_cfg, data_cfg, train_cfg, out_dir=out, normalize_recon=a.normalize_recon,
                    command=command, on_event=_progress(a.steps, a.seconds))
    print(f"{result.state}: {result.reason} after {result.steps} steps; best val psnr "
          f"{result.best.get('psnr', float('nan')):.2f} dB -> {out}")
    return 0 if result.state != "failed" else 1


def _train_on_ray(model_cfg, data_cfg, train_cfg, out: Path, a: argparse.Namespace) -> int:
    """The same run as a job of the app's queue on a Ray cluster; its events and files come back to `out`."""
    import time

    from .jobs import FINISHED, JobQueue, make_backend

    queue = JobQueue(1, out.parent, threads=train_cfg.threads or 1, max_seconds=train_cfg.seconds or 7 * 86400,
                     backend=make_backend("ray"))
    job = queue.submit("cli", out.name, model_cfg, data_cfg, train_cfg, normalize_recon=a.normalize_recon, run_dir=out)
    show, seen = _progress(a.steps, a.seconds), set()
    try:
        while job.state not in FINISHED:
            time.sleep(0.5)
            view = job.view()
            for event in [view.latest] + view.val:
                key = (event.get("type"), event.get("step"))
                if event and key not in seen:
                    seen.add(key)
                    show(event)
    except KeyboardInterrupt:
        job.stop("stopped from the command line")
        while job.state not in FINISHED:
            time.sleep(0.2)
    view = job.view()
    show({"type": "end", "step": view.step})
    print(f"{view.state}: {view.reason} after {view.step} steps; best val psnr "
          f"{view.best_psnr or float('nan'):.2f} dB -> {out}")
    return 0 if view.state != "failed" else 1


def evaluate(run: Path) -> dict:
    """Validation figures of a run's best checkpoint on its own dataset's validation split."""
    model, meta = load_model(run)
    data = load_data(data_config(meta, str(run)))
    check_fits(model, data, str(run))
    stats = model.evaluate(data.val_x, data.val_y, 256)
    out = {"psnr": stats["psnr"], "mse": stats["mse"], "kind": model.config.kind}
    if model.config.kind != "vae":
        out.update(perplexity=stats["perplexity"], usage=stats["usage"], dead_codes=int(stats["dead"]),
                   k=int(stats["k"]), codebook_sizes=model.codebook_sizes)
    out.update({k: v for k, v in stats.items() if k.startswith("psnr@")})
    if "kl" in stats:
        out["kl"] = stats["kl"]
    out["bits_per_image"] = rate_bits(model, stats)  # what the bottleneck carries: compare PSNR only beside it
    return out


def _finite_or_null(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite_or_null(v) for v in obj]
    return obj


def cmd_eval(a: argparse.Namespace) -> int:
    figures = evaluate(a.run)
    if a.json:   # strict JSON: a non-finite figure (a model whose outputs overflow) is null, never NaN
        print(json.dumps(_finite_or_null(figures), allow_nan=False))
    else:
        for k, v in figures.items():
            print(f"{k:>14}: {v:.4g}" if isinstance(v, float) else f"{k:>14}: {v}")
    return 0


def cmd_prior(a: argparse.Namespace) -> int:
    from . import prior

    if a.prior_command == "train":
        if a.seconds is None and a.steps is None:
            a.seconds = DEFAULT_SECONDS
        cfg = None
        if a.unconditional or a.dropout or a.label_drop is not None:
            ae, meta = load_model(a.run)
            classes = None
            if not a.unconditional:
                data = load_data(data_config(meta, str(a.run)))
                classes = data.num_classes if data.train_y is not None else None
            extra = {} if a.label_drop is None else {"label_drop": a.label_drop}
            cfg = prior.prior_config_for(ae, classes, dropout=a.dropout, **extra)
        out = prior.train_prior(a.run, seconds=a.seconds, steps=a.steps, seed=a.seed, prior_cfg=cfg,
                                on_event=_progress(a.steps, a.seconds), out_dir=a.run / prior.PRIOR_DIR)
        print(f"prior written to {out}")
        return 0
    from PIL import Image

    from .analysis import image_grid
    from .images import to_uint8, upscale_nearest

    temperature = prior.DEFAULT_TEMPERATURE if a.temperature is None else a.temperature
    ae, the_prior = load_model(a.run)[0], prior.load_prior(a.run)[0]
    guidance = a.guidance if a.guidance is not None else (
        prior.DEFAULT_GUIDANCE if the_prior.config.guided else 1.0)
    images = prior.sample_images((ae, the_prior), n=a.n, temperature=temperature, top_k=a.top_k, seed=a.seed,
                                 label=a.label, guidance=guidance)
    grid = upscale_nearest(to_uint8(image_grid(images)), 4)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(a.out)
    print(f"{a.n} samples -> {a.out}")
    return 0


def cmd_notebook(a: argparse.Namespace) -> int:
    from . import notebook

    extra = {} if a.retrain_seconds is None else {"retrain_seconds": a.retrain_seconds}
    if a.retrain_seconds is not None and a.retrain_seconds <= 0:
        raise ValueError(f"--retrain-seconds must be above 0, got {a.retrain_seconds:g}")
    nb = notebook.build(a.page, a.url, a.run, **extra)
    out = notebook.write(nb, a.out)
    print(f"{a.page} notebook ({len(nb.cells)} cells) -> {out}: open it in Jupyter, or upload it to Colab")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            return cmd_train(args)
        if args.command == "eval":
            return cmd_eval(args)
        if args.command == "notebook":
            return cmd_notebook(args)
        return cmd_prior(args)
    except (ValueError, DataError, ImageError, CheckpointError, FileNotFoundError, PermissionError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
