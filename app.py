"""vqdemo: watch an image become a grid of codes and come back. `streamlit run app.py`"""

from vqdemo import runtime

runtime.configure()  # first, before anything imports torch (OpenMP wait policy, malloc thresholds)

import streamlit as st  # noqa: E402

from ui import jobs, state  # noqa: E402

st.set_page_config(page_title="vqdemo: codebooks, live", page_icon=":material/grid_on:", layout="wide")

pages = [
    st.Page("pages/learn.py", title="Learn", icon=":material/school:", default=True),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("pages/reconstruct.py", title="Reconstruct", icon=":material/compare_arrows:"),
    st.Page("pages/codebook.py", title="Codebook", icon=":material/grid_view:"),
    st.Page("pages/paint.py", title="Paint", icon=":material/brush:"),
    st.Page("pages/sample.py", title="Sample", icon=":material/casino:"),
    st.Page("pages/compare.py", title="Compare", icon=":material/balance:"),
    st.Page("pages/classroom.py", title="Class", icon=":material/groups:"),
]
nav = st.navigation(pages)
st.session_state["loaded"] = state.sidebar()
jobs.owner_id()  # ?me= on every page, so a reload anywhere keeps a student's runs theirs
jobs.job_queue()  # made on the first visit to any page, so its warm worker is ready before anyone presses Start
nav.run()
