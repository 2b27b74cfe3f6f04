"""Every page fits a projector: 1280x720 and 1024x768, normal and presenter mode, in real Chromium.

Boxes are measured against the viewport (conftest.layout_report): no horizontal scrolling, no element past
the viewport's edge, no chart wider than its box or with text cut off, no image wider than its column, no code
block or page link cutting its text. In
presenter mode the page links stay on screen (the top bar), the model picker stays one click away, a
"Leave presenter mode" button is visible, and no chart or page text is smaller than 16 px.

Screenshots land in test-output/screenshots/; with VQDEMO_DOCS_SCREENSHOTS=1 the 1280x720 ones are also
written, shrunk, to docs/img/ for the README.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import Page, expect

from tests.browser.pages import PAGES

REPO = Path(__file__).resolve().parents[2]
DOCS_IMG = REPO / "docs" / "img"
SIZES = {"1280x720": (1280, 720), "1024x768": (1024, 768)}
QUERY = {"reconstruct": "model=shipped:mnist-rq"}   # a page's own settings for this test (an RQ model's rows)
NAV_LINKS = ["Lesson", "Learn", "Train"]   # the presenter bar's first links, on screen even at 1024 px
MIN_PRESENTER_FONT = 16


DOCS_PRESENTER = {"Learn", "Codebook"}   # presenter-mode screenshots in the README (every page in normal mode)


def _docs_copy(shot: Path, name: str) -> None:
    """A small PNG of the first screen (960 px wide, 256 colours) for the README."""
    DOCS_IMG.mkdir(parents=True, exist_ok=True)
    img = Image.open(shot).convert("RGB")
    img = img.resize((960, round(img.height * 960 / img.width)), Image.LANCZOS)
    img.quantize(256, dither=Image.Dither.NONE).save(DOCS_IMG / f"{name}.png", optimize=True)


@pytest.mark.parametrize("mode", ["normal", "presenter"])
@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("path", list(PAGES), ids=lambda p: p or "learn")
def test_page_fits_the_screen(page: Page, app_server, first_paint, layout_report, assert_no_errors, screenshot,
                              path: str, size: str, mode: str) -> None:
    width, height = SIZES[size]
    page.set_viewport_size({"width": width, "height": height})
    present = mode == "presenter"
    query = "&".join(q for q in (QUERY.get(path, ""), f"present={int(present)}") if q)
    first_paint(page, f"{app_server.url}/{path}?{query}", PAGES[path])
    page.wait_for_timeout(1500)   # charts draw after the script has finished
    assert_no_errors(page)

    report = layout_report(page, MIN_PRESENTER_FONT if present else 0)
    assert report["scrollWidth"] <= report["viewport"], f"the page scrolls sideways: {report}"
    assert not report["outside"], f"past the viewport's edge: {report['outside']}"
    assert not report["clipped"], f"cut off: {report['clipped']}"
    assert not report["broken"], f"words broken mid-word: {report['broken']}"
    if present:
        assert not report["small"], f"text under {MIN_PRESENTER_FONT} px in presenter mode: {report['small'][:10]}"
        nav = page.locator("[data-testid=stTopNav]")
        for link in NAV_LINKS:
            expect(nav.get_by_text(link, exact=True).first).to_be_visible()
        expect(page.get_by_text("Leave presenter mode")).to_be_visible()
        expect(page.locator("[data-testid=stExpandSidebarButton]")).to_be_visible()   # the model picker, one click
    else:
        expect(page.locator("[data-testid=stSidebarNav]").get_by_text(PAGES[path], exact=True)).to_be_visible()
        expect(page.locator("[data-testid=stSidebar]").get_by_text("Model", exact=True)).to_be_visible()

    name = f"{PAGES[path].lower()}-{size}-{mode}"
    shot = screenshot(page, name)
    if (os.environ.get("VQDEMO_DOCS_SCREENSHOTS") == "1" and size == "1280x720"
            and (not present or PAGES[path] in DOCS_PRESENTER)):
        _docs_copy(shot, f"{PAGES[path].lower()}{'-presenter' if present else ''}")


def test_presenter_mode_can_be_left(page: Page, app_server, first_paint) -> None:
    page.set_viewport_size({"width": 1024, "height": 768})
    first_paint(page, f"{app_server.url}/codebook?present=1", "Codebook")
    page.get_by_text("Leave presenter mode").click()
    expect(page.locator("[data-testid=stSidebarNav]").get_by_text("Codebook", exact=True)).to_be_visible(timeout=30_000)
    expect(page.get_by_text("Leave presenter mode")).to_have_count(0)
    expect(page).to_have_url(re.compile(r"[?&]present=0"))   # written by the button's callback, as the rerun starts


def test_first_visit_to_a_fresh_server_shows_the_apps_navigation(page: Page, fresh_app_server, first_paint) -> None:
    """A shared deep link opened first on a freshly started server: the app's own page list, in its order."""
    first_paint(page, f"{fresh_app_server.url}/codebook?img=3", "Codebook")
    links = page.locator("[data-testid=stSidebarNav] a").all_inner_texts()
    titles = [t.split("\n")[-1].strip() for t in links]
    assert titles[:3] == ["Learn", "Train", "Reconstruct"] and "Codebook" in titles, titles
    assert "app" not in titles
