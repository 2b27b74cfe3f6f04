"""Costly inputs are decoded once, at a bounded size, and refused early: a zip's member count from its end record
before its directory is parsed; a training zip's members chosen by name and content with every allowed format
registered; a big high bit-depth image reduced before it is converted; an upload decoded once per content."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import REPO, encode, open_page, shipped
from vqdemo import files, images, run_store
from vqdemo.images import ImageError, load_image, load_images_from_zip, scan_zip


def zip_bytes(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, blob in members.items():
            zf.writestr(name, blob)
    return buf.getvalue()


def png(i: int) -> bytes:
    return encode(Image.new("RGB", (12, 12), (i % 256, 100, 200)))


def no_directory_parse(monkeypatch) -> None:
    """Parsing a zip's central directory fails the test."""
    def parse(self):
        raise AssertionError("the central directory was parsed")
    monkeypatch.setattr(zipfile.ZipFile, "_RealGetContents", parse)


# ---- a zip's size from its end record, before its directory ------------------------------------------------

@pytest.mark.parametrize("as_path", [False, True])
def test_too_many_entries_are_refused_before_the_directory_is_parsed(monkeypatch, tmp_path, as_path):
    blob = zip_bytes({str(i): b"" for i in range(40)}, zipfile.ZIP_STORED)
    src = blob
    if as_path:
        src = tmp_path / "many.zip"
        src.write_bytes(blob)
    no_directory_parse(monkeypatch)
    for fn in (lambda: scan_zip(src, 32, max_files=10), lambda: load_images_from_zip(src, 32, 3, max_files=10)):
        with pytest.raises(ImageError, match="holds 40 entries, more than the 10 files allowed"):
            fn()


def test_a_record_that_understates_its_directory_is_refused_unparsed(monkeypatch):
    """zipfile reads as many records as the directory's byte size holds, whatever the count says: a record that
    claims 1 entry over a directory of 40 must not get the directory parsed."""
    blob = bytearray(zip_bytes({str(i): b"" for i in range(40)}, zipfile.ZIP_STORED))
    end = blob.rindex(b"PK\x05\x06")
    struct.pack_into("<HH", blob, end + 8, 1, 1)   # entries on this disk, entries in all
    no_directory_parse(monkeypatch)
    with pytest.raises(ImageError, match="central directory of .* bytes for 1 entries"):
        scan_zip(bytes(blob), 32)


def test_a_zip_a_little_under_the_limit_still_opens():
    """Folders and macOS's __MACOSX twins are records too: 12 images with their twins and folders pass."""
    members = {}
    for i in range(12):
        members[f"set/{i}.png"] = png(i)
        members[f"__MACOSX/set/._{i}.png"] = b"\0\5\26\7" + b"\0" * 60
    assert scan_zip(zip_bytes(members), 16, max_files=12) == 12
    x, names = load_images_from_zip(zip_bytes(members), 16, 3, max_files=12)
    assert len(names) == 12


@pytest.mark.slow
def test_a_zip64_member_count_is_read_from_its_own_record(monkeypatch):
    """Over 65,535 entries the count sits in the ZIP64 end record; it is read there, still before any parse."""
    blob = zip_bytes({str(i): b"" for i in range(70_000)}, zipfile.ZIP_STORED)
    no_directory_parse(monkeypatch)
    with pytest.raises(ImageError, match="holds 70,000 entries"):
        scan_zip(blob, 32)


# ---- which members a training zip's scan tries ---------------------------------------------------------------

def test_text_files_before_the_images_do_not_hide_them():
    members = {f"a/{i:03d}.txt": b"notes, not a picture" for i in range(64)}
    members |= {f"b/{i:03d}.png": png(i) for i in range(100)}
    assert scan_zip(zip_bytes(members), 16) == 164


def test_files_named_like_images_but_not_images_are_passed_over_by_content(monkeypatch):
    """64 text files named .png before the real ones: passed over on their first bytes, without a header parse."""
    members = {f"a/{i:03d}.png": b"notes, not a picture at all" for i in range(64)}
    members |= {f"b/{i:03d}.png": png(i) for i in range(100)}
    parsed = []
    real = images._header_pixels
    monkeypatch.setattr(images, "_header_pixels", lambda zf, i, size: parsed.append(i.filename) or real(zf, i, size))
    assert scan_zip(zip_bytes(members), 16) == 164
    assert parsed == ["b/000.png", "b/001.png"]


