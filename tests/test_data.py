"""Datasets: sizes, ranges, fixed seeded splits, hand-written IDX/CIFAR readers, and clear DataErrors."""
from __future__ import annotations

import dataclasses
import gzip
import io
import os
import pickle
import struct
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from vqdemo import data
from vqdemo.data import DATASETS, DataConfig, DataError, ImageData, draw_shapes, load_data, read_cifar_batch

torch.set_num_threads(1)
fresh = load_data.__wrapped__  # the uncached loader, to prove determinism across real reloads


# ------------------------------------------------------------------------------------------- built in

def test_mnist_default_split_and_ranges():
    d = load_data(DataConfig())
    assert isinstance(d, ImageData) and d.name == "mnist"
    assert d.train_x.shape == (4500, 1, 28, 28) and d.val_x.shape == (500, 1, 28, 28)
    assert d.train_x.dtype == torch.float32 and d.train_y.dtype == torch.int64
    assert d.train_x.min() == 0 and d.train_x.max() == 1
    assert (d.channels, d.image_size, d.num_classes) == (1, 28, 10)
    assert d.class_names == [str(i) for i in range(10)]
    assert torch.bincount(d.val_y).tolist() == [50] * 10      # stratified
    assert torch.bincount(d.train_y).tolist() == [450] * 10
    assert 0.05 < d.train_x.mean() < 0.3                       # real digits: mostly black background


def test_mnist_split_is_fixed_by_seed_and_disjoint():
    a, b, c = fresh(DataConfig(seed=0)), fresh(DataConfig(seed=0)), fresh(DataConfig(seed=1))
    assert torch.equal(a.val_x, b.val_x) and torch.equal(a.train_y, b.train_y)
    assert not torch.equal(a.val_x, c.val_x)
    flat = lambda t: {bytes(r.numpy().tobytes()) for r in t.flatten(1)}  # noqa: E731
    assert not flat(a.train_x) & flat(a.val_x)  # no image in both halves (MNIST-5k has no duplicates)


def test_load_data_is_memoised():
    assert load_data(DataConfig("digits")) is load_data(DataConfig("digits"))


def test_mnist_resize_channels_and_cap():
    d = load_data(DataConfig(image_size=32, channels=3, max_images=1000, val_fraction=0.2))
    assert d.train_x.shape == (800, 3, 32, 32) and d.val_x.shape == (200, 3, 32, 32)
    assert torch.equal(d.train_x[:, 0], d.train_x[:, 2]) and d.train_x.min() >= 0 and d.train_x.max() <= 1
    assert torch.bincount(d.val_y).tolist() == [20] * 10


def test_digits():
    d = load_data(DataConfig("digits"))
    assert len(d.train_x) + len(d.val_x) == 1797
    assert d.train_x.shape[1:] == (1, 28, 28) and d.train_x.max() == 1 and d.train_x.min() == 0
    assert set(d.train_y.tolist()) == set(range(10))
    first = [[0, 0, 5, 13, 9, 1, 0, 0], [0, 0, 13, 15, 10, 15, 5, 0], [0, 3, 15, 2, 0, 11, 8, 0],
             [0, 4, 12, 0, 0, 8, 8, 0], [0, 5, 8, 0, 0, 9, 8, 0], [0, 4, 11, 0, 1, 12, 7, 0],
             [0, 2, 14, 5, 10, 12, 0, 0], [0, 0, 6, 13, 10, 0, 0, 0]]  # sklearn's load_digits().images[0]
    native = fresh(DataConfig("digits", image_size=8, val_fraction=0.5))
    both = torch.cat([native.train_x, native.val_x])[:, 0] * 16
    assert (both == torch.tensor(first, dtype=torch.float32)).all(-1).all(-1).sum() == 1


# ---------------------------------------------------------------------------------------------- shapes

