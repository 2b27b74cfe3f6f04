"""WCAG 2.1 AA in real Chromium: axe-core on every page, normal and presenter mode, and the painter by keyboard.

axe-core (bundled by axe-playwright-python) runs the WCAG 2.0 / 2.1 A and AA rules on each page of the
navigation at 1280x900, shipped models and default settings; a serious or critical finding fails the test.
Each run prints its page's counts, and appends them to test-output/a11y/axe-counts.txt (the README's table).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Page, expect

REPO = Path(__file__).resolve().parents[2]
COUNTS = REPO / "test-output" / "a11y" / "axe-counts.txt"
PAGES = {  # url path -> the page title's first word (the navigation's order)
    "": "Learn",
    "train": "Train",
    "reconstruct": "Reconstruct",
    "codebook": "Codebook",
    "paint": "Paint",
    "sample": "Sample",
    "compare": "Compare",
    "playground": "Playground",
    "lesson": "Lesson",
    "classroom": "Class",
}
RULES = {"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]},
         "resultTypes": ["violations"]}
BLOCKING = {"serious", "critical"}


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
def test_no_serious_axe_findings(page: Page, app_server, first_paint, assert_no_errors, path: str, mode: str) -> None:
    page.set_viewport_size({"width": 1280, "height": 900})
    present = mode == "presenter"
    first_paint(page, f"{app_server.url}/{path}?present={int(present)}", PAGES[path])
    page.wait_for_timeout(2000)   # charts and components draw after the script has finished
    assert_no_errors(page)
    counts, lines = serious_findings(page)
    summary = f"{PAGES[path]} {mode}: {sum(counts.values())} serious/critical {json.dumps(dict(counts))}"
    print(f"\naxe {summary}")
    COUNTS.parent.mkdir(parents=True, exist_ok=True)
    with COUNTS.open("a") as f:
        f.write(summary + "\n")
    assert not counts, f"axe: {summary}\n" + "\n".join(lines)
