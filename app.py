"""vqdemo: watch an image become a grid of codes and come back. `streamlit run app.py`

The page scripts live in views/ (not pages/, which Streamlit would serve as its own page list on a fresh
server's first deep link). In presenter mode the page links move to a bar at the top of the screen.
"""

from pathlib import Path

from vqdemo import runtime

runtime.configure()  # first, before anything imports torch (OpenMP wait policy, malloc thresholds)

import streamlit as st  # noqa: E402

from ui import identity, jobs, state  # noqa: E402

FAVICON = str(Path(__file__).parent / "ui" / "favicon.png")   # local: nothing is fetched from the internet
present = state.presenter_from_url()
st.set_page_config(page_title="vqdemo: codebooks, live", page_icon=FAVICON, layout="wide",
                   initial_sidebar_state="collapsed" if present else "auto")

pages = [
    st.Page("views/learn.py", title="Learn", icon=":material/school:", default=True),
    st.Page("views/train.py", title="Train", icon=":material/model_training:"),
    st.Page("views/reconstruct.py", title="Reconstruct", icon=":material/compare_arrows:"),
    st.Page("views/codebook.py", title="Codebook", icon=":material/grid_view:"),
    st.Page("views/paint.py", title="Paint", icon=":material/brush:"),
    st.Page("views/sample.py", title="Sample", icon=":material/casino:"),
    st.Page("views/compare.py", title="Compare", icon=":material/balance:"),
    st.Page("views/playground.py", title="Playground", icon=":material/scatter_plot:"),
    st.Page("views/lesson.py", title="Lesson", icon=":material/format_list_numbered:"),
    st.Page("views/classroom.py", title="Class", icon=":material/groups:"),
]
nav = st.navigation(pages, position="top" if present else "sidebar")
me = jobs.student()  # before anything is drawn: a ?me= or ?teacher= link leaves the address bar at once
st.session_state["loaded"] = state.sidebar()
with st.sidebar:   # the sidebar is mounted even when folded away (presenter mode), and the page never shifts
    identity.sidebar(me)
    identity.keep(me)  # this browser's cookies, so every tab and every visit is this one student
jobs.job_queue()  # made on the first visit to any page, so its warm worker is ready before anyone presses Start
nav.run()
