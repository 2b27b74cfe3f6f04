"""Command line: `python -m vqdemo train | eval | prior train | prior sample`.

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
from .data import DATASETS, DataConfig, DataError, load_data
from .images import ImageError
from .quantize import QuantizerConfig, ResidualConfig
from .runs import CheckpointError, check_fits, data_config, load_model, new_run_dir
from .train import MAX_THREADS, SCHEDULES, TrainConfig


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


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


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number")
    return value


def _on_off(text: str) -> bool:
    if text.lower() in ("on", "true", "yes", "1"):
        return True
    if text.lower() in ("off", "false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r}: say on or off")


def _int_list(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give comma-separated integers, e.g. 512,256,128") from None


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line instead of the whole usage text."""

    def error(self, message: str) -> None:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m vqdemo", description="Train and inspect VQ-VAE / RQ-VAE / VAE models.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train a model into a run folder")
    t.add_argument("--dataset", default="mnist", choices=sorted(DATASETS))
    t.add_argument("--data-path", help="folder or zip for folder / mnist-full / cifar10")
    t.add_argument("--image-size", type=_positive_int)
    t.add_argument("--download", action="store_true", help="mnist-full / cifar10: download when missing (needs internet)")
    t.add_argument("--model", default="vq", choices=["vq", "rq", "fsq", "vae"],
                   help="vq: VQ-VAE (van den Oord et al. 2017); rq: RQ-VAE (Lee et al. 2022); fsq: finite scalar "
                        "quantisation (Mentzer et al. 2023); vae: a Gaussian VAE")
    t.add_argument("--levels", type=_int_list, help="FSQ: levels per latent channel, e.g. 8,6,5 (240 codes)")
    t.add_argument("--arch", default="conv", choices=["conv", "patch"])
    t.add_argument("--downsample", type=_positive_int, default=4, help="conv: 2, 4 or 8; patch: the patch size")
    t.add_argument("--hidden", type=_positive_int)
    t.add_argument("--k", type=int, default=64, help="codebook size K")
    t.add_argument("--dim", type=_positive_int, default=16, help="code vector size D")
    t.add_argument("--beta", type=_finite, default=0.25, help="commitment weight")
    t.add_argument("--codebook", default="ema", choices=["ema", "grad"])
    t.add_argument("--decay", type=_finite, default=0.95)
    t.add_argument("--init", default="kmeans", choices=["kmeans", "uniform", "normal"])
    t.add_argument("--restart-dead", type=_on_off, default=True, metavar="on|off")
    t.add_argument("--dead-threshold", type=_finite, default=0.5)
    t.add_argument("--cosine", action="store_true")
    t.add_argument("--ste", default="paper", choices=["paper", "both"],
                   help="straight-through form: paper, z_e + sg(z_q - z_e) (van den Oord et al. 2017); both, "
                        "z_q + (z_e - sg(z_e)), which also sends the decoder's gradient to a gradient codebook "
                        "(needs --codebook grad)")
    t.add_argument("--depth", type=_positive_int, default=4, help="RQ depth")
    t.add_argument("--ks", type=_int_list, help="RQ codebook size per depth, e.g. 512,256,128 (default: K at every depth)")
    t.add_argument("--shared-codebook", action="store_true")
    t.add_argument("--norm-residual", action="store_true")
    t.add_argument("--progressive-steps", type=int, default=0)
    t.add_argument("--kl-weight", type=_finite, default=1.0,
                   help="VAE: weight of the KL term (KL summed over latents, divided by the pixel count like the MSE); "
                        "lower sends more bits per image")
    t.add_argument("--normalize-recon", action="store_true",
                   help="divide the recon loss by the data variance (as van den Oord et al. 2017's code does)")
    t.add_argument("--seconds", type=_finite)
    t.add_argument("--steps", type=_positive_int)
    t.add_argument("--batch-size", type=_positive_int, default=TrainConfig.batch_size)
    t.add_argument("--lr", type=_finite, default=TrainConfig.lr)
    t.add_argument("--schedule", default=TrainConfig.schedule, choices=list(SCHEDULES),
                   help="learning rate over the run: constant, or cosine (from --lr down to 0 by the end of the budget)")
    t.add_argument("--seed", type=SEED, default=0)
    t.add_argument("--val-every", type=_positive_int, default=250)
    t.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    t.add_argument("--threads", type=_int_in(1, MAX_THREADS))
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
    pt.add_argument("--seconds", type=_finite)
    pt.add_argument("--steps", type=_positive_int)
    pt.add_argument("--seed", type=SEED, default=0)
    pt.add_argument("--unconditional", action="store_true", help="ignore class labels")
    pt.add_argument("--dropout", type=_finite, default=0.0,
                    help="dropout in the PixelCNN's gated layers, in [0, 1): keeps a long run from overfitting")
    pt.add_argument("--label-drop", type=_finite, default=None,
                    help="share of training labels replaced by 'no class', in [0, 1), so the prior can sample with "
                         "classifier-free guidance (Ho & Salimans 2022); default 0.1 for a class-conditional prior")
    ps = psub.add_parser("sample")
    ps.add_argument("run", type=Path)
    ps.add_argument("--n", type=_int_in(1, 1024), default=16)
    ps.add_argument("--temperature", type=_finite, default=None,
                    help="below 1 favours the prior's likelier codes (default: the library's DEFAULT_TEMPERATURE)")
    ps.add_argument("--top-k", type=_int_in(1, 65536))
    ps.add_argument("--guidance", type=_finite, default=None,
                    help="classifier-free guidance (Ho & Salimans 2022) for a prior trained with label dropout: 1 is "
                         "the plain class-conditional prior, higher follows the class more (default: the library's "
                         "DEFAULT_GUIDANCE when the prior supports it, else 1)")
    ps.add_argument("--seed", type=SEED, default=0)
    ps.add_argument("--label", type=_int_in(0, 9999))
    ps.add_argument("--out", type=Path, default=Path("samples.png"))
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


