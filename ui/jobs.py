"""The server's one job queue, "who am I" for the pages, and how often live panels tick.

The queue lives in `st.cache_resource`, so every session of the class shares it (it is thread-safe), keyed by the
runs folder so tests with their own folders get their own queue. Its jobs run in worker processes (or on Ray),
never in this server's interpreter.

Who a student is: `?me=` in the URL names whose runs a page shows; every page keeps it in its URL, so a reload or a
page switch keeps a student's runs theirs. Without one, it comes from the browser's cookie (Streamlit's XSRF cookie,
the same in every tab of one browser), else from the session. The per-student limit counts runs by that cookie as
well, so a new tab or a dropped `?me=` does not reset it; a private window or another browser does.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time

import streamlit as st

from ui import shared, state
from vqdemo import runs
from vqdemo.jobs import JobQueue

OWNER_PARAM = "me"
_OWNER_KEY = "jobs_owner"
_BROWSER_COOKIE = "_streamlit_xsrf"


@st.cache_resource(show_spinner=False)
def _queue(runs_dir: str) -> JobQueue:
    return JobQueue(runs_dir=runs_dir, lock=True, app_limits=True)


def job_queue() -> JobQueue:
    """The shared queue for this server's runs folder (env VQDEMO_RUNS_DIR, else ./runs). A folder another server
    holds stops the page with a message that says what to do."""
    try:
        return _queue(str(state.runs_dir().resolve()))
    except runs.RunsDirBusy as e:
        st.error(f"This server cannot use its runs folder: {e}.")
        st.stop()


def browser_id() -> str:
    """A stable id for this browser (all its tabs), or "" when it sent no cookie."""
    try:
        cookie = st.context.cookies.get(_BROWSER_COOKIE, "")
    except Exception:  # noqa: BLE001 - no request context (a test harness): no browser to name
        cookie = ""
    return hashlib.sha256(cookie.encode()).hexdigest()[:12] if isinstance(cookie, str) and cookie else ""


def owner_id() -> str:
    """This student's id: from the URL if it carries a valid one, else this browser's, else this session's; written
    back to the URL so it survives reloads and page switches."""
    me = st.query_params.get(OWNER_PARAM, "")
    if not re.fullmatch(r"[0-9a-f]{12}", me):
        me = st.session_state.get(_OWNER_KEY) or browser_id() or state.session_id()
    st.session_state[_OWNER_KEY] = me
    st.query_params[OWNER_PARAM] = me
    return me


class _Load:
    """How busy this server is, from the CPU time its own process uses (sampled at most once a second)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = (time.monotonic(), time.process_time())
        self.busy = 0.0   # fraction of one core the server used over the last sample

    def sample(self) -> float:
        with self._lock:
            now, cpu = time.monotonic(), time.process_time()
            then, cpu_then = self._last
            if now - then >= 1.0:
                self.busy = 0.7 * self.busy + 0.3 * min(1.0, (cpu - cpu_then) / (now - then))
                self._last = (now, cpu)
            return self.busy


@st.cache_resource(show_spinner=False)
def _load() -> _Load:
    return _Load()


def tick_seconds(base: float) -> float:
    """A live panel's refresh interval: `base` on a quiet server, up to 4x slower as the server's own process nears
    a full core (a class of 30 watching at once), so page loads and clicks stay quick."""
    busy = _load().sample()
    return round(base * min(4.0, 1.0 + 3.0 * max(0.0, (busy - 0.3) / 0.6)), 1)


def shared_figure(view, name: str, build):
    """`build()` once per state of a job (its id and event count) and display mode; read-only for the caller."""
    return shared.figure(("job", view.id, view.version, name), build)


def thin(rows: list[dict], most: int = 400) -> list[dict]:
    """At most about `most` evenly spaced rows (the last one kept): a curve looks the same and costs a fraction."""
    if len(rows) <= most:
        return rows
    every = -(-len(rows) // most)
    return rows[::every] + ([rows[-1]] if (len(rows) - 1) % every else [])
