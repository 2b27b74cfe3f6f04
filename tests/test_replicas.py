"""Two `streamlit run app.py` replicas behind the bench's proxy serve one class: one job queue (a Ray actor on a local
head, token on) and one runs folder. A run a student starts through replica A is listed, watched and paused by the
same student through replica B, shows on another student's Class board on B, and is stopped through the proxy.

Everything listens on 127.0.0.1; the test stops only the head, replicas and proxy it started. Each student is a
websocket client speaking Streamlit's protocol (bench/load_test.py's Tab), with its browser's secret cookie.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bench.load_test import ROOT, Server, Tab, free_port, my_runs, state_of
from helpers import wait_for
from ui import identity
from vqdemo.jobs import JobError, shared_queue

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PAGE_S = 300.0   # one page run on a loaded machine (the first one joins the Ray cluster)


@dataclass
class BoardTab(Tab):
    """A tab that also keeps the plotly figures a page drew (the Class board is one)."""

    charts: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)   # markdown and messages, to say what a page showed

    def _element(self, fwd) -> None:
        super()._element(fwd)
        if fwd.delta.WhichOneof("type") != "new_element":
            return
        el = fwd.delta.new_element
        kind = el.WhichOneof("type")
        if kind == "plotly_chart":
            self.charts.append(el.plotly_chart.spec)
        elif kind in ("markdown", "alert"):
            self.texts.append(getattr(el, kind).body[:300])


@dataclass
class Hall:
    runs_dir: Path
    replicas: list[Server]
    proxy_port: int


def get(port: int, cookie: str = "") -> tuple[int, str]:
    """GET /_stcore/health through the proxy: (status, the replica cookie it set or "")."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/_stcore/health", headers={"Cookie": cookie})
    with urllib.request.urlopen(request, timeout=30) as r:
        ours = [c.split(";")[0] for c in r.headers.get_all("Set-Cookie") or [] if c.startswith("vqdemo_replica=")]
        return r.status, ours[0] if ours else ""


@pytest.fixture(scope="module")
def hall(tmp_path_factory):
    from vqdemo.jobs.ray_head import local_head

    runs_dir = tmp_path_factory.mktemp("replicas") / "runs"
    runs_dir.mkdir()
    with local_head(num_cpus=2) as head:
        env = {**head.env, "VQDEMO_QUEUE": "ray-actor", "VQDEMO_BACKEND": "ray",
               "STREAMLIT_SERVER_COOKIE_SECRET": secrets.token_hex(16)}   # one secret: either replica's XSRF cookie
        replicas = [Server(runs_dir, extra_env=env) for _ in range(2)]
        proxy = None
        try:
            for server in replicas:
                server.wait_ready(PAGE_S)
            port = free_port()
            proxy = subprocess.Popen([sys.executable, str(ROOT / "bench" / "proxy.py"), "--port", str(port),
                                      *(a for s in replicas for a in ("--replica", str(s.port)))],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

            def up() -> bool:
                try:
                    return get(port)[0] == 200
                except OSError:
                    return False

            wait_for(up, "the proxy to answer", timeout=120)
            yield Hall(runs_dir, replicas, port)
        finally:
            if proxy is not None:
                proxy.terminate()
                proxy.wait(30)
            for server in replicas:
                server.stop()


def open_page(tab: BoardTab, page: str) -> None:
    if not tab.pages:
        tab.rerun("first load", PAGE_S)
    tab.charts, tab.texts = [], []
    tab.open(page, PAGE_S)
    assert not tab.errors, tab.errors


def test_the_proxy_hands_new_browsers_out_in_turn_and_keeps_each_on_its_replica(hall):
    cookies = {get(hall.proxy_port)[1] for _ in range(4)}
    assert cookies == {"vqdemo_replica=0", "vqdemo_replica=1"}
    assert get(hall.proxy_port, "vqdemo_replica=1") == (200, "")   # a browser with a replica keeps it


def test_a_run_started_on_one_replica_is_watched_and_controlled_from_the_other(hall):
    secret = identity.new_secret()
    on_a = BoardTab(0, hall.replicas[0].port, secret=secret)
    on_b = BoardTab(1, hall.replicas[1].port, secret=secret)    # the same student, served by the other replica
    other = BoardTab(2, hall.replicas[1].port)                   # a classmate on replica B
    via_proxy = BoardTab(3, hall.proxy_port, secret=secret)
    try:
        for tab in (on_a, on_b, other, via_proxy):
            tab.connect(PAGE_S)   # a bench tab connects when its student arrives; these are all here now
        on_a.rerun("first load", PAGE_S)
        on_a.query.update(data="digits", budget="seconds", secs="600", batch="16")   # a page reads its URL once
        on_a.open("train", PAGE_S)
        on_a.click("tr_start", "start training", PAGE_S)
        assert not on_a.alerts, on_a.alerts
        wait_for(lambda: len(my_runs(hall.runs_dir, on_a.me)) == 1, "the run's folder", timeout=PAGE_S)
        run = my_runs(hall.runs_dir, on_a.me)[0]
        title = json.loads((run / "job.json").read_text())["title"]
        wait_for(lambda: state_of(run) == "running", "the run to train on the Ray cluster", timeout=PAGE_S)

        open_page(on_b, "train")
        assert on_b.selectboxes.get("tr_job") == [title]   # replica B lists the run A started, as this student's
        assert "tr_pause" in on_b.buttons                   # with its controls
        on_b.click("tr_pause", "pause", PAGE_S)

        said_b = list(on_b.texts)

        def paused_on(tab: BoardTab) -> bool:
            tab.texts = []
            tab.open("train", PAGE_S)
            return "tr_play" in tab.buttons

        wait_for(lambda: paused_on(on_a), f"replica A to show the run paused from B (B said {said_b}; A says "
                 f"{on_a.texts})", timeout=PAGE_S)

        open_page(other, "classroom")
        assert any(title in spec for spec in other.charts), "the Class board on B does not show the run from A"

        open_page(via_proxy, "train")
        assert via_proxy.selectboxes.get("tr_job") == [title]
        via_proxy.click("tr_stop", "stop", PAGE_S)
        wait_for(lambda: state_of(run) == "stopped", "the run to stop", timeout=PAGE_S)
        assert (run / "last.safetensors").is_file()   # its checkpoint came back to the shared runs folder
    finally:
        for tab in (on_a, on_b, other, via_proxy):
            tab.close()


def test_the_shared_queue_is_asked_for_by_name_and_a_typo_is_refused(monkeypatch):
    for value, shared in (("", False), ("local", False), (" Ray-Actor ", True)):
        monkeypatch.setenv("VQDEMO_QUEUE", value)
        assert shared_queue.wanted() is shared
    monkeypatch.setenv("VQDEMO_QUEUE", "ray")
    with pytest.raises(JobError, match="ray-actor"):
        shared_queue.wanted()


def test_a_replica_without_a_cluster_gets_a_message_and_never_imports_ray(monkeypatch, tmp_path):
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{free_port()}")   # nothing listens there
    queue = shared_queue.SharedQueue(tmp_path / "runs")
    try:
        with pytest.raises(JobError, match="nothing answers at RAY_ADDRESS"):
            queue.counts()
    finally:
        queue.close()
    assert "ray" not in sys.modules
