"""reconstruct page (placeholder until its page lands)."""

import streamlit as st

st.title("Reconstruct")
st.info("This page is being built.")
