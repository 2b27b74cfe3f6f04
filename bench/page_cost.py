"""What one student's visit to a page costs the web server: the first student against the ones after.

Each visit is a fresh Streamlit session (AppTest of app.py on one page, `?model=` a shipped checkpoint), all in
this one process, so what the server shares between sessions (st.cache_resource, ui/shared.py, the compiled page
scripts) is shared here too. Visit 1 of a page pays for loading and computing; visits 2..N are the next students,
who should find everything built. Prints, per page, the first visit's cost and the median of the others: the CPU
milliseconds of the thread that ran the page's script (what a server's script thread spends on it; steady while
other work loads the machine) and the wall milliseconds of the whole AppTest run (which also count AppTest's own
reading of the elements, and everything else the machine is doing). Not counted: the browser's drawing, the
websocket, serving images over HTTP.
With --profile PAGE, the last visit of that page runs under cProfile (the script thread's CPU) and the top functions
are printed: what a later student still costs.
Run: python bench/page_cost.py [--visits 6] [--model shipped:mnist-vq] [--pages learn reconstruct codebook train]
     [--profile codebook] [--elements 50]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vqdemo import runtime  # noqa: E402

runtime.configure()

PAGES = ["learn", "reconstruct", "codebook", "train"]
QUERY = {"codebook": {"proj": "PCA"}}   # UMAP runs in a worker that AppTest does not drive; PCA is the page's own


def share_script_cache() -> None:
    """One compiled copy of each page script for every session, as the server's Runtime keeps (AppTest makes one
    per test: without this, each visit here would pay ~0.1-0.3 s of compiling that no real student pays)."""
    from streamlit.runtime.scriptrunner.script_cache import ScriptCache
    from streamlit.testing.v1 import app_test, local_script_runner

    one = ScriptCache()
    app_test.ScriptCache = local_script_runner.ScriptCache = lambda: one


@contextmanager
def script_thread(profiler: cProfile.Profile | None) -> Iterator[list[float]]:
    """The CPU seconds of the thread AppTest runs the page's script in (as a server's script thread would), appended
    to the list yielded; run under `profiler` if one is given. Thread CPU, not wall time: the other developers'
    work on this machine stretches the wall clock, much less a thread's own CPU."""
    from streamlit.testing.v1.local_script_runner import LocalScriptRunner

    plain = LocalScriptRunner._run_script_thread
    spent: list[float] = []

    def measured(self) -> None:
        t0 = time.thread_time()
        try:
            plain(self) if profiler is None else profiler.runcall(plain, self)
        finally:
            spent.append(time.thread_time() - t0)

    LocalScriptRunner._run_script_thread = measured
    try:
        yield spent
    finally:
        LocalScriptRunner._run_script_thread = plain


def visit(page: str, model: str, profiler: cProfile.Profile | None = None) -> tuple[float, float]:
    """One fresh session opening `page`: (CPU ms of its script thread, wall ms of the whole run)."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)
    at.query_params.update({"model": model, **QUERY.get(page, {})})
    at.switch_page(f"views/{page}.py")
    t0 = time.perf_counter()
    with script_thread(profiler) as spent:
        at.run()
    wall = (time.perf_counter() - t0) * 1000
    if at.exception:
        raise SystemExit(f"{page}: the page failed: {at.exception[0].message}")
    return sum(spent) * 1000, wall


def cpu_ms(fn: Callable[[], object], repeat: int) -> float:
    """Median CPU milliseconds of this thread per call of `fn`."""
    spent = []
    for _ in range(repeat):
        t0 = time.thread_time()
        fn()
        spent.append(time.thread_time() - t0)
    return statistics.median(spent) * 1000


def elements(repeat: int) -> None:
    """One element as a later student's session pays for it, without and with what ui/shared.py shares: a 120-pixel
    crisp digit (Streamlit encoding an array, against the shared PNG's digest, lookup and header check) and the
    Codebook page's 2-D map of 2,000 points (Streamlit's dict of a figure, against the shared figure's dict; both
    then serialised to JSON)."""
    import numpy as np
    import plotly.graph_objects as go
    import streamlit as st
    import torch

    from ui import figures as fg
    from ui import state

    x = torch.rand(1, 28, 28)
    state.image(st, x, 120)   # the first student encodes it
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 64, 2000)
    shared_map = fg.map_2d(rng.normal(size=(2000, 2)), rng.normal(size=(64, 2)), codes, codes % 10,
                           np.bincount(codes, minlength=64), "code", None)
    plain_map = go.Figure(shared_map)   # the same figure, not shared: its dict made on every call
    st.plotly_chart(shared_map)         # the first student makes its dict
    rows = [("crisp 120-px image, array (Streamlit encodes it)", lambda: st.image(state.crisp(x, 120))),
            ("crisp 120-px image, shared PNG (state.image)", lambda: state.image(st, x, 120)),
            ("2-D map, 2,000 points, figure's own dict", lambda: st.plotly_chart(plain_map)),
            ("2-D map, 2,000 points, shared dict", lambda: st.plotly_chart(shared_map))]
    print(f"\n{'one element, a later session':<52} {'CPU ms (median)':>16}")
    for name, fn in rows:
        print(f"{name:<52} {cpu_ms(fn, repeat):16.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--visits", type=int, default=6, help="fresh sessions per page (the first one included)")
    ap.add_argument("--model", default="shipped:mnist-vq")
    ap.add_argument("--pages", nargs="+", default=PAGES, choices=PAGES)
    ap.add_argument("--profile", choices=PAGES, help="profile this page's last visit (the script thread's CPU)")
    ap.add_argument("--elements", type=int, default=50, metavar="N",
                    help="then time one image and one chart N times each, without and with sharing (0: skip)")
    args = ap.parse_args()
    if args.visits < 2:
        ap.error("--visits must be at least 2: the first student and the next")
    share_script_cache()
    os.environ.setdefault("VQDEMO_RUNS_DIR", tempfile.mkdtemp(prefix="vqdemo-page-cost-"))  # no runs of yours listed
    print(f"{args.model}, {args.visits} fresh sessions per page, load average {os.getloadavg()[0]:.1f}")
    print(f"{'page':<12} {'first: script CPU ms':>21} {'wall ms':>8}   {'next (median): script CPU ms':>29} "
          f"{'wall ms':>8}")
    profiler = cProfile.Profile(time.thread_time) if args.profile else None
    for page in args.pages:
        costs = [visit(page, args.model, profiler if page == args.profile and i == args.visits - 1 else None)
                 for i in range(args.visits)]
        rest = costs[1:]
        print(f"{page:<12} {costs[0][0]:21.0f} {costs[0][1]:8.0f}   {statistics.median(c for c, _ in rest):29.0f} "
              f"{statistics.median(w for _, w in rest):8.0f}")
    if profiler is not None:
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("cumulative").print_stats(60)
        stats.sort_stats("tottime").print_stats(25)
        print(out.getvalue())
    if args.elements:
        elements(args.elements)


if __name__ == "__main__":
    main()
