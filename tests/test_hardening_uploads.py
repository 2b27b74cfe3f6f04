"""Hostile and odd uploads through vqdemo.images (what the Reconstruct and Train pages call): a clear message or
the right pixels, nothing written anywhere, memory and CPU bounded."""

import ast
import io
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import encode, png_declaring
from vqdemo import images
from vqdemo.data import DataConfig, DataError, load_data
from vqdemo.images import ImageError, load_image, load_images_from_zip

REPO = Path(__file__).resolve().parents[1]


def zip_of(members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name) if name.endswith("/") else name, data)
    return buf.getvalue()


def small_png(value: int = 128, size=(8, 8), mode="L") -> bytes:
    return encode(Image.new(mode, size, value if mode == "L" else (value,) * len(mode)))


# ---- single images (Reconstruct page) ---------------------------------------------------------------------

@pytest.mark.parametrize("data", [b"", b"hello, not an image", b"%PDF-1.4\n...", b"<svg onload=alert(1)></svg>",
                                  b"GIF89a" + b"\0" * 3, b"\x89PNG\r\n\x1a\n", b"PK\x03\x04" + b"\0" * 40,
                                  b"%!PS-Adobe-3.0 EPSF-3.0\n"])
def test_not_an_image(data):
    with pytest.raises(ImageError, match="is not an image|truncated or corrupt"):
        load_image(data, size=28, channels=1)


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.95])
def test_truncated_png(keep):
    rng = np.random.default_rng(0)
    data = encode(Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)))
    with pytest.raises(ImageError, match="truncated or corrupt|is not an image"):
        load_image(data[: int(len(data) * keep)], size=28)


def test_decompression_bomb_header_is_refused_before_decoding(monkeypatch):
    monkeypatch.setattr(Image.Image, "load", lambda self: (_ for _ in ()).throw(AssertionError("decoded")))
    for w, h in ((100_000, 100_000), (2**31 - 1, 1), (7000, 7000)):
        with pytest.raises(ImageError, match="enormous image|more than the 40,000,000 allowed"):
            load_image(png_declaring(w, h), size=28)


def test_ten_thousand_square_image_is_refused():
    data = encode(Image.new("L", (10_000, 10_000)), compress_level=1)   # a real file: ~100 KB of zeros
    with pytest.raises(ImageError, match="enormous image|10000x10000 pixels, more than"):
        load_image(data, size=28)


def test_sixteen_bit_png_keeps_its_range():
    a = np.array([[0, 32768, 65535]], np.uint16)
    x = load_image(encode(Image.fromarray(a)), channels=1)
    assert torch.allclose(x[0, 0], torch.tensor([0.0, 32768 / 65535, 1.0]), atol=1e-6)


