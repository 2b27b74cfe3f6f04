"""Sample page, headless (AppTest) on the shipped checkpoints and priors, plus a run with no prior.

The background prior training behind the "Train a prior" button is tested in test_jobs*.py (AppTest
does not drive `run_every` fragments, and a test should not train for a minute).
"""

import json
from dataclasses import asdict

import pytest
import torch
from streamlit.testing.v1 import AppTest

from helpers import open_page, shipped
from ui import identity
from vqdemo import files, prior, runs
from vqdemo.data import DataConfig
from vqdemo.models import ModelConfig, build_model
from vqdemo.quantize import QuantizerConfig

pytestmark = pytest.mark.integration  # every test here opens a page in AppTest or starts a process

PRIOR = "Samples from the prior"
RANDOM = "Uniformly random codes"


def open_sample(model: str = "shipped:mnist-vq", **params) -> AppTest:
    if model.startswith("shipped:"):
        shipped(model.split(":", 1)[1], prior=True)
    at = open_page("sample", {"model": model, **params}, land_first=True)
    assert at.title[0].value == "Sample new images"
    return at


def images(at: AppTest) -> dict[str, str]:
    """alt text's lead (before its computed description) -> URL of every image (Streamlit names media by a hash
    of the bytes)."""
    return {im.proto.imgs[0].alt.split(": ")[0]: im.value[0] for im in at.image}


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def test_vq_samples_beside_random_codes_and_noise_and_controls_change_them():
    at = open_sample()
    shown = images(at)
    assert {PRIOR, RANDOM, "Gaussian noise through the VQ decoder", "The sampled code map decoded"} <= set(shown)
    assert metric(at, "Uniform baseline") == "294 bits"  # log2(64) x 49 codes
    bits = float(metric(at, "Bits per image"))
    assert 0 < bits < 294
    assert len(at.get("plotly_chart")) == 1  # the sampled code map
    assert at.selectbox(key="sample_label").options[0] == "any"

    at.number_input(key="sample_seed").set_value(7).run()
    reseeded = images(at)
    assert reseeded[PRIOR] != shown[PRIOR] and reseeded[RANDOM] != shown[RANDOM]
    assert at.query_params["seed"] == "7"

    at.selectbox(key="sample_label").set_value(3).run()
    assert images(at)[PRIOR] != reseeded[PRIOR] and images(at)[RANDOM] == reseeded[RANDOM]
    assert at.query_params["label"] == "3"
    at.slider(key="sample_temperature").set_value(0.5).run()
    assert at.query_params["temperature"] == "0.5"
    next(b for b in at.button if b.label == "New seed").click().run()
    assert at.number_input(key="sample_seed").value == 8
    assert not at.exception


def test_guidance_slider_is_taught_and_changes_the_samples():
    """The shipped MNIST priors were trained with label dropout, so the page offers classifier-free guidance."""
    at = open_sample(label=4, n=4)
    assert at.slider(key="sample_guidance").value == pytest.approx(prior.DEFAULT_GUIDANCE)
    caption = next(c.value for c in at.caption if "code maps drawn by the prior" in c.value)
    assert "Ho & Salimans 2022" in caption and f"guidance {prior.DEFAULT_GUIDANCE:g}" in caption
    guided = images(at)[PRIOR]
    at.slider(key="sample_guidance").set_value(1.0).run()
    assert images(at)[PRIOR] != guided and at.query_params["guidance"] == "1"
    assert any("exactly as trained" in c.value for c in at.caption)
    assert not at.exception


def test_url_settings_are_read_and_bad_ones_clamped():
    at = open_sample(seed=42, n=4, temperature="0.7", label=2, top_k=5, guidance="1.5")
    assert at.slider(key="sample_guidance").value == pytest.approx(1.5)
    assert at.number_input(key="sample_seed").value == 42
    assert at.slider(key="sample_n").value == 4
    assert at.slider(key="sample_temperature").value == pytest.approx(0.7)
    assert at.selectbox(key="sample_label").value == 2
    assert at.number_input(key="sample_top_k").value == 5
    assert any("4 code maps" in c.value and "class 2" in c.value for c in at.caption)

    at = open_sample(seed=-5, n=999, temperature="nan", label=77, top_k="lots", guidance="99")
    assert at.slider(key="sample_guidance").value == pytest.approx(5.0)
    assert at.number_input(key="sample_seed").value == 0
    assert at.slider(key="sample_n").value == 64
    assert at.slider(key="sample_temperature").value == pytest.approx(prior.DEFAULT_TEMPERATURE)
    assert at.selectbox(key="sample_label").value == -1
    assert at.number_input(key="sample_top_k").value == 0


def test_rq_samples_depth_by_depth():
    at = open_sample("shipped:mnist-rq", n=4)
    depth = len(at.session_state["loaded"].model.codebook_sizes)
    assert PRIOR in images(at) and RANDOM in images(at)
    assert any("depths 1, 1..2" in c.value for c in at.caption)
    assert any("one per depth" in c.value for c in at.caption)
    traces = json.loads(at.get("plotly_chart")[0].proto.spec)["data"]
    assert [t["type"] for t in traces] == ["heatmap"] * depth
    assert metric(at, "Uniform baseline") == f"{depth * 6 * 49} bits"


OWNER_SECRET = "0123456789abcdef" * 2   # the cookie of the student who trained the run


def test_a_run_without_a_prior_says_so_and_offers_training_to_its_owner(tmp_path):
    root = tmp_path / "runs"  # conftest points VQDEMO_RUNS_DIR here
    run = root / "tiny"
    cfg = ModelConfig(kind="vq", hidden=16, res_blocks=0, res_hidden=4, vq=QuantizerConfig(k=16, dim=8))
    meta = {"model": cfg.to_dict(), "data": asdict(DataConfig(name="digits", max_images=200)), "kind": "vq",
            "owner": identity.public_id(OWNER_SECRET)}
    torch.manual_seed(0)
    files.write_json(run / "config.json", meta)
    runs.save_weights(run / runs.WEIGHTS, build_model(cfg), meta)
    files.write_json(run / "status.json", {"state": "done"})

    other = open_sample("run:tiny")   # another student: no way to start (and later stop) this run's prior
    assert not any(b.label.startswith("Train a prior") for b in other.button)
    assert any("Only the student who trained this run" in c.value for c in other.caption)
    at = open_sample("run:tiny", me=OWNER_SECRET)
    assert any("has no prior yet" in w.value for w in at.warning)
    assert any(b.label.startswith("Train a prior") for b in at.button)
    assert any("vqdemo prior train" in c.value for c in at.code)
    shown = images(at)
    assert PRIOR not in shown and RANDOM in shown and "Gaussian noise through the VQ decoder" in shown
    assert not at.metric
    assert all(sl.key != "sample_guidance" for sl in at.slider)  # no prior, so nothing to guide
