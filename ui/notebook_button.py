""""Open as a notebook": the page's current settings (its URL) as a runnable .ipynb download (vqdemo.notebook).

One line near the end of a page: `notebook_button("reconstruct")`. The settings are read from the URL the page has
just written, the way the page reads them (lenient: junk reads as the default), so the notebook repeats what is on
screen; a setup a notebook cannot repeat (an uploaded dataset) gets a one-line caption instead of a button.
"""

from __future__ import annotations

import streamlit as st

from ui import state, text
from vqdemo import notebook


@st.cache_data(max_entries=128, show_spinner=False)
def _notebook_text(page: str, query: tuple[tuple[str, str], ...]) -> str:
    """The notebook as text, once per page and settings for the whole class."""
    return notebook.to_text(notebook.build(page, dict(query), strict=False))


def notebook_button(page: str) -> None:
    """A download button for this page's setup as a Jupyter notebook (JupyterLab, Colab)."""
    query = tuple(sorted(state.url_query().items()))
    try:
        ipynb = _notebook_text(page, query)
    except ValueError as e:
        st.caption(f"No notebook of this setup: {text.md(e, 300)}")
        return
    st.download_button("Open as a notebook", ipynb, file_name=f"vqdemo-{page}.ipynb",
                       mime="application/x-ipynb+json", icon=":material/download:", on_click="ignore",
                       key=f"notebook_{page}",
                       help="This page's setup as a Jupyter notebook to take home: it loads (or trains) the same "
                            "model, draws the same figure, explains each step and ends with exercises. Runs in "
                            "JupyterLab and in Colab (it installs vqdemo there).")
