"""Lesson: a 45-minute path through the app, one numbered step per page, each link carrying its settings.

Every step says what to show and what to ask the class; the links open the page with the right model and
settings (query parameters), so a lecturer clicks down the list and never sets anything by hand. The steps live in
ui/lesson.py, which also draws the Previous / Next bar on the pages they open.
"""

import streamlit as st

from ui import state
from ui.lesson import STEPS, step_link

state.current()
st.title("Lesson: vector quantisation in 45 minutes")
st.markdown(f"Seven steps, {sum(s.minutes for s in STEPS)} minutes. Each link opens the page with its settings; "
            "turn on **Presenter mode** in the sidebar first (larger text and charts; the page links move to the "
            "top bar, the Lesson first). Every page a step opens has **Previous step** / **Next step** at its top.")
for i, step in enumerate(STEPS, 1):
    with st.container(border=True, key=f"lesson_step_{i}"):
        step_link(i, f"{i}. {step.label} ({step.minutes} min)", ":material/arrow_forward:")
        st.markdown(f"**Show:** {step.show}  \n**Ask:** {step.ask}")
