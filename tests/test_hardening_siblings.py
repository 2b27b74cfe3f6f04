"""The classes of the second review, probed again after the settings refactor and the page-speed work: every URL
parameter of every page, user and exception text in every Streamlit text element, and planted model fields that the
Class page plots."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from helpers import open_page
from vqdemo import files, page_urls, runs

REPO = Path(__file__).resolve().parents[1]
PAGES = sorted(p.stem for p in (REPO / "views").glob("*.py"))


def url_names() -> set[str]:
    """Every ?name= any page reads: Param("name", ...), field_param("name", ...), SETTINGS' keys, the pages' settings in
    vqdemo/page_urls.py, and the few read as text (ui/state.py's url_text, url_list, take_from_url)."""
    names = {"model", "present", "me", "teacher", "runs", "grid", "sweep", "ks", "betas"}
    names |= {name for params in page_urls.PARAMS.values() for name in params}
    for f in [*(REPO / "views").glob("*.py"), *(REPO / "ui").glob("*.py"), REPO / "vqdemo" / "train_settings.py"]:
        for call in ast.walk(ast.parse(f.read_text())):
            if (isinstance(call, ast.Call) and getattr(call.func, "attr", getattr(call.func, "id", "")) in
                    ("Param", "field_param", "F") and call.args and isinstance(call.args[0], ast.Constant)):
                names.add(call.args[0].value)
    return names


def test_the_probe_knows_every_pages_parameters():
    """The list the URL probe below plants must not go stale as pages gain settings."""
    names = url_names()
    assert {"k", "sizes", "depth", "img", "row", "temperature", "guidance", "steps", "q", "x", "proj"} <= names


# hostile text through Param.parse, every page's reader of URL settings: tests/test_page_bounds.py
PAGE_VALUES = ["nan", "1e309", "-1", "9" * 5000, "abc", "", "<img src=x>", "1,2,3," * 40]


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("value", PAGE_VALUES, ids=[f"v{i}" for i in range(len(PAGE_VALUES))])
@pytest.mark.parametrize("page", PAGES)
def test_every_url_parameter_of_every_page_takes_any_value(page, value):
    """Every parameter any page reads, set at once to one hostile value (the model left at its default, so the
    page's own settings are read): the page draws, with its settings back inside their bounds."""
    query = {name: value for name in url_names() - {"model", "me"}}
    at = open_page(page, query, check=False)
    assert not at.exception, [e.message for e in at.exception]
    assert at.title, "the page stopped before its title"
    for name, got in at.query_params.items():
        written = got[0] if isinstance(got, list) else got
        assert written == value or len(written) <= 100, (name, written[:80])   # what a page writes back is bounded


@pytest.mark.integration
@pytest.mark.parametrize("model", ["run:../../etc", "shipped:../runs", "run:" + "9" * 5000, "<b>x</b>", ""])
def test_a_hostile_model_id_falls_back_to_a_shipped_model(model):
    at = open_page("learn", {"model": model}, check=False)
    assert not at.exception and at.query_params["model"] != model


# ---- user and exception text in Streamlit's text elements ---------------------------------------------------

SINKS = {"error", "warning", "info", "success", "toast", "markdown", "caption", "write", "metric", "subheader",
         "header", "title", "exception", "button", "expander", "radio", "selectbox", "page_link", "image", "progress"}
# what a student, a zip or an exception can put into a string, by the name it travels under
RISKY = re.compile(r"^(e|err|exc|msg|problem|reason|title|label|name|owner|why|message|text|class_names)$")
# looked at and safe: plain text, a fixed label, a dataset's name from a checked config
SAFE = {("views/classroom.py", "chosen.title", "text"), ("views/classroom.py", "label", "page_link"),
        ("ui/lesson.py", "label", "page_link"),
        ("ui/lesson.py", "step.label", "markdown"), ("views/reconstruct.py", "label", "image"),
        ("views/reconstruct.py", "data.name", "caption"), ("views/sample.py", "loaded.data.name", "info"),
        ("ui/jobs.py", "e", "error"),
        ("views/reconstruct.py", "name", "image")}   # "validation image N" + describe.label, which plains the class


NOT_STREAMLIT = {"theme"}   # theme.title pads a Plotly title; Plotly text is checked in the browser test


def _last_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Subscript):
        return _last_name(node.value)
    if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "pop":   # st.session_state.pop("..._error")
        return "e"
    return None


