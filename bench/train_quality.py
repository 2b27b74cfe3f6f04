"""The collapse contrast, measured: the default MNIST VQ config against a gradient codebook without restarts,
started far from the encoder's outputs (N(0, 1)) and near them (U(-1/K, 1/K)).

Same network, same data, same wall-clock budget, one process, 2 threads. Prints validation PSNR, codes
used, perplexity and steps per second for each, and the default's figures against the targets.

    python bench/train_quality.py [--seconds 60] [--threads 2] [--seed 0] [--default-only]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from vqdemo import runtime  # noqa: E402

# Before torch loads, as the CLI and the app's job workers do. Without it OpenMP's threads spin between ops: on 2 cores
# that ran 53 steps/s against the CLI's 23 when the machine was nearly idle, and 6 against 16 with other work running
# (load 3-5). Either way not what a student gets, so the figures here are the CLI's and the Train page's.
runtime.configure()

import torch  # noqa: E402

from vqdemo.data import DataConfig, load_data  # noqa: E402
from vqdemo.fit import default_model_config, far_init_quantizer, fit, near_init_quantizer  # noqa: E402
from vqdemo.trainer import TrainConfig  # noqa: E402

TARGET_PSNR = 26.0
TARGET_USAGE = 0.95


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--k", type=int, default=None, help="codebook size (default: the default config's K)")
    p.add_argument("--seed", type=int, default=TrainConfig().seed)
    p.add_argument("--default-only", action="store_true", help="train the default config alone (the target's row)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    data_cfg = DataConfig(name="mnist")
    data = load_data(data_cfg)
    default = default_model_config(data, k=a.k)
    k = default.vq.k
    q = dict(k=k, dim=default.vq.dim, beta=default.vq.beta)
    far = dataclasses.replace(default, vq=far_init_quantizer(**q))
    near = dataclasses.replace(default, vq=near_init_quantizer(**q))
    train_cfg = TrainConfig(seconds=a.seconds, val_every=10_000_000, threads=a.threads, seed=a.seed)
    configs = [("default (k-means++ init, EMA, dead-code restart)", default),
               ("far: N(0,1) init, grad codebook, no restart", far),
               ("near: U(-1/K,1/K) init, grad codebook, no restart", near)]
    rows = []
    for name, cfg in configs[:1] if a.default_only else configs:
        _, result = fit(cfg, data_cfg, train_cfg)
        v = result.last_val
        rows.append((name, v["psnr"], int(v["used"]), v["perplexity"], result.steps))
    print(f"\nMNIST (5,000 digits, 4,500 train / 500 val), 28x28 -> 7x7 x D={default.vq.dim}, K={k}, "
          f"{a.seconds:.0f} s each, {a.threads} threads, batch {train_cfg.batch_size}, lr {train_cfg.lr:g}, "
          f"seed {a.seed}\n")
    print(f"{'config':<54} {'val PSNR':>9} {'codes used':>11} {'perplexity':>11} {'steps':>6} {'steps/s':>8}")
    for name, psnr, used, ppl, steps in rows:
        print(f"{name:<54} {psnr:>8.2f}  {used:>5}/{k:<5} {ppl:>11.1f} {steps:>6} {steps / a.seconds:>8.1f}")
    d = rows[0]
    if not a.default_only:
        n, u = rows[1:]
        print(f"\ndefault vs far: {d[1] - n[1]:+.2f} dB, {d[2] / max(n[2], 1):.1f}x codes used; "
              f"near vs far: {u[1] - n[1]:+.2f} dB, {u[2] / max(n[2], 1):.1f}x codes used")
    print(f"target: >= {TARGET_PSNR} dB -> {d[1]:.2f} dB ({'met' if d[1] >= TARGET_PSNR else 'NOT met'}); "
          f">= {TARGET_USAGE:.0%} codes used -> {d[2] / k:.0%} "
          f"({'met' if d[2] / k >= TARGET_USAGE else 'NOT met'})")

if __name__ == "__main__":
    main()
