"""WCAG 2.1 AA in real Chromium: axe-core on every page, normal and presenter mode, and the painter by keyboard.

axe-core (bundled by axe-playwright-python) runs the WCAG 2.0 / 2.1 A and AA rules on each page of the
navigation at 1280x900, shipped models and default settings; a serious or critical finding fails the test.
Each run prints its page's counts, appends them to test-output/a11y/axe-counts.txt (the README's table) and saves
the first screen as test-output/screenshots/a11y-PAGE-MODE.png.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Page, expect

from tests.browser.pages import PAGES  # url path -> the page title (app.py's navigation, in its order)

REPO = Path(__file__).resolve().parents[2]
COUNTS = REPO / "test-output" / "a11y" / "axe-counts.txt"
RULES = {"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]},
         "resultTypes": ["violations"]}
BLOCKING = {"serious", "critical"}
# The focused element, looking inside shadow roots (Components v2 isolate their DOM in one).
FOCUSED = """(what) => { let a = document.activeElement;
  while (a && a.shadowRoot && a.shadowRoot.activeElement) a = a.shadowRoot.activeElement;
  return what === 'outline' ? getComputedStyle(a).outlineStyle : a.getAttribute(what); }"""


def serious_findings(page: Page) -> tuple[Counter, list[str]]:
    """axe's serious and critical violations on the page: counts per rule, and one line per node."""
    results = Axe().run(page, options=RULES)
    counts: Counter = Counter()
    lines = []
    for v in results.response["violations"]:
        if v["impact"] not in BLOCKING:
            continue
        counts[v["id"]] += len(v["nodes"])
        for node in v["nodes"][:5]:
            lines.append(f"{v['id']} ({v['impact']}): {node['target']} {node['failureSummary'][:160]!r}")
    return counts, lines


@pytest.mark.parametrize("mode", ["normal", "presenter"])
@pytest.mark.parametrize("path", list(PAGES), ids=lambda p: p or "learn")
def test_no_serious_axe_findings(page: Page, app_server, first_paint, assert_no_errors, screenshot, path: str,
                                 mode: str) -> None:
    page.set_viewport_size({"width": 1280, "height": 900})
    present = mode == "presenter"
    first_paint(page, f"{app_server.url}/{path}?present={int(present)}", PAGES[path])
    page.wait_for_timeout(2000)   # charts and components draw after the script has finished
    assert_no_errors(page)
    screenshot(page, f"a11y-{PAGES[path].lower()}-{mode}")
    counts, lines = serious_findings(page)
    summary = f"{PAGES[path]} {mode}: {sum(counts.values())} serious/critical {json.dumps(dict(counts))}"
    print(f"\naxe {summary}")
    COUNTS.parent.mkdir(parents=True, exist_ok=True)
    with COUNTS.open("a") as f:
        f.write(summary + "\n")
    assert not counts, f"axe: {summary}\n" + "\n".join(lines)


def test_paint_a_stroke_by_keyboard_alone(page: Page, app_server, first_paint, assert_no_errors) -> None:
    """Choose a code in the palette with the arrow keys, Tab into the grid, paint three cells with Shift+arrow:
    the cells and the decoded image change; Ctrl+Z takes the last cell back."""
    page.set_viewport_size({"width": 1280, "height": 900})
    first_paint(page, f"{app_server.url}/paint", "Paint")
    painter = page.get_by_test_id("gridPainter")
    expect(painter).to_have_attribute("data-state", "ready", timeout=60_000)
    decoded = page.locator("img[alt^='Decoded code map']").first
    before_src, before_alt = decoded.get_attribute("src"), decoded.get_attribute("alt")
    row = [page.locator(f".gp-cell[data-r='0'][data-c='{c}']") for c in range(4)]
    old = [cell.get_attribute("data-code") for cell in row]

    page.locator(".gp-swatch[aria-selected=true]").focus()   # where Tab would land in the palette
    page.keyboard.press("ArrowRight")
    while painter.get_attribute("data-selected") in old:      # a code none of the four cells has yet
        page.keyboard.press("ArrowRight")
    ink = painter.get_attribute("data-selected")
    assert page.evaluate(FOCUSED, "data-code") == ink   # the focus follows the choice
    page.keyboard.press("Tab")
    assert page.evaluate(FOCUSED, "role") == "gridcell"
    page.keyboard.press("Control+Home")
    page.keyboard.press("Space")
    for _ in range(3):
        page.keyboard.press("Shift+ArrowRight")
    for cell in row:
        expect(cell).to_have_attribute("data-code", ink)
    expect(page.get_by_test_id("gridPainterStatus")).to_have_text(f"painted row 0, column 3 with code {ink}")
    expect(decoded).not_to_have_attribute("src", before_src, timeout=60_000)
    expect(decoded).not_to_have_attribute("alt", before_alt)
    outline = page.evaluate(FOCUSED, "outline")
    assert outline == "solid", f"no visible focus ring on the cursor cell: outline-style {outline}"

    page.keyboard.press("Control+z")
    expect(row[3]).to_have_attribute("data-code", old[3])
    expect(row[2]).to_have_attribute("data-code", ink)
    assert_no_errors(page)