def unwrapped(src: str, where: str) -> list[tuple[str, str, str]]:
    """(where, expression, element) for each risky value handed to a Streamlit text element without ui/text.py."""
    found = []
    for call in ast.walk(ast.parse(src)):
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr in SINKS):
            continue
        if isinstance(call.func.value, ast.Name) and call.func.value.id in NOT_STREAMLIT:
            continue
        for arg in list(call.args) + [k.value for k in call.keywords if k.arg in ("body", "label", "caption", "help")]:
            parts = [v.value for v in ast.walk(arg) if isinstance(v, ast.FormattedValue)] \
                if isinstance(arg, (ast.JoinedStr, ast.BinOp)) else [arg]
            for part in parts:
                name = _last_name(part)
                if name and RISKY.match(name):
                    found.append((where, ast.unparse(part), call.func.attr))
    return found


def test_user_and_exception_text_reaches_the_screen_through_ui_text():
    """Exception messages carry file names, zip member names and titles (a job's failure reason, a prior's, a
    sampling error): each goes through text.md before a markdown element draws it."""
    found = [hit for f in sorted([*(REPO / "views").glob("*.py"), *(REPO / "ui").glob("*.py"), REPO / "app.py"])
             for hit in unwrapped(f.read_text(), str(f.relative_to(REPO)))]
    assert found and not [f for f in found if f not in SAFE], [f for f in found if f not in SAFE]


def test_the_text_probe_finds_what_it_looks_for():
    src = ('st.error(f"failed: {view.reason}")\nst.warning(msg)\nst.error(st.session_state.pop("x_error"))\n'
           'st.error(f"failed: {text.md(view.reason)}")\nst.caption(f"{n} images")\n')
    assert [expr for _, expr, _ in unwrapped(src, "x")] == ["view.reason", "msg", "st.session_state.pop('x_error')"]


# ---- planted model fields the Class page plots ----------------------------------------------------------------

HOSTILE_MODELS = [
    {"vq": {"k": 10 ** 400, "beta": 0.25}}, {"vq": {"k": 64, "beta": 1e308}}, {"vq": {"k": 64, "beta": -1e308}},
    {"vq": {"k": "64", "beta": 0.25}}, {"vq": {"k": 64.5, "beta": 0.25}}, {"vq": {"k": True, "beta": 0.25}},
    {"vq": {"k": 64, "beta": "x"}}, {"vq": [1]}, {"kind": "rq", "vq": {"k": 64, "beta": 0.25},
                                                 "rq": {"codebook_sizes": [10 ** 400]}},
    {"kind": "rq", "vq": {"k": 64, "beta": 0.25}, "rq": {"codebook_sizes": ["a"]}},
    {"kind": "rq", "vq": {"k": 64, "beta": 0.25}, "rq": {"codebook_sizes": 5}},
    {"vq": {"k": 2 ** 62, "beta": 0.25}},
]
HOSTILE_BEST = [{"psnr": 20.0, "perplexity": 1e308}, {"psnr": 1e308, "perplexity": 3.0},
                {"psnr": 20.0, "perplexity": -5}]


