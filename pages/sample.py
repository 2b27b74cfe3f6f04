"""sample page (placeholder until its page lands)."""

import streamlit as st

st.title("Sample")
st.info("This page is being built.")
