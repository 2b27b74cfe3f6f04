"""Streamlit helpers shared by the pages. A page opened by a deep link on a fresh server runs without app.py, so
this package sets the process up too (before any page imports torch)."""

from vqdemo import runtime

runtime.configure()
