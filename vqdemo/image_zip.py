"""Zips and folders of untrusted images, checked before any pixel is decoded.

A zip upload is the app's widest door: its central directory can hold hundreds of thousands of entries, a member can
inflate to far more than its compressed size (a zip bomb), names can climb out of the folder ("../x", "/etc/x"), and
a tiny image header can declare an enormous picture. So everything here is read in memory with bounded reads
(nothing is ever extracted to disk), the zip is refused from its directory alone where it can be, and members are
chosen by name and first bytes before any header is parsed. The web server only scans (`scan_zip`: no pixel
decoded); decoding every member is the job worker's (`load_images_from_zip`), one image at a time through
`images.load_image`.
"""
from __future__ import annotations

import io
import os
import warnings
import zipfile
from pathlib import Path, PurePosixPath

import torch
from PIL import Image

from .images import MAX_PIXELS, ImageError, _describe, _fail, _pixels, formats, load_image

RATIO_CHECK_BYTES = 2**20  # members smaller than this cannot hurt, whatever their compression ratio
MAX_RATIO = 100  # a larger uncompressed/compressed ratio on a big member is treated as a zip bomb
# One zip may not declare more than MAX_ZIP_PIXELS in all: a 40 MP member takes seconds to decode, and 5,000 of
# them would be hours of CPU.
MAX_ZIP_PIXELS = 1_000_000_000
HEADER_BYTES = 64 * 2**10   # enough of a member to read its image header (a JPEG's sits after its EXIF)
# What a member's name says it is: the members worth trying first when a zip is scanned.
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".mpo", ".bmp", ".dib", ".gif", ".tif",
                            ".tiff", ".webp", ".avif", ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".ico", ".qoi"})
# Central directory records per zip at most, as a multiple of its file limit: folders and macOS's __MACOSX/._*
# twins are records too (skipped later). Each record may take at most CD_RECORD_BYTES of the directory.
MAX_RECORDS_PER_FILE = 3
CD_RECORD_BYTES = 46 + 1024


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
