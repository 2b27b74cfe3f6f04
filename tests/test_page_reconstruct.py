"""Reconstruct page, headless (AppTest) on the shipped checkpoints: PSNR per image, code maps, RQ coarse
to fine, and uploads (good, broken and too large)."""

import io

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from helpers import open_page, shipped

pytestmark = pytest.mark.integration  # every test here opens a page in AppTest or starts a process


def open_reconstruct(model: str = "mnist-vq", **params) -> AppTest:
    shipped(model)
    at = open_page("reconstruct", {"model": f"shipped:{model}", **params}, land_first=True)
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


def ink_on_paper() -> bytes:
    """A dark '1' drawn on white paper, the opposite of MNIST's white strokes on black."""
    img = np.full((120, 120), 245, np.uint8)
    img[20:100, 55:68] = 20
    buf = io.BytesIO()
    Image.fromarray(img, "L").save(buf, format="PNG")
    return buf.getvalue()


def test_dark_ink_on_white_is_detected_and_inverted():
    at = open_reconstruct()
    at.get("file_uploader")[0].upload("paper.png", ink_on_paper(), "image/png")
    at.run()
    assert not at.exception and not at.error
    assert "light background" in at.info[-1].value and "inverted" in at.info[-1].value
    toggle = next(t for t in at.toggle if t.label.startswith("Invert the upload"))
    assert toggle.value is True
    captions = [im.proto.imgs[0].caption for im in at.image if im.proto.imgs[0].caption.startswith("reconstruction")]
    with_invert = float(captions[-1].split(": ")[1].split(" ")[0])
    toggle.set_value(False).run()
    captions = [im.proto.imgs[0].caption for im in at.image if im.proto.imgs[0].caption.startswith("reconstruction")]
    without = float(captions[-1].split(": ")[1].split(" ")[0])
    assert with_invert > without + 3, (with_invert, without)   # the model reads the inverted image far better


def test_white_ink_on_black_is_left_alone():
    at = open_reconstruct()
    img = np.zeros((60, 60), np.uint8)
    img[10:50, 27:33] = 250
    buf = io.BytesIO()
    Image.fromarray(img, "L").save(buf, format="PNG")
    at.get("file_uploader")[0].upload("chalk.png", buf.getvalue(), "image/png")
    at.run()
    assert not at.exception and not at.info
    assert next(t for t in at.toggle if t.label.startswith("Invert the upload")).value is False


def test_the_best_codes_search_runs_in_the_queue_and_shows_both_psnrs():
    import re
    import time

    at = open_reconstruct()
    assert not any("Greedy coordinate descent" in c.value for c in at.caption)   # nothing runs before the click
    at.button(key="rc_best_go").click().run()
    deadline = time.monotonic() + 240
    while not any("Greedy coordinate descent" in c.value for c in at.caption):
        assert time.monotonic() < deadline, "the best-codes search did not finish"
        assert not at.warning, [w.value for w in at.warning]
        time.sleep(1.0)
        at.run()
    caption = next(c.value for c in at.caption if "Greedy coordinate descent" in c.value)
    encoder_db, searched_db = map(float, re.search(r"PSNR from ([\d.]+) to ([\d.]+) dB", caption).groups())
    assert searched_db >= encoder_db
    assert any(f"encoder's codes: {encoder_db:.2f} dB" in im.proto.imgs[0].caption for im in at.image)