@pytest.mark.integration
def test_the_class_page_plots_planted_model_fields_without_failing(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    monkeypatch.setenv("VQDEMO_RUNS_DIR", str(root))
    for i, model in enumerate(HOSTILE_MODELS):
        for j, best in enumerate(HOSTILE_BEST):
            run = root / f"20260101-00{i:02d}{j:02d}-cl{i:02d}{j:02d}"
            run.mkdir(parents=True)
            files.atomic_write_text(run / runs.CONFIG, json.dumps({"kind": model.get("kind", "vq"), "title": "t",
                                                                     "model": {"kind": "vq", **model}}))
            files.write_json(run / runs.STATUS, {"state": "done", "reason": "ok", "step": 5, "best": best})
    at = open_page("classroom", check=False)
    assert not at.exception, [e.message for e in at.exception]
    assert not at.error, [e.value for e in at.error]


# ---- every CLI flag, generated from the parser (a flag added later is probed too) ------------------------------

def train_flags() -> list[str]:
    from vqdemo import cli

    train = next(a for a in cli.build_parser()._subparsers._group_actions[0].choices.items() if a[0] == "train")[1]
    return sorted(o for a in train._actions if a.nargs != 0 and a.option_strings for o in a.option_strings[:1]
                  if o not in ("--help", "--out", "--data-path"))


CLI_VALUES = ["nan", "inf", "-inf", "1e309", "-1", "9" * 30, "x", "", "1,2,x"]
CLI_CASES = [(flag, v) for flag in train_flags() for v in CLI_VALUES]


@pytest.mark.parametrize("flag,value", CLI_CASES, ids=[f"{f}={v[:12]}" for f, v in CLI_CASES])
def test_every_train_flag_is_one_line_or_a_valid_run(monkeypatch, tmp_path, capsys, flag, value):
    """Refused in one line, or accepted (then every config was built and checked before a folder would be made)."""
    from vqdemo import cli
    from vqdemo import fit as fitting

    reached = []
    monkeypatch.setattr(fitting, "fit", lambda *a, **k: reached.append("fit") or (_ for _ in ()).throw(SystemExit(0)))
    monkeypatch.setattr(cli, "new_run_dir", lambda *a, **k: reached.append("folder") or tmp_path / "run")
    monkeypatch.chdir(tmp_path)
    extra = ["--model", "rq"] if flag in ("--depth", "--ks", "--progressive-steps", "--shared", "--norm-residual") \
        else []
    budget = [] if flag in ("--steps", "--seconds") else ["--steps", "5"]
    try:
        code = cli.main(["train", "--dataset", "digits", *budget, *extra, f"{flag}={value}"])
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if not reached:
        lines = [line for line in err.strip().splitlines() if line.strip()]
        assert code not in (0, None) and len(lines) == 1 and lines[0].startswith("error:"), (code, err)


# ---- planted files in the priors' mirror folder (<runs>/priors/), read by the Sample page --------------------

MIRROR_FILES = {"model.safetensors": b"\x10\x00\x00\x00\x00\x00\x00\x00{}", "config.json": b'{"role": ["prior"]}',
                "status.json": b'{"best": [1, 2], "step": "x"}', "metrics.jsonl": b'[1]\n{"type": "val", "step": 1}\n'}


@pytest.fixture(scope="module")
def vq_run(tmp_path_factory) -> Path:
    """A VQ run without a prior: the Sample page looks for one in <run>/prior/, then in the mirror."""
    from helpers import tiny_config
    from vqdemo.data import DataConfig
    from vqdemo.fit import fit
    from vqdemo.trainer import TrainConfig

    out = tmp_path_factory.mktemp("vq") / "20260101-000000-vqrun0"
    fit(tiny_config(), DataConfig(name="digits", max_images=64), TrainConfig(steps=1, batch_size=4), out_dir=out)
    return out


@pytest.mark.integration
@pytest.mark.parametrize("where", ["own", "mirror"])
@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "hostile"])
def test_planted_prior_files_never_hang_the_sample_page(tmp_path, monkeypatch, vq_run, kind, where):
    import os
    import shutil
    import threading

    from vqdemo.prior import PRIOR_DIR, prior_mirror

    root = tmp_path / "runs"
    monkeypatch.setenv("VQDEMO_RUNS_DIR", str(root))
    run = root / vq_run.name
    shutil.copytree(vq_run, run)
    folder = run / PRIOR_DIR if where == "own" else prior_mirror(run, root)
    folder.mkdir(parents=True)
    for name, content in MIRROR_FILES.items():
        if kind == "fifo":
            os.mkfifo(folder / name)
        elif kind == "dev-zero":
            (folder / name).symlink_to("/dev/zero")
        else:
            (folder / name).write_bytes(content)
    box: dict = {}
    t = threading.Thread(target=lambda: box.update(at=open_page("sample", {"model": f"run:{run.name}"}, check=False)),
                         daemon=True)
    t.start()
    t.join(120)
    assert not t.is_alive(), "the Sample page hung on a planted prior file"
    at = box["at"]
    assert not at.exception, [e.message for e in at.exception]
    assert kind != "hostile" or any("prior" in e.value for e in at.error), [e.value for e in at.error]