def test_an_image_without_an_image_name_is_still_found():
    assert scan_zip(zip_bytes({"readme.txt": b"hello", "scan_0001": png(1), "scan_0002.dat": png(2)}), 16) == 3


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM", "TGA", "ICO"])
def test_every_allowed_format_passes_the_content_check(fmt):
    blob = encode(Image.new("RGB", (16, 16), (10, 200, 30)), fmt)
    assert images._looks_like_image(blob[:images.PREFIX_BYTES])
    assert scan_zip(zip_bytes({"x1": blob, "x2": blob}), 16) == 2


def test_text_and_documents_fail_the_content_check():
    for blob in (b"hello world, some notes", b"%PDF-1.4\n%\xe2\xe3", b"{\"a\": 1}", b"#!/bin/sh\necho", b"\0" * 32):
        assert not images._looks_like_image(blob[:images.PREFIX_BYTES]), blob


@pytest.mark.integration
def test_webp_and_tiff_zips_pass_on_a_fresh_server(tmp_path):
    """A new process has not initialised Pillow's plugins: the scan must not read the format list before that."""
    for fmt in ("WEBP", "TIFF"):
        (tmp_path / f"{fmt}.zip").write_bytes(zip_bytes({f"{i}.{fmt.lower()}": encode(
            Image.new("RGB", (16, 16), (40 * i, 0, 0)), fmt) for i in range(3)}))
    code = ("import sys\nfrom vqdemo.images import scan_zip\n"
            "print([scan_zip(p, 16) for p in sys.argv[1:]])")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "WEBP.zip"), str(tmp_path / "TIFF.zip")],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[3, 3]"


def test_the_format_list_comes_after_pillow_registers_its_plugins():
    assert {"TIFF", "WEBP", "PNG", "JPEG"} <= set(images.formats())
    assert "EPS" not in images.formats()


# ---- big high bit-depth images: reduced before they are converted -------------------------------------------

def traced_peak(fn) -> tuple[object, int]:
    """fn's result and the peak of memory Python and numpy allocated meanwhile (Pillow's own buffers excluded)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        out = fn()
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I", "F"])
def test_big_high_bit_depth_images_are_reduced_before_conversion(mode):
    w = h = 3000
    ramp = np.tile(np.linspace(0, 4095, w, dtype=np.float64), (h, 1))   # a 12-bit left-to-right ramp
    if mode == "F":
        im = Image.fromarray((ramp / 4095 * 3).astype(np.float32))        # floats past 1: stretched to [0, 1]
    elif mode == "I":
        im = Image.fromarray(ramp.astype(np.int32))
    else:
        im = Image.frombytes(mode, (w, h), ramp.astype(">u2" if mode == "I;16B" else "<u2").tobytes())
    blob = encode(im, "TIFF" if mode != "I;16" else "PNG")
    x, peak = traced_peak(lambda: load_image(blob, size=28, channels=1))
    assert x.shape == (1, 28, 28)
    assert peak < w * h * 4, f"{peak / 2**20:.0f} MiB traced: a full-size float copy"   # float32 would be 34 MiB
    row = x[0, 14].numpy()
    assert np.all(np.diff(row) >= -1e-4) and row[0] < 0.05   # still a ramp from black ...
    assert row[-1] > 0.9   # ... to white: 12 bits read as 12 bits (or floats stretched), as at full size


def test_the_range_of_a_reduced_float_image_is_the_full_images():
    """A single bright pixel sets a float image's range, even when averaging it away before the resize."""
    a = np.zeros((2000, 2000), np.float32)
    a[:, 1000:] = 3.0
    a[5, 5] = 6.0
    x = load_image(encode(Image.fromarray(a), "TIFF"), size=20, channels=1)
    assert float(x[0, 10, 15]) == pytest.approx(0.5, abs=0.01)   # 3 of a 0..6 range, not stretched to 1


