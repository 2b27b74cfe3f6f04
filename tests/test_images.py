"""Safe image decoding: every mode to [0, 1], crop/resize, and untrusted input refused with ImageError."""
from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from helpers import encode, png_declaring
from vqdemo import images
from vqdemo.image_zip import load_images_from_folder, load_images_from_zip
from vqdemo.images import ImageError, load_image, to_uint8, upscale_nearest

torch.set_num_threads(1)


@pytest.fixture
def no_decoding(monkeypatch):
    """Records every pixel decode, to prove a refusal happened before any allocation."""
    calls = []
    real = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: calls.append(self.size) or real(self))
    return calls


# ------------------------------------------------------------------------------------------ decoding

def test_rgb_png_exact_values_and_layout():
    a = np.zeros((5, 7, 3), np.uint8)
    a[..., 0], a[1, 2] = 255, (10, 20, 30)
    x = load_image(encode(Image.fromarray(a)))
    assert x.shape == (3, 5, 7) and x.dtype == torch.float32
    assert torch.allclose(x[:, 1, 2], torch.tensor([10, 20, 30]) / 255.0)
    assert torch.all(x[0, 0] == 1.0) and torch.all(x[1:, 0] == 0.0)


def test_path_inputs(tmp_path):
    p = tmp_path / "a.png"
    p.write_bytes(encode(Image.new("RGB", (4, 4), (255, 0, 0))))
    for src in (p, str(p)):
        assert torch.allclose(load_image(src)[:, 0, 0], torch.tensor([1.0, 0.0, 0.0]))


def test_centre_crop_then_resize():
    a = np.zeros((20, 60, 3), np.uint8)
    a[:, :20, 0], a[:, 20:40, 1], a[:, 40:, 2] = 255, 255, 255  # red | green | blue
    x = load_image(encode(Image.fromarray(a)), size=10)
    assert x.shape == (3, 10, 10)
    assert torch.allclose(x, torch.tensor([0.0, 1.0, 0.0]).view(3, 1, 1).expand(3, 10, 10), atol=1e-6)


def test_downscale_keeps_range_and_mean():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (64, 64), dtype=np.uint8)
    x = load_image(encode(Image.fromarray(a)), size=16, channels=1)
    assert x.shape == (1, 16, 16) and x.min() >= 0 and x.max() <= 1
    assert abs(x.mean().item() - a.mean() / 255) < 0.02


def test_channel_conversions():
    x = load_image(encode(Image.new("RGB", (3, 3), (255, 0, 0))), channels=1)
    assert x.shape == (1, 3, 3) and abs(x[0, 0, 0].item() - 76 / 255) < 1e-6  # PIL luma: 0.299 * 255
    g = load_image(encode(Image.new("L", (3, 3), 128)), channels=3)
    assert g.shape == (3, 3, 3) and torch.all(g == 128 / 255)


def test_16bit_png_keeps_its_dynamic_range():
    a = np.array([[0, 1000, 2000, 30000, 65535]], np.uint16)
    im = Image.fromarray(a)
    assert im.mode == "I;16"
    x = load_image(encode(im), channels=1)[0, 0]
    assert torch.allclose(x, torch.from_numpy(a[0] / 65535.0).float(), atol=1e-6)
    assert len(torch.unique(x)) == 5  # clipping at 255 would make all but 0 equal to 1.0
    twelve = np.array([[0, 1024, 4095]], np.uint16)  # a 12-bit scan fills [0, 1] instead of staying dark
    y = load_image(encode(Image.fromarray(twelve)), channels=1)[0, 0]
    assert torch.allclose(y, torch.tensor([0.0, 1024 / 4095, 1.0]), atol=1e-6)
    rgb = load_image(encode(im), channels=3)
    assert rgb.shape == (3, 1, 5) and torch.equal(rgb[0], rgb[2])


def test_16bit_ramp_survives_resize():
    a = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (64, 1))
    x = load_image(encode(Image.fromarray(a)), size=32, channels=1)
    assert x.shape == (1, 32, 32) and x.min() < 0.02 and x.max() > 0.98
    assert len(torch.unique(x)) > 16


