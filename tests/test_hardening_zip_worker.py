"""A training zip is never decoded by the web server: the Train page checks its file list and two image headers
(`image_zip.scan_zip`, cached by content), sizes the model from the config (`data.data_shape`) and leaves the decode to
the job's worker. A bad zip still ends as a clear message: on the page when its list or headers show it, else as
the run's failure reason."""

from __future__ import annotations

import io
import threading
import time
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from helpers import encode, open_page, png_declaring, student_of, wait_for
from vqdemo import data as data_module
from vqdemo import files, image_zip
from vqdemo.data import DataConfig, DataError, check_source, data_shape, load_data
from vqdemo.image_zip import scan_zip
from vqdemo.images import ImageError

TIMEOUT_S = 120


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, blob in members.items():
            zf.writestr(name, blob)
    return buf.getvalue()


def png(i: int) -> bytes:
    return encode(Image.new("RGB", (20, 20), (20 * i, 255 - 20 * i, 128)))


GOOD = {f"{'warm' if i % 2 else 'cool'}/{i}.png": png(i) for i in range(12)}


def no_decoding(monkeypatch) -> None:
    """Any pixel decode fails the test."""
    monkeypatch.setattr(Image.Image, "load", lambda self: (_ for _ in ()).throw(AssertionError("decoded")))


# ---- the scan: file list and headers only ---------------------------------------------------------------------

def test_a_good_zip_passes_the_scan_without_a_decode(monkeypatch):
    no_decoding(monkeypatch)
    assert scan_zip(zip_bytes(GOOD), 32) == 12


@pytest.mark.parametrize("members, message", [
    ({"a.txt": b"hello", "b.txt": b"world"}, "no readable images"),
    ({"a.png": png(1), "b.txt": b"x"}, "holds only 1 readable image"),
    ({"a.png": png_declaring(100_000, 100_000), "b.png": png_declaring(9000, 9000)}, "no readable images"),
    ({f"{i}.png": b"x" for i in range(5001)}, "more than the 5000 allowed"),
    ({"a.png": png(1), "zeros.png": b"\0" * (30 * 2**20)}, "zip bomb"),
    ({}, "contains no files"),
])
def test_a_bad_zip_is_named_by_the_scan_without_a_decode(monkeypatch, members, message):
    no_decoding(monkeypatch)
    with pytest.raises(ImageError, match=message):
        scan_zip(zip_bytes(members), 32)


def test_not_a_zip_and_a_missing_path_are_data_errors(tmp_path):
    (tmp_path / "x.zip").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(DataError, match="not a readable zip"):
        check_source(DataConfig(name="folder", path=str(tmp_path / "x.zip")))
    with pytest.raises(DataError, match="does not exist"):
        check_source(DataConfig(name="folder", path=str(tmp_path / "gone.zip")))


def test_the_scan_inflates_a_bounded_prefix_of_each_member():
    """A member of 20 MB of noise-like PNG: the scan reads its header, not its 20 MB."""
    reads = []
    real = zipfile.ZipExtFile.read

    def counting(self, n=-1):
        out = real(self, n)
        reads.append(len(out))
        return out

    big = encode(Image.effect_noise((2500, 2500), 64).convert("RGB"), compress_level=0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(zipfile.ZipExtFile, "read", counting)
        scan_zip(zip_bytes({"a.png": big, "b.png": big}), 32)
    assert len(big) > 10 * 2**20 and max(reads) <= image_zip.HEADER_BYTES


def test_data_shape_is_what_load_data_gives(tmp_path):
    z = tmp_path / "z.zip"
    z.write_bytes(zip_bytes(GOOD))
    for cfg in (DataConfig(name="digits"), DataConfig(name="shapes", max_images=20),
                DataConfig(name="shapes", max_images=20, image_size=16, channels=1),
                DataConfig(name="folder", path=str(z)), DataConfig(name="folder", path=str(z), image_size=8)):
        d = load_data(cfg)
        assert data_shape(cfg) == (d.channels, d.image_size), cfg


# ---- the Train page: the web server never decodes, a bad zip is a clear message --------------------------------

@pytest.fixture
def decodes(monkeypatch):
    """Names of the threads that decoded a zip (the page's script thread, or the job worker's)."""
    seen: list[str] = []
    real = image_zip.load_images_from_zip

    def counting(*a, **k):
        seen.append(threading.current_thread().name)
        return real(*a, **k)

    monkeypatch.setattr(data_module, "load_images_from_zip", counting)
    monkeypatch.setattr(image_zip, "load_images_from_zip", counting)
    yield seen
    from ui.jobs import job_queue
    from vqdemo.jobs import FINISHED

    for job in job_queue().list_jobs():
        job.stop()
    deadline = time.monotonic() + TIMEOUT_S
    while any(j.state not in FINISHED for j in job_queue().list_jobs()) and time.monotonic() < deadline:
        time.sleep(0.05)


def start_on_zip(members: dict[str, bytes], runs_dir: Path):
    at = open_page("train", {"data": "folder", "budget": "steps", "steps": "5", "batch": "16"})
    stored = runs_dir / "uploads" / "0123456789abcdef.zip"   # where save_upload keeps it (AppTest cannot upload)
    files.atomic_write_bytes(stored, zip_bytes(members))
    at.session_state["tr_upload_path"] = str(stored)
    return at.button(key="tr_start").click().run()


@pytest.mark.integration
def test_the_page_queues_a_zip_run_without_decoding_it(decodes, tmp_path):
    from ui.jobs import job_queue
    from vqdemo.jobs import FINISHED

    at = start_on_zip(GOOD, tmp_path / "runs")
    assert not at.exception and not at.error, [e.value for e in at.error]
    [job] = job_queue().list_jobs(student_of(at))
    wait_for(lambda: job.state in FINISHED, "the run to finish", TIMEOUT_S)
    assert job.state == "done", job.view().reason
    assert decodes and set(decodes) == {"vqdemo-worker-thread"}, decodes   # decoded once, by the worker only
    kept = Path(job.view().data_cfg.path)
    assert kept == job.run_dir / "data.zip" and kept.is_file()   # the run keeps its own copy of the upload


@pytest.mark.integration
def test_a_zip_the_scan_refuses_is_a_message_on_the_page(decodes, tmp_path):
    from ui.jobs import job_queue

    at = start_on_zip({"notes.txt": b"hello", "more.txt": b"world"}, tmp_path / "runs")
    assert not at.exception
    assert any("no readable images" in e.value for e in at.error), [e.value for e in at.error]
    assert job_queue().list_jobs() == [] and decodes == []


@pytest.mark.integration
def test_a_zip_that_fails_only_when_decoded_fails_its_run_with_the_reason(decodes, tmp_path):
    """Headers that look right over truncated pixels: the scan passes, the worker's decode names the problem."""
    from ui.jobs import job_queue
    from vqdemo.jobs import FINISHED

    truncated = {f"c{i % 2}/{i}.png": encode(Image.effect_noise((64, 64), 50))[:120] for i in range(6)}
    at = start_on_zip(truncated, tmp_path / "runs")
    assert not at.exception and not at.error
    [job] = job_queue().list_jobs(student_of(at))
    wait_for(lambda: job.state in FINISHED, "the run to end", TIMEOUT_S)
    assert job.state == "failed" and "truncated or corrupt" in job.view().reason, job.view().reason
    assert set(decodes) == {"vqdemo-worker-thread"}
