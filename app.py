"""vqdemo: watch an image become a grid of codes and come back. `streamlit run app.py`"""

import streamlit as st

from ui import state

st.set_page_config(page_title="vqdemo: codebooks, live", page_icon="🧩", layout="wide")

pages = [
    st.Page("pages/learn.py", title="Learn", icon="🎓", default=True),
    st.Page("pages/train.py", title="Train", icon="🏋️"),
    st.Page("pages/reconstruct.py", title="Reconstruct", icon="🔁"),
    st.Page("pages/codebook.py", title="Codebook", icon="📚"),
    st.Page("pages/paint.py", title="Paint", icon="🎨"),
    st.Page("pages/sample.py", title="Sample", icon="🎲"),
    st.Page("pages/compare.py", title="Compare", icon="⚖️"),
]
nav = st.navigation(pages)
st.session_state["loaded"] = state.sidebar()
nav.run()
