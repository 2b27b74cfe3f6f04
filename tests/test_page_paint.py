"""Paint page, headless (AppTest) on the shipped checkpoints.

AppTest cannot run the painter's JavaScript, so a stroke is what the browser would send: the
painter's component state `{"painted": {grid, base, seq}}` set in session state (the protocol in
ui/painter.py). The real drag is in tests/browser/test_paint_browser.py.
"""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from helpers import open_page, shipped
from ui.painter import _rev
from vqdemo import code_canvas
from vqdemo.analysis import encode_all

pytestmark = pytest.mark.integration  # every test here opens a page in AppTest or starts a process

REPO = Path(__file__).resolve().parents[1]


def open_paint(model: str = "mnist-vq") -> AppTest:
    shipped(model)
    at = open_page("paint", {"model": f"shipped:{model}"}, land_first=True)
    assert at.title[0].value == "Paint with codes"
    return at


def canvas(at: AppTest) -> code_canvas.Canvas:
    return next(v for k, v in at.session_state.items() if k.startswith("paint_canvas:"))


def decoded(at: AppTest) -> list[str]:
    """URLs of the decoded images (Streamlit names media by a hash of the bytes)."""
    return [im.value[0] for im in at.image if im.proto.imgs[0].alt.startswith("Decoded")]


def button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def stroke(at: AppTest, d: int, row: int, code: int, seq: int) -> list[list[int]]:
    """Send what the browser sends at the end of a drag along `row` of depth d's grid."""
    base = canvas(at).layer(d)
    grid = [r[:] for r in base]
    grid[row] = [code] * len(grid[row])
    key = next(k for k in at.session_state.keys() if k.startswith("painter:") and k.endswith(f":{d}"))  # noqa: SIM118
    at.session_state[key] = {"painted": {"grid": grid, "base": _rev(base), "seq": seq}}
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return grid


def test_vq_canvas_starts_blank_and_every_control_changes_the_image():
    at = open_paint("mnist-vq")
    loaded = at.session_state["loaded"]
    model, data = loaded.model, loaded.data
    labels = [b.label for b in at.button]
    assert {"Reset to blank", "Undo stroke", "Random fill", "Load from image"} <= set(labels)
    assert button(at, "Undo stroke").disabled
    assert len(decoded(at)) == 1 and len(at.caption) >= 4
    background = code_canvas.most_used(encode_all(model, data.val_x), model.codebook_sizes)[0]
    blank = canvas(at).layer(0)
    assert {c for row in blank for c in row} == {background}
    blank_image = decoded(at)

    painted = stroke(at, 0, 3, (background + 1) % model.codebook_sizes[0], seq=1)
    assert canvas(at).layer(0) == painted
    assert decoded(at) != blank_image
    assert not button(at, "Undo stroke").disabled

    button(at, "Undo stroke").click().run()
    assert canvas(at).layer(0) == blank and decoded(at) == blank_image

    at.number_input(key="paint_image").set_value(5).run()
    button(at, "Load from image").click().run()
    assert canvas(at).layer(0) == model.encode_codes(data.val_x[5:6])[0].tolist()
    five = decoded(at)
    assert five != blank_image
    at.number_input(key="paint_image").set_value(6).run()
    button(at, "Load from image").click().run()
    assert decoded(at) != five  # a different image, a different code grid

    button(at, "Random fill").click().run()
    random_grid = canvas(at).layer(0)
    assert random_grid != model.encode_codes(data.val_x[6:7])[0].tolist()
    button(at, "Random fill").click().run()
    assert canvas(at).layer(0) != random_grid  # a new draw each time
    button(at, "Reset to blank").click().run()
    assert canvas(at).layer(0) == blank and decoded(at) == blank_image
    assert not at.exception


def test_rq_paints_one_depth_and_keeps_the_others():
    at = open_paint("mnist-rq")
    depth = len(at.session_state["loaded"].model.codebook_sizes)
    radio = at.radio(key="paint_depth")
    assert radio.options == [str(d) for d in range(1, depth + 1)]
    assert len(decoded(at)) == 2  # depths 1..d, and all depths
    button(at, "Load from image").click().run()
    before = [canvas(at).layer(d) for d in range(depth)]
    images = decoded(at)

    at.radio(key="paint_depth").set_value(2).run()
    assert any("depths 1..2" in c.value for c in at.caption)
    painted = stroke(at, 1, 2, 0 if before[1][2][0] else 1, seq=1)
    after = [canvas(at).layer(d) for d in range(depth)]
    assert after[1] == painted and after[1] != before[1]
    assert after[0] == before[0] and after[2:] == before[2:]
    assert decoded(at)[1] != images[1]  # the all-depths image took the new depth-2 codes


def test_a_vae_has_nothing_to_paint():
    at = open_paint("mnist-vae")
    assert any("no codebook to paint" in i.value for i in at.info)
    assert not [k for k in at.session_state.keys() if k.startswith("painter:")]  # noqa: SIM118


def test_the_painted_canvas_is_in_the_url_and_a_shared_link_restores_it():
    at = open_paint("mnist-vq")
    painted = stroke(at, 0, 3, 5, seq=1)
    text = at.query_params["grid"]
    text = text[0] if isinstance(text, list) else text
    assert len(text) == 49

    other = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)   # another student opens the link
    other.query_params["model"] = "shipped:mnist-vq"
    other.query_params["grid"] = text
    other.run()
    other.switch_page("views/paint.py").run()
    assert not other.exception
    assert canvas(other).layer(0) == painted


def test_a_link_with_a_grid_for_another_model_starts_blank():
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.query_params["model"] = "shipped:mnist-vq"
    at.query_params["grid"] = "A" * 30
    at.run()
    at.switch_page("views/paint.py").run()
    assert not at.exception
    layer = canvas(at).layer(0)
    assert len({v for row in layer for v in row}) == 1               # the blank canvas: one background code
