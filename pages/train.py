"""train page (placeholder until its page lands)."""

import streamlit as st

st.title("Train")
st.info("This page is being built.")