# ---- an upload on Reconstruct: decoded once per content ------------------------------------------------------

@pytest.mark.integration
def test_an_upload_is_decoded_once_whatever_reruns(monkeypatch):
    shipped("mnist-vq")
    calls = []
    real = images.load_image
    monkeypatch.setattr(images, "load_image", lambda *a, **k: calls.append(1) or real(*a, **k))
    at = open_page("reconstruct", {"model": "shipped:mnist-vq"}, land_first=True)
    paper = np.full((60, 61), 240, np.uint8)
    paper[10:50, 27:33] = 10
    at.get("file_uploader")[0].upload("paper.png", encode(Image.fromarray(paper)), "image/png")
    at.run()
    toggle = next(t for t in at.toggle if t.label.startswith("Invert the upload"))
    for value in (False, True, False):
        toggle.set_value(value).run()
        toggle = next(t for t in at.toggle if t.label.startswith("Invert the upload"))
    assert not at.exception and not at.error
    assert len(calls) == 1


# ---- a run on the user's images: its pages read a small file, never the zip ----------------------------------

def zip_run(root: Path, run_id: str = "20260101-000000-zip000", n: int = 12) -> Path:
    """A run trained for one step, through `fit`, on a zip of two classes."""
    from helpers import tiny_config
    from vqdemo.data import DataConfig
    from vqdemo.fit import fit
    from vqdemo.trainer import TrainConfig

    z = root / f"{run_id}.zip"
    z.write_bytes(zip_bytes({f"{'warm' if i % 2 else 'cool'}/{i}.png": png(20 * i) for i in range(n)}))
    out = root / "runs" / run_id
    fit(tiny_config(), DataConfig(name="folder", path=str(z), val_fraction=0.5), TrainConfig(steps=1, batch_size=2),
        out_dir=out)
    return out


def counted_decodes(monkeypatch) -> list[str]:
    """Every decode of a zip of images from now on (the zips' paths)."""
    from vqdemo import data as data_module

    calls: list[str] = []
    real = data_module.load_images_from_zip
    monkeypatch.setattr(data_module, "load_images_from_zip", lambda *a, **k: calls.append(str(a[0])) or real(*a, **k))
    return calls


def test_a_zip_run_keeps_its_validation_images_in_its_folder(tmp_path):
    from vqdemo import run_images, runs
    from vqdemo.data import data_config, load_data

    run = zip_run(tmp_path)
    blob = (run / runs.IMAGES).read_bytes()
    assert len(blob) <= run_images.MAX_BYTES + 4096
    cfg = data_config(runs.read_json(run / runs.CONFIG), "run")
    shown, full = run_images.from_bytes(blob, cfg, "run"), load_data(cfg)
    assert len(shown.train_x) == 0 and shown.channels == full.channels and shown.image_size == full.image_size
    assert (shown.val_x - full.val_x).abs().max() <= 0.5 / 255 + 1e-6   # 8-bit pixels: what the zip held
    assert shown.val_y.tolist() == full.val_y.tolist() and shown.class_names == full.class_names == ["cool", "warm"]


def test_ten_zip_runs_viewed_in_turn_are_never_decoded_again(tmp_path, monkeypatch):
    """The review's ten zip runs cycled an 8-entry dataset cache: every view decoded a zip. Now each is a file."""
    from vqdemo import run_images, runs
    from vqdemo.data import data_config

    first = zip_run(tmp_path)
    folders = [first]
    for i in range(1, 10):   # the same run under ten names (each with its own data.zip)
        copy = first.parent / f"20260101-00000{i}-zip00{i}"
        copy.mkdir()
        for f in first.iterdir():
            (copy / f.name).write_bytes(f.read_bytes())
        meta = runs.read_json(copy / runs.CONFIG)
        meta["data"]["path"] = str(copy / "data.zip")
        files.write_json(copy / runs.CONFIG, meta)
        folders.append(copy)
    decodes = counted_decodes(monkeypatch)
    for _ in range(2):
        for folder in folders:
            cfg = data_config(runs.read_json(folder / runs.CONFIG), folder.name)
            assert len(run_images.load(folder, cfg, save=True).val_x) == 6
    assert decodes == []


