"""codebook page (placeholder until its page lands)."""

import streamlit as st

st.title("Codebook")
st.info("This page is being built.")
