"""Real-browser harness: `streamlit run` servers plus headless Chromium driven by Playwright.

AppTest cannot run component JavaScript or `run_every` fragments, so these tests start the real
server the way Streamlit's own e2e suite does and drive it from Chromium. Fixtures:

- `serve_script(path)`: start (once per session) `streamlit run path` and return its `StreamlitServer`.
- `app_server`, `painter_demo_server`: `app.py` and `tests/browser/painter_demo.py`, served.
- `browser` (session), `page` (per test, fresh context, 1400x1000 viewport).
- `wait_for_app`, `screenshot`, `assert_no_errors`, `first_paint`, `full_screenshot`, `layout_report`: the
  module's helpers, handed out as fixtures so tests need not import this conftest by name.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import expect

from helpers import free_port

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = REPO / "test-output" / "screenshots"
STARTUP_TIMEOUT_S = 60.0
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
# Streamlit 1.67 sets these test ids: stApp carries the script state; an st.error renders
# stAlertContentError inside stAlert; an uncaught exception renders stException.
APP_IDLE = "[data-testid=stApp][data-test-script-state=notRunning]"
ERROR_BOXES = "[data-testid=stException], [data-testid=stAlertContentError]"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test under tests/browser gets the `browser` marker (`-m "not browser"` skips them)."""
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.browser)


@dataclass
class StreamlitServer:
    """One `streamlit run` subprocess (its own process group) listening on localhost."""

    script: Path
    port: int
    proc: subprocess.Popen
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


Serve = Callable[[str | Path], StreamlitServer]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
            return r.read().strip() == b"ok"
    except (urllib.error.URLError, OSError):
        return False


def start_streamlit(script: Path, runs_dir: Path, log_dir: Path) -> StreamlitServer:
    """Start `streamlit run script` and wait until /_stcore/health answers `ok`."""
    port = free_port()
    log = log_dir / f"streamlit-{script.stem}-{port}.log"
    cmd = [
        sys.executable, "-m", "streamlit", "run", str(script),
        "--server.headless", "true",
        "--server.address", "127.0.0.1",
        "--server.port", str(port),
        "--browser.gatherUsageStats", "false",
        "--server.fileWatcherType", "none",
        "--server.runOnSave", "false",
    ]  # fmt: skip
    env = {**os.environ, "VQDEMO_RUNS_DIR": str(runs_dir), "PYTHONUNBUFFERED": "1", "VQDEMO_BACKEND": "local"}
    # Output goes to a file, not a pipe: an unread pipe fills up and stalls the server.
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = StreamlitServer(script=script, port=port, proc=proc, log=log)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(
                f"`streamlit run {script.name}` exited with code {proc.returncode} before "
                f"becoming healthy. Its output:\n{server.output()}",
                pytrace=False,
            )
        if _healthy(server.url):
            return server
        time.sleep(0.2)
    server.stop()
    pytest.fail(
        f"`streamlit run {script.name}` did not answer {server.url}/_stcore/health with `ok` "
        f"within {STARTUP_TIMEOUT_S:.0f} s. Its output:\n{server.output()}",
        pytrace=False,
    )