def cmd_train(a: argparse.Namespace) -> int:
    from .fit import check_trainable, fit
    from .fsq import FSQConfig
    from .models import ModelConfig

    if a.seconds is None and a.steps is None:
        a.seconds = 60.0
    data_cfg = DataConfig(name=a.dataset, path=a.data_path, image_size=a.image_size, download=a.download)
    vq = QuantizerConfig(k=a.k, dim=a.dim, beta=a.beta, codebook=a.codebook, decay=a.decay, init=a.init,
                         restart_dead=a.restart_dead, dead_threshold=a.dead_threshold, cosine=a.cosine, ste=a.ste)
    rq = ResidualConfig(depth=a.depth, codebook_sizes=a.ks or [a.k] * a.depth, shared=a.shared_codebook,
                        norm_residual=a.norm_residual, progressive_steps=a.progressive_steps)
    fsq = FSQConfig(levels=a.levels) if a.levels else FSQConfig()
    model_cfg = ModelConfig(kind=a.model, arch=a.arch, downsample=a.downsample, vq=vq, rq=rq, fsq=fsq, kl_weight=a.kl_weight)
    train_cfg = TrainConfig(steps=a.steps, seconds=a.seconds, batch_size=a.batch_size, lr=a.lr, seed=a.seed,
                            val_every=a.val_every, device=a.device, threads=a.threads, schedule=a.schedule)
    model_cfg.vq.validate()
    if a.model == "rq":
        rq.validate()
    if a.model == "fsq":
        fsq.validate()
    train_cfg.validate()
    data = load_data(data_cfg)
    model_cfg.channels, model_cfg.image_size = data.channels, data.image_size
    if a.hidden:
        model_cfg.hidden = a.hidden
        model_cfg.res_hidden = max(4, a.hidden // 2)
    elif data.channels == 3:
        model_cfg.hidden, model_cfg.res_hidden = 96, 48
    check_trainable(model_cfg, train_cfg.batch_size)   # every bound, and the size, before a run folder or a progress bar exists
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
    stats = model.validate(data.val_x, data.val_y, 256)
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
            a.seconds = 60.0
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            return cmd_train(args)
        if args.command == "eval":
            return cmd_eval(args)
        return cmd_prior(args)
    except (ValueError, DataError, ImageError, CheckpointError, FileNotFoundError, PermissionError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
