"""The Compare page under AppTest: the default view (shipped mnist-vq beside the other shipped models),
a run of this server joining the comparison, the selection in the URL, and fewer than two models.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from helpers import open_page, shipped, wait_for
from vqdemo import runs
from vqdemo.data import DataConfig
from vqdemo.jobs import FINISHED, JobQueue
from vqdemo.models import ModelConfig
from vqdemo.quantize import QuantizerConfig
from vqdemo.trainer import TrainConfig

pytestmark = pytest.mark.integration  # every test here opens a page in AppTest or starts a process

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 120


@pytest.fixture
def runs_dir(tmp_path, monkeypatch) -> Path:
    shipped("mnist-vq")
    monkeypatch.setenv("VQDEMO_RUNS_DIR", str(tmp_path / "runs"))
    return tmp_path / "runs"


def tiny_run(runs_dir: Path) -> str:
    """A finished 20-step run on the sklearn digits, as the Train page would leave it."""
    queue = JobQueue(1, runs_dir, threads=1)
    cfg = ModelConfig(kind="vq", hidden=16, res_blocks=1, res_hidden=8, vq=QuantizerConfig(k=8, dim=4))
    job = queue.submit("someone", "tiny K=8", cfg, DataConfig(name="digits"),
                       TrainConfig(steps=20, batch_size=16, val_every=10, log_every=5))
    wait_for(lambda: job.state in FINISHED, "the tiny run to finish", TIMEOUT_S)
    assert job.state == "done", job.view().reason
    return f"run:{job.id}"


def open_compare(query: dict | None = None) -> AppTest:
    at = open_page("compare", query)
    assert not at.error, [e.value for e in at.error]
    return at


def images(at: AppTest) -> int:
    return len(at.get("image"))


def test_default_view_compares_the_shipped_models_without_a_click(runs_dir):
    at = open_compare()
    picked = at.multiselect(key="cmp_runs").value
    shipped = sorted(p.name for p in (REPO / "checkpoints").iterdir() if (p / "model.safetensors").is_file())
    assert picked[0] == "shipped:mnist-vq"
    if len(shipped) > 1:
        assert sorted(picked) == [f"shipped:{n}" for n in shipped]
        kinds = {n: runs.read_json(REPO / "checkpoints" / n / "config.json")["kind"] for n in shipped}
        with_codebook = [n for n in shipped if kinds[n] != "vae"]
        assert len(at.get("plotly_chart")) == 4 + len(with_codebook)
        assert "Perplexity" in " ".join(c.value for c in at.caption)
        assert "runs" not in at.query_params   # the default selection keeps the URL short
    else:
        assert any("Pick two or more" in i.value for i in at.info)


def test_a_run_of_this_server_joins_and_the_selection_changes_the_view(runs_dir):
    run = tiny_run(runs_dir)
    at = open_compare({"runs": f"shipped:mnist-vq,{run}"})
    assert at.multiselect(key="cmp_runs").value == ["shipped:mnist-vq", run]
    table = at.dataframe[0].value
    assert list(table["data"]) == ["mnist", "digits"] and list(table["K"]) == ["64", "8"]
    # two datasets: each gets its own originals row, plus one reconstruction row per model
    assert images(at) == 4
    captions = " ".join(c.value for c in at.caption)
    assert "of K=8" in captions and "Models trained on different data get their own originals" in captions

    at.multiselect(key="cmp_runs").unselect(run).run()
    assert not at.exception and not at.get("plotly_chart") and images(at) == 0
    assert any("Pick two or more" in i.value for i in at.info)
    assert at.query_params["runs"] == "shipped:mnist-vq"


def test_unknown_ids_in_the_url_fall_back_to_the_default(runs_dir):
    at = open_compare({"runs": "run:../../etc,shipped:nope"})
    assert at.multiselect(key="cmp_runs").value[0] == "shipped:mnist-vq"


def test_every_compared_model_shows_its_rate_beside_its_psnr(runs_dir):
    at = open_compare({"runs": "shipped:mnist-vq,shipped:mnist-vae"})
    table = at.dataframe[0].value.set_index("model")
    rates = dict(zip(table["kind"], table["bits per image"]))
    assert rates["VQ"] == 128                    # what its shipped prior needs to code a code map
    assert int(dict(zip(table["kind"], table["uniform bound"]))["VQ"]) == 294   # 7 x 7 x log2(64) bits beside it
    assert 0 < rates["VAE"] < 294                # its KL to N(0, I), in bits
    assert any("bits per image" in c.value for c in at.caption)


def test_the_vae_is_compared_at_a_posterior_sample_and_the_vq_at_its_priors_bits(runs_dir):
    at = open_compare({"runs": "shipped:mnist-vq,shipped:mnist-vae-kl0.01"})
    table = at.dataframe[0].value.set_index("kind")
    sample, mean = (float(table.loc["VAE", name]) for name in ("PSNR, posterior sample", "best val PSNR"))
    assert 0 < sample < mean                     # the sample the KL pays for decodes worse than the mean
    summary = next(m.value for m in at.markdown if "At the rates each pays" in m.value)
    assert f"{sample:.2f} dB from a posterior sample" in summary and "its prior's code length" in summary


def test_each_kind_is_described_by_its_own_quantiser(runs_dir):
    at = open_compare({"runs": "shipped:mnist-fsq,shipped:mnist-rq,shipped:mnist-vq"})
    rows = at.dataframe[0].value.set_index("kind")
    assert (rows.loc["FSQ", "K"], rows.loc["FSQ", "D"], rows.loc["FSQ", "codebook"]) == ("8x6x5", 3, "")
    assert rows.loc["RQ", "K"] == "64,64,64,64" and rows.loc["VQ", "K"] == "64"
    assert rows.loc["VQ", "D"] == 16 and "ema" in rows.loc["VQ", "codebook"]


def test_one_colour_key_names_every_run_in_its_chart_colour_and_the_outcome_leads_the_table(runs_dir):
    import json

    at = open_compare({"runs": "shipped:mnist-vq,shipped:mnist-rq"})
    assert list(at.dataframe[0].value.columns[:3]) == ["model", "best val PSNR", "bits per image"]
    key = next(m.value for m in at.markdown if "&#9632;" in m.value)
    psnr = json.loads(next(c for c in at.get("plotly_chart") if "cmp_psnr" in c.proto.id).proto.spec)
    assert psnr["layout"]["showlegend"] is False    # the key above stands for every chart's legend
    for trace in psnr["data"]:
        square = f'color: {trace["line"]["color"]}; font-size: 1.4em">&#9632;</span>'
        assert f'{square} {trace["name"].split(" (")[0]}' in key