@pytest.fixture(scope="session")
def serve_script(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    """Factory: `serve_script("app.py")` starts that script (path relative to the repo root) once
    per session, with VQDEMO_RUNS_DIR pointing at a fresh temp dir, and stops it at the end."""
    servers: dict[Path, StreamlitServer] = {}
    log_dir = tmp_path_factory.mktemp("streamlit-logs")

    def serve(script: str | Path) -> StreamlitServer:
        path = (REPO / script).resolve()
        if path not in servers:
            if not path.is_file():
                pytest.fail(f"cannot serve {path}: no such file", pytrace=False)
            runs_dir = tmp_path_factory.mktemp(f"runs-{path.stem}")
            servers[path] = start_streamlit(path, runs_dir, log_dir)
        return servers[path]

    yield serve
    for server in servers.values():
        server.stop()


@pytest.fixture(scope="session")
def app_server(serve_script: Serve) -> StreamlitServer:
    """The real app (`app.py` at the repo root), served once per session."""
    return serve_script("app.py")


@pytest.fixture
def fresh_app_server(tmp_path: Path) -> Iterator[StreamlitServer]:
    """A second `streamlit run app.py` that no browser has visited yet (its first visit is the test's)."""
    server = start_streamlit(REPO / "app.py", tmp_path / "runs", tmp_path)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def painter_demo_server(serve_script: Serve) -> StreamlitServer:
    """The grid painter demo (`tests/browser/painter_demo.py`), served once per session."""
    return serve_script("tests/browser/painter_demo.py")


@pytest.fixture(scope="session")
def browser():
    """Headless Debian Chromium (Playwright's own browser downloads are not available here)."""
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: run `apt-get install -y chromium`"
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {message}", pytrace=False)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    """A fresh browser context and page per test (no shared cookies or Streamlit session)."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    yield page
    context.close()


def wait_for_app(page, timeout_ms: float = 30_000, settle_ms: float = 300) -> None:
    """Wait until the script has finished running, then let the frontend settle.

    Right after a click the state can still read `notRunning` before the rerun starts, so after an
    interaction prefer waiting for the expected text (`expect(locator).to_have_text(...)`).
    """
    page.wait_for_selector(APP_IDLE, timeout=timeout_ms)
    page.wait_for_timeout(settle_ms)


def screenshot(page, name: str) -> Path:
    """Save a full-page screenshot as test-output/screenshots/NAME.png and return its path."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def assert_no_errors(page) -> None:
    """Fail with the error text if the page shows an exception or an st.error box."""
    boxes = page.locator(ERROR_BOXES)
    if boxes.count():
        texts = "\n---\n".join(boxes.all_inner_texts())
        raise AssertionError(f"the page shows {boxes.count()} error box(es):\n{texts}")


def first_paint(page, url: str, title: str) -> float:
    """Seconds from goto until the page's title is drawn and the script has finished.

    Waiting for the title first matters: right after goto the app reports notRunning before the
    script has even started.
    """
    start = time.monotonic()
    page.goto(url)
    expect(page.locator("[data-testid=stMain] h1").first).to_contain_text(title, timeout=120_000)
    page.wait_for_selector(APP_IDLE, timeout=120_000)
    took = time.monotonic() - start
    settle_identity(page)
    return took


def settle_identity(page, timeout_s: float = 60.0) -> None:
    """A fresh browser's first page reruns once when the app's cookie lands (ui/identity.py): wait for the cookie
    and that rerun, so a test's next click does not hit an element being redrawn."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(c["name"] == "vqdemo_student" for c in page.context.cookies()):
            break
        page.wait_for_timeout(100)
    page.wait_for_timeout(500)
    page.wait_for_selector(APP_IDLE, timeout=120_000)


def full_screenshot(page, name: str, width: int | None = None, folder: Path | None = None) -> Path:
    """Streamlit scrolls inside its main container, so grow the viewport to the content, then shoot.

    width: the viewport width to keep (default: the current one); folder: where NAME.png goes (default
    test-output/screenshots/).
    """
    before = dict(page.viewport_size)
    width = width or before["width"]
    height = page.evaluate("() => document.querySelector('[data-testid=stMain]').scrollHeight")
    page.set_viewport_size({"width": width, "height": min(int(height) + 60, 8000)})
    page.wait_for_timeout(800)
    if folder is None:
        path = screenshot(page, name)
    else:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(before)
    return path


# Measured in the page: what sticks out of the viewport or out of its own box, and the smallest text.
LAYOUT_JS = """(minFont) => {
  const vw = document.documentElement.clientWidth;
  const out = {scrollWidth: document.documentElement.scrollWidth, viewport: vw,
               outside: [], clipped: [], small: [], broken: []};
  const main = document.querySelector('[data-testid=stMain]');
  const name = (e) => (e.closest('[data-testid]')?.getAttribute('data-testid') || e.tagName) + ' '
                      + (e.closest('[class*=st-key-]')?.className.match(/st-key-[\\w-]+/)?.[0] || '');
  const visible = (r) => r.width > 0 && r.height > 0;
  for (const e of main.querySelectorAll('[data-testid=stElementContainer] > *')) {
    const r = e.getBoundingClientRect();
    if (visible(r) && (r.right > vw + 1 || r.left < -1)) out.outside.push(name(e) + ' right=' + Math.round(r.right));
  }
  for (const chart of main.querySelectorAll('[data-testid=stPlotlyChart]')) {
    const box = chart.getBoundingClientRect();
    const svg = chart.querySelector('.main-svg');
    if (svg) {
      const r = svg.getBoundingClientRect();
      if (r.right > box.right + 1 || r.right > vw + 1)
        out.clipped.push(name(chart) + ' svg ' + Math.round(r.width) + ' > box ' + Math.round(box.width));
    }
    for (const t of chart.querySelectorAll('svg text')) {
      const tr = t.getBoundingClientRect();
      if (!t.textContent.trim() || !visible(tr)) continue;
      if (tr.right > box.right + 2 || tr.left < box.left - 2)
        out.clipped.push(name(chart) + ' text "' + t.textContent.slice(0, 40) + '"');
      const size = parseFloat(getComputedStyle(t).fontSize);
      if (minFont && size < minFont - 0.01)
        out.small.push(name(chart) + ' "' + t.textContent.slice(0, 30) + '" ' + size + 'px');
    }
  }
  for (const img of main.querySelectorAll('[data-testid=stImage] img, [data-testid=stImageContainer] img')) {
    const r = img.getBoundingClientRect();
    const box = img.closest('[data-testid=stElementContainer]').getBoundingClientRect();
    if (visible(r) && r.right > box.right + 1)
      out.clipped.push(name(img) + ' image ' + Math.round(r.width) + ' > ' + Math.round(box.width));
  }
  // A table wider than its column runs under the next column's content.
  for (const t of main.querySelectorAll('[data-testid=stColumn] [data-testid=stMarkdownContainer] table')) {
    const r = t.getBoundingClientRect(), col = t.closest('[data-testid=stColumn]').getBoundingClientRect();
    if (visible(r) && r.right > col.right + 2)
      out.clipped.push(name(t) + ' table ' + Math.round(r.width) + ' > column ' + Math.round(col.width));
  }
  // Text in a box that cuts or scrolls what does not fit (a code block, a page link): its right side unseen.
  for (const el of main.querySelectorAll('[data-testid=stCode] pre, [data-testid=stPageLink] span, '
                                         + '[data-testid=stMarkdownContainer]')) {
    if (el.closest('details:not([open])') || !el.textContent.trim() || !visible(el.getBoundingClientRect())) continue;
    if (el.scrollWidth > el.clientWidth + 2)
      out.clipped.push(name(el) + ' text cut: ' + el.scrollWidth + ' > ' + el.clientWidth + ' "'
                       + el.textContent.slice(0, 40) + '"');
  }
  // A word split over two lines ("Architec ture") has two client rects.
  const labels = '[data-testid=stWidgetLabel] p, [data-testid=stMetricLabel] p, h1, h2, h3, [role=radiogroup] label p';
  for (const el of main.querySelectorAll(labels)) {
    const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      for (const m of node.textContent.matchAll(/\\S+/g)) {
        const range = document.createRange();
        range.setStart(node, m.index); range.setEnd(node, m.index + m[0].length);
        const rects = [...range.getClientRects()].filter((r) => r.width > 0);
        if (rects.length > 1 && Math.abs(rects[0].top - rects[rects.length - 1].top) > 2)
          out.broken.push(name(el) + ' "' + m[0] + '"');
      }
    }
  }
  if (minFont) {
    const prose = '[data-testid=stMarkdownContainer] p, [data-testid=stMarkdownContainer] li, '
      + '[data-testid=stCaptionContainer]';
    for (const t of main.querySelectorAll(prose)) {
      const size = parseFloat(getComputedStyle(t).fontSize);
      if (t.textContent.trim() && visible(t.getBoundingClientRect()) && size < minFont - 0.01)
        out.small.push(name(t) + ' "' + t.textContent.slice(0, 30) + '" ' + size + 'px');
    }
  }
  return out;
}"""


def layout_report(page, min_font: float = 0) -> dict:
    """Boxes measured against the viewport: {"scrollWidth", "viewport", "outside": [...], "clipped": [...],
    "small": [...], "broken": [...]}. outside: elements past the viewport's edges; clipped: charts wider than
    their box, chart text past its chart, images wider than their box, text cut by its box (code blocks, page
    links); small: chart and page text under
    min_font px; broken: words of labels and headings split over two lines."""
    return page.evaluate(LAYOUT_JS, min_font)


@pytest.fixture(name="first_paint")
def _first_paint_fixture() -> Callable[..., float]:
    return first_paint


@pytest.fixture(name="full_screenshot")
def _full_screenshot_fixture() -> Callable[..., Path]:
    return full_screenshot


@pytest.fixture(name="layout_report")
def _layout_report_fixture() -> Callable[..., dict]:
    return layout_report


@pytest.fixture(name="wait_for_app")
def _wait_for_app_fixture() -> Callable[..., None]:
    return wait_for_app


@pytest.fixture(name="screenshot")
def _screenshot_fixture() -> Callable[..., Path]:
    return screenshot


@pytest.fixture(name="assert_no_errors")
def _assert_no_errors_fixture() -> Callable[..., None]:
    return assert_no_errors
