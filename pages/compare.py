"""compare page (placeholder until its page lands)."""

import streamlit as st

st.title("Compare")
st.info("This page is being built.")
