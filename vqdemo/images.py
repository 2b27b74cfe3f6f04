"""Safe decoding of untrusted images (uploads, user folders, zips) into float tensors.

Everything a user hands the app goes through here. The declared size is checked before any
pixel is decoded, every PIL mode is mapped to grey or RGB in [0, 1], and zips are read in
memory with bounded reads (nothing is ever extracted to disk). Any problem raises ImageError
with a message that says what was wrong and what to do.
"""
from __future__ import annotations

import base64
import contextlib
import io
import os
import threading
import warnings
import zipfile
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image, ImageOps

MAX_PIXELS: int = 40_000_000  # declared width*height above this is refused before decoding
RATIO_CHECK_BYTES = 2**20  # members smaller than this cannot hurt, whatever their compression ratio
MAX_RATIO = 100  # a larger uncompressed/compressed ratio on a big member is treated as a zip bomb
# A 90 KB 16-bit PNG of 40 MP takes ~0.9 GB and 2 s to decode: a class uploading such files together must not
# exhaust the server, so decodes above BIG_PIXELS take one of DECODE_SLOTS (the others wait their turn), and
# one zip may not declare more than MAX_ZIP_PIXELS in all (5,000 such members would be hours of CPU).
BIG_PIXELS = 4_000_000
DECODE_SLOTS = 2
MAX_ZIP_PIXELS = 1_000_000_000
HEADER_BYTES = 64 * 2**10   # enough of a member to read its image header (a JPEG's sits after its EXIF)
_big_decodes = threading.BoundedSemaphore(DECODE_SLOTS)
# Decoders tried on untrusted bytes: the common formats only. Exotic plugins are attack surface
# (EPS runs Ghostscript, WMF/FITS/GRIB/... are rarely fuzzed) and no user needs them for a demo.
# (JPEG also opens phone MPO files.) Names this Pillow lacks, e.g. AVIF without libavif, are dropped.
FORMATS = ("PNG", "JPEG", "BMP", "DIB", "GIF", "TIFF", "WEBP", "AVIF", "PPM", "TGA", "ICO", "QOI")
# What a member's name says it is: the members worth trying first when a zip is scanned.
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".mpo", ".bmp", ".dib", ".gif", ".tif",
                            ".tiff", ".webp", ".avif", ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".ico", ".qoi"})
# Central directory records per zip at most, as a multiple of its file limit: folders and macOS's __MACOSX/._*
# twins are records too (skipped later). Each record may take at most CD_RECORD_BYTES of the directory.
MAX_RECORDS_PER_FILE = 3
CD_RECORD_BYTES = 46 + 1024


def formats() -> list[str]:
    """The FORMATS this Pillow can open. Pillow registers most plugins (TIFF, WebP, ...) only when `Image.init()`
    runs, which a first `Image.open` of a PNG or JPEG never does: reading `Image.OPEN` before it would leave them
    out, and every WebP or TIFF would read as "not an image" until something else initialised Pillow."""
    Image.init()
    return [f for f in FORMATS if f in Image.OPEN]


class ImageError(ValueError):
    """An image (or a zip/folder of images) that cannot be used; the message says why and what to do.

    `reason` is the short middle part (no file name, no advice), used to list skipped files.
    """

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.reason = reason or message


def _fail(what: str, reason: str, advice: str) -> ImageError:
    return ImageError(f"{what} {reason}; {advice}", reason)


def _describe(src) -> str:
    return "the uploaded file" if isinstance(src, (bytes, bytearray, memoryview)) else f"'{src}'"


