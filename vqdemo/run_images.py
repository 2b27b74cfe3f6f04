"""The validation images a page shows of a run trained on the user's own images, kept small in its run folder.

Decoding an uploaded zip costs seconds of CPU (11-14 s for 5,000 photos), and the pages of a run need only its
validation images: ten zip-trained runs, each viewed in turn, decoded their zips on every Learn view once the
dataset cache (8 entries) cycled. So the job's worker, which decodes the zip to train anyway, hands the app these
images once, as 8-bit pixels in a safetensors file (no code can hide in it) of at most MAX_BYTES, and the pages
load that file. A run from before this file existed is decoded once more and gets the file then.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from .data import DataConfig, DataError, ImageData, data_shape, load_data
from .files import atomic_write_bytes
from .runs import IMAGES, CheckpointError, read_capped

MAX_BYTES = 16 * 2**20   # the pixels kept: 5,000 32x32 colour images, or 85 at 256x256 (the first ones of the split)
META_KEY = "vqdemo_images"


def costly(cfg: DataConfig) -> bool:
    """Whether a dataset is the user's own images (a zip or folder): decoded in seconds, not read in milliseconds."""
    return cfg.name == "folder"


def to_bytes(data: ImageData) -> bytes:
    """The validation images (the first ones, up to MAX_BYTES), their labels and class names, as safetensors."""
    n_val, c, h, w = data.val_x.shape
    n = max(1, min(n_val, MAX_BYTES // (c * h * w)))
    tensors = {"val_x": data.val_x[:n].mul(255).round().clamp(0, 255).to(torch.uint8).contiguous()}  # (n, C, H, W)
    if data.val_y is not None:
        tensors["val_y"] = data.val_y[:n].to(torch.int64).contiguous()                                  # (n,)
    return save_tensors(tensors, metadata={META_KEY: json.dumps({"class_names": data.class_names})})


def from_bytes(blob: bytes, cfg: DataConfig, source: str) -> ImageData:
    """The images of `to_bytes`, checked against the run's data config; DataError when they do not fit it. The
    training set is left empty: no page shows it."""
    channels, size = data_shape(cfg)
    bad = f"{source} does not hold this run's validation images"
    try:
        tensors = load_tensors(blob)
        meta = json.loads(_metadata(blob).get(META_KEY, "{}"))
    except (SafetensorError, ValueError, TypeError, RuntimeError, RecursionError):   # hostile bytes
        raise DataError(f"{bad} (not a readable safetensors file)") from None
    x, y = tensors.get("val_x"), tensors.get("val_y")
    names = meta.get("class_names") if isinstance(meta, dict) else None
    if x is None or x.dtype != torch.uint8 or tuple(x.shape[1:]) != (channels, size, size) or len(x) < 1:
        raise DataError(f"{bad} ({channels}x{size}x{size} 8-bit images)")
    if names is not None and not (isinstance(names, list) and all(isinstance(s, str) for s in names)):
        raise DataError(f"{bad} (its class names are not a list of text)")
    if y is not None and (y.dtype != torch.int64 or y.shape != (len(x),) or names is None
                          or int(y.min()) < 0 or int(y.max()) >= len(names)):
        raise DataError(f"{bad} (its labels do not match its images and class names)")
    return ImageData(name=cfg.name, train_x=torch.empty(0, channels, size, size), train_y=None,
                     val_x=x.float().div_(255.0), val_y=y, class_names=names if y is not None else None)


def _metadata(blob: bytes) -> dict:
    """A safetensors file's string metadata: its 8-byte little-endian header length, then that much JSON."""
    n = int.from_bytes(blob[:8], "little")
    if n > len(blob) - 8:
        raise ValueError("header longer than the file")
    header = json.loads(blob[8:8 + n])
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return meta if isinstance(meta, dict) else {}


def load(folder: Path, cfg: DataConfig, *, save: bool) -> ImageData:
    """A costly run's validation images: from its file when it has one, else decoded (once: with `save`, the
    file is written for next time; a full disk only costs the next view another decode). Raises DataError."""
    path = Path(folder) / IMAGES
    if path.is_file():
        try:
            return from_bytes(read_capped(path, MAX_BYTES + 2**20), cfg, str(path))
        except (CheckpointError, DataError):
            pass   # damaged or from another config: decoded again below, and replaced
    data = to_bytes(load_data.__wrapped__(cfg))   # uncached: the full decode is dropped once it is made small
    if save:
        try:
            atomic_write_bytes(path, data)
        except OSError:
            pass
    return from_bytes(data, cfg, str(path))
