"""The app's pages as the tests visit them, read from app.py's navigation (its `st.Page(...)` calls): one list, so a
page added to the app is measured by every browser test (layout, accessibility, hostile text) and the README check
without a second list to keep in step.

PAGES maps a page's URL path to its title: the path is Streamlit's, from the page file's name (or its `url_path`),
and "" for the default page, which is served at the root.
"""

from __future__ import annotations

import ast
from pathlib import Path

APP = Path(__file__).resolve().parents[2] / "app.py"


def _navigation(app: Path) -> dict[str, str]:
    pages = {}
    for node in ast.walk(ast.parse(app.read_text())):
        if not (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "Page"):
            continue
        kw = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
        path = "" if kw.get("default") else kw.get("url_path", Path(ast.literal_eval(node.args[0])).stem)
        pages[path] = kw["title"]
    return pages


PAGES = _navigation(APP)
