"""Tiny page for the painter's browser test: a 7x7 grid of zeros, 8 colours, and its sum."""

import sys
from pathlib import Path

import streamlit as st

# `streamlit run` puts only this folder on sys.path; the painter lives at the repo root.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ui.painter import grid_painter  # noqa: E402

COLORS = ["#f8f9fa", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"]

st.session_state.runs = st.session_state.get("runs", 0) + 1
grid = grid_painter([[0] * 7 for _ in range(7)], colors=COLORS, selected=1, key="demo")
st.markdown(f"SUM={sum(map(sum, grid))}")
st.caption(f"RUNS={st.session_state.runs}")