def test_float_and_int32_tiff():
    f = np.array([[0.0, 0.25, 1.0]], np.float32)
    assert torch.allclose(load_image(encode(Image.fromarray(f), "TIFF"), channels=1)[0, 0], torch.from_numpy(f[0]))
    wide = np.array([[-5.0, 0.0, 5.0]], np.float32)  # no natural range: stretched
    assert torch.allclose(load_image(encode(Image.fromarray(wide), "TIFF"), channels=1)[0, 0],
                          torch.tensor([0.0, 0.5, 1.0]))
    i = np.array([[-100, 0, 100]], np.int32)
    assert Image.fromarray(i).mode == "I"
    assert torch.allclose(load_image(encode(Image.fromarray(i), "TIFF"), channels=1)[0, 0],
                          torch.tensor([0.0, 0.5, 1.0]))


def test_cmyk_palette_ycbcr_bilevel():
    red = load_image(encode(Image.new("CMYK", (2, 2), (0, 255, 255, 0)), "TIFF"))
    assert torch.allclose(red[:, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    assert load_image(encode(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG"))[0].mean() > 0.9
    p = Image.new("P", (2, 1))
    p.putpalette([0, 0, 255, 0, 255, 0] + [0] * 762)
    p.putpixel((1, 0), 1)
    x = load_image(encode(p))
    assert torch.allclose(x[:, 0, 0], torch.tensor([0.0, 0.0, 1.0]))
    assert torch.allclose(x[:, 0, 1], torch.tensor([0.0, 1.0, 0.0]))
    ycc = Image.new("RGB", (2, 2), (200, 40, 40)).convert("YCbCr")
    y = load_image(encode(ycc, "TIFF"))
    assert torch.allclose(y[:, 0, 0], torch.tensor([200, 40, 40]) / 255.0, atol=0.03)
    b = Image.new("1", (2, 1))
    b.putpixel((1, 0), 1)
    assert load_image(encode(b), channels=1)[0, 0].tolist() == [0.0, 1.0]


def test_transparency_composites_over_white():
    rgba = Image.new("RGBA", (3, 1))
    rgba.putdata([(0, 0, 0, 0), (255, 0, 0, 255), (0, 0, 0, 128)])
    x = load_image(encode(rgba))
    assert torch.allclose(x[:, 0, 0], torch.ones(3))                        # fully transparent -> white
    assert torch.allclose(x[:, 0, 1], torch.tensor([1.0, 0.0, 0.0]))        # opaque keeps its colour
    assert torch.allclose(x[:, 0, 2], torch.full((3,), 127 / 255), atol=2 / 255)  # half black over white
    la = Image.new("LA", (2, 1))
    la.putdata([(0, 0), (0, 255)])
    assert torch.allclose(load_image(encode(la), channels=1)[0, 0], torch.tensor([1.0, 0.0]))
    p = Image.new("P", (2, 1))
    p.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    p.putpixel((1, 0), 1)
    x = load_image(encode(p, transparency=0))
    assert torch.allclose(x[:, 0, 0], torch.ones(3)) and torch.allclose(x[:, 0, 1], torch.tensor([1.0, 0.0, 0.0]))


def test_one_pixel_image_and_crisp_integer_upscale():
    x = load_image(encode(Image.new("RGB", (1, 1), (0, 128, 255))))
    assert x.shape == (3, 1, 1)
    big = load_image(encode(Image.new("RGB", (1, 1), (0, 128, 255))), size=8)
    assert big.shape == (3, 8, 8) and torch.all(big == x)
    checker = Image.fromarray(np.array([[0, 255], [255, 0]], np.uint8))
    y = load_image(encode(checker), size=8, channels=1)[0]
    assert torch.equal(y, torch.tensor([[0.0, 1.0], [1.0, 0.0]]).repeat_interleave(4, 0).repeat_interleave(4, 1))


def test_exif_rotation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    x = load_image(encode(Image.new("RGB", (20, 10), (0, 0, 0)), "JPEG", exif=exif))
    assert x.shape == (3, 20, 10)


def test_first_frame_of_animation():
    frames = [Image.new("RGB", (4, 4), c) for c in ((255, 0, 0), (0, 0, 255))]
    gif = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert load_image(gif)[0].mean() > 0.9


# ------------------------------------------------------------------------------------------ refusals

@pytest.mark.parametrize("src, words", [
    (b"hello, I am text", "not an image"),
    (b"", "not an image"),
    ("/definitely/not/here.png", "does not exist"),
])
def test_not_an_image(src, words):
    with pytest.raises(ImageError, match=words):
        load_image(src)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM", "TGA", "ICO"])
def test_common_formats_decode(fmt):
    x = load_image(encode(Image.new("RGB", (16, 16), (250, 250, 250)), fmt), size=8)
    assert x.shape == (3, 8, 8) and x.min() > 0.9


def test_exotic_formats_are_not_decoded():
    """EPS would run Ghostscript; only common formats are ever handed to a decoder."""
    for fmt in ("EPS", "PCX"):
        with pytest.raises(ImageError, match="not an image"):
            load_image(encode(Image.new("RGB", (4, 4)), fmt))


def test_directory_and_bad_arguments(tmp_path):
    with pytest.raises(ImageError, match="not a file"):
        load_image(tmp_path)
    ok = encode(Image.new("RGB", (2, 2)))
    with pytest.raises(ImageError, match="channels"):
        load_image(ok, channels=2)
    with pytest.raises(ImageError, match="size"):
        load_image(ok, size=0)
    with pytest.raises(ImageError, match="pass bytes or a file path"):
        load_image(12345)


def test_truncated_file():
    rng = np.random.default_rng(0)
    full = encode(Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)))
    with pytest.raises(ImageError, match="truncated or corrupt; re-export"):
        load_image(full[: len(full) // 2])
    jpeg = encode(Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)), "JPEG")
    with pytest.raises(ImageError, match="truncated"):
        load_image(jpeg[:800])


def test_enormous_declared_png_refused_without_decoding(no_decoding):
    header = png_declaring(100_000, 100_000)
    assert len(header) < 200  # a tiny file declaring 10 gigapixels
    with pytest.raises(ImageError, match="megapixels"):
        load_image(header)
    with pytest.raises(ImageError, match="40,000,000"):  # above our cap, below PIL's own bomb check
        load_image(png_declaring(8000, 6000))
    assert no_decoding == []


def test_max_pixels_is_read_at_call_time(monkeypatch, no_decoding):
    monkeypatch.setattr(images, "MAX_PIXELS", 100)
    with pytest.raises(ImageError, match="20x20 pixels"):
        load_image(encode(Image.new("RGB", (20, 20))))
    assert no_decoding == []
    assert load_image(encode(Image.new("RGB", (10, 10)))).shape == (3, 10, 10)
    assert set(no_decoding) == {(10, 10)}  # the probe does see real decodes


# ------------------------------------------------------------------------------------------------- zip

def make_zip(members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> bytes:
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", compression) as z:
        for name, data in members.items():
            if name.endswith("/"):
                z.writestr(zipfile.ZipInfo(name), b"")
            else:
                z.writestr(name, data)
    return b.getvalue()


def small_png(colour=(255, 0, 0), size=(6, 4)) -> bytes:
    return encode(Image.new("RGB", size, colour))


def test_zip_skips_unsafe_and_junk_members(tmp_path, monkeypatch):
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    before = sorted(tmp_path.rglob("*"))
    z = make_zip({
        "imgs/": b"",
        "imgs/red.png": small_png(),
        "imgs/sub/blue.jpg": encode(Image.new("RGB", (8, 8), (0, 0, 255)), "JPEG"),
        "../evil.png": small_png((0, 255, 0)),
        "imgs/../../evil2.png": small_png((0, 255, 0)),
        "/abs.png": small_png((0, 255, 0)),
        "__MACOSX/imgs/._red.png": b"\0\5\26\7 resource fork",
        "imgs/.DS_Store": b"junk",
        "imgs/readme.txt": b"not an image",
    })
    x, names = load_images_from_zip(z, size=8, channels=3)
    assert names == ["imgs/red.png", "imgs/sub/blue.jpg"]
    assert x.shape == (2, 3, 8, 8)
    assert torch.allclose(x[0, :, 4, 4], torch.tensor([1.0, 0.0, 0.0]))
    assert x[1, 2].mean() > 0.9
    assert sorted(tmp_path.rglob("*")) == before  # nothing extracted, evil.png written nowhere
    zpath = tmp_path / "u.zip"
    zpath.write_bytes(z)
    assert load_images_from_zip(zpath, 4, 1)[0].shape == (2, 1, 4, 4)


def test_zip_bomb_refused():
    bomb = make_zip({"ok.png": small_png(), "bomb.png": b"\0" * (20 * 2**20)})
    with pytest.raises(ImageError, match="zip bomb"):
        load_images_from_zip(bomb, 8, 3)


def test_zip_limits():
    z = make_zip({f"{i}.png": small_png() for i in range(3)}, zipfile.ZIP_STORED)
    with pytest.raises(ImageError, match="more than the 2 allowed"):
        load_images_from_zip(z, 8, 3, max_files=2)
    with pytest.raises(ImageError, match="MiB allowed"):
        load_images_from_zip(z, 8, 3, max_total_bytes=100)
    assert load_images_from_zip(z, 8, 3, max_files=3)[0].shape == (3, 3, 8, 8)


@pytest.mark.parametrize("data, words", [
    (b"PK\3\4 this is not really a zip", "not a readable zip"),
    (small_png(), "not a readable zip"),
    (make_zip({}), "contains no files"),
    (make_zip({"d/": b"", "__MACOSX/x.png": small_png()}), "contains no files"),
    (make_zip({"notes.txt": b"hello", "data.csv": b"1,2"}), "no readable images. Skipped: notes.txt"),
])
def test_zip_errors(data, words):
    with pytest.raises(ImageError, match=words):
        load_images_from_zip(data, 8, 3)


def test_zip_names_bad_files_with_reasons():
    z = make_zip({"a.txt": b"x", "b.png": small_png()[:30], "c.txt": b"y", "d.txt": b"z"})
    with pytest.raises(ImageError) as e:
        load_images_from_zip(z, 8, 3)
    msg = str(e.value)
    assert "a.txt (is not an image)" in msg and "b.png (" in msg and "and 1 more" in msg


# ---------------------------------------------------------------------------------------------- folder

def test_folder_recursive_sorted_and_skipping(tmp_path):
    (tmp_path / "cats").mkdir()
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "cats" / "b.png").write_bytes(small_png((0, 255, 0)))
    (tmp_path / "a.png").write_bytes(small_png())
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".DS_Store").write_bytes(b"junk")
    (tmp_path / ".hidden" / "c.png").write_bytes(small_png())
    x, names = load_images_from_folder(tmp_path, 5, 3)
    assert names == ["a.png", "cats/b.png"] and x.shape == (2, 3, 5, 5)
    with pytest.raises(ImageError, match="more than 1 files"):
        load_images_from_folder(tmp_path, 5, 3, max_files=1)


def test_folder_errors(tmp_path):
    with pytest.raises(ImageError, match="not a folder"):
        load_images_from_folder(tmp_path / "missing", 8, 3)
    with pytest.raises(ImageError, match="contains no files"):
        load_images_from_folder(tmp_path, 8, 3)
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(ImageError, match=r"x.txt \(is not an image\)"):
        load_images_from_folder(tmp_path, 8, 3)


# -------------------------------------------------------------------------------------------- display

def test_to_uint8_and_upscale():
    x = torch.tensor([[[0.0, 0.5], [1.0, 2.0]]])
    g = to_uint8(x)
    assert g.dtype == np.uint8 and g.shape == (2, 2) and g.tolist() == [[0, 128], [255, 255]]
    assert to_uint8(x[0]).shape == (2, 2)
    c = to_uint8(torch.rand(3, 4, 5))
    assert c.shape == (4, 5, 3)
    assert to_uint8(torch.tensor([[float("nan"), -1.0]])).tolist() == [[0, 0]]
    with pytest.raises(ImageError):
        to_uint8(torch.rand(2, 3, 4, 5))
    u = upscale_nearest(c, 3)
    assert u.shape == (12, 15, 3) and np.array_equal(u[::3, ::3], c) and np.array_equal(u[2::3, 2::3], c)
    assert upscale_nearest(g, 2).shape == (4, 4)
    with pytest.raises(ImageError):
        upscale_nearest(g, 0)
