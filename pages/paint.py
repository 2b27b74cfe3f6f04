"""paint page (placeholder until its page lands)."""

import streamlit as st

st.title("Paint")
st.info("This page is being built.")
