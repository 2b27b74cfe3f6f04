"""How long does "sample 64 digits" take? Batched prior sampling + decoding vs the same 64 one at a time.

Uses the first MNIST VQ-VAE run with a trained prior under checkpoints/ (or a folder given as argument);
without one, an untrained VQ-VAE and prior of the default (shipped) size, which time the same.
Run: python bench/prior_sampling.py [RUN_DIR]. Target: well under 1 s for 64 maps on 2 threads, at the app's default
guidance for a prior trained with label dropout (classifier-free guidance draws the batch twice).
On a CPU shared with other busy processes, 2 OpenMP threads that spin-wait can be 10-40x slower than 1;
OMP_WAIT_POLICY=PASSIVE (set before torch is imported) avoids that, so the header reports it.
"""

import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from vqdemo import runs
from vqdemo.models import ModelConfig, build_model
from vqdemo.prior import DEFAULT_GUIDANCE, PRIOR_DIR, build_prior, load_prior, prior_config_for, sample_images

N, REPEATS, TARGET_S = 64, 5, 1.0


def find_run() -> Path | None:
    if len(sys.argv) > 1:
        return Path(sys.argv[1])
    for weights in sorted(Path("checkpoints").glob(f"**/{PRIOR_DIR}/{runs.WEIGHTS}")):
        meta = runs.read_json(weights.parent / runs.CONFIG)
        if meta.get("autoencoder", {}).get("kind") == "vq" and meta.get("data", {}).get("name", "").startswith("mnist"):
            return weights.parent.parent
    return None


def median_time(fn) -> float:
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    torch.set_num_threads(2)
    run = find_run()
    if run:
        pair = runs.load_model(run)[0], load_prior(run)[0]
        source = f"trained prior of {run}"
    else:
        torch.manual_seed(0)
        ae = build_model(ModelConfig()).eval()
        pair = ae, build_prior(prior_config_for(ae, 10)).eval()
        source = "no MNIST prior under checkpoints/: untrained VQ-VAE + prior of the default size"
    cfg = pair[1].config
    params = sum(p.numel() for p in pair[1].parameters())
    print(f"{source}\nprior: {cfg.kind}, K={cfg.codebook_sizes}, {cfg.height}x{cfg.width}, {cfg.channels} channels, "
          f"{cfg.layers} layers, kernel {cfg.kernel}, {params:,} parameters; torch threads: {torch.get_num_threads()}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}")

    sample_images(pair, 2, seed=0)  # warm-up
    rows = [
        ("codes only, batched", median_time(lambda: pair[1].sample(N, seed=1))),
        ("codes + decode, batched", median_time(lambda: sample_images(pair, N, seed=1))),
        ("codes + decode, one at a time", median_time(lambda: [sample_images(pair, 1, seed=s) for s in range(N)])),
    ]
    if cfg.guided:  # classifier-free guidance runs the batch twice (with and without the class): the app's default
        rows.append((f"codes + decode, batched, guidance {DEFAULT_GUIDANCE:g}",
                     median_time(lambda: sample_images(pair, N, seed=1, guidance=DEFAULT_GUIDANCE))))
    print(f"\n{'64 samples (median of ' + str(REPEATS) + ')':<34}{'seconds':>9}{'ms/sample':>11}")
    for name, seconds in rows:
        print(f"{name:<34}{seconds:>9.3f}{seconds / N * 1e3:>11.2f}")
    print(f"\none at a time / batched: {rows[2][1] / rows[1][1]:.1f}x")
    batched = rows[-1][1] if cfg.guided else rows[1][1]
    verdict = "meets" if batched < TARGET_S else "MISSES"
    print(f"target: < {TARGET_S:.0f} s for {N} batched samples + decoding -> {batched:.3f} s {verdict} it")


if __name__ == "__main__":
    main()
