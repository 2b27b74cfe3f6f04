"""The pages' notebooks: the URL read with the pages' own names and bounds (bad input refused in one line), every
page's notebook built, executed top to bottom on a fresh kernel, and the "Open as a notebook" button on the pages."""

import os
import re
import shutil
import sys
from pathlib import Path

import nbformat
import pytest

from helpers import open_page, shipped
from vqdemo import cli, notebook, page_urls

REPO = Path(__file__).resolve().parents[1]
# each page's notebook with small budgets: the test runs the notebooks as a student would, only shorter
SMALL = {"train": "budget=steps&steps=20&k=16", "reconstruct": "n=4&start=10", "codebook": "proj=PCA&code=3",
         "paint": "", "sample": "n=4&temperature=0.8", "playground": "steps=200&k=16&init=uniform"}


@pytest.mark.parametrize("query, message", [
    ("k=17", "k='17' is not a setting this page takes: one of 2, 4"),
    ("K=16", "the train page has no setting 'K'"),
    ("beta=9", "a number in [0, 2]"),
    ("beta=nan", "beta='nan'"),
    ("data=folder", "data=folder is an upload to the app"),
    ("kind=rq&depth=99", "depth='99'"),
])
def test_a_bad_train_link_is_refused_in_one_line(query, message):
    with pytest.raises(ValueError, match=None) as e:
        notebook.build("train", query)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_unknown_pages_models_and_kinds_are_refused():
    for page, query, message in [("learn", "", "unknown page 'learn'"),
                                 ("sample", "model=../../etc", "names no model"),
                                 ("reconstruct", "model=shipped:nowhere", "no model with weights"),
                                 ("paint", "model=shipped:mnist-fsq", "needs a VQ or RQ model"),
                                 ("codebook", "model=shipped:mnist-vae", "is a VAE")]:
        with pytest.raises(ValueError, match=message):
            notebook.build(page, query)


def test_the_apps_own_url_is_read_as_the_page_reads_it():
    """The button passes the page's URL: junk is the default, numbers clamp, other pages' names are ignored."""
    values = page_urls.page_settings("sample", {"n": "999", "seed": "x", "present": "1", "runs": "a,b"}, strict=False)
    assert values["n"] == 64 and values["seed"] == 0 and "runs" not in values
    full_url = page_urls.page_settings("reconstruct", "http://host:8501/reconstruct?n=4&model=shipped:mnist-rq")
    assert full_url == {"n": 4, "start": 0, "depth": 1, "model": "shipped:mnist-rq"}


def test_every_page_builds_a_valid_notebook_that_ends_with_exercises():
    for page in page_urls.PAGES:
        nb = notebook.build(page, SMALL[page])
        nbformat.validate(nb)
        assert nb.cells[0].cell_type == "markdown" and nb.cells[-1].source.startswith("## Exercises")
        code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
        assert "import ui" not in code and "streamlit" not in code   # the public library API only
        assert nb.metadata["vqdemo"]["page"] == page


def test_the_settings_reach_the_cells():
    nb = notebook.build("playground", "k=32&beta=0.5&q=fsq")
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "'k': 32" in code and "'beta': 0.5" in code and "'quantizer': 'fsq'" in code
    train = "\n".join(c.source for c in notebook.build("train", "k=16&init=normal&restart=0").cells)
    assert "'k': 16" in train and "'init': 'normal'" in train and "'restart_dead': False" in train


def test_the_command_line_writes_a_notebook_and_refuses_bad_input(tmp_path, capsys):
    out = tmp_path / "hw" / "codebook.ipynb"
    assert cli.main(["notebook", "--page", "codebook", "--url", "?depth=2&model=shipped:mnist-rq", "-o", str(out)]) == 0
    assert nbformat.read(out, as_version=4).metadata["vqdemo"]["settings"]["depth"] == 2
    assert cli.main(["notebook", "--page", "sample", "--url", "n=0", "-o", str(out)]) == 2
    assert "n='0' is not a setting this page takes: a whole number in [1, 64]" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["notebook", "--page", "lesson", "-o", str(out)])


@pytest.mark.parametrize("page", ["reconstruct", "codebook", "sample"])
def test_the_pages_read_their_url_settings_from_the_library(page):
    """One definition per URL name and bound: views/<page>.py takes every setting its notebook knows from page_urls
    (narrowed to the loaded model where it must be), and builds no Param of its own."""
    view = (REPO / "views" / f"{page}.py").read_text()
    assert set(re.findall(rf'page_param\("{page}", "(\w+)"', view)) == set(page_urls.PARAMS[page])
    assert "state.Param(" not in view


@pytest.mark.integration
def test_the_playground_page_and_its_notebook_take_the_same_settings():
    at = open_page("playground", {"k": "32", "beta": "0.5"})
    button = at.get("download_button")
    assert button, "no Open as a notebook button on the Playground"
    view = (Path(__file__).resolve().parents[1] / "views" / "playground.py").read_text()
    read = set(re.findall(r'"pg_\w+": "(\w+)"', view))   # the page writes only what differs from the default
    assert read and read == set(page_urls.PARAMS["playground"])   # the page's URL names are the notebook's


@pytest.mark.integration
@pytest.mark.parametrize("page", ["train", "reconstruct", "codebook", "paint", "sample"])
def test_the_pages_offer_their_setup_as_a_notebook(page):
    shipped("mnist-vq")
    at = open_page(page, {"model": "shipped:mnist-vq"}, land_first=True)
    assert at.get("download_button"), f"no Open as a notebook button on {page}"


def execute(nb, tmp_path: Path, monkeypatch) -> nbformat.NotebookNode:
    """Run a notebook top to bottom on a fresh python3 kernel in tmp_path; any cell's error fails the test."""
    from nbclient import NotebookClient

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("VQDEMO_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("PLOTLY_RENDERER", "plotly_mimetype")   # figures as JSON, not the whole plotly.js
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    return nb


def outputs(nb, mime: str) -> int:
    return sum(mime in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize("page", page_urls.PAGES)
def test_every_pages_notebook_runs_top_to_bottom(page, tmp_path, monkeypatch):
    nb = execute(notebook.build(page, SMALL[page]), tmp_path, monkeypatch)
    assert outputs(nb, "application/vnd.plotly.v1+json") >= 2   # the page's figures, drawn


@pytest.mark.slow
@pytest.mark.integration
def test_a_runs_notebook_retrains_its_recipe_where_the_run_is_missing(tmp_path, monkeypatch):
    """As in Colab after pip install: the run folder is not there, so the notebook trains the run's own recipe."""
    run = tmp_path / "elsewhere" / "my-run"
    shutil.copytree(shipped("mnist-vq"), run, ignore=shutil.ignore_patterns("prior"))
    nb = notebook.build("train", "", run=run, retrain_seconds=3)
    shutil.rmtree(run)
    nb = execute(nb, tmp_path, monkeypatch)
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "trained here from its recipe" in text and (tmp_path / "runs" / "notebook-my-run").is_dir()


def test_the_notebook_needs_no_app(tmp_path):
    """The library's notebook export imports no streamlit (it is installed without the app)."""
    import subprocess

    code = "import sys, vqdemo.notebook; assert 'streamlit' not in sys.modules and 'ui' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
