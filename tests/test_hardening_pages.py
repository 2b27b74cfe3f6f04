"""Items 2, 3, 7 and the Low page and CLI items of the second review, under AppTest and the CLI in process.

A run folder is planted with hostile content (a data config that asks for a download, unknown keys, lists, a kind
that is not its weights', a model that does not fit its data, prior metadata that is a list, huge finite weights,
K over 4,096, markdown in titles and class names); every page answers with a message, never a traceback, and shows
user text as text. Chromium checks of the same strings are in tests/browser/test_hardening_browser.py.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import tomllib
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from streamlit.testing.v1 import AppTest

from helpers import open_page, tiny_config
from vqdemo import app_limits, cli, files, prior, runs
from vqdemo.data import DataConfig
from vqdemo.fit import fit
from vqdemo.models import ModelConfig, build_model
from vqdemo.quantize import QuantizerConfig
from vqdemo.trainer import TrainConfig

REPO = Path(__file__).resolve().parents[1]
PAGES = ["learn", "reconstruct", "codebook", "paint", "sample", "compare"]
EVIL_TITLE = ("[answers](http://evil.example/a) ![x](http://evil.example/t.png) <img src=http://evil.example/i.png> "
              ":red[x] $x$")
EVIL_CLASSES = ["[c](http:evil.example)", "![i](http:evil.example)", "<a href='http:evil.example'>x"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One tiny trained run (digits, 2 steps), copied by each test that plants something in it."""
    out = tmp_path_factory.mktemp("trained") / "20260101-000000-base00"
    fit(tiny_config(), DataConfig(name="digits", max_images=40), TrainConfig(steps=2, batch_size=4), out_dir=out,
        meta={"title": "base"})
    return out


def planted(trained: Path, root: Path, name: str, meta_change=None, tensors_change=None, config_change=None) -> str:
    """A copy of the trained run under root with its weights' header meta, tensors or config.json changed."""
    run = root / name
    shutil.copytree(trained, run)
    tensors, meta = runs.read_weights(run / runs.WEIGHTS)
    if meta_change:
        meta = meta_change(meta)
    if tensors_change:
        tensors_change(tensors)
    save_file(tensors, str(run / runs.WEIGHTS), metadata={"vqdemo": json.dumps(meta)})
    config = runs.read_json(run / "config.json")
    changed = config_change(config) if config_change else {**config, **(meta if isinstance(meta, dict) else {})}
    files.write_json(run / "config.json", changed)
    return f"run:{name}"


def open_model_page(page: str, model: str, **query) -> AppTest:
    return open_page(page, {"model": model, **query}, check=False)


def shown(at: AppTest) -> list[str]:
    out = []
    for kind in ("markdown", "caption", "info", "warning", "error", "success", "metric", "title", "subheader"):
        for el in getattr(at, kind):
            out.append(str(getattr(el, "value", "")))
            if kind == "metric":
                out.append(str(el.label))
    return out


def unescaped(values) -> list[str]:
    """Element texts as the student reads them (ui.text.md backslash-escapes punctuation)."""
    return [re.sub(r"\\(.)", r"\1", str(v.value)) for v in values]


def with_data(data):
    return lambda meta: {**meta, "data": data}


BAD_DATA = {
    "download": {"name": "mnist-full", "path": "DL", "download": True},
    "unknown-key": {"name": "digits", "max_images": 40, "evil": 1},
    "list-name": {"name": ["digits"]},
    "list-size": {"name": "digits", "image_size": [28]},
    "object-path": {"name": "folder", "path": {"a": 1}},
    "data-is-a-list": ["digits"],
    "data-is-a-string": "digits",
}


