"""Streamlit helpers shared by the pages. A page opened by a deep link on a fresh server runs without app.py, so
this package sets the process up too (before any page imports torch).

It also loads the web process's long-lived libraries once and freezes them out of the garbage collector: with
torch, plotly and pandas loaded a full collection walks about 250,000 objects (about 0.2 s of CPU on a busy
2-core machine), and under a class watching live charts collections come every few script runs.
"""

import gc

from vqdemo import runtime

runtime.configure()

import pandas  # noqa: E402, F401 - loaded here to be frozen below
import plotly.graph_objects  # noqa: E402, F401
import torch  # noqa: E402, F401

gc.freeze()
