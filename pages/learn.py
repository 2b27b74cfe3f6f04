"""learn page (placeholder until its page lands)."""

import streamlit as st

st.title("Learn")
st.info("This page is being built.")