def test_draw_shapes_deterministic_and_well_formed():
    x, y = draw_shapes(300, seed=3)
    x2, y2 = draw_shapes(300, seed=3)
    assert x.shape == (300, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert x.min() >= 0 and x.max() <= 1
    counts = torch.bincount(y, minlength=3)
    assert counts.min() > 70  # roughly balanced classes
    x3, _ = draw_shapes(300, seed=4)
    assert (x - x3).abs().mean() > 0.1
    xp, yp = draw_shapes(50, seed=3)
    assert torch.equal(xp, x[:50]) and torch.equal(yp, y[:50])  # a prefix: capping keeps the same images
    assert draw_shapes(4, 0, size=48)[0].shape == (4, 3, 48, 48)


def test_shapes_are_the_labelled_shapes():
    """On plain backgrounds: one blob inside the frame, of similar area for every class, and filling
    its bounding box like its class does (circle ~pi/4; a triangle at most about half)."""
    x, y = draw_shapes(300, seed=0)
    fill = {0: [], 1: [], 2: []}
    for img, lab in zip(x, y.tolist()):
        if (img[:, 0, 0] - img[:, -1, -1]).abs().max() > 1e-3 or (img[:, 0, 0] - img[:, 0, -1]).abs().max() > 1e-3:
            continue  # a gradient background: no single background colour to compare with
        fg = (img - img[:, :1, :1]).abs().amax(0) > 0.2  # (H, W) pixels that differ from the background
        assert 0.04 < fg.float().mean() < 0.3
        assert not (fg[0].any() or fg[-1].any() or fg[:, 0].any() or fg[:, -1].any())
        rows, cols = fg.any(1).nonzero(), fg.any(0).nonzero()
        fill[lab].append(fg.sum().item() / ((rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)).item())
    assert all(len(v) > 20 for v in fill.values())
    assert min(fill[0]) > 0.68 and max(fill[2]) < 0.65 and min(fill[1]) > 0.48


def test_shapes_dataset():
    d = load_data(DataConfig("shapes", max_images=300, seed=5))
    assert d.train_x.shape == (270, 3, 32, 32) and d.val_x.shape == (30, 3, 32, 32)
    assert d.class_names == ["circle", "square", "triangle"] and d.num_classes == 3
    again = fresh(DataConfig("shapes", max_images=300, seed=5))
    assert torch.equal(d.val_x, again.val_x)
    other = fresh(DataConfig("shapes", max_images=300, seed=6))
    assert not torch.equal(d.val_x, other.val_x)
    grey = load_data(DataConfig("shapes", max_images=20, image_size=16, channels=1))
    assert grey.train_x.shape == (18, 1, 16, 16)


# ------------------------------------------------------------------------------------------ mnist-full

def idx_bytes(a: np.ndarray, magic: int) -> bytes:
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", s) for s in a.shape) + a.astype(np.uint8).tobytes()


@pytest.fixture
def mnist_dir(tmp_path):
    rng = np.random.default_rng(0)
    xs = {"train": rng.integers(0, 256, (20, 28, 28)), "t10k": rng.integers(0, 256, (10, 28, 28))}
    ys = {"train": np.arange(20) % 10, "t10k": np.arange(10)}
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(xs["train"], 2051)))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(ys["train"], 2049))
    (tmp_path / "t10k-images.idx3-ubyte").write_bytes(idx_bytes(xs["t10k"], 2051))  # Kaggle-style name
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(ys["t10k"], 2049)))
    return tmp_path, xs, ys


def test_mnist_full_reads_idx_and_uses_test_set_as_val(mnist_dir):
    path, xs, ys = mnist_dir
    d = load_data(DataConfig("mnist-full", path=str(path)))
    assert d.train_x.shape == (20, 1, 28, 28) and d.val_x.shape == (10, 1, 28, 28)
    assert torch.allclose(d.val_x[:, 0], torch.from_numpy(xs["t10k"] / 255).float())
    assert d.val_y.tolist() == ys["t10k"].tolist() and sorted(d.train_y.tolist()) == sorted(ys["train"].tolist())
    capped = load_data(DataConfig("mnist-full", path=str(path), max_images=10, val_fraction=0.2))
    assert (len(capped.train_x), len(capped.val_x)) == (8, 2)


def test_mnist_full_without_test_files_splits_train(mnist_dir):
    path, _, _ = mnist_dir
    for f in path.glob("t10k*"):
        f.unlink()
    d = load_data(DataConfig("mnist-full", path=str(path), val_fraction=0.5))
    assert (len(d.train_x), len(d.val_x)) == (10, 10)


def test_mnist_full_errors(mnist_dir, tmp_path_factory):
    path, xs, ys = mnist_dir
    empty = tmp_path_factory.mktemp("empty")
    with pytest.raises(DataError, match="train-images-idx3-ubyte.*download=True"):
        load_data(DataConfig("mnist-full", path=str(empty)))
    (path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(xs["train"], 2051))  # images where labels belong
    with pytest.raises(DataError, match="magic 00000803, expected 00000801"):
        load_data(DataConfig("mnist-full", path=str(path)))
    (path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(ys["train"], 2049)[:-3])
    with pytest.raises(DataError, match="truncated or corrupt"):
        load_data(DataConfig("mnist-full", path=str(path)))
    (path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(ys["train"][:5], 2049))
    with pytest.raises(DataError, match="do not match"):
        load_data(DataConfig("mnist-full", path=str(path)))
    for f in path.glob("t10k*"):
        f.unlink()
    (path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(xs["train"][:1], 2051)))
    (path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(ys["train"][:1], 2049))
    with pytest.raises(DataError, match="at least 2"):
        load_data(DataConfig("mnist-full", path=str(path)))
    (path / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="cannot read"):
        load_data(DataConfig("mnist-full", path=str(path)))


