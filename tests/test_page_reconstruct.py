"""Reconstruct page, headless (AppTest) on the shipped checkpoints: PSNR per image, code maps, RQ coarse
to fine, and uploads (good, broken and too large)."""

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from vqdemo import runs

REPO = Path(__file__).resolve().parents[1]


def open_reconstruct(model: str = "mnist-vq", **params) -> AppTest:
    if not (REPO / "checkpoints" / model / runs.WEIGHTS).is_file():
        pytest.skip(f"shipped checkpoint {model} is not there yet")
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.query_params["model"] = f"shipped:{model}"
    for k, v in params.items():
        at.query_params[k] = str(v)
    at.run()
    at.switch_page("views/reconstruct.py").run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.title[0].value.startswith("Reconstruct")
    return at


def metric(at: AppTest, prefix: str):
    return next(m for m in at.metric if m.label.startswith(prefix))


def png(size=(40, 30), mode="RGB") -> bytes:
    rng = np.random.default_rng(0)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("model", ["mnist-vq", "mnist-rq"])
def test_reconstruct_renders_with_psnr_and_code_maps(model):
    at = open_reconstruct(model)
    assert at.number_input(key="rc_start").value == 0
    assert at.select_slider(key="rc_n").value == 8
    assert float(metric(at, "PSNR of these images").value.split()[0]) > 10
    assert at.get("plotly_chart")  # one code map per image
    assert len(at.caption) >= (3 if model == "mnist-rq" else 1)  # every figure says what to look at
    coarse = [h for h in at.subheader if h.value.startswith("Coarse to fine")]
    assert bool(coarse) == (model == "mnist-rq")


def test_other_images_change_the_psnr_and_the_url():
    at = open_reconstruct(start=0, n=4)
    before = metric(at, "PSNR of these images").value
    at.number_input(key="rc_start").set_value(40).run()
    assert not at.exception
    assert metric(at, "PSNR of these images").value != before
    assert at.query_params["start"] in ("40", ["40"])


def test_rq_depth_picks_which_code_map_is_counted():
    at = open_reconstruct("mnist-rq", depth=1)
    assert metric(at, "Codes used").label == "Codes used at depth 1"
    at.select_slider(key="rc_depth").set_value(3).run()
    assert not at.exception
    assert metric(at, "Codes used").label == "Codes used at depth 3"


def test_junk_url_state_falls_back():
    at = open_reconstruct(start="-3", n="999", depth="x")
    assert at.number_input(key="rc_start").value == 0
    assert at.select_slider(key="rc_n").value == 12


def test_uploaded_image_goes_through_the_model():
    at = open_reconstruct()
    at.get("file_uploader")[0].upload("mine.png", png(), "image/png")
    at.run()
    assert not at.exception and not at.error
    assert "mine.png" in str(at.get("plotly_chart")[-1].proto.spec)  # its code map, titled with its name


def test_broken_and_oversized_uploads_show_an_error_not_a_crash():
    at = open_reconstruct()
    at.get("file_uploader")[0].upload("notes.png", b"this is not a picture", "image/png")
    at.run()
    assert not at.exception
    assert "is not an image" in at.error[0].value
    at.get("file_uploader")[0].upload("huge.png", b"\0" * (11 * 2**20), "image/png")
    at.run()
    assert not at.exception
    assert "over the 10 MB limit" in at.error[0].value
