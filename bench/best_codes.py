"""How far the encoder's nearest codes are from the best code map, and what the search that finds it costs.

Runs the Reconstruct page's best-codes search (vqdemo.best_codes: greedy coordinate descent over the cells,
every code of the codebook tried in one decoder batch per cell) on the first N validation images of a shipped
model, one thread, and prints per image the PSNR of the encoder's codes and of the searched ones, the sweeps and
the seconds; then the PSNR over all N images (of their MSE) before and after, at the same bits per image.

Run: python bench/best_codes.py [--run checkpoints/mnist-vq] [--images 32] [--sweeps 4] [--seconds 20]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from vqdemo import runtime  # noqa: E402

runtime.configure()

import torch  # noqa: E402

from vqdemo import runs  # noqa: E402
from vqdemo.best_codes import SearchConfig, search  # noqa: E402
from vqdemo.data import data_config, load_data  # noqa: E402
from vqdemo.metrics import psnr_of  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default="checkpoints/mnist-vq")
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--sweeps", type=int, default=SearchConfig().sweeps)
    p.add_argument("--seconds", type=float, default=SearchConfig().seconds)
    a = p.parse_args()
    torch.set_num_threads(1)
    model, meta = runs.load_model(a.run)
    x = load_data(data_config(meta, a.run)).val_x[:a.images]
    cfg = SearchConfig(sweeps=a.sweeps, seconds=a.seconds, seed=0)
    before, after, times = [], [], []
    start = time.monotonic()
    for i, image in enumerate(x):
        r = search(model, image, cfg)
        before.append(r.encoder_image)
        after.append(r.image)
        times.append(r.seconds)
        print(f"image {i:3d}: {r.encoder_psnr:6.2f} -> {r.psnr:6.2f} dB, {int(r.changed.sum()):2d} cells changed, "
              f"{r.sweeps} sweeps, {r.seconds:5.1f} s", flush=True)
    print(f"{a.run}, {len(x)} validation images, {cfg.sweeps} sweeps or {cfg.seconds:g} s each, one thread: "
          f"PSNR {psnr_of(x, torch.stack(before)):.2f} dB with the encoder's codes, "
          f"{psnr_of(x, torch.stack(after)):.2f} dB with the searched ones (same bits); "
          f"{sum(times) / len(times):.1f} s an image on average, {time.monotonic() - start:.0f} s in all")


if __name__ == "__main__":
    main()
