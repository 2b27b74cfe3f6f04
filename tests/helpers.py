"""Small builders shared by the tests: a tiny model, encoded images, a polling wait, and the app's pages under
AppTest (with the shipped checkpoints they need)."""

from __future__ import annotations

import io
import socket
import struct
import time
import zlib
from pathlib import Path

from PIL import Image

from vqdemo.models import ModelConfig
from vqdemo.prior import PRIOR_DIR
from vqdemo.quantize import QuantizerConfig, ResidualConfig
from vqdemo.runs import WEIGHTS

REPO = Path(__file__).resolve().parents[1]
APP = str(REPO / "app.py")
PAGE_TIMEOUT_S = 120  # one AppTest script run; a cold page loads a model and torch on 2 shared cores


def free_port() -> int:
    """A TCP port free on this machine now (the OS picks it), for a server a test starts."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_config(kind: str = "vq", **vq) -> ModelConfig:
    """A model small enough to train for a few dozen steps in a test."""
    return ModelConfig(kind=kind, hidden=16, res_hidden=8, res_blocks=1,
                       vq=QuantizerConfig(k=vq.pop("k", 16), dim=vq.pop("dim", 8), **vq),
                       rq=ResidualConfig(depth=3, codebook_sizes=[16, 16, 16]))


def encode(im: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    """The bytes of `im` saved as `fmt`, as an upload would carry them."""
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height 8-bit grey pixels (valid CRCs) over one tiny IDAT: a
    decompression bomb's header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def wait_for(pred, what: str, timeout: float = 60.0, every: float = 0.02):
    """Poll `pred` until it returns something truthy (returned) or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := pred():
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def shipped(name: str, prior: bool = False) -> Path:
    """A shipped checkpoint's folder (with its prior if asked); fails at once, never skips or waits, when the
    checkout lacks it."""
    path = REPO / "checkpoints" / name
    need = path / PRIOR_DIR / WEIGHTS if prior else path / WEIGHTS
    assert need.is_file(), (f"{need.relative_to(REPO)} is missing: the page tests use the checkpoints the app "
                            "ships (README, 'Shipped checkpoints' says how to train them)")
    return path


def open_page(page: str | None, query: dict | None = None, *, land_first: bool = False, check: bool = True):
    """app.py under AppTest, on views/<page>.py (None: the default page) with `query` in the URL. land_first runs
    the default page before switching, as a student who opens the app and then picks a page. check: fail on an
    exception shown by the page."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=PAGE_TIMEOUT_S)
    at.query_params.update({k: str(v) for k, v in (query or {}).items()})
    if page is None or land_first:
        at.run()
    if page is not None:
        at.switch_page(f"views/{page}.py").run()
    if check:
        assert not at.exception, [e.message for e in at.exception]
    return at


def student_of(at) -> str:
    """The public id of the student an AppTest session is (what its runs' folders name as owner)."""
    return at.session_state["jobs_owner"]


def secret_of(at) -> str:
    """The secret an AppTest session holds (what its browser's cookie would carry)."""
    return at.session_state["_identity"]["secret"]
