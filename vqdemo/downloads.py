"""The full MNIST and CIFAR-10 from their real files: IDX for MNIST, the "python version" pickles for CIFAR-10.

These files come from a folder the user points to, so they are untrusted: every read is bounded (MAX_FILE_BYTES,
gzip bombs included, only regular files), IDX is parsed by hand with numpy, and a CIFAR batch goes through an
unpickler that can build numpy arrays and nothing else (user files are never unpickled with the real thing).
Downloading happens only when a config asks for it (`download=True`, checked against the files' md5); the app
never needs it: the built-in sets work offline, and a run's recorded config always has downloads off.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import math
import pickle
import tarfile
import urllib.request
from pathlib import Path, PurePosixPath

import numpy as np

from .data import DIGIT_NAMES, DataConfig, DataError
from .files import atomic_write_bytes

MAX_FILE_BYTES = 256 * 2**20  # bound on any single dataset file read (MNIST train images are 47 MB)
MNIST_FILES = {  # role -> (file name, md5 of the .gz on the mirror)
    "train_x": ("train-images-idx3-ubyte", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    "train_y": ("train-labels-idx1-ubyte", "d53e105ee54ea40749a09fcbcd1e9432"),
    "test_x": ("t10k-images-idx3-ubyte", "9fb629c4189551a2d022fa330f9573f3"),
    "test_y": ("t10k-labels-idx1-ubyte", "ec29112dd5afa0611ce80d1b7f02629c"),
}
MNIST_MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR_DIR = "cifar-10-batches-py"
CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _read_bounded(path: Path) -> bytes:
    """Whole file (gunzipped if .gz), refusing anything above MAX_FILE_BYTES, gzip bombs included, and anything
    that is not a regular file (a FIFO would block the server's read forever, /dev/zero never end)."""
    if not path.is_file():
        raise DataError(f"'{path}' is not a regular file; point to the dataset's own files.")
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read '{path}' ({e}); re-download it.") from None
    if len(data) > MAX_FILE_BYTES:
        raise DataError(f"'{path}' is larger than {MAX_FILE_BYTES >> 20} MiB, too big for this dataset; "
                        "check that it is the right file.")
    return data


def parse_idx(data: bytes, magic: int, what: str) -> np.ndarray:
    """IDX (MNIST's format): 0x0000 08 ndim, ndim big-endian int32 dims, then uint8 data."""
    if len(data) < 4 or int.from_bytes(data[:4], "big") != magic:
        got = data[:4].hex() if len(data) >= 4 else "too short"
        raise DataError(f"{what} is not an MNIST IDX file of the expected kind (magic {got}, expected "
                        f"{magic:08x}); check that images and labels files are not swapped or corrupt.")
    ndim = data[3]
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if len(data) != header + math.prod(dims):
        raise DataError(f"{what} should hold {math.prod(dims)} values for shape {dims} but has "
                        f"{len(data) - header}; the file is truncated or corrupt, re-download it.")
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


def _find(root: Path, name: str) -> Path | None:
    """MNIST files as shipped (.gz or not, '-' or '.' before idx), also in torchvision's MNIST/raw."""
    alt = name.replace("-idx", ".idx")
    for d in (root, root / "raw", root / "MNIST" / "raw"):
        for n in (name, name + ".gz", alt, alt + ".gz"):
            if (d / n).is_file():
                return d / n
    return None


def _download(url: str, md5: str, max_bytes: int) -> bytes:
    """Fetch a public file into memory and check its md5 (only ever called when cfg.download is set)."""
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            data = r.read(max_bytes + 1)
    except OSError as e:
        raise DataError(f"downloading {url} failed ({e}); check your connection, or download it "
                        "yourself and set the path.") from None
    if len(data) > max_bytes or hashlib.md5(data, usedforsecurity=False).hexdigest() != md5:
        raise DataError(f"the file from {url} is not the expected one (checksum mismatch); try again later.")
    return data


def load_mnist_full(cfg: DataConfig) -> tuple:
    root = Path(cfg.path)
    found = {role: _find(root, name) for role, (name, _) in MNIST_FILES.items()}
    if cfg.download and not all(found.values()):
        for role, (name, md5) in MNIST_FILES.items():
            if found[role] is None:
                found[role] = root / (name + ".gz")
                atomic_write_bytes(found[role], _download(MNIST_MIRROR + name + ".gz", md5, 64 * 2**20))
    if found["train_x"] is None or found["train_y"] is None:
        raise DataError(f"no MNIST training files in '{root}': expected train-images-idx3-ubyte and "
                        "train-labels-idx1-ubyte (optionally .gz). Download them from an MNIST mirror, "
                        "or set download=True if you are online.")
    arrays = {}
    for role, p in found.items():
        if p is not None:
            arrays[role] = parse_idx(_read_bounded(p), 2051 if role.endswith("x") else 2049, f"'{p}'")
    for part in ("train", "test"):
        x, y = arrays.get(part + "_x"), arrays.get(part + "_y")
        if x is None or y is None:
            continue
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y) or (y.size and y.max() > 9):
            raise DataError(f"MNIST {part} images {x.shape} and labels {y.shape} do not match; "
                            "re-download both files.")
    test = (arrays["test_x"][:, None], arrays["test_y"]) if "test_x" in arrays and "test_y" in arrays else None
    return (arrays["train_x"][:, None], arrays["train_y"]), test, DIGIT_NAMES


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can build numpy arrays and nothing else: any other global is refused."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            if name == "ndarray":
                return np.ndarray
            if name == "dtype":
                return np.dtype
            mod = getattr(np, "_core", None) or np.core
            return getattr(mod.multiarray, name)
        if (module, name) == ("_codecs", "encode"):  # how protocol 2 stores bytes under Python 3
            return _latin1_encode
        raise pickle.UnpicklingError(f"refusing to load '{module}.{name}'")


