"""The server's one job queue, "who am I" for the pages, and how often live panels tick.

The queue lives in `st.cache_resource`, so every session of the class shares it (it is thread-safe), keyed by the
runs folder so tests with their own folders get their own queue. Several web processes behind a proxy share one
queue instead, a Ray actor (`VQDEMO_QUEUE=ray-actor`, vqdemo/jobs/shared_queue.py). Its jobs run in worker
processes (or on Ray), never in this server's interpreter.

Who a student is: `ui.identity` (one per browser, by a secret cookie the app sets); `student()` here is what pages
ask. Every control of a job checks that this session's student started it (or is the teacher).
"""

from __future__ import annotations

import threading
import time

import streamlit as st

from ui import identity, shared, state
from vqdemo import run_store
from vqdemo.app_limits import RUN_SECONDS
from vqdemo.jobs import JobError, JobQueue, shared_queue


@st.cache_resource(show_spinner=False)
def _queue(runs_dir: str) -> JobQueue | shared_queue.SharedQueue:
    if shared_queue.wanted():   # one of several web processes: the class's queue is a Ray actor they all reach
        return shared_queue.SharedQueue(runs_dir)
    return JobQueue(runs_dir=runs_dir, lock=True, app_limits=True, max_seconds=RUN_SECONDS[1])


def job_queue() -> JobQueue | shared_queue.SharedQueue:
    """The shared queue for this server's runs folder (env VQDEMO_RUNS_DIR, else ./runs), or with
    VQDEMO_QUEUE=ray-actor the one every replica of the app shares. A folder another server holds, or a wrong
    VQDEMO_QUEUE, stops the page with a message that says what to do."""
    try:
        return _queue(str(state.runs_dir().resolve()))
    except run_store.RunsDirBusy as e:
        st.error(f"This server cannot use its runs folder: {e}.")
        st.stop()
    except JobError as e:
        st.error(f"This server cannot reach its job queue: {e}.")
        st.stop()


def student() -> identity.Student:
    """This session's student (see ui.identity); its public id is also kept as "jobs_owner" for the model picker's
    "yours"."""
    me = identity.current()
    st.session_state["jobs_owner"] = me.id
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


def queue_note(view) -> str:
    """Where a waiting run stands, as its student reads it: a place in the class queue and how long at most until
    it starts (the runs ahead use their whole time budgets; they may end sooner)."""
    wait = view.wait_s
    if not wait or wait < 1:
        when = "it starts as soon as a trainer is free"
    elif wait < 90:
        when = f"it starts within about {wait:.0f} s"
    else:
        when = f"it starts within about {wait / 60:.0f} min"
    return f"Waiting in the class queue at place {view.place}: {when}. It starts by itself; you can leave this page."


def shared_figure(view, name: str, build):
    """`build()` once per state of a job (its id and event count) and display mode; read-only for the caller."""
    return shared.figure(("job", view.id, view.version, name), build)