def test_cmyk_jpeg_becomes_rgb():
    x = load_image(encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", quality=95), size=8)
    assert x.shape == (3, 8, 8)
    r, g, b = x.mean((1, 2)).tolist()
    assert r > 0.8 and g < 0.2 and b < 0.2   # cyan/magenta/yellow/black 0/255/255/0 is red


def test_palette_with_transparency_and_rgba_go_over_white():
    p = Image.new("P", (4, 4), 0)
    p.putpalette([0, 0, 0] + [255, 0, 0] * 255)
    p.info["transparency"] = 0
    x = load_image(encode(p, transparency=0), channels=3)
    assert torch.allclose(x, torch.ones_like(x))   # fully transparent black -> white
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    rgba.putpixel((0, 0), (0, 0, 0, 255))
    x = load_image(encode(rgba), channels=1)
    assert float(x[0, 0, 0]) == 0.0 and float(x[0, 1, 1]) == 1.0


def test_palette_without_transparency():
    p = Image.new("P", (4, 4), 1)
    p.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    x = load_image(encode(p))
    assert torch.allclose(x[:, 0, 0], torch.tensor([10, 200, 30]) / 255.0)


def test_one_by_one_image_is_upscaled():
    x = load_image(small_png(200, size=(1, 1)), size=28, channels=1)
    assert x.shape == (1, 28, 28) and torch.allclose(x, torch.full_like(x, 200 / 255))


def test_odd_modes_all_decode():
    for im in (Image.new("1", (9, 5), 1), Image.new("LA", (9, 5), (0, 0)), Image.new("I", (9, 5), 70000),
               Image.new("F", (9, 5), -3.0), Image.new("YCbCr", (9, 5), (128, 128, 128))):
        fmt = "TIFF" if im.mode in ("I", "F", "YCbCr") else "PNG"
        x = load_image(encode(im, fmt), size=4, channels=3)
        assert x.shape == (3, 4, 4) and torch.isfinite(x).all() and 0 <= float(x.min()) <= float(x.max()) <= 1


@pytest.mark.integration
def test_big_decodes_wait_for_a_slot(monkeypatch):
    """Many sessions uploading big images at once: at most DECODE_SLOTS of them decode together."""
    monkeypatch.setattr(images, "BIG_PIXELS", 100)
    live, peak, lock = [0], [0], threading.Lock()
    real = images._normalise_mode

    def counting(im, *rest):
        with lock:
            live[0] += 1
            peak[0] = max(peak[0], live[0])
        time.sleep(0.05)
        try:
            return real(im, *rest)
        finally:
            with lock:
                live[0] -= 1

    monkeypatch.setattr(images, "_normalise_mode", counting)
    data = encode(Image.new("RGBA", (64, 64), (1, 2, 3, 4)))
    threads = [threading.Thread(target=load_image, args=(data, 8)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert peak[0] == images.DECODE_SLOTS
    small = small_png()   # small images never wait
    assert images._decode_slot(images._pixels(Image.open(io.BytesIO(small)), 8)) is not images._big_decodes


# ---- zips (Train page: "your images") ---------------------------------------------------------------------

def test_zip_bomb_is_refused_from_its_headers(monkeypatch):
    bomb = zip_of({"a.png": small_png(), "zeros.png": b"\0" * (30 * 2**20)})
    assert len(bomb) < 100_000
    monkeypatch.setattr(images, "load_image", lambda *a, **k: (_ for _ in ()).throw(AssertionError("decoded")))
    with pytest.raises(ImageError, match="zip bomb"):
        load_images_from_zip(bomb, 28, 1)


def test_zip_declaring_too_much_or_too_many_is_refused():
    many = zip_of({f"{i}.png": small_png() for i in range(30)})
    with pytest.raises(ImageError, match="30 files, more than the 20 allowed"):
        load_images_from_zip(many, 28, 1, max_files=20)
    with pytest.raises(ImageError, match="would unpack to"):
        load_images_from_zip(many, 28, 1, max_total_bytes=1000)


def test_zip_whose_images_add_up_to_too_many_pixels(monkeypatch):
    monkeypatch.setattr(images, "MAX_ZIP_PIXELS", 10_000)
    z = zip_of({f"{i}.png": encode(Image.new("L", (60, 60))) for i in range(5)})   # 3,600 px each
    with pytest.raises(ImageError, match="add up to more than 0 megapixels .at '2.png'."):
        load_images_from_zip(z, 8, 1)


def test_zip_with_traversal_and_absolute_names_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    good = small_png(50)
    z = zip_of({"../evil.png": good, "../../etc/evil.png": good, "/abs.png": good, "C:\\win.png": good,
                "a/../../up.png": good, "ok/../fine.png": good, "__MACOSX/x.png": good, ".hidden.png": good,
                "cls1/one.png": good, "cls2/two.png": small_png(200)})
    x, names = load_images_from_zip(z, 8, 1)
    assert names == ["cls1/one.png", "cls2/two.png"]
    assert x.shape == (2, 1, 8, 8)
    assert list(tmp_path.iterdir()) == []
    assert not (tmp_path.parent / "evil.png").exists() and not Path("/abs.png").exists()


def test_empty_zip_and_zip_without_images():
    for z in (zip_of({}), zip_of({"dir/": b""})):
        with pytest.raises(ImageError, match="contains no files"):
            load_images_from_zip(z, 8, 1)
    with pytest.raises(ImageError, match="no readable images. Skipped: notes.txt .is not an image."):
        load_images_from_zip(zip_of({"notes.txt": b"hi", "inner.zip": zip_of({"a.png": small_png()})}), 8, 1)
    for junk in (b"", b"not a zip", b"PK\x05\x06" + b"\0" * 10):
        with pytest.raises(ImageError, match="not a readable zip"):
            load_images_from_zip(junk, 8, 1)


def test_zip_of_odd_images_loads_each_right():
    members = {
        "a/sixteen.png": encode(Image.fromarray(np.full((4, 4), 65535, np.uint16))),
        "a/cmyk.jpg": encode(Image.new("CMYK", (4, 4), (0, 0, 0, 0)), "JPEG"),
        "b/palette.png": encode(Image.new("P", (4, 4), 0)),
        "b/rgba.png": encode(Image.new("RGBA", (4, 4), (0, 0, 0, 0))),
        "b/tiny.png": small_png(255, size=(1, 1)),
        "b/broken.png": small_png()[:30],
    }
    x, names = load_images_from_zip(zip_of(members), 4, 1)
    got = dict(zip(names, x.mean((1, 2, 3)).tolist()))
    assert set(got) == set(members) - {"b/broken.png"}
    assert got["a/sixteen.png"] == pytest.approx(1.0) and got["b/rgba.png"] == pytest.approx(1.0)
    assert got["b/tiny.png"] == pytest.approx(1.0) and got["a/cmyk.jpg"] > 0.95


def test_hostile_zip_through_the_dataset_layer(tmp_path):
    """What a job trains on: the uploaded zip goes through load_data(folder); a bomb is a DataError."""
    path = tmp_path / "up.zip"
    path.write_bytes(zip_of({"zeros.png": b"\0" * (30 * 2**20)}))
    with pytest.raises(DataError, match="zip bomb"):
        load_data(DataConfig(name="folder", path=str(path)))
    path.write_bytes(zip_of({"x/../../a.png": small_png(), "a/1.png": small_png(), "b/2.png": small_png(9)}))
    data = load_data(DataConfig(name="folder", path=str(path), image_size=8, val_fraction=0.5))
    assert data.class_names == ["a", "b"] and len(data.train_x) + len(data.val_x) == 2


# ---- the pages that accept uploads call the library with limits -------------------------------------------

def _uploader_calls(page: str) -> list[ast.Call]:
    tree = ast.parse((REPO / page).read_text())
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "file_uploader"]


def test_reconstruct_page_limits_uploads_and_decodes_through_load_image():
    calls = _uploader_calls("views/reconstruct.py")
    assert calls and all("max_upload_size" in {k.arg for k in c.keywords} for c in calls)
    src = (REPO / "views" / "reconstruct.py").read_text()
    assert "load_image(_raw, size=" in src and "except ImageError" in src


def test_train_page_limits_zip_uploads_at_the_widget():
    calls = _uploader_calls("ui/train_form.py")   # the Train page's settings form
    assert calls and all("max_upload_size" in {k.arg for k in c.keywords} for c in calls)


# ---- what a student's zip can put on everyone's pages -----------------------------------------------------

EVIL_CLASS = "<img src=x onerror=alert(1)>"


def folder_run(root: Path, run_id: str, evil_images: int) -> Path:
    """A run trained for one step on an uploaded zip whose class folders are named by a student."""
    from helpers import tiny_config
    from vqdemo.fit import fit
    from vqdemo.trainer import TrainConfig

    z = root / f"{run_id}.zip"
    members = {f"{EVIL_CLASS}/{i}.png": small_png(10 * i, mode="RGB") for i in range(evil_images)}
    z.write_bytes(zip_of({**members, "b/x.png": small_png(200, mode="RGB")}))
    out = root / "runs" / run_id
    fit(tiny_config(), DataConfig(name="folder", path=str(z), val_fraction=0.5), TrainConfig(steps=1, batch_size=2),
        out_dir=out)
    return out


def open_learn(monkeypatch, root: Path, run: Path):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("VQDEMO_RUNS_DIR", str(root / "runs"))
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.query_params["model"] = f"run:{run.name}"
    return at.run()


@pytest.mark.integration
def test_class_names_from_an_uploaded_zip_are_not_raw_html(tmp_path, monkeypatch):
    at = open_learn(monkeypatch, tmp_path, folder_run(tmp_path, "20260101-000000-xss000", 7))
    assert not at.exception
    assert not [m.value for m in at.markdown if m.proto.allow_html and "<img" in m.value]


@pytest.mark.integration
def test_learn_page_survives_a_one_image_validation_set(tmp_path, monkeypatch):
    at = open_learn(monkeypatch, tmp_path, folder_run(tmp_path, "20260101-000000-one000", 1))
    assert not at.exception, [e.message for e in at.exception]
