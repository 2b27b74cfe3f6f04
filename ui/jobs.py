"""The server's one training queue and "who am I" for the pages.

The queue lives in `st.cache_resource`, so every session of the class shares it (it is thread-safe), keyed
by the runs folder so tests with their own folders get their own queue. A student's jobs are found by an
owner id kept both in Session State (page switches) and in the URL as `?me=...` (a reload starts a new
session, the URL survives it).
"""

from __future__ import annotations

import re

import streamlit as st

from ui import state
from vqdemo.jobs import JobQueue

OWNER_PARAM = "me"
_OWNER_KEY = "jobs_owner"


@st.cache_resource(show_spinner=False)
def _queue(runs_dir: str) -> JobQueue:
    return JobQueue(runs_dir=runs_dir)


def job_queue() -> JobQueue:
    """The shared queue for this server's runs folder (env VQDEMO_RUNS_DIR, else ./runs)."""
    return _queue(str(state.runs_dir().resolve()))


def owner_id() -> str:
    """This student's id: from the URL if it carries a valid one, else this session's; written back to the URL."""
    me = st.query_params.get(OWNER_PARAM, "")
    if not re.fullmatch(r"[0-9a-f]{12}", me):
        me = st.session_state.get(_OWNER_KEY) or state.session_id()
    st.session_state[_OWNER_KEY] = me
    st.query_params[OWNER_PARAM] = me
    return me
