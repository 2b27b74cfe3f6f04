"""Lesson page (AppTest): numbered steps whose links carry settings, and links that switch the model."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

pytestmark = pytest.mark.integration  # every test here opens a page in AppTest or starts a process

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def test_lesson_lists_numbered_steps_with_a_question_each():
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page("views/lesson.py").run()
    assert not at.exception
    text = " ".join(m.value for m in at.markdown)
    assert text.count("**Ask:**") == 7 and text.count("**Show:**") == 7


def test_a_link_that_names_a_model_switches_the_picker():
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert at.selectbox(key="model_picker").value == "shipped:mnist-vq"
    at.query_params["model"] = "shipped:mnist-rq"    # what a Lesson link does to the URL
    at.switch_page("views/reconstruct.py").run()
    assert not at.exception
    assert at.selectbox(key="model_picker").value == "shipped:mnist-rq"
    at.selectbox(key="model_picker").set_value("shipped:mnist-vq").run()   # and the student's own pick still wins
    assert at.selectbox(key="model_picker").value == "shipped:mnist-vq"


def _lesson_links() -> list[tuple[str, dict]]:
    """(view file, query) of every step of ui/lesson.py, read from its source."""
    import ast

    tree = ast.parse((Path(APP).parent / "ui" / "lesson.py").read_text())
    return [(node.args[0].value, ast.literal_eval(node.args[-1])) for node in ast.walk(tree)
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Step"]


def test_every_lesson_link_sets_settings_its_page_reads():
    """A renamed URL setting would leave a Lesson link silently doing nothing: each name a link carries is one its
    page reads (a Param of that page, the Train page's settings, or the sidebar's model), with a value it accepts."""
    import re

    from vqdemo.page_urls import PARAMS
    from vqdemo.train_settings import SETTINGS

    links = _lesson_links()
    assert len(links) == 7
    for page, query in links:
        source = (Path(APP).parent / page).read_text()
        names = set(re.findall(r"(?:Param|field_param|F)\(\s*\"(\w+)\"", source)) | {"model"}
        names |= set(PARAMS.get(Path(page).stem, {}))   # the settings the page reads from vqdemo/page_urls.py
        if page.endswith("train.py"):
            names |= set(SETTINGS)
            for name, value in query.items():
                assert SETTINGS[name].parse(value) is not None, (name, value)
        assert set(query) <= names, (page, set(query) - names)
        if "model" in query:
            assert (Path(APP).parent / "checkpoints" / query["model"].split(":", 1)[1]).is_dir()
