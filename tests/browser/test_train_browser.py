"""Train and Compare in real Chromium against `streamlit run app.py`.

The Train test starts a short run from the page and watches the step counter of the live panel (a
`run_every` fragment, which AppTest does not drive) advance, then pauses, single-steps and stops it with
the page's buttons. The Compare test opens the default comparison of the shipped models. Both print their
first paint and save screenshots under test-output/screenshots/.
"""

from __future__ import annotations

import re
import time

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page, expect

APP_IDLE = "[data-testid=stApp][data-test-script-state=notRunning]"
TRAIN_TIMEOUT_MS = 120_000  # the CPU is shared: the first steps can take a while
SMALL_RUN = "data=digits&budget=steps&steps=3000&batch=16"


def first_paint(page: Page, url: str, title: str) -> float:
    """Seconds from goto until the page's title is drawn and the script has finished."""
    start = time.monotonic()
    page.goto(url)
    expect(page.locator("[data-testid=stMain] h1").first).to_contain_text(title, timeout=120_000)
    page.wait_for_selector(APP_IDLE, timeout=120_000)
    return time.monotonic() - start


def full_screenshot(page: Page, screenshot, name: str):
    """Streamlit scrolls inside its main container, so grow the viewport to the content, then shoot."""
    height = page.evaluate("() => document.querySelector('[data-testid=stMain]').scrollHeight")
    page.set_viewport_size({"width": 1400, "height": min(int(height) + 60, 8000)})
    page.wait_for_timeout(800)
    path = screenshot(page, name)
    page.set_viewport_size({"width": 1400, "height": 1000})
    return path


def step_counter(page: Page) -> int:
    """The live panel's "Step" metric; -1 while it is not on screen (e.g. mid-redraw)."""
    metric = page.locator("[data-testid=stMetric]").filter(
        has=page.locator("[data-testid=stMetricLabel]", has_text=re.compile(r"^Step$")))
    values = metric.locator("[data-testid=stMetricValue]").all_inner_texts()
    return int(values[0].replace(",", "")) if values and values[0].replace(",", "").isdigit() else -1


def metric_text(page: Page, label: str) -> str:
    """The shown value of the metric whose label starts with `label` ("" while it is not on screen)."""
    metric = page.locator("[data-testid=stMetric]").filter(
        has=page.locator("[data-testid=stMetricLabel]", has_text=re.compile(rf"^{re.escape(label)}")))
    values = metric.locator("[data-testid=stMetricValue]").all_inner_texts()
    return values[0] if values else ""


def wait_for_step(page: Page, above: int, timeout_ms: float = TRAIN_TIMEOUT_MS) -> int:
    """Poll the live panel until its step counter passes `above`; returns what it shows then."""
    deadline = time.monotonic() + timeout_ms / 1000
    while time.monotonic() < deadline:
        step = step_counter(page)
        if step > above:
            return step
        page.wait_for_timeout(250)
    raise AssertionError(f"the step counter never passed {above}")


def click(page: Page, key: str, timeout_s: float = 60.0) -> None:
    """Click the button with this widget key. The live panel redraws every second (a click can land on a node
    being replaced), and a button with help text keeps a hidden copy for its tooltip: click the visible one."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        buttons = page.locator(f".st-key-{key}:not([data-stale=true]) button:visible")
        if buttons.count() == 1:
            try:
                buttons.click(timeout=5_000)
                return
            except PlaywrightError:  # detached by a redraw between count and click; try again
                pass
        page.wait_for_timeout(200)
    raise AssertionError(f"could not click the {key} button")


def test_train_page_runs_a_job_live(page: Page, app_server, assert_no_errors, screenshot) -> None:
    first_paint(page, f"{app_server.url}/", "Learn")  # a cold server serves the first page before st.navigation
    seconds = first_paint(page, f"{app_server.url}/train?{SMALL_RUN}", "Train")
    print(f"\nfirst paint train: {seconds:.2f} s")
    assert_no_errors(page)
    expect(page.get_by_text("Nothing of yours is training")).to_be_visible()
    assert "me=" not in page.url   # the student is the browser's cookie, never something in the address bar
    full_screenshot(page, screenshot, "train_before")

    click(page, "tr_start")
    clicked = time.monotonic()
    first = wait_for_step(page, 0)
    psnr = ""
    while not psnr.endswith("dB") and time.monotonic() - clicked < TRAIN_TIMEOUT_MS / 1000:
        psnr = metric_text(page, "Val PSNR")
        page.wait_for_timeout(100)
    later = wait_for_step(page, first)  # the counter moves with no click: the live fragment redraws
    while metric_text(page, "Val PSNR") == psnr and time.monotonic() - clicked < TRAIN_TIMEOUT_MS / 1000:
        page.wait_for_timeout(100)
    moved = time.monotonic() - clicked
    print(f"\nStart -> step counter and validation PSNR both moving on screen: {moved:.1f} s")
    assert later > first and metric_text(page, "Val PSNR") != psnr   # how soon is bench work, not a test's
    expect(page.get_by_text("Loss terms (training batches)").first).to_be_visible(timeout=TRAIN_TIMEOUT_MS)
    assert_no_errors(page)
    path = full_screenshot(page, screenshot, "train_running")
    print(f"screenshot: {path}")

    click(page, "tr_pause")
    expect(page.get_by_text(re.compile(r"\bPAUSED\b")).first).to_be_visible(timeout=30_000)
    page.wait_for_timeout(2500)  # let the panel show the step where the loop holds
    held = step_counter(page)
    page.wait_for_timeout(2500)
    assert step_counter(page) == held
    click(page, "tr_step")
    assert wait_for_step(page, held, 30_000) == held + 1

    click(page, "tr_stop")
    clicked = time.monotonic()
    expect(page.get_by_text(re.compile(r"\bSTOPP(ING|ED)\b")).first).to_be_visible(timeout=30_000)
    print(f"Stop -> the state on screen says so: {time.monotonic() - clicked:.1f} s")
    expect(page.get_by_text(re.compile(r"\bSTOPPED\b")).first).to_be_visible(timeout=60_000)
    assert_no_errors(page)


def test_compare_page_shows_the_shipped_models(page: Page, app_server, assert_no_errors, screenshot) -> None:
    seconds = first_paint(page, f"{app_server.url}/compare", "Compare")
    print(f"\nfirst paint compare: {seconds:.2f} s")
    assert_no_errors(page)
    expect(page.get_by_text("mnist-vq (shipped)").first).to_be_visible()
    expect(page.get_by_text("Validation PSNR").first).to_be_visible()
    expect(page.get_by_text("Codebook usage").first).to_be_visible()
    path = full_screenshot(page, screenshot, "compare")
    print(f"screenshot: {path}")
