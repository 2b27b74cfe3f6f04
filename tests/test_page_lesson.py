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