def test_a_run_without_the_file_is_decoded_once_and_then_has_it(tmp_path, monkeypatch):
    from vqdemo import run_images, runs
    from vqdemo.data import data_config

    run = zip_run(tmp_path)
    (run / runs.IMAGES).unlink()   # a run trained before the file existed
    cfg = data_config(runs.read_json(run / runs.CONFIG), "run")
    decodes = counted_decodes(monkeypatch)
    for _ in range(3):
        assert len(run_images.load(run, cfg, save=True).val_x) == 6
    assert len(decodes) == 1 and (run / runs.IMAGES).is_file()


@pytest.mark.parametrize("damage", ["junk", "shape", "dtype", "labels", "names"])
def test_a_damaged_or_planted_images_file_is_refused_and_replaced(tmp_path, monkeypatch, damage):
    import torch
    from safetensors.torch import save

    from vqdemo import run_images, runs
    from vqdemo.data import DataError, data_config

    run = zip_run(tmp_path)
    cfg = data_config(runs.read_json(run / runs.CONFIG), "run")
    good = run_images.from_bytes((run / runs.IMAGES).read_bytes(), cfg, "run")
    x8, y = (good.val_x * 255).round().to(torch.uint8), good.val_y
    names = {"vqdemo_images": '{"class_names": ["cool", "warm"]}'}
    planted = {
        "junk": b"\x10\0\0\0\0\0\0\0{not json at all",
        "shape": save({"val_x": x8[:, :, :8, :8].contiguous(), "val_y": y}, metadata=names),
        "dtype": save({"val_x": good.val_x, "val_y": y}, metadata=names),
        "labels": save({"val_x": x8, "val_y": y + 5}, metadata=names),
        "names": save({"val_x": x8, "val_y": y}, metadata={"vqdemo_images": '{"class_names": [1, 2]}'}),
    }[damage]
    with pytest.raises(DataError, match="does not hold this run's validation images"):
        run_images.from_bytes(planted, cfg, "planted")
    (run / runs.IMAGES).write_bytes(planted)
    decodes = counted_decodes(monkeypatch)
    assert run_images.load(run, cfg, save=True).class_names == ["cool", "warm"]
    assert len(decodes) == 1   # decoded again, and the file replaced with a good one
    run_images.from_bytes((run / runs.IMAGES).read_bytes(), cfg, "replaced")


@pytest.mark.integration
def test_a_page_shows_a_zip_run_from_its_file(tmp_path, monkeypatch):
    run = zip_run(tmp_path)
    decodes = counted_decodes(monkeypatch)
    for page in ("learn", "reconstruct"):
        at = open_page(page, {"model": f"run:{run.name}"}, land_first=True)
        assert not at.error, [e.value for e in at.error]
    assert decodes == []


@pytest.mark.integration
def test_a_queued_zip_run_gets_its_images_file_from_its_worker(tmp_path, monkeypatch):
    """Through the job queue the worker decodes the zip and sends the small file back with the run's other files."""
    from thread_backend import ThreadBackend

    from helpers import tiny_config, wait_for
    from vqdemo import runs
    from vqdemo.data import DataConfig
    from vqdemo.jobs import FINISHED, JobQueue
    from vqdemo.trainer import TrainConfig

    z = tmp_path / "mine.zip"
    z.write_bytes(zip_bytes({f"{'warm' if i % 2 else 'cool'}/{i}.png": png(20 * i) for i in range(12)}))
    decodes = counted_decodes(monkeypatch)
    q = JobQueue(1, tmp_path / "runs", threads=1, backend=ThreadBackend())
    try:
        job = q.submit("s", "zip run", tiny_config(), DataConfig(name="folder", path=str(z), val_fraction=0.5),
                       TrainConfig(steps=2, batch_size=2))
        wait_for(lambda: job.state in FINISHED, "the run to finish", 120)
    finally:
        q.close()
    assert job.state == "done", job.view().reason
    assert len(decodes) == 1 and (job.run_dir / runs.IMAGES).is_file()


# ---- a run that ends on a full disk: its end is recorded once space returns -----------------------------------