# ---- a loadable run whose config.json or status.json was edited: the pages that describe it --------------------

HOSTILE_CONFIG_MODEL = [{"vq": [1]}, {"vq": {"k": [1]}, "rq": "x"}, {"rq": {"codebook_sizes": 5, "shared": "yes"}},
                        {"kind": "vq", "vq": {"k": 10 ** 400, "beta": "x", "codebook": ["ema"]}}, "model"]
HOSTILE_STATUS_FILES = ['[1, 2]', '"done"', '{"best": {"kl": "x", "psnr": "y"}}', '{"best": [1]}', "{" * 100]


@pytest.mark.integration
@pytest.mark.parametrize("case", range(len(HOSTILE_CONFIG_MODEL) + len(HOSTILE_STATUS_FILES)))
def test_compare_and_the_sidebar_describe_an_edited_run_without_failing(tmp_path, monkeypatch, vq_run, case):
    import shutil

    root = tmp_path / "runs"
    monkeypatch.setenv("VQDEMO_RUNS_DIR", str(root))
    run = root / vq_run.name
    shutil.copytree(vq_run, run)
    if case < len(HOSTILE_CONFIG_MODEL):
        meta = runs.read_json(run / runs.CONFIG)
        meta["model"] = HOSTILE_CONFIG_MODEL[case]
        files.write_json(run / runs.CONFIG, meta)
    else:
        files.atomic_write_text(run / runs.STATUS, HOSTILE_STATUS_FILES[case - len(HOSTILE_CONFIG_MODEL)])
    for page in ("compare", "classroom", "train"):
        at = open_page(page, {"runs": f"run:{run.name},shipped:mnist-vq", "model": f"run:{run.name}"}, check=False)
        assert not at.exception, (page, [e.message for e in at.exception])


# ---- nothing is written through a planted link -----------------------------------------------------------------

def test_a_linked_run_folder_is_not_listed_nor_written_by_a_restarting_server(tmp_path):
    from vqdemo.jobs import JobQueue

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    files.write_json(elsewhere / runs.CONFIG, {"kind": "vq", "title": "linked"})
    files.write_json(elsewhere / runs.STATUS, {"state": "running", "reason": "x", "step": 3})
    before = (elsewhere / runs.STATUS).read_bytes()
    root = tmp_path / "runs"
    root.mkdir()
    (root / "20260101-000000-link00").symlink_to(elsewhere)
    assert runs.list_runs(root) == []
    JobQueue(runs_dir=root).close()   # a new server marks the runs it finds "running" as interrupted, on disk
    assert (elsewhere / runs.STATUS).read_bytes() == before


def test_a_prior_for_a_run_whose_prior_folder_is_a_link_goes_to_the_mirror(tmp_path):
    from vqdemo.prior import PRIOR_DIR, prior_mirror, prior_write_dir

    run = tmp_path / "runs" / "20260101-000000-run000"
    run.mkdir(parents=True)
    assert prior_write_dir(run, tmp_path / "runs") == run / PRIOR_DIR
    (run / PRIOR_DIR).symlink_to(tmp_path / "anywhere")
    assert prior_write_dir(run, tmp_path / "runs") == prior_mirror(run, tmp_path / "runs")


@pytest.mark.integration
def test_compare_loads_at_most_max_compare_models_whatever_the_link_names(tmp_path, monkeypatch, vq_run):
    """?runs= naming every run of the class would load each model on every rerun: one student's link, the
    server's CPU."""
    import shutil

    root = tmp_path / "runs"
    monkeypatch.setenv("VQDEMO_RUNS_DIR", str(root))
    ids = []
    for i in range(12):
        shutil.copytree(vq_run, root / f"20260101-0000{i:02d}-cmp{i:03d}")
        ids.append(f"run:20260101-0000{i:02d}-cmp{i:03d}")
    limit = int(re.search(r"^MAX_COMPARE = (\d+)", (REPO / "views" / "compare.py").read_text(), re.M).group(1))
    assert limit < len(ids)
    at = open_page("compare", {"runs": ",".join(ids)})
    assert at.multiselect(key="cmp_runs").value == ids[:limit]
    assert any(f"the first {limit} are compared" in i.value for i in at.info)
    assert len(at.get("plotly_chart")) and not at.error
