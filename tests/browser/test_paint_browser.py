"""The Paint and Sample pages in real Chromium: a drag over the code grid changes the decoded image,
undo brings it back, and a new seed on the Sample page draws new images. Prints first-paint times.

Streamlit serves st.image bytes under a content hash, so an <img> src changes exactly when the
image's pixels do: that is what these tests compare.
"""

from __future__ import annotations

import time

from playwright.sync_api import Page, expect

TIMEOUT_MS = 30_000
DECODED = "img[alt^='Decoded code map']"


def open_page(page: Page, server, path: str, ready: str, wait_for_app) -> float:
    """Open the app, then go to path; return seconds until `ready` is visible and the script is idle.

    The app root runs first so that st.navigation is registered (a deep link to a fresh server runs the
    page through Streamlit's pages/ fallback instead) and the timing is the page's own first paint.
    The viewport is tall so that screenshots show the whole page (Streamlit scrolls inside its own box).
    """
    page.set_viewport_size({"width": 1400, "height": 1900})
    page.goto(server.url)
    expect(page.locator("h1").first).to_be_visible(timeout=90_000)
    wait_for_app(page, timeout_ms=90_000, settle_ms=0)
    start = time.monotonic()
    page.goto(f"{server.url}{path}")
    expect(page.locator(ready).first).to_be_visible(timeout=90_000)
    wait_for_app(page, timeout_ms=90_000, settle_ms=0)
    return time.monotonic() - start


def src(page: Page, selector: str) -> str:
    return page.locator(selector).first.get_attribute("src") or ""


def drag_row(page: Page, row: int, w: int) -> None:
    a = page.locator(f".gp-cell[data-r='{row}'][data-c='0']").bounding_box()
    b = page.locator(f".gp-cell[data-r='{row}'][data-c='{w - 1}']").bounding_box()
    page.mouse.move(a["x"] + a["width"] / 2, a["y"] + a["height"] / 2)
    page.mouse.down()
    page.mouse.move(b["x"] + b["width"] / 2, b["y"] + b["height"] / 2, steps=24)
    page.mouse.up()


def test_paint_a_stroke_changes_the_decoded_image(page: Page, app_server, wait_for_app, assert_no_errors,
                                                 screenshot) -> None:
    seconds = open_page(page, app_server, "/paint", "[data-testid=gridPainter][data-state=ready]", wait_for_app)
    print(f"\nfirst paint /paint: {seconds:.2f} s")
    assert_no_errors(page)
    expect(page.locator(DECODED)).to_have_count(1)
    screenshot(page, "paint_before")
    before = src(page, DECODED)

    cells = page.locator(".gp-cell")
    w = page.locator(".gp-cell[data-r='0']").count()
    assert cells.count() >= 4 and w >= 2
    blank = cells.first.get_attribute("data-code")
    expect(page.locator(f".gp-cell[data-code='{blank}']")).to_have_count(cells.count())  # starts blank
    ink = page.get_by_test_id("gridPainter").get_attribute("data-selected")  # the brightest code
    code = ink if ink != blank else str((int(blank) + 1) % page.locator(".gp-swatch").count())
    page.locator(f".gp-swatch[data-code='{code}']").click()
    expect(page.get_by_test_id("gridPainter")).to_have_attribute("data-selected", code)

    drag_row(page, 1, w)
    expect(page.locator(f".gp-cell[data-r='1'][data-code='{code}']")).to_have_count(w)
    expect(page.locator(DECODED)).not_to_have_attribute("src", before, timeout=TIMEOUT_MS)
    wait_for_app(page)
    expect(page.locator(f".gp-cell[data-r='1'][data-code='{code}']")).to_have_count(w)  # survived the reruns
    assert_no_errors(page)
    screenshot(page, "paint_after")

    page.get_by_role("button", name="Undo stroke").click()
    expect(page.locator(DECODED)).to_have_attribute("src", before, timeout=TIMEOUT_MS)
    expect(page.locator(f".gp-cell[data-code='{blank}']")).to_have_count(cells.count())


def test_sample_new_seed_draws_new_images(page: Page, app_server, wait_for_app, assert_no_errors,
                                          screenshot) -> None:
    random_codes = "img[alt^='Uniformly random codes']"
    seconds = open_page(page, app_server, "/sample", random_codes, wait_for_app)
    print(f"\nfirst paint /sample: {seconds:.2f} s")
    assert_no_errors(page)
    expect(page.locator("img[alt^='Gaussian noise through the VQ decoder']")).to_have_count(1)
    if page.locator("img[alt^='Samples from the prior']").count():  # the code map heatmap, drawn by Plotly
        expect(page.locator("[data-testid=stPlotlyChart] .main-svg").first).to_be_visible(timeout=TIMEOUT_MS)
    screenshot(page, "sample")
    shown = [sel for sel in (random_codes, "img[alt^='Samples from the prior']") if page.locator(sel).count()]
    before = {sel: src(page, sel) for sel in shown}

    page.get_by_role("button", name="New seed").click()
    for sel in shown:
        expect(page.locator(sel)).not_to_have_attribute("src", before[sel], timeout=TIMEOUT_MS)
    wait_for_app(page)
    assert "seed=1" in page.url  # the setting is in the URL, to share
    assert_no_errors(page)