def _open(src, what: str) -> Image.Image:
    """Open lazily (header only) and refuse a declared size above MAX_PIXELS before decoding."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        fp = io.BytesIO(bytes(src))
    elif isinstance(src, (str, os.PathLike)):
        fp = Path(src)
        if not fp.is_file():
            raise _fail(what, "does not exist or is not a file", "check the path.")
    else:
        raise ImageError(f"cannot read an image from a {type(src).__name__}; pass bytes or a file path.")
    too_big = f"downscale it below {MAX_PIXELS / 1e6:g} megapixels and try again."
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(fp, formats=formats())
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _fail(what, "declares an enormous image (a decompression bomb?)", too_big) from None
    except Exception:  # noqa: BLE001 - PIL raises many types on hostile bytes
        raise _fail(what, "is not an image", "use PNG, JPEG, BMP, GIF, TIFF or WebP files.") from None
    w, h = im.size
    if w <= 0 or h <= 0 or w * h > MAX_PIXELS:
        im.close()
        raise _fail(what, f"declares {w}x{h} pixels, more than the {MAX_PIXELS:,} allowed", too_big)
    return im


def _to_float_gray(im: Image.Image, extrema: tuple[float, float] | None = None) -> Image.Image:
    """High bit-depth grey (I;16*, I, F) -> mode 'F' in [0, 1].

    Clipping to 255 (PIL's own I -> L conversion) would turn most of a 16-bit image white. Integer
    images are divided by 2**bits - 1 for the smallest bit depth (at least 8) that holds their
    maximum, so 10-, 12- and 16-bit scans all fill [0, 1] while keeping their relative brightness.
    Negative integers and floats outside [0, 1] have no natural range and are min-max stretched.
    `extrema` is the (min, max) of the image before `_shrink` averaged it, so the range is the full image's.
    One float32 copy, changed in place: float64 and its temporaries took ~1 GB for a 40 MP image.
    """
    a = np.asarray(im).astype(np.float32)  # (H, W)
    np.nan_to_num(a, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    if extrema is not None and all(np.isfinite(extrema)):
        lo, hi = float(extrema[0]), float(extrema[1])
    else:
        lo, hi = float(a.min()), float(a.max())
    if im.mode == "F" and lo >= 0.0 and hi <= 1.0:
        pass
    elif im.mode != "F" and lo >= 0.0:
        bits = max(8, int(np.ceil(np.log2(hi + 1.0))))
        a /= np.float32(2.0**bits - 1.0)
    elif hi > lo:
        a -= np.float32(lo)
        a /= np.float32(hi - lo)
    else:
        a[...] = 0.0
    return Image.fromarray(a)  # float32 -> mode 'F'


def _strips(im: Image.Image, rows: int, width: int):
    """The image's first `width` columns as numpy strips of `rows` rows (the last may be shorter): never a
    full-size copy."""
    for top in range(0, im.size[1], rows):
        yield np.asarray(im.crop((0, top, width, min(top + rows, im.size[1]))))   # (rows, width)


def _extrema(im: Image.Image) -> tuple[float, float] | None:
    """(min, max) of a high bit-depth grey image, read before `_shrink` averages it; None for other modes, or
    when it cannot be read (the range then comes from the reduced image)."""
    if not (im.mode.startswith("I") or im.mode == "F"):
        return None
    try:
        return im.getextrema()   # no copy; big-endian 16-bit is refused, and measured a strip at a time
    except ValueError:
        pass
    try:
        ends = [(float(a.min()), float(a.max())) for a in _strips(im, 64, im.size[0])]
        return min(e[0] for e in ends), max(e[1] for e in ends)
    except Exception:  # noqa: BLE001 - PIL raises many types on hostile images
        return None


def _shrink(im: Image.Image, size: int | None) -> Image.Image:
    """A decoded image larger than 3x the wanted size, reduced by a whole factor (box average) to at least 3x it,
    before any mode conversion: converting first would copy the full image several times (a 16-bit 6300x6300
    PNG peaked at 1.3 GB). Lanczos then finishes from 3x, as `_square_resize`'s reducing gap does. 16-bit grey,
    which Pillow cannot reduce, is averaged in numpy a strip of rows at a time and kept integer, so its bit depth
    still sets its range. Palette and 1-bit images take their first conversion (to RGB(A) or grey) first
    (Pillow's reduce weights RGBA colours by their alpha, so transparent garbage does not bleed)."""
    factor = min(im.size) // (3 * size) if size else 0
    if factor < 2:
        return im
    try:
        if im.mode in ("P", "PA", "1"):   # no reduce for these: their first conversion, then the reduce
            im = im.convert("RGBA" if _has_alpha(im) else "L" if im.mode == "1" else "RGB")
        if not im.mode.startswith("I;16"):
            return im.reduce(factor)
        w = im.size[0] // factor * factor
        rows = [a.reshape(factor, w // factor, factor).sum(axis=(0, 2), dtype=np.uint64)   # (W / factor,)
                for a in _strips(im, factor, w) if len(a) == factor]
        small = np.stack(rows) / factor**2                                                  # (H / factor, W / factor)
        out = Image.fromarray(small.round().astype(np.int32))                               # mode 'I'
        out.info = dict(im.info)   # its EXIF orientation still applies
        return out
    except Exception:  # noqa: BLE001 - PIL raises many types on hostile images
        return im


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "RGBa", "LA", "La", "PA") or (im.mode == "P" and "transparency" in im.info)


def _normalise_mode(im: Image.Image, extrema: tuple[float, float] | None = None) -> Image.Image:
    """Any PIL mode -> 'L', 'RGB' or 'F' (high bit-depth grey, already in [0, 1], from `extrema` when given).

    Transparent images are composited over white: icons, logos and line art with alpha are drawn
    to be seen on a white page (black strokes on a black background would vanish), and the colour
    stored under fully transparent pixels is arbitrary, often garbage.
    """
    if im.mode in ("L", "RGB"):
        return im
    if im.mode.startswith("I") or im.mode == "F":
        return _to_float_gray(im, extrema)
    if im.mode == "1":
        return im.convert("L")
    if _has_alpha(im):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        out = Image.alpha_composite(white, rgba).convert("RGB")
        return out.convert("L") if im.mode in ("LA", "La") else out
    return im.convert("RGB")  # P, CMYK, YCbCr, LAB, HSV, RGBX, ...


def _square_resize(im: Image.Image, size: int) -> Image.Image:
    """Centre-crop to a square, then resize to size x size.

    Downscaling uses Lanczos (sharp, little aliasing). Upscaling by a whole factor uses nearest so
    tiny images and pixel art stay crisp; other upscales use bicubic to avoid uneven pixel blocks.
    """
    w, h = im.size
    s = min(w, h)
    if (w, h) != (s, s):
        left, top = (w - s) // 2, (h - s) // 2
        im = im.crop((left, top, left + s, top + s))
    if s == size:
        return im
    if s > size:
        return im.resize((size, size), Image.Resampling.LANCZOS, reducing_gap=None if im.mode == "F" else 3.0)
    flt = Image.Resampling.NEAREST if size % s == 0 else Image.Resampling.BICUBIC
    return im.resize((size, size), flt)


def _pixels(im: Image.Image, size: int | None) -> int:
    """Pixels a decode will really produce: JPEGs decode at a reduced scale (draft) when a small size is wanted."""
    w, h = im.size
    if size is not None and im.format == "JPEG":
        scale = 1
        while scale < 8 and min(w, h) // (scale * 2) >= size:
            scale *= 2
        w, h = -(-w // scale), -(-h // scale)
    return w * h


def _decode_slot(pixels: int):
    return _big_decodes if pixels > BIG_PIXELS else contextlib.nullcontext()


def load_image(src: bytes | str | os.PathLike, size: int | None = None, channels: int = 3) -> torch.Tensor:
    """Decode one untrusted image -> (C, H, W) float32 in [0, 1]; square size x size if size is given."""
    if channels not in (1, 3):
        raise ImageError(f"channels must be 1 or 3, got {channels}.")
    if size is not None and (not isinstance(size, int) or size < 1):
        raise ImageError(f"size must be a positive integer or None, got {size!r}.")
    what = _describe(src)
    with _open(src, what) as im, _decode_slot(_pixels(im, size)):
        try:
            if size is not None and im.format == "JPEG":
                im.draft(None, (size, size))  # decode at a reduced scale still >= size: faster, less memory
            im.load()
        except Exception:  # noqa: BLE001 - PIL raises many types on hostile bytes
            raise _fail(what, "is truncated or corrupt", "re-export it and try again.") from None
        extrema = _extrema(im)
        im = _shrink(im, size)
        try:
            im = ImageOps.exif_transpose(im)  # phone photos store their rotation in EXIF
        except Exception:  # noqa: BLE001 - PIL raises many types on hostile bytes
            pass  # malformed EXIF only loses the rotation; the pixels are fine
        try:
            im = _normalise_mode(im, extrema)
        except Exception:  # noqa: BLE001 - PIL raises many types on hostile bytes
            raise _fail(what, f"uses the image mode {im.mode!r}, which cannot be converted",
                        "re-export it as 8-bit RGB or greyscale.") from None
        if im.mode == "RGB" and channels == 1:
            im = im.convert("L")
        elif im.mode == "L" and channels == 3:
            im = im.convert("RGB")
        if size is not None:
            im = _square_resize(im, size)  # still in the slot: the full-size image lives until here
    a = np.asarray(im, dtype=np.float32)
    if im.mode != "F":
        a = a / 255.0
    a = np.clip(a, 0.0, 1.0)
    x = torch.from_numpy(np.ascontiguousarray(a))
    x = x.permute(2, 0, 1) if x.ndim == 3 else x[None]  # (H, W, C) or (H, W) -> (C, H, W)
    if x.shape[0] != channels:
        x = x.expand(channels, -1, -1)  # 'F' grey -> RGB
    return x.contiguous()


def _declared_pixels(data: bytes, size: int) -> int:
    """What decoding these bytes would cost, from the header alone; 0 for what is not an image (skipped later)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # load_image refuses it just after
            with Image.open(io.BytesIO(data), formats=formats()) as im:
                return _pixels(im, size)
    except Exception:  # noqa: BLE001 - PIL raises many types on hostile bytes
        return 0


def _bad_name(name: str) -> bool:
    """Entries never to open: traversal or absolute paths, macOS metadata, hidden files."""
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return True
    parts = PurePosixPath(name.replace("\\", "/")).parts
    return any(p == ".." for p in parts) or "__MACOSX" in parts or parts[-1].startswith(".")


def _no_images(where: str, bad: list[tuple[str, str]]) -> ImageError:
    if not bad:
        return ImageError(f"{where} contains no files; add some PNG or JPEG images.")
    shown = "; ".join(f"{n} ({why})" for n, why in bad[:3])
    more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
    return ImageError(f"{where} contains no readable images. Skipped: {shown}{more}. "
                      "Add PNG or JPEG images.")


def _directory_size(fp, what: str, max_files: int) -> None:
    """Refuse, from the end-of-central-directory record alone (22 bytes near the end, or its ZIP64 twin), a zip whose
    central directory holds too many records or is larger than that many records can be: zipfile parses the whole
    directory before anything can count it (600,000 empty members took 31 s and 415 MB)."""
    fp.seek(0)
    end = zipfile._EndRecData(fp)   # the record zipfile itself reads first, ZIP64 included; None: not a zip
    if end is None:
        return   # ZipFile's own message follows
    records, size = end[zipfile._ECD_ENTRIES_TOTAL], end[zipfile._ECD_SIZE]
    if records > MAX_RECORDS_PER_FILE * max_files:
        raise ImageError(f"{what} holds {records:,} entries, more than the {max_files} files allowed; "
                         "use a smaller subset.")
    if size > max(records, 1) * CD_RECORD_BYTES:
        raise ImageError(f"{what} has a central directory of {size:,} bytes for {records:,} entries: it is damaged or "
                         "crafted; create it again with your system's 'compress' tool.")


def _open_zip(src, what: str, max_files: int) -> zipfile.ZipFile:
    try:
        if isinstance(src, (bytes, bytearray, memoryview)):
            fp = io.BytesIO(bytes(src))
            _directory_size(fp, what, max_files)
            return zipfile.ZipFile(fp)
        with open(src, "rb") as f:
            _directory_size(f, what, max_files)
        return zipfile.ZipFile(src)
    except ImageError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, TypeError, EOFError):
        raise ImageError(f"{what} is not a readable zip file; create it with your system's 'compress' tool.") from None


def _zip_members(zf: zipfile.ZipFile, what: str, max_files: int, max_total_bytes: int) -> list[zipfile.ZipInfo]:
    """The members worth opening, after the checks its central directory alone allows (no member is inflated):
    too many files, too many bytes unpacked, a big member compressed more than MAX_RATIO times (a zip bomb)."""
    members = [i for i in zf.infolist() if not i.is_dir() and not _bad_name(i.filename)]
    if len(members) > max_files:
        raise ImageError(f"{what} holds {len(members)} files, more than the {max_files} allowed; "
                         "use a smaller subset.")
    total = sum(i.file_size for i in members)
    if total > max_total_bytes:
        raise ImageError(f"{what} would unpack to {total / 2**20:.1f} MiB, more than the "
                         f"{max_total_bytes / 2**20:.0f} MiB allowed; use fewer or smaller images.")
    for i in members:
        if i.file_size > RATIO_CHECK_BYTES and i.file_size > MAX_RATIO * max(i.compress_size, 1):
            raise ImageError(f"{what}: member '{i.filename}' is compressed "
                             f"{i.file_size / max(i.compress_size, 1):.0f}x, which looks like a zip bomb; "
                             "refusing the zip.")
    return members


def _by_name(members: list[zipfile.ZipInfo]) -> list[zipfile.ZipInfo]:
    """Members whose name ends like an image first (in zip order), then the rest (a photo saved without one)."""
    named = [PurePosixPath(i.filename).suffix.lower() in IMAGE_SUFFIXES for i in members]
    return [i for i, n in zip(members, named) if n] + [i for i, n in zip(members, named) if not n]


def _tga_header(prefix: bytes) -> bool:
    """TGA has no signature (Pillow tries it on anything): its 18-byte header's colour-map type, image type and
    depth, as Pillow's TGA reader checks them."""
    return (len(prefix) >= 18 and prefix[1] in (0, 1) and prefix[2] in (1, 2, 3, 9, 10, 11)
            and prefix[16] in (1, 8, 16, 24, 32))


PREFIX_TESTS = {"TGA": _tga_header}   # for the FORMATS whose Pillow plugin has no test of its own
PREFIX_BYTES = 18


def _looks_like_image(prefix: bytes) -> bool:
    """Whether a file's first PREFIX_BYTES are what one of the allowed decoders starts with (its plugin's own test,
    the one `Image.open` runs first): a text file or a document is passed over without a header parse."""
    for name in formats():
        test = PREFIX_TESTS.get(name) or Image.OPEN[name][1]
        try:
            if test is None or test(prefix if name in PREFIX_TESTS else prefix[:16]):
                return True
        except Exception:  # noqa: BLE001 - a plugin's test on hostile bytes
            continue
    return False


def _header_pixels(zf: zipfile.ZipFile, i: zipfile.ZipInfo, size: int) -> None:
    """Open one member's header (at most HEADER_BYTES inflated); ImageError when it declares more than MAX_PIXELS,
    any other exception when it is not an image."""
    with zf.open(i) as f:
        head = f.read(min(i.file_size, HEADER_BYTES))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(head), formats=formats()) as im:
            if _pixels(im, size) > MAX_PIXELS:
                raise _fail(i.filename, f"declares {im.size[0]}x{im.size[1]} pixels, more than the "
                            f"{MAX_PIXELS:,} allowed", "shrink it or leave it out.")


def scan_zip(src: bytes | str | os.PathLike, size: int, max_files: int = 5000, max_total_bytes: int = 200 * 2**20,
             need: int = 2, tries: int = 64) -> int:
    """What the web server checks of a training zip before a run is queued, without decoding a pixel: the same
    limits as `load_images_from_zip` on its file list, then members until `need` of them open as images within
    MAX_PIXELS. Returns how many members may be images.

    Members are chosen by name and content, never by position: those named like images come first, each is
    passed over unless its first bytes start like an image (a few KB inflated at most), and only those get a
    header parse (at most HEADER_BYTES inflated, `tries` of them): 64 text files before 500 PNGs cost 64 small
    reads, not the zip. Decoding every image costs seconds of CPU for a big zip, so that is the job worker's (a
    member that only looks like an image fails the run there, with the same message)."""
    what = _describe(src)
    with _open_zip(src, what, max_files) as zf:
        members = _zip_members(zf, what, max_files, max_total_bytes)
        found, parsed, bad = 0, 0, []
        for i in _by_name(members):
            try:
                with zf.open(i) as f:
                    if not _looks_like_image(f.read(PREFIX_BYTES)):
                        bad.append((i.filename, "is not an image"))
                        continue
                if parsed >= tries:
                    break
                parsed += 1
                _header_pixels(zf, i, size)
                found += 1
            except ImageError as e:   # skipped, as load_images_from_zip skips it
                bad.append((i.filename, e.reason))
            except Exception:  # noqa: BLE001 - not an image, encrypted, unsupported compression
                bad.append((i.filename, "is not an image"))
            if found >= need:
                return len(members)
    if not found:
        raise _no_images(what, bad)
    raise ImageError(f"{what} holds only {found} readable image; add at least {need} (ideally hundreds).")


def load_images_from_zip(src: bytes | str | os.PathLike, size: int, channels: int, max_files: int = 5000,
                         max_total_bytes: int = 200 * 2**20) -> tuple[torch.Tensor, list[str]]:
    """Decode every image in a zip, in memory -> ((N, C, size, size), member names).

    Directories, traversal/absolute names, __MACOSX and hidden files are skipped unopened; files
    that are not images are skipped. The whole zip is refused if it holds more than max_files
    files, declares more than max_total_bytes uncompressed, or has a big member compressed more
    than MAX_RATIO times (a zip bomb). Each member is read with a bound of its declared size, so
    a header that lies about the size cannot make us inflate more.
    """
    what = _describe(src)
    with _open_zip(src, what, max_files) as zf:
        members = _zip_members(zf, what, max_files, max_total_bytes)
        xs, names, bad = [], [], []
        pixels = 0
        for i in members:
            try:
                with zf.open(i) as f:
                    data = f.read(i.file_size + 1)  # bounded: never more than declared (+1 to spot a lie)
                if len(data) > i.file_size:
                    raise _fail(i.filename, "is larger than its zip header says", "re-create the zip.")
                pixels += _declared_pixels(data, size)
                if pixels > MAX_ZIP_PIXELS:
                    raise ImageError(f"{what}: its images add up to more than {MAX_ZIP_PIXELS / 1e6:,.0f} megapixels "
                                     f"(at '{i.filename}'); use fewer or smaller images, the model sees them at "
                                     f"{size}x{size} anyway.")
                xs.append(load_image(data, size, channels))
                names.append(i.filename)
            except ImageError as e:
                if pixels > MAX_ZIP_PIXELS:
                    raise
                bad.append((i.filename, e.reason))
            except Exception:  # noqa: BLE001 - encrypted, unsupported compression, bad CRC
                bad.append((i.filename, "cannot be read from the zip"))
    if not xs:
        raise _no_images(what, bad)
    return torch.stack(xs), names


def load_images_from_folder(path: str | os.PathLike, size: int, channels: int,
                            max_files: int = 5000) -> tuple[torch.Tensor, list[str]]:
    """Decode every image under a folder (recursively, sorted) -> ((N, C, size, size), relative names).

    Hidden files/folders and __MACOSX are skipped; files that are not images are skipped. More
    than max_files files is refused rather than silently truncated.
    """
    root = Path(path)
    if not root.is_dir():
        raise ImageError(f"'{path}' is not a folder; check the path.")
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__MACOSX")
        files += [Path(dirpath) / f for f in sorted(filenames) if not f.startswith(".")]
        if len(files) > max_files:
            raise ImageError(f"'{path}' holds more than {max_files} files; use a smaller subset.")
    xs, names, bad = [], [], []
    for f in files:
        rel = f.relative_to(root).as_posix()
        try:
            xs.append(load_image(f, size, channels))
            names.append(rel)
        except ImageError as e:
            bad.append((rel, e.reason))
    if not xs:
        raise _no_images(f"'{path}'", bad)
    return torch.stack(xs), names


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(C, H, W) or (H, W) float in [0, 1] -> (H, W, 3) or (H, W) uint8, for display."""
    x = torch.as_tensor(x).detach().cpu().float()
    if x.ndim == 3 and x.shape[0] == 1:
        x = x[0]
    if x.ndim == 3 and x.shape[0] == 3:
        x = x.permute(1, 2, 0)  # (3, H, W) -> (H, W, 3)
    elif x.ndim != 2:
        raise ImageError(f"to_uint8 expects (C, H, W) with C in (1, 3) or (H, W), got {tuple(x.shape)}.")
    a = torch.nan_to_num(x, nan=0.0).clamp(0, 1).mul(255).round().to(torch.uint8)
    return a.numpy()


def png_bytes(image: np.ndarray) -> bytes:
    """uint8 (H, W) or (H, W, 3) -> the bytes of a PNG file (lossless: crisp pixels stay crisp)."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def png_data_url(image: np.ndarray) -> str:
    """uint8 (H, W) or (H, W, 3) -> a `data:image/png;base64,...` URL: the browser draws it as it is, and a PNG is
    far smaller than a chart's nested lists of numbers."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode("ascii")


def upscale_nearest(img: np.ndarray, scale: int) -> np.ndarray:
    """Crisp integer upscaling of (H, W) or (H, W, C) arrays: each pixel becomes a scale x scale block."""
    if int(scale) != scale or scale < 1:
        raise ImageError(f"scale must be a positive integer, got {scale!r}.")
    return np.repeat(np.repeat(img, int(scale), axis=0), int(scale), axis=1)


def border_mean(x: torch.Tensor, px: int = 2) -> float:
    """Mean brightness of the outer `px`-pixel frame of an image (C, H, W) or a batch (N, C, H, W) in [0, 1]:
    the background. MNIST's is near 0 (white ink on black); a photo of ink on paper is near 1."""
    x = x if x.dim() == 4 else x[None]
    frame = torch.ones_like(x[0, 0], dtype=torch.bool)
    frame[px:-px, px:-px] = False
    return float(x[..., frame].mean())
