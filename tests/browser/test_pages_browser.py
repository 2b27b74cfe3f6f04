"""Learn, Reconstruct and Codebook in real Chromium against `streamlit run app.py`.

Each test opens its page in a fresh browser session, measures the first paint (from `goto` until the
page's title is drawn and the script state is notRunning) and prints it, checks there is no error box,
and saves a screenshot of the whole page under test-output/screenshots/. The Learn test also clicks a
cell of the code map (a Plotly selection, which AppTest cannot send); the Codebook test waits for the
background UMAP to replace the PCA map by itself (a `run_every` fragment, which AppTest does not run).
"""

from __future__ import annotations

import re
import time

from playwright.sync_api import Page, expect

APP_IDLE = "[data-testid=stApp][data-test-script-state=notRunning]"
UMAP_TIMEOUT_MS = 180_000  # import umap (~11 s) + first fit, on a CPU shared with other work


def test_learn_page(page: Page, app_server, assert_no_errors, first_paint, full_screenshot) -> None:
    seconds = first_paint(page, f"{app_server.url}/", "Learn")
    print(f"\nfirst paint learn: {seconds:.2f} s")
    assert_no_errors(page)
    expect(page.get_by_text(re.compile(r"^Cell \(3, 3\)")).first).to_be_visible()
    expect(page.get_by_text("(1, 16, 7, 7)").first).to_be_visible()

    # Click the code map's cell (1, 5) (the chart's plot area holds the 7x7 cells).
    area = page.locator(".st-key-learn_cellmap .nsewdrag").first
    area.scroll_into_view_if_needed()
    box = area.bounding_box()
    page.mouse.click(box["x"] + 5.5 * box["width"] / 7, box["y"] + 1.5 * box["height"] / 7)
    expect(page.get_by_text(re.compile(r"^Cell \(1, 5\)")).first).to_be_visible(timeout=30_000)
    page.wait_for_selector(APP_IDLE)
    assert "row=1" in page.url and "col=5" in page.url  # the clicked cell is in the shareable URL
    assert_no_errors(page)
    path = full_screenshot(page, "learn")
    print(f"screenshot: {path}")


def test_reconstruct_page(page: Page, app_server, assert_no_errors, first_paint, full_screenshot) -> None:
    seconds = first_paint(page, f"{app_server.url}/reconstruct?model=shipped:mnist-rq", "Reconstruct")
    print(f"\nfirst paint reconstruct (mnist-rq): {seconds:.2f} s")
    assert_no_errors(page)
    expect(page.get_by_text("Coarse to fine").first).to_be_visible()
    expect(page.get_by_text(re.compile(r"depths 1\.\.4: [\d.]+ dB")).first).to_be_visible()
    path = full_screenshot(page, "reconstruct")
    print(f"screenshot: {path}")


def test_codebook_page(page: Page, app_server, assert_no_errors, first_paint, full_screenshot) -> None:
    seconds = first_paint(page, f"{app_server.url}/codebook", "Codebook")
    print(f"\nfirst paint codebook: {seconds:.2f} s")
    assert_no_errors(page)
    # The first paint never waits for UMAP: a PCA map is there at once, swapped for UMAP when it is ready.
    axis = page.locator(".st-key-cb_map .xtitle").first
    expect(axis).to_have_text(re.compile(r"^(PCA|UMAP) 1$"), timeout=60_000)
    start = time.monotonic()
    expect(axis).to_have_text("UMAP 1", timeout=UMAP_TIMEOUT_MS)
    print(f"UMAP replaced PCA {time.monotonic() - start:.1f} s after the first paint")
    page.wait_for_selector(APP_IDLE)
    assert_no_errors(page)
    path = full_screenshot(page, "codebook")
    print(f"screenshot: {path}")


def _highlighted_code(page: Page, before: str | None = None) -> str:
    """The code id the page says is highlighted (waits until it differs from `before`)."""
    note = page.get_by_text(re.compile(r"is highlighted on every chart")).first
    expect(note).to_be_visible(timeout=30_000)
    if before is not None:
        expect(note).not_to_contain_text(f"Code #{before} ", timeout=30_000)
    page.wait_for_selector(APP_IDLE)
    return re.match(r"Code #(\d+)", note.inner_text()).group(1)


def test_a_click_on_a_usage_bar_or_a_tile_highlights_that_code(page: Page, app_server, assert_no_errors,
                                                                first_paint, screenshot) -> None:
    """Linked highlighting: a click on any chart picks a code, and every chart then marks that code."""
    page.set_viewport_size({"width": 1280, "height": 900})
    first_paint(page, f"{app_server.url}/codebook?proj=PCA&hl=0", "Codebook")
    expect(page.get_by_text(re.compile("to highlight that code on every chart"))).to_be_visible()

    bar = page.locator(".st-key-cb_usage g.point").first     # the most used code's bar
    bar.scroll_into_view_if_needed()
    box = bar.bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] * 0.7)
    first = _highlighted_code(page)
    assert f"code={first}" in page.url and "hl=1" in page.url
    expect(page.locator(".st-key-cb_map .legendtext", has_text=f"code #{first}")).to_have_count(1)   # the map follows
    screenshot(page, "codebook-highlight-bar")

    tiles = page.locator(".st-key-cb_tiles .nsewdrag").first   # 8 x 8 tiles, most used first: click the last one
    tiles.scroll_into_view_if_needed()
    box = tiles.bounding_box()
    page.mouse.click(box["x"] + box["width"] * 15 / 16, box["y"] + box["height"] * 15 / 16)
    last = _highlighted_code(page, before=first)
    assert last != first and f"code={last}" in page.url
    expect(page.locator(".st-key-cb_map .legendtext", has_text=f"code #{last}")).to_have_count(1)

    page.get_by_role("button", name="Clear").click()
    expect(page.get_by_text(re.compile("to highlight that code on every chart"))).to_be_visible(timeout=30_000)
    page.wait_for_selector(APP_IDLE)
    assert "hl=0" in page.url
    expect(page.locator(".st-key-cb_map .legendtext", has_text="code #")).to_have_count(0)
    assert_no_errors(page)