@pytest.mark.integration
@pytest.mark.parametrize("case", list(BAD_DATA))
def test_a_checkpoints_data_config_never_downloads_nor_crashes_a_page(trained, tmp_path, monkeypatch, case):
    calls = []
    monkeypatch.setattr(urllib.request, "urlopen",
                        lambda *a, **k: calls.append(a) or (_ for _ in ()).throw(OSError("no")))
    data = BAD_DATA[case]
    if isinstance(data, dict) and data.get("path") == "DL":
        data = {**data, "path": str(tmp_path / "dl")}
    model = planted(trained, tmp_path / "runs", "20260101-000001-bad000", with_data(data))
    at = open_model_page("learn", model)
    assert not at.exception, at.exception
    assert any("data" in e.lower() or "mnist" in e.lower() for e in unescaped(at.error)), unescaped(at.error)
    assert not calls and not (tmp_path / "dl").exists()


def test_the_cli_path_refuses_the_same_data_configs(trained, tmp_path, capsys):
    for i, data in enumerate(BAD_DATA.values()):
        run = tmp_path / f"r{i}"
        shutil.copytree(trained, run)
        tensors, meta = runs.read_weights(run / runs.WEIGHTS)
        data = {**data, "path": str(tmp_path / "dl")} if isinstance(data, dict) and data.get("path") == "DL" else data
        save_file(tensors, str(run / runs.WEIGHTS), metadata={"vqdemo": json.dumps({**meta, "data": data})})
        assert cli.main(["eval", str(run), "--json"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and "\n" not in err
    assert not (tmp_path / "dl").exists()


@pytest.mark.integration
@pytest.mark.parametrize("page", PAGES)
def test_a_config_whose_kind_is_not_its_weights_is_a_message(trained, tmp_path, page):
    model = planted(trained, tmp_path / "runs", "20260101-000002-kind00",
                    config_change=lambda c: {**c, "kind": "rq"})
    at = open_model_page(page, model)
    assert not at.exception, at.exception
    if page != "compare":
        assert any("config.json says rq" in e for e in unescaped(at.error)), unescaped(at.error)


def misfit_run(root: Path, name: str) -> str:
    cfg = ModelConfig(channels=3, image_size=64, hidden=16, res_hidden=8, res_blocks=1, vq=QuantizerConfig(k=16, dim=8))
    run = root / name
    run.mkdir(parents=True)
    meta = {"kind": "vq", "model": cfg.to_dict(), "data": {"name": "digits", "max_images": 40}, "title": "misfit"}
    files.write_json(run / "config.json", meta)
    files.write_json(run / "status.json", {"state": "done", "reason": "", "step": 1})
    runs.save_weights(run / runs.WEIGHTS, build_model(cfg), meta)
    return run


@pytest.mark.integration
@pytest.mark.parametrize("page", PAGES)
def test_a_model_that_does_not_fit_its_data_is_a_message(tmp_path, page):
    run = misfit_run(tmp_path / "runs", "20260101-000003-misfit")
    at = open_model_page(page, f"run:{run.name}")
    assert not at.exception, at.exception
    if page != "compare":
        assert any("does not fit" in e for e in unescaped(at.error)), unescaped(at.error)


def test_eval_of_a_model_that_does_not_fit_its_data_is_one_line(tmp_path, capsys):
    run = misfit_run(tmp_path, "misfit")
    assert cli.main(["eval", str(run)]) == 2
    assert "does not fit" in capsys.readouterr().err


@pytest.mark.integration
@pytest.mark.parametrize("value", [1e30, 1e7, -1e20])
def test_huge_finite_weights_are_refused_at_load(trained, tmp_path, capsys, value):
    def scale(tensors):
        name = next(k for k in tensors if k.endswith("weight") and "encoder" in k)
        tensors[name] = torch.full_like(tensors[name], value)

    model = planted(trained, tmp_path / "runs", "20260101-000004-huge00", tensors_change=scale)
    for page in ("codebook", "learn"):
        at = open_model_page(page, model)
        assert not at.exception, at.exception
        assert any("overflow" in e for e in unescaped(at.error)), unescaped(at.error)
    assert cli.main(["eval", str(tmp_path / "runs" / model[4:]), "--json"]) == 2


def test_eval_json_is_strict_even_when_a_figure_is_not_finite(monkeypatch, capsys, trained):
    monkeypatch.setattr(cli, "evaluate", lambda run: {"psnr": float("nan"), "mse": float("inf"), "kind": "vq",
                                                       "codebook_sizes": [64], "nested": [float("-inf")]})
    assert cli.main(["eval", str(trained), "--json"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))["psnr"] is None


@pytest.mark.integration
@pytest.mark.parametrize("meta", ["[1, 2]", '"prior"', "42", "null", "[" * 5000])
def test_prior_metadata_that_is_not_an_object_is_refused(trained, tmp_path, capsys, meta):
    run = tmp_path / "runs" / "20260101-000005-prior0"
    shutil.copytree(trained, run)
    (run / prior.PRIOR_DIR).mkdir()
    save_file({"w": torch.zeros(1)}, str(run / prior.PRIOR_DIR / runs.WEIGHTS), metadata={"vqdemo": meta})
    assert cli.main(["prior", "sample", str(run), "--out", str(tmp_path / "s.png")]) == 2
    assert capsys.readouterr().err.startswith("error:")
    at = open_model_page("sample", f"run:{run.name}")
    assert not at.exception, at.exception
    assert any("could not be loaded" in e for e in unescaped(at.error)), unescaped(at.error)


@pytest.mark.integration
def test_paint_refuses_a_model_with_more_than_4096_codes(tmp_path):
    cfg = ModelConfig(hidden=8, res_hidden=4, res_blocks=0, vq=QuantizerConfig(k=8192, dim=4))
    run = tmp_path / "runs" / "20260101-000006-bigk00"
    run.mkdir(parents=True)
    meta = {"kind": "vq", "model": cfg.to_dict(), "data": {"name": "digits", "max_images": 40}, "title": "big K"}
    files.write_json(run / "config.json", meta)
    runs.save_weights(run / runs.WEIGHTS, build_model(cfg), meta)
    at = open_model_page("paint", f"run:{run.name}")
    assert not at.exception, at.exception
    assert any("4,096" in i for i in unescaped(at.info)), unescaped(at.info)


@pytest.mark.integration
@pytest.mark.parametrize("query", ["shipped:mnist-vq,shipped:mnist-vq",
                                   "shipped:mnist-vq,shipped:mnist-vq,shipped:mnist-rq", "a,a,a", ",,,"])
def test_compare_with_repeated_runs_in_the_url(query):
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.query_params["runs"] = query
    at.switch_page("views/compare.py").run()
    assert not at.exception, at.exception


@pytest.mark.integration
def test_a_refused_checkpoint_is_refused_once_per_file_version(trained, tmp_path, monkeypatch):
    model = planted(trained, tmp_path / "runs", "20260101-000007-refuse",
                    tensors_change=lambda t: t.update(extra=torch.zeros(1)))
    calls = []
    real = runs.load_model
    monkeypatch.setattr(runs, "load_model", lambda *a, **k: calls.append(a) or real(*a, **k))
    for page in ("learn", "codebook", "learn"):
        at = open_model_page(page, model)
        assert not at.exception and any("does not fit its config" in e for e in unescaped(at.error))
    assert len(calls) == 1


def evil_zip(path: Path) -> Path:
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(buf, "w") as z:
        for name in EVIL_CLASSES:
            for i in range(6):
                im = Image.fromarray((rng.random((16, 16, 3)) * 255).astype(np.uint8))
                png = io.BytesIO()
                im.save(png, "PNG")
                z.writestr(f"{name}/{i}.png", png.getvalue())
    path.write_bytes(buf.getvalue())
    return path


@pytest.fixture(scope="module")
def hostile_runs(tmp_path_factory) -> Path:
    """A runs folder with a run titled in markdown and HTML, trained on a zip whose class names are too."""
    root = tmp_path_factory.mktemp("hostile") / "runs"
    zip_path = evil_zip(tmp_path_factory.mktemp("zips") / "evil.zip")
    fit(tiny_config(), DataConfig(name="folder", path=str(zip_path), image_size=16), TrainConfig(steps=2, batch_size=4),
        out_dir=root / "20260101-000000-evil00", meta={"title": EVIL_TITLE, "owner": "<b>me</b>"})
    return root


LIVE = [re.compile(p) for p in (r"(?<!\\)\]\((?!\))", r"(?<!\\)!\[", r"(?<!\\)<(a|img)\b", r"(?<!\\):red\[",
                                r"(?<!\\)\$x")]


@pytest.mark.integration
@pytest.mark.parametrize("page", PAGES + ["train", "classroom", "lesson", "playground"])
def test_titles_and_class_names_are_shown_as_text_on_every_page(hostile_runs, monkeypatch, page):
    monkeypatch.setenv("VQDEMO_RUNS_DIR", str(hostile_runs))
    at = open_model_page(page, "run:20260101-000000-evil00", runs="run:20260101-000000-evil00,shipped:mnist-vq",
                         by="label", proj="PCA")
    assert not at.exception, at.exception
    texts = [t for t in shown(at) if "evil" in t]
    assert page not in ("learn", "sample", "paint") or texts, "the hostile strings should be on this page, escaped"
    assert page != "classroom" or any("evil" in s for s in (el.proto.spec for el in at.get("plotly_chart")))
    for t in texts:
        assert not any(p.search(t) for p in LIVE), t
    specs = [el.proto.spec for el in at.get("plotly_chart")]   # legends, titles, hover text: HTML-escaped
    assert not [s for s in specs if "evil" in s and re.search(r"<(a|img)\b", s)]
    assert page != "codebook" or any("&lt;a href" in s for s in specs)   # the class names are in its legend


@pytest.mark.integration
def test_zip_runs_keep_their_data_when_uploads_are_cleared(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    monkeypatch.setenv("VQDEMO_RUNS_DIR", str(root))
    upload = evil_zip((root / "uploads").mkdir(parents=True) or root / "uploads" / "abc.zip")
    out = root / "20260101-000000-zip000"
    fit(tiny_config(), DataConfig(name="folder", path=str(upload), image_size=16), TrainConfig(steps=1, batch_size=4),
        out_dir=out)
    shutil.rmtree(root / "uploads")   # as docs/SECURITY.md advises between classes
    at = open_model_page("learn", f"run:{out.name}")
    assert not at.exception and not at.error, unescaped(at.error)


def test_the_server_caps_uploads_at_the_largest_widget_limit():
    """The browser-side check is not a limit; .streamlit/config.toml sets the server's (checked against the upload
    endpoint itself in tests/browser/test_hardening_browser.py)."""
    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert config["server"]["maxUploadSize"] == max(app_limits.MAX_ZIP_MB, app_limits.MAX_IMAGE_MB) == 64
    assert config["browser"]["gatherUsageStats"] is False


HOSTILE_TEXT = [EVIL_TITLE, *EVIL_CLASSES, "http://evil.example", "https://evil.example/x", "www.evil.example",
                "me@evil.example", "<a href='http://evil.example'>x</a>", "<img src=x onerror=alert(1)>",
                "**bold** _it_", "`code`", "# heading", "- list", "1. list", "> quote", "| a | b |",
                ":red[x] :material/home:", "$x^2$", "~~strike~~", "[ref]: http://evil.example", "<http://evil.example>",
                "\\[escaped\\](x)", "line\nbreak\u202eevil", "\x00null", "a" * 10_000]
MARKDOWN_LIVE = LIVE + [re.compile(p) for p in (r"https?://", r"(?i)www\.", r"\w@\w", r"(?<!\\)\*\*", r"(?<!\\)`",
                                                r"^#", r"^[-+] ", r"^\d+\. ", r"^>", r"\n", r"\u202e", r"(?<!\\)~~")]


@pytest.mark.parametrize("raw", HOSTILE_TEXT, ids=[f"text{i}" for i in range(len(HOSTILE_TEXT))])
def test_the_text_helper_leaves_nothing_markdown_or_html_could_act_on(raw):
    from ui import text

    shown_md = text.md(raw)
    assert not [p.pattern for p in MARKDOWN_LIVE if p.search(shown_md)], shown_md
    assert len(text.plain(raw)) <= text.MAX_CHARS
    assert "<" not in text.plotly(raw) and ">" not in text.plotly(raw)
    assert "%" not in text.plotly_template(raw + "%{x}")