@pytest.fixture
def disk(monkeypatch, tmp_path):
    """A runs folder whose disk can be filled and freed: while full, no file can be created under it."""
    import errno
    import os
    import tempfile

    from vqdemo import runs

    monkeypatch.setattr(runs, "RETRY_S", 0.05)
    state = {"full": False}
    real = tempfile.mkstemp

    def mkstemp(*a, dir=None, **k):
        if state["full"] and dir is not None and str(dir).startswith(str(tmp_path)):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dir))
        return real(*a, dir=dir, **k)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    return state


def test_a_refused_final_write_is_retried_until_the_disk_takes_it(tmp_path, disk):
    from helpers import wait_for
    from vqdemo import runs

    status = tmp_path / "run" / runs.STATUS
    files.write_json(status, {"state": "running"})
    disk["full"] = True
    assert run_store.write_final({status: {"state": "failed", "reason": "disk full"}}) is False
    assert runs.read_json(status)["state"] == "running"
    disk["full"] = False
    wait_for(lambda: runs.read_json(status)["state"] == "failed", "the final state on disk", 30)
    wait_for(lambda: not run_store.LATE_WRITES.pending(), "nothing left waiting", 30)


def test_a_newer_write_replaces_the_waiting_one_and_a_deleted_run_is_dropped(tmp_path, disk):
    import shutil

    from helpers import wait_for
    from vqdemo import runs

    a, b = tmp_path / "a" / runs.STATUS, tmp_path / "b" / runs.STATUS
    files.write_json(a, {"state": "running"})
    files.write_json(b, {"state": "running"})
    disk["full"] = True
    assert not run_store.write_final({a: {"state": "failed"}}) and not run_store.write_final({b: {"state": "failed"}})
    shutil.rmtree(b.parent)
    disk["full"] = False
    assert run_store.write_final({a: {"state": "interrupted"}}) is True   # newer: the waiting "failed" must not win
    wait_for(lambda: not run_store.LATE_WRITES.pending(), "nothing left waiting", 30)
    assert runs.read_json(a)["state"] == "interrupted" and not b.parent.exists()


@pytest.mark.integration
def test_a_run_that_ends_on_a_full_disk_says_so_on_disk_once_space_returns(tmp_path, disk):
    from thread_backend import ThreadBackend

    from helpers import tiny_config, wait_for
    from vqdemo import runs
    from vqdemo.data import DataConfig
    from vqdemo.jobs import FINISHED, JobQueue
    from vqdemo.trainer import TrainConfig

    q = JobQueue(1, tmp_path / "runs", threads=1, backend=ThreadBackend())
    try:
        job = q.submit("s", "fills the disk", tiny_config(), DataConfig(name="digits", max_images=200),
                       TrainConfig(steps=100_000, batch_size=8, val_every=5))
        wait_for(lambda: runs.read_status(job.run_dir)["state"] == "running" and job.step_count > 0,
                 "the run to train", 120)
        disk["full"] = True
        wait_for(lambda: job.state in FINISHED, "the run to end on the full disk", 120)
        assert job.state == "failed" and "disk may be full" in job.view().reason, job.view().reason
        assert runs.read_status(job.run_dir)["state"] == "running"   # the disk refused the final state
        disk["full"] = False
        wait_for(lambda: runs.read_status(job.run_dir)["state"] == "failed", "the final state on disk", 60)
        assert "disk may be full" in runs.read_status(job.run_dir)["reason"]
    finally:
        q.close()


@pytest.mark.parametrize("mode", ["RGBA", "P"])
def test_a_big_transparent_image_reduced_first_still_goes_over_white(mode):
    """Opaque white beside transparent black: averaging before compositing must weight colours by their alpha,
    or the black under the transparent half would grey the edge."""
    white = np.zeros((3000, 3000), np.uint8)
    white[:, :1501] = 1
    if mode == "P":
        im = Image.fromarray(white, "P")
        im.putpalette([0, 0, 0, 255, 255, 255])
        blob = encode(im, "PNG", transparency=0)
    else:
        blob = encode(Image.fromarray(np.repeat(white[..., None] * 255, 4, axis=2), "RGBA"))
    x = load_image(blob, size=28, channels=1)
    assert float(x.min()) > 0.99
