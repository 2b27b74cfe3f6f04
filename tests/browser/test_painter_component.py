"""The grid painter in real Chromium: palette, drag strokes, eyedropper, one rerun per stroke.

The page is tests/browser/painter_demo.py: a 7x7 grid of zeros, K=8 colours, `SUM=` of the
returned grid and `RUNS=` (script runs in this session). The Python-side rules (input validation,
which grid is returned) are tested without a browser in tests/test_painter_protocol.py.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

TIMEOUT_MS = 15_000


@pytest.fixture
def demo(page: Page, painter_demo_server, wait_for_app, assert_no_errors) -> Page:
    """The demo page, loaded, with the painter drawn and no error on screen."""
    page.goto(painter_demo_server.url)
    wait_for_app(page)
    expect(page.get_by_test_id("gridPainter")).to_have_attribute("data-state", "ready", timeout=TIMEOUT_MS)
    assert_no_errors(page)
    return page


def cell(page: Page, r: int, c: int):
    return page.locator(f".gp-cell[data-r='{r}'][data-c='{c}']")


def drag(page: Page, start, end) -> None:
    """Press on `start`, move through the cells in between, release on `end`."""
    a, b = start.bounding_box(), end.bounding_box()
    page.mouse.move(a["x"] + a["width"] / 2, a["y"] + a["height"] / 2)
    page.mouse.down()
    page.mouse.move(b["x"] + b["width"] / 2, b["y"] + b["height"] / 2, steps=24)
    page.mouse.up()


def test_painter_renders_in_the_page_dom(demo: Page, screenshot) -> None:
    # Components v2 mounts into the app's own DOM (an open shadow root), not an iframe.
    assert demo.locator("iframe").count() == 0
    expect(demo.locator("[data-testid=stBidiComponentIsolated]")).to_have_count(1)
    expect(demo.locator(".gp-cell")).to_have_count(49)
    expect(demo.locator(".gp-swatch")).to_have_count(8)
    expect(demo.locator(".gp-swatch[aria-selected=true]")).to_have_attribute("data-code", "1")
    expect(cell(demo, 2, 3)).to_have_attribute("title", "row 2, col 3: code 0")
    expect(demo.get_by_text("SUM=0")).to_be_visible()
    screenshot(demo, "painter_before")


def test_drag_paints_a_row_with_one_rerun(demo: Page, screenshot, assert_no_errors) -> None:
    expect(demo.get_by_text("RUNS=1")).to_be_visible()
    demo.locator(".gp-swatch[data-code='5']").click()
    expect(demo.get_by_test_id("gridPainter")).to_have_attribute("data-selected", "5")

    drag(demo, cell(demo, 3, 0), cell(demo, 3, 6))

    expect(demo.get_by_text("SUM=35")).to_be_visible(timeout=TIMEOUT_MS)
    expect(demo.get_by_text("RUNS=2")).to_be_visible()
    expect(demo.get_by_test_id("gridPainter")).to_have_attribute("data-strokes", "1")
    expect(demo.locator(".gp-cell[data-code='5']")).to_have_count(7)
    expect(demo.locator(".gp-cell[data-r='3'][data-code='5']")).to_have_count(7)
    assert_no_errors(demo)
    screenshot(demo, "painter_after_drag")


def test_right_click_and_eyedropper_pick_codes_and_strokes_accumulate(demo: Page, wait_for_app) -> None:
    painter = demo.get_by_test_id("gridPainter")
    demo.locator(".gp-swatch[data-code='5']").click()
    cell(demo, 0, 0).click()
    expect(demo.get_by_text("SUM=5")).to_be_visible(timeout=TIMEOUT_MS)

    demo.locator(".gp-swatch[data-code='2']").click()
    cell(demo, 0, 0).click(button="right")  # picks 5 back; paints nothing
    expect(painter).to_have_attribute("data-selected", "5")
    expect(demo.get_by_test_id("gridPainterCurrent")).to_have_text("code 5")

    demo.get_by_role("button", name="Eyedropper").click()
    expect(painter).to_have_attribute("data-mode", "pick")
    cell(demo, 6, 6).click()  # picks 0 and returns to the brush
    expect(painter).to_have_attribute("data-selected", "0")
    expect(painter).to_have_attribute("data-mode", "paint")

    cell(demo, 6, 6).click()  # painting 0 over 0 changes nothing: no message, no rerun
    demo.locator(".gp-swatch[data-code='7']").click()
    cell(demo, 1, 1).click()
    expect(demo.get_by_text("SUM=12")).to_be_visible(timeout=TIMEOUT_MS)
    expect(painter).to_have_attribute("data-strokes", "2")
    wait_for_app(demo)
    expect(cell(demo, 0, 0)).to_have_attribute("data-code", "5")  # the first stroke survived the rerun
    expect(demo.get_by_text("RUNS=3")).to_be_visible()