def _latin1_encode(s: str, encoding: str = "latin1") -> bytes:
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"refusing the codec {encoding!r}")
    return s.encode("latin1")


def read_cifar_batch(data: bytes, what: str) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch -> ((N, 3, 32, 32) uint8, (N,) int64), without running any pickle code."""
    try:
        d = _NumpyOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as e:  # noqa: BLE001 - a hostile pickle can raise anything
        raise DataError(f"{what} is not a CIFAR-10 batch this app can read safely ({e}); "
                        "use the official 'CIFAR-10 python version' files.") from None
    if not isinstance(d, dict):
        raise DataError(f"{what} does not hold a CIFAR-10 batch dictionary; use the official files.")
    x = d.get(b"data", d.get("data"))
    y = d.get(b"labels", d.get("labels"))
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072 \
            or not isinstance(y, (list, np.ndarray)) or len(y) != len(x):
        raise DataError(f"{what} does not have the CIFAR-10 layout (uint8 data N x 3072 and N labels); "
                        "use the official files.")
    try:
        y = np.asarray(y, dtype=np.int64)
    except (TypeError, ValueError):
        raise DataError(f"{what} has labels that are not integers; use the official files.") from None
    if y.size and (y.min() < 0 or y.max() > 9):
        raise DataError(f"{what} has labels outside 0..9; use the official files.")
    return x.reshape(-1, 3, 32, 32), y  # rows are 1024 R, 1024 G, 1024 B, each row-major


def _download_cifar(root: Path) -> None:
    """Fetch the official tarball into memory and write only the batch files (nothing else is extracted)."""
    data = _download(CIFAR_URL, CIFAR_MD5, 200 * 2**20)
    wanted = {f"data_batch_{i}" for i in range(1, 6)} | {"test_batch"}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for m in tar.getmembers():
            name = PurePosixPath(m.name).name
            if m.isfile() and name in wanted:
                atomic_write_bytes(root / CIFAR_DIR / name, tar.extractfile(m).read())


def load_cifar10(cfg: DataConfig) -> tuple:
    root = Path(cfg.path)
    names = [f"data_batch_{i}" for i in range(1, 6)]

    def folder():
        return next((d for d in (root, root / CIFAR_DIR) if any((d / n).is_file() for n in names)), None)

    if folder() is None and cfg.download:
        _download_cifar(root)
    d = folder()
    if d is None:
        raise DataError(f"no CIFAR-10 batches in '{root}': expected data_batch_1..5 (and test_batch) "
                        f"there or in '{CIFAR_DIR}/'. Download 'CIFAR-10 python version' from "
                        "https://www.cs.toronto.edu/~kriz/cifar.html, or set download=True if you are online.")
    train = [read_cifar_batch(_read_bounded(d / n), f"'{d / n}'") for n in names if (d / n).is_file()]
    train_xy = (np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]))
    test = read_cifar_batch(_read_bounded(d / "test_batch"), f"'{d / 'test_batch'}'") \
        if (d / "test_batch").is_file() else None
    return train_xy, test, CIFAR_NAMES
