"""Items 2 and 7 of the second review in real Chromium against `streamlit run app.py`.

A runs folder holds a run whose title is markdown and HTML (links, images) and whose training zip names its
classes the same way. Chromium visits every page with that run picked; no <a>/<img> (HTML or SVG, in Plotly too)
may point at the planted host, and the browser must never request it. Then the upload endpoint is called directly,
as a script would, past the browser's widget check: the server itself refuses a file over server.maxUploadSize.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
from test_hardening_pages import EVIL_TITLE, evil_zip  # noqa: E402  (the same strings as the AppTest checks)

from tests.browser.pages import PAGES  # noqa: E402

RUN = "20260101-000000-evil00"
# every page of the navigation, Compare last: it shows the planted title (the test checks it is on screen, as text)
VISITS = sorted(PAGES, key=lambda path: path == "compare")
APP_IDLE = "[data-testid=stApp][data-test-script-state=notRunning]"
# Every element (documents of same-origin frames included) whose href / src / xlink:href names the planted host.
FIND_EVIL = r"""() => {
  const hits = [];
  const scan = (doc) => {
    for (const el of doc.querySelectorAll('*')) {
      for (const a of el.attributes) {
        if (/(^|:)(href|src)$/i.test(a.name) && /evil\.example/i.test(a.value))
          hits.push(el.tagName + ' ' + a.name + '=' + a.value);
      }
      if (el.tagName === 'IFRAME') { try { if (el.contentDocument) scan(el.contentDocument); } catch (e) {} }
    }
  };
  scan(document);
  return hits;
}"""


def _start_streamlit():
    """conftest.start_streamlit, loaded by path (both conftests are named conftest)."""
    spec = importlib.util.spec_from_file_location("browser_conftest_helpers", Path(__file__).with_name("conftest.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # its dataclass looks itself up there
    spec.loader.exec_module(module)
    return module.start_streamlit


@pytest.fixture(scope="module")
def hostile_server(tmp_path_factory):
    from helpers import tiny_config
    from vqdemo.data import DataConfig
    from vqdemo.fit import fit
    from vqdemo.trainer import TrainConfig

    root = tmp_path_factory.mktemp("hostile-browser") / "runs"
    zip_path = evil_zip(tmp_path_factory.mktemp("zips") / "evil.zip")
    fit(tiny_config(), DataConfig(name="folder", path=str(zip_path), image_size=16), TrainConfig(steps=2, batch_size=4),
        out_dir=root / RUN, meta={"title": EVIL_TITLE, "owner": "<b>me</b>"})
    server = _start_streamlit()(REPO / "app.py", root, tmp_path_factory.mktemp("hostile-logs"))
    yield server
    server.stop()


def test_user_text_never_becomes_a_link_or_an_image(page: Page, hostile_server, screenshot) -> None:
    fetched: list[str] = []
    page.on("request", lambda r: fetched.append(r.url) if "evil.example" in r.url else None)
    found = {}
    for path in VISITS:
        page.goto(f"{hostile_server.url}/{path}?model=run:{RUN}&runs=run:{RUN},shipped:mnist-vq&by=label&proj=PCA")
        expect(page.locator("[data-testid=stMain] h1").first).to_contain_text(PAGES[path], timeout=120_000)
        page.wait_for_selector(APP_IDLE, timeout=120_000)
        page.wait_for_timeout(1500)   # Plotly draws its SVG after the script ends
        found[path] = page.evaluate(FIND_EVIL)
        assert page.locator("[data-testid=stException]").count() == 0, path
        if path in ("", "codebook"):
            screenshot(page, f"hardening-hostile-{path or 'learn'}")
    assert not any(found.values()), found
    assert not fetched, fetched
    expect(page.get_by_text("evil.example", exact=False).first).to_be_attached()   # shown, as text


def _session_id(page: Page, url: str) -> str:
    """The Streamlit session of this tab: the server names it in the first message on the websocket."""
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

    ids: list[str] = []

    def on_ws(ws):
        def on_frame(payload):
            if isinstance(payload, (bytes, bytearray)):
                msg = ForwardMsg()
                try:
                    msg.ParseFromString(bytes(payload))
                except Exception:  # noqa: BLE001 - other frames are not ours to read
                    return
                if msg.HasField("new_session") and msg.new_session.initialize.session_id:
                    ids.append(msg.new_session.initialize.session_id)
        ws.on("framereceived", on_frame)

    page.on("websocket", on_ws)
    page.goto(url)
    page.wait_for_selector(APP_IDLE, timeout=120_000)
    assert ids, "no session id seen on the websocket"
    return ids[0]


PUT = """async ([sid, megabytes]) => {
  const m = document.cookie.match(/(?:^|; )_streamlit_xsrf=([^;]+)/);
  const form = new FormData();
  form.append('file', new Blob([new Uint8Array(megabytes * 1024 * 1024)]), 'big.zip');
  const r = await fetch(`/_stcore/upload_file/${sid}/probe${megabytes}`, {method: 'PUT', body: form,
      headers: m ? {'X-Xsrftoken': decodeURIComponent(m[1])} : {}, credentials: 'same-origin'});
  return r.status;
}"""


def test_the_server_refuses_uploads_over_the_largest_widget_limit(page: Page, hostile_server) -> None:
    sid = _session_id(page, f"{hostile_server.url}/reconstruct")
    assert page.evaluate(PUT, [sid, 1]) == 204          # a small file goes through the endpoint
    assert page.evaluate(PUT, [sid, 65]) == 413         # one over 64 MB does not, whatever the widget said