# --------------------------------------------------------------------------------------------- cifar10

def cifar_batch(n: int, seed: int) -> tuple[dict, np.ndarray]:
    x = np.random.default_rng(seed).integers(0, 256, (n, 3072), dtype=np.uint8)
    return {b"batch_label": b"test", b"data": x, b"labels": [i % 10 for i in range(n)]}, x


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_cifar10_reads_batches_without_pickle(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    b1, x1 = cifar_batch(6, 1)
    b2, _ = cifar_batch(4, 2)
    bt, xt = cifar_batch(5, 3)
    (root / "data_batch_1").write_bytes(pickle.dumps(b1, protocol=2))
    # the real files were written by numpy 1.x, whose arrays refer to numpy.core.multiarray
    (root / "data_batch_2").write_bytes(pickle.dumps(b2, protocol=2).replace(b"numpy._core.", b"numpy.core."))
    (root / "test_batch").write_bytes(pickle.dumps(bt, protocol=2))
    d = load_data(DataConfig("cifar10", path=str(tmp_path)))
    assert d.train_x.shape == (10, 3, 32, 32) and d.val_x.shape == (5, 3, 32, 32)
    assert d.class_names[0] == "airplane" and d.num_classes == 10
    assert d.val_y.tolist() == [0, 1, 2, 3, 4]
    v = d.val_x[0]
    assert torch.allclose(v[0, 0, :5], torch.from_numpy(xt[0, :5] / 255).float())        # R plane first
    assert torch.allclose(v[1, 0, :5], torch.from_numpy(xt[0, 1024:1029] / 255).float())  # then G
    assert load_data(DataConfig("cifar10", path=str(root), channels=1)).train_x.shape == (10, 1, 32, 32)


def test_malicious_cifar_pickle_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    evil = pickle.dumps({b"data": Evil(marker), b"labels": []}, protocol=2)
    with pytest.raises(DataError, match=r"refusing to load '(posix|os|nt)\.system'"):
        read_cifar_batch(evil, "'data_batch_1'")
    (tmp_path / "data_batch_1").write_bytes(evil)
    with pytest.raises(DataError, match="safely"):
        load_data(DataConfig("cifar10", path=str(tmp_path)))
    assert not marker.exists()
    builtin = b"\x80\x02cbuiltins\neval\nX\x08\x00\x00\x00__import__('os')\x85R."
    with pytest.raises(DataError, match="builtins.eval"):
        read_cifar_batch(builtin, "x")
    codec = pickle.dumps({b"data": b"x"}, protocol=2).replace(b"latin1", b"zlib__")
    with pytest.raises(DataError, match="refusing the codec 'zlib__'"):
        read_cifar_batch(codec, "x")


def test_python2_style_batch_like_the_official_files():
    """The real batches were pickled by Python 2: str as BINSTRING, arrays via numpy.core.multiarray."""
    raw = bytes(range(256)) * 24  # 2 images x 3072 values

    def s(b: bytes) -> bytes:
        return b"U" + bytes([len(b)]) + b  # SHORT_BINSTRING

    p = (b"\x80\x02}(" + s(b"data")
         + b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + s(b"b") + b"\x87R"
         + b"(K\x01K\x02M\x00\x0c\x86cnumpy\ndtype\n" + s(b"u1") + b"K\x00K\x01\x87R"
         + b"(K\x03" + s(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89T"
         + struct.pack("<I", len(raw)) + raw + b"tb"
         + s(b"labels") + b"](K\x03K\x07e" + s(b"filenames") + b"](" + s(b"a.png") + s(b"b.png") + b"eu.")
    x, y = read_cifar_batch(p, "py2")
    assert x.shape == (2, 3, 32, 32) and y.tolist() == [3, 7]
    assert np.array_equal(x.reshape(-1), np.frombuffer(raw, np.uint8))


@pytest.mark.parametrize("obj, words", [
    ([1, 2, 3], "dictionary"),
    ({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, "layout"),
    ({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}, "layout"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "layout"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 12]}, "outside 0..9"),
])
def test_cifar_batch_layout_checks(obj, words):
    with pytest.raises(DataError, match=words):
        read_cifar_batch(pickle.dumps(obj, protocol=2), "x")
    with pytest.raises(DataError, match="safely"):
        read_cifar_batch(b"garbage", "x")


def test_cifar10_missing(tmp_path):
    with pytest.raises(DataError, match="data_batch_1..5.*download=True"):
        load_data(DataConfig("cifar10", path=str(tmp_path)))


# ---------------------------------------------------------------------------------------------- folder

def png(colour, size=(10, 6)) -> bytes:
    b = io.BytesIO()
    Image.new("RGB", size, colour).save(b, "PNG")
    return b.getvalue()


def test_folder_with_class_subfolders(tmp_path):
    for cls, colour in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
        (tmp_path / cls).mkdir()
        for i in range(5):
            (tmp_path / cls / f"{i}.png").write_bytes(png(colour))
    (tmp_path / "cat" / "notes.txt").write_text("skipped")
    d = load_data(DataConfig("folder", path=str(tmp_path), val_fraction=0.2))
    assert d.class_names == ["cat", "dog"] and d.num_classes == 2
    assert d.train_x.shape == (8, 3, 32, 32) and d.val_x.shape == (2, 3, 32, 32)
    assert sorted(d.val_y.tolist()) == [0, 1]
    red = d.train_x[d.train_y == 0]
    assert torch.allclose(red[:, :, 16, 16], torch.tensor([1.0, 0.0, 0.0]).expand(len(red), 3))


def test_zip_folder_flat_has_no_labels(tmp_path):
    z = tmp_path / "imgs.zip"
    with zipfile.ZipFile(z, "w") as f:
        for i in range(4):
            f.writestr(f"wrapper/{i}.png", png((i * 60, 0, 0)))
    d = load_data(DataConfig("folder", path=str(z), image_size=8, channels=1, val_fraction=0.25))
    assert d.train_y is None and d.class_names is None and d.num_classes is None
    assert d.train_x.shape == (3, 1, 8, 8) and d.val_x.shape == (1, 1, 8, 8)


def test_zip_with_class_folders_under_a_wrapper(tmp_path):
    z = tmp_path / "imgs.zip"
    with zipfile.ZipFile(z, "w") as f:
        for cls in ("a", "b"):
            for i in range(3):
                f.writestr(f"top/{cls}/{i}.png", png((0, 255, 0)))
    d = load_data(DataConfig("folder", path=str(z)))
    assert d.class_names == ["a", "b"]


def test_folder_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_data(DataConfig("folder", path=str(tmp_path / "nope")))
    (tmp_path / "a.txt").write_text("x")
    (tmp_path / "b.doc").write_text("y")
    with pytest.raises(DataError, match="no readable images.*a.txt.*b.doc"):
        load_data(DataConfig("folder", path=str(tmp_path)))
    (tmp_path / "one.png").write_bytes(png((1, 2, 3)))
    with pytest.raises(DataError, match="at least 2"):
        load_data(DataConfig("folder", path=str(tmp_path)))
    with pytest.raises(DataError, match="not a readable zip"):
        load_data(DataConfig("folder", path=str(tmp_path / "a.txt")))


# ---------------------------------------------------------------------------------------------- config

@pytest.mark.parametrize("kwargs, words", [
    ({"name": "imagenet"}, "unknown dataset 'imagenet'; choose one of: mnist"),
    ({"image_size": 3}, r"image_size must be an integer in \[4, 256\]"),   # the wording; every bound: test_settings.py
    ({"channels": 2}, "channels must be one of 1, 3"),
    ({"name": "folder"}, "needs a path"),
    ({"name": "mnist-full"}, "needs a path"),
    ({"name": "cifar10", "path": ""}, "needs a path"),
    ({"name": "cifar10", "path": "/no/such/dir"}, "not a folder"),
])
def test_config_errors(kwargs, words):
    """A bad field is refused when the config is built; a folder that is not there when the data loads."""
    with pytest.raises(DataError, match=words):
        load_data(DataConfig(**kwargs))


def test_public_surface():
    assert issubclass(DataError, ValueError)
    assert set(DATASETS) == {"mnist", "mnist-full", "cifar10", "digits", "shapes", "folder"}
    assert all(isinstance(v, str) and v for v in DATASETS.values())
    with pytest.raises(dataclasses.FrozenInstanceError):
        DataConfig().name = "x"  # frozen: safe as a cache key
    assert data.NATIVE_SIZE.keys() == DATASETS.keys()


@pytest.mark.parametrize("recorded", [["digits"], "digits", {"name": "digits", "path": ["x"]}, {"colour": 3}])
def test_a_runs_recorded_data_config_that_is_not_plain_is_a_data_error(recorded):
    with pytest.raises(DataError, match="run-x has no usable data config"):
        data.data_config({"data": recorded}, "run-x")


def test_a_runs_recorded_data_config_never_downloads():
    cfg = data.data_config({"data": {"name": "mnist-full", "path": "/tmp/x", "download": True}}, "run-x")
    assert cfg == DataConfig(name="mnist-full", path="/tmp/x", download=False)
