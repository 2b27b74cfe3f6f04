"""Learn page, headless (AppTest) on the shipped checkpoints: renders, reads and clamps its URL state,
and its text follows the controls."""

import re

import pytest
from streamlit.testing.v1 import AppTest

from helpers import open_page, shipped
from vqdemo import explain, runs

pytestmark = pytest.mark.integration  # every test here opens a page in AppTest or starts a process


def open_learn(model: str = "mnist-vq", **params) -> AppTest:
    shipped(model)
    return open_page(None, {"model": f"shipped:{model}", **params})  # Learn is the default page


def text(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown)


def cell_line(at: AppTest) -> str:
    return next(m.value for m in at.markdown if m.value.startswith("Cell ("))


def psnr_line(at: AppTest) -> str:
    return next(m.value for m in at.markdown if m.value.startswith("PSNR"))


@pytest.mark.parametrize("model", ["mnist-vq", "mnist-rq"])
def test_learn_renders_the_pipeline_with_real_shapes(model):
    at = open_learn(model)
    assert at.title[0].value.startswith("Learn")
    assert at.slider(key="learn_img").label == "Validation image"
    assert at.number_input(key="learn_row") and at.number_input(key="learn_col")
    body = text(at)
    for shape in ["`(1, 1, 28, 28)`", "`(1, 16, 7, 7)`", "`(49, 16)`", "`(49, 64)`", "`(7, 7)`"]:
        assert shape in body
    assert len(at.code) >= 6  # the distance trick, three losses and both STE forms, one line each
    assert len(at.caption) >= 5
    assert any("AE" in m.value and "VQ-VAE" in m.value for m in at.markdown)  # the comparison table


def test_rq_model_shows_the_residual_steps():
    at = open_learn("mnist-rq")
    tables = [d.value for d in at.dataframe if "depth" in d.value.columns]
    assert tables and list(tables[0]["depth"]) == [1, 2, 3, 4]
    residual_before = list(tables[0]["|residual| before (latent units)"])
    assert residual_before[-1] < residual_before[0]  # over four depths, this cell's residual has shrunk
    assert "residual scale s" in tables[0].columns   # distances and norms are on different, labelled scales
    assert any(h.value.startswith("Residual quantisation") for h in at.subheader)
    rq_caption = next(c.value for c in at.caption if "the residual grows at depth 2 for" in c.value)
    assert "shrinks depth by depth" not in rq_caption and "%" in rq_caption  # the measured fraction, not a promise
    assert any(explain.RQ_LOSS_CODE in c.value for c in at.code)  # the RQ loss, summed over depths


def test_another_image_changes_the_psnr_and_the_url():
    at = open_learn(img=0)
    before = psnr_line(at)
    at.slider(key="learn_img").set_value(7).run()
    assert not at.exception
    assert at.query_params["img"] == ["7"] or at.query_params["img"] == "7"
    assert psnr_line(at) != before


def test_another_cell_changes_the_argmin_text():
    at = open_learn(img=0, row=0, col=0)
    model, _ = runs.load_model(shipped("mnist-vq"))
    first = cell_line(at)
    code0 = int(re.search(r"code #(\d+)", first).group(1))
    at.number_input(key="learn_row").set_value(3)
    at.number_input(key="learn_col").set_value(3).run()
    second = cell_line(at)
    assert second.startswith("Cell (3, 3)")
    code33 = int(re.search(r"code #(\d+)", second).group(1))
    assert second != first
    # the page's argmin is the model's own code for that cell
    data_x = at.session_state["loaded"].data.val_x
    codes = model.encode_codes(data_x[:1])[0]
    assert (code0, code33) == (int(codes[0, 0]), int(codes[3, 3]))


def test_url_state_is_clamped_and_junk_ignored():
    at = open_learn(img=10**9, row=-4, col="abc")
    n_val = len(at.session_state["loaded"].data.val_x)
    assert at.slider(key="learn_img").value == n_val - 1
    assert at.number_input(key="learn_row").value == 0
    assert at.number_input(key="learn_col").value == 3  # junk -> the default, the centre column
    assert cell_line(at).startswith("Cell (0, 3)")


def test_the_learn_page_says_what_the_loaded_models_estimator_does():
    at = open_learn("mnist-vq")  # EMA codebook
    assert any("no gradient reaches it" in c.value for c in at.caption)


def test_no_reference_article_numbers_on_the_learn_page():
    for model in ("mnist-vq", "mnist-rq", "mnist-vae"):
        at = open_learn(model)
        shown = " ".join([m.value for m in at.markdown] + [c.value for c in at.caption]
                         + [str(d.value.columns.tolist()) + str(d.value.values.tolist()) for d in at.dataframe])
        assert "seed 00" not in shown.lower() and "seed-style" not in shown.lower() and "seed004" not in shown


def test_the_distance_trick_states_its_caveat_with_numbers_computed_now():
    at = open_learn("mnist-vq")
    caveat = next(c.value for c in at.caption if c.value.startswith("The catch"))
    assert "wrong" in caveat and "nearest_code" in caveat


def test_the_prior_link_matches_whether_the_model_has_a_prior():
    at = open_learn("mnist-vq")
    assert any("trained prior" in p.proto.label for p in at.get("page_link"))


def test_the_followed_cells_code_is_marked_in_the_map_and_linked_to_the_codebook():
    """Linked highlighting on Learn: every cell with the followed cell's code is outlined, and a link opens the
    Codebook page with that code highlighted."""
    from urllib.parse import parse_qs

    at = open_learn(row=0, col=0)   # a background cell: its code is shared by other background cells
    code = int(re.search(r"code #(\d+)", cell_line(at)).group(1))
    codes = explain.quantize_steps(at.session_state["loaded"].model,
                                   at.session_state["loaded"].model.encode(
                                       at.session_state["loaded"].data.val_x[at.slider(key="learn_img").value][None]
                                   ).detach())[0].codes[0].numpy()
    others = int((codes == code).sum()) - 1
    assert others > 0
    cellmap = next(c for c in at.get("plotly_chart") if "learn_cellmap" in c.proto.id)
    assert str(cellmap.proto.spec).count('"dash":"dot"') == others
    caption = next(c.value for c in at.caption if c.value.startswith("The code map"))
    assert f"the {others} other cells that picked the same code" in caption
    link = next(e for e in at.get("page_link") if "Codebook" in e.proto.label or "among all" in e.proto.label)
    query = parse_qs(link.proto.query_string)
    assert query["code"] == [str(code)] and query["hl"] == ["1"] and query["model"] == ["shipped:mnist-vq"]
