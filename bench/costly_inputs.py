"""What the web server pays for costly inputs: a zip-trained run's images for its pages, a big 16-bit upload, a zip of
many empty members. Each figure is CPU seconds and how far it raised this process's RSS high-water mark.

1. A run trained one step on a zip of N photos (crops of scikit-learn's two sample photos, saved as JPEG):
   its pages' images loaded from the run's `val_images.safetensors`, against decoding its zip (what every view of
   such a run cost once the dataset cache cycled).
2. A 16-bit 6300x6300 PNG decoded for a 28x28 model (the Reconstruct page's upload), once.
3. A zip of 600,000 empty members refused by the training zip check.
Run: python bench/costly_inputs.py [--images 2000] [--size 64]
"""

from __future__ import annotations

import argparse
import io
import resource
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vqdemo import runtime  # noqa: E402

runtime.configure()

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402


def measured(what: str, fn) -> object:
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.process_time()
    out = fn()
    cpu = time.process_time() - t0
    grew = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
    print(f"{what:<58} {cpu:7.3f} s CPU, RSS high-water +{grew:,.0f} MB")
    return out


def photo_zip(n: int, path: Path) -> None:
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images   # two 427x640 colour photos, offline
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for i in range(n):
            p = photos[i % len(photos)]
            top, left = rng.integers(0, p.shape[0] - 300), rng.integers(0, p.shape[1] - 300)
            buf = io.BytesIO()
            Image.fromarray(p[top:top + 300, left:left + 300]).save(buf, format="JPEG", quality=90)
            zf.writestr(f"{['china', 'flower'][i % 2]}/{i}.jpg", buf.getvalue())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--size", type=int, default=64)
    a = ap.parse_args()

    from vqdemo import run_images, runs
    from vqdemo.data import DataConfig, data_config, load_data
    from vqdemo.fit import fit
    from vqdemo.image_zip import scan_zip
    from vqdemo.images import load_image
    from vqdemo.models import ModelConfig
    from vqdemo.trainer import TrainConfig

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        photo_zip(a.images, tmp / "photos.zip")
        run = tmp / "run"
        fit(ModelConfig(channels=3, image_size=a.size), DataConfig(name="folder", path=str(tmp / "photos.zip"),
            image_size=a.size), TrainConfig(steps=1, batch_size=8), out_dir=run)
        cfg = data_config(runs.read_json(run / runs.CONFIG), "run")
        print(f"1. a run on {a.images} photos at {a.size}x{a.size}; "
              f"val_images.safetensors {(run / runs.IMAGES).stat().st_size / 2**20:.1f} MB")
        measured("   its pages' images, from the run's file", lambda: run_images.load(run, cfg, save=False))
        measured("   decoding its zip instead (each view, before)", lambda: load_data.__wrapped__(cfg))

        ramp = (np.arange(6300 * 6300, dtype=np.uint32) % 65535).astype(np.uint16).reshape(6300, 6300)
        buf = io.BytesIO()
        Image.fromarray(ramp).save(buf, format="PNG")
        del ramp
        png = buf.getvalue()
        measured(f"2. a {len(png) / 1e6:.1f} MB 16-bit 6300x6300 PNG, decoded for 28x28",
                 lambda: load_image(png, size=28, channels=1))

        many = tmp / "many.zip"
        with zipfile.ZipFile(many, "w", zipfile.ZIP_STORED) as zf:
            for i in range(600_000):
                zf.writestr(str(i), b"")

        def refuse() -> str:
            try:
                scan_zip(many, 32)
            except ValueError as e:
                return str(e)
            return "accepted"
        print("   ->", measured("3. a zip of 600,000 empty members, checked", refuse))


if __name__ == "__main__":
    main()
