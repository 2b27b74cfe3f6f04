""""Open as a notebook" in real Chromium: the Reconstruct page's download is a notebook of the settings on screen."""

from __future__ import annotations

import nbformat
from playwright.sync_api import Page, expect


def test_the_reconstruct_page_downloads_its_setup_as_a_notebook(page: Page, app_server, assert_no_errors, first_paint,
                                                                   tmp_path) -> None:
    first_paint(page, f"{app_server.url}/reconstruct?model=shipped:mnist-rq&n=4&start=20&depth=2", "Reconstruct")
    assert_no_errors(page)
    button = page.get_by_role("button", name="Open as a notebook")
    expect(button).to_be_visible(timeout=30_000)
    with page.expect_download(timeout=30_000) as info:
        button.click()
    assert info.value.suggested_filename == "vqdemo-reconstruct.ipynb"
    info.value.save_as(tmp_path / "nb.ipynb")
    nb = nbformat.read(tmp_path / "nb.ipynb", as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["vqdemo"]["settings"] == {"n": 4, "start": 20, "depth": 2, "model": "shipped:mnist-rq"}
    assert "N, START, DEPTH = 4, 20, 2" in "\n".join(c.source for c in nb.cells)
