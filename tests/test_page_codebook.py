"""Codebook page, headless (AppTest) on the shipped checkpoints.

The UMAP projection runs in a background thread that AppTest cannot drive (and that would keep the test
process alive for half a minute), so these tests ask for PCA via the URL; the background machinery is
tested in test_explain.py and the swap itself in the browser test.
"""

import base64
import json
import re

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from helpers import open_page, shipped
from vqdemo import analysis

pytestmark = pytest.mark.integration  # every test here opens a page in AppTest or starts a process


def open_codebook(model: str = "mnist-vq", **params) -> AppTest:
    shipped(model)
    at = open_page("codebook", {"model": f"shipped:{model}", "proj": "PCA", **params}, land_first=True)
    assert at.title[0].value.startswith("Codebook")
    return at


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


@pytest.mark.parametrize("model", ["mnist-vq", "mnist-rq"])
def test_codebook_renders_usage_that_matches_the_model(model):
    at = open_codebook(model)
    loaded = at.session_state["loaded"]
    codes = analysis.encode_all(loaded.model, loaded.data.val_x)
    codes = codes[:, 0] if codes.dim() == 4 else codes
    counts = analysis.usage(codes, loaded.model.codebook_sizes[0])
    k = len(counts)
    assert metric(at, "Codebook size K") == str(k)
    assert metric(at, "Codes used") == f"{int((counts > 0).sum())} of {k}"
    assert metric(at, "Dead codes") == str(int((counts == 0).sum()))
    assert len(at.get("plotly_chart")) >= 3  # tiles, usage, 2-D map
    assert any(c.value.startswith("PCA of") for c in at.caption)
    assert at.selectbox(key="cb_code").value is not None
    assert len(at.caption) >= 4


def test_picking_a_code_shows_where_it_is_used_and_goes_in_the_url():
    at = open_codebook()
    counts = analysis.usage(analysis.encode_all(at.session_state["loaded"].model,
                                                at.session_state["loaded"].data.val_x), 64)
    busy = [int(c) for c in counts.argsort(descending=True)[:2]]
    for code in busy:
        at.selectbox(key="cb_code").set_value(code).run()
        assert not at.exception
        assert any(f"use code #{code} most" in c.value for c in at.caption)
        assert at.query_params["code"] in (str(code), [str(code)])


def test_colour_by_label_and_rq_depths():
    at = open_codebook("mnist-rq", depth=1)
    perplexity_1 = metric(at, "Perplexity")
    at.select_slider(key="cb_depth").set_value(4).run()
    assert not at.exception
    assert metric(at, "Perplexity") != perplexity_1  # another depth, another codebook
    at.radio(key="cb_by").set_value("label").run()
    assert not at.exception
    spec = str(at.get("plotly_chart")[2].proto.spec)
    assert '"name":"3"' in spec  # one trace per digit


def test_junk_url_state_falls_back():
    at = open_codebook(code="-7", by="nonsense")
    assert at.selectbox(key="cb_code").value == 0
    assert at.radio(key="cb_by").value == "code"


def test_the_collapse_lesson_blames_where_the_codes_start():
    at = open_codebook()
    assert any(h.value.startswith("Where the codes start") for h in at.subheader)
    text = " ".join([m.value for m in at.markdown] + [c.value for c in at.caption])
    assert "starts far from the encoder's outputs" in text
    assert "seeds'" not in text and "seed 00" not in text.lower()
    start = next(c.value for c in at.caption if c.value.startswith("A freshly built model"))
    gaps = [float(v) for v in re.findall(r"start (?:a median )?([0-9.]+) (?:from|away)", start)]
    assert len(gaps) == 2 and gaps[0] > 5 * gaps[1]  # N(0, 1) codes start far out, U(-1/K, 1/K) ones near


def _array(value) -> list:
    """A figure's array as a list: Plotly writes numpy arrays as {"dtype", "bdata" (base64), "shape"}."""
    if isinstance(value, dict) and "bdata" in value:
        flat = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        shape = [int(n) for n in str(value.get("shape", len(flat))).split(",")]
        return flat.reshape(shape).tolist()
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _chart(at: AppTest, key: str) -> dict:
    return json.loads(next(c for c in at.get("plotly_chart") if key in c.proto.id).proto.spec)


def _highlighted(at: AppTest) -> dict:
    """What each chart shows as highlighted: the outlined bar's code, the map's ringed code, and the tiles' picture."""
    usage, tiles, chart_map = _chart(at, "cb_usage"), _chart(at, "cb_tiles"), _chart(at, "cb_map")
    outlined = [int(cd[0]) for tr in usage["data"]
                for cd, w in zip(_array(tr["customdata"]), _array(tr["marker"]["line"]["width"])) if w > 0]
    ringed = [int(_array(tr["customdata"])[0][0]) for tr in chart_map["data"] if tr["name"].startswith("code #")]
    return {"bar": outlined, "map": ringed, "tiles": tiles["data"][0]["source"]}


def test_a_picked_code_is_highlighted_on_every_chart_and_can_be_cleared():
    at = open_codebook(code="12", hl="1")
    assert at.session_state["cb_code"] == 12 and at.session_state["cb_hl"] is True
    on = _highlighted(at)
    assert on["bar"] == [12] and on["map"] == [12]
    assert any(m.value.startswith("**Code #12**") for m in at.markdown)
    assert at.query_params["hl"] in ("1", ["1"])

    at.selectbox(key="cb_code").set_value(5).run()      # another pick moves the highlight everywhere
    moved = _highlighted(at)
    assert moved["bar"] == [5] and moved["map"] == [5] and moved["tiles"] != on["tiles"]

    at.button(key="cb_clear").click().run()
    assert not at.exception
    off = _highlighted(at)
    assert off["bar"] == [] and off["map"] == [] and off["tiles"] not in (on["tiles"], moved["tiles"])
    assert at.query_params["hl"] in ("0", ["0"]) and at.session_state["cb_code"] == 5
    assert any("to highlight that code on every chart" in c.value for c in at.caption)


def test_a_link_from_learn_highlights_its_code_even_after_a_clear():
    at = open_codebook(code="12", hl="1")
    at.button(key="cb_clear").click().run()
    assert _highlighted(at)["bar"] == []
    at.switch_page("views/learn.py").run()
    at.query_params.update({"code": "5", "hl": "1"})   # what Learn's "Code #5 among all 64 codes" link does
    at.switch_page("views/codebook.py").run()
    assert not at.exception
    assert _highlighted(at)["bar"] == [5] and at.selectbox(key="cb_code").value == 5