def test_charts_carry_summaries_a_screen_reader_reaches(page: Page, app_server, first_paint) -> None:
    """The Codebook page's usage chart is read out as its numbers: codes used, dead, perplexity, most used."""
    page.set_viewport_size({"width": 1280, "height": 900})
    first_paint(page, f"{app_server.url}/codebook", "Codebook")
    tree = page.locator("[data-testid=stMain]").aria_snapshot()
    assert re.search(r"\d+ of \d+ codes used \(\d+ dead\), perplexity [\d.]+; most used: #\d+", tree), tree[:2000]
    assert re.search(r"all \d+ codes decoded on their own, most used first", tree), "the tile mosaic has no summary"
    assert re.search(r"Chart\b.+ \d+ values from [\d.e+-]+ to [\d.e+-]+, median", tree), "no distance summary"


def test_playground_waits_under_reduced_motion_and_plays_by_keyboard(browser, app_server, first_paint) -> None:
    """prefers-reduced-motion: the run does not start by itself; on the canvas the arrows step, End and Home jump,
    Space plays and pauses, and each still frame's status is announced."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, reduced_motion="reduce")
    try:
        page = context.new_page()
        first_paint(page, f"{app_server.url}/playground?k=16&steps=200", "Playground")
        player = page.get_by_test_id("playground")
        expect(player).to_have_attribute("data-state", "paused", timeout=60_000)
        page.wait_for_timeout(1000)
        expect(player).to_have_attribute("data-frame", "0")          # no autoplay
        page.get_by_test_id("playgroundCanvas").focus()
        for _ in range(3):
            page.keyboard.press("ArrowRight")
        expect(player).to_have_attribute("data-frame", "3")
        expect(page.get_by_test_id("playgroundAnnounce")).to_contain_text("of 16 codes used")
        page.keyboard.press("End")
        expect(player).to_have_attribute("data-state", "done")
        page.keyboard.press("Home")
        expect(player).to_have_attribute("data-frame", "0")
        page.keyboard.press("Space")
        expect(player).to_have_attribute("data-state", "playing")
        page.keyboard.press("Space")
        expect(player).not_to_have_attribute("data-state", "playing")
    finally:
        context.close()


@pytest.mark.parametrize("path", list(PAGES), ids=lambda p: p or "learn")
def test_usable_at_200_percent_zoom(page: Page, app_server, first_paint, assert_no_errors, layout_report,
                                    path: str) -> None:
    """Browser zoom 200% on a 1280x720 screen lays the page out in 640x360 CSS pixels (WCAG 1.4.4, 1.4.10): nothing
    scrolls sideways or sticks out of the viewport, and the page list and model picker stay one click away."""
    page.set_viewport_size({"width": 640, "height": 360})
    first_paint(page, f"{app_server.url}/{path}", PAGES[path])
    page.wait_for_timeout(1500)
    assert_no_errors(page)
    report = layout_report(page)
    assert report["scrollWidth"] <= report["viewport"], f"the page scrolls sideways at 200%: {report}"
    assert not report["outside"], f"past the viewport's edge at 200%: {report['outside']}"
    opener = page.locator("[data-testid=stExpandSidebarButton]")
    expect(opener).to_be_visible()
    opener.click()
    expect(page.locator("[data-testid=stSidebar]").get_by_text("Model", exact=True)).to_be_visible()
    expect(page.locator("[data-testid=stSidebarNav]").get_by_text(PAGES[path], exact=True)).to_be_visible()
