"""One visual language: the page CSS, presenter mode and chart text sizes that grow in it, and the palettes.

Every Plotly figure of the app passes through `style` (called by the `_layout` of ui/charts.py and
ui/figures.py), so the projector rule lives in one place: in presenter mode no chart text is smaller
than `PRESENTER.small` (16 px, readable from the back row). Red means "dead code" and nothing else,
so the palettes for runs and codes hold no reds.
"""

from __future__ import annotations

from dataclasses import dataclass

import plotly.graph_objects as go

DEAD = "#dc2626"   # the one red of the app: codes no vector picked
ARGMIN = "#f59e0b"  # amber: the nearest code, the picked thing, the perplexity line
# One colour per run (Compare overlays, Train's finished runs): distinct, colour-blind friendly, no red.
RUN_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#17becf", "#393b79", "#e377c2", "#7f7f7f", "#bcbd22")


@dataclass(frozen=True)
class Fonts:
    small: int    # ticks, legends, annotations, text inside cells
    body: int     # axis titles
    title: int


NORMAL = Fonts(small=11, body=12, title=14)
PRESENTER = Fonts(small=16, body=17, title=20)
# Pictures (images, chart heights, code-map cells) grow in presenter mode as the text does, so a page keeps its
# proportions on the projector.
PRESENTER_SCALE = PRESENTER.body / NORMAL.body


# Streamlit's wide layout pads the page by 5rem a side: at 1024 px that leaves little room for figures.
# The Lesson's step titles are links, which Streamlit draws smaller than the text under them. A metric (st.metric)
# cuts its label and value with "..." when its column is narrow ("Perplexity (K=1..." and "124 / ..." in four
# columns at 1280 px): its label wraps instead, and its value shrinks with its column (cqi: percent of the
# metric's width; the value is at most 6 characters wide at 1em... about 9 at 0.55em).
# Captions: Streamlit draws them light grey (3.9:1 on white); WCAG 2.1 AA asks 4.5:1, so they take the text colour
# at 80% (6.7:1 on white, and as readable on a dark theme). A keyboard focus ring on links. .vq-sr: text for screen
# readers only (ui/describe.py's chart summaries), its element box taken out of the page's flow.
PAGE_CSS = """<style>
[data-testid=stMainBlockContainer] { padding-left: 2rem !important; padding-right: 2rem !important; }
[class*=st-key-lesson_step_] [data-testid=stPageLink] p { font-size: 1.2rem; font-weight: 600; }
[data-testid=stMetric] { container-type: inline-size; }
[data-testid=stMetricLabel] [data-testid=stMarkdownContainer], [data-testid=stMetricLabel] p {
  white-space: normal !important; overflow: visible !important; }
[data-testid=stMetricValue] { font-size: min(2.25rem, 19cqi) !important; }
[data-testid=stMetricValue] [data-testid=stMarkdownContainer] { overflow: visible !important; }
[data-testid=stCaptionContainer] { color: inherit !important; opacity: 0.8; }
a:focus-visible { outline: 3px solid #1f77b4; outline-offset: 2px; }
[data-testid=stElementContainer]:has(.vq-sr) { position: absolute !important; width: 0 !important; height: 0;
  overflow: hidden; }
</style>"""
# Presenter mode: 20 px text; less padding around the page and smaller headings so the larger text still
# fits 1024x768 (Streamlit's padding is in rem, so it would grow with the text). The top bar's links lose their
# icons: all ten fit at 1280 px and seven at 1024 (Streamlit folds the rest into "N more"; see lesson.presenter_nav).
PRESENTER_CSS = """<style>
html { font-size: 20px; }
[data-testid=stTopNavLink] > span:has([data-testid=stIconMaterial]) { display: none; }
[data-testid=stMainBlockContainer] { padding: 3.2rem 1.2rem 2rem 1.2rem !important; }
[data-testid=stMain] h1 { font-size: 1.9rem !important; padding-top: 0.2rem !important; }
[data-testid=stMain] h2 { font-size: 1.45rem !important; }
</style>"""


def presenter() -> bool:
    """Whether this browser session is in presenter mode (False outside a Streamlit script run)."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    if get_script_run_ctx(suppress_warning=True) is None:
        return False
    import streamlit as st

    return bool(st.session_state.get("presenter", False))


def fonts(big: bool | None = None) -> Fonts:
    return PRESENTER if (presenter() if big is None else big) else NORMAL


def scaled(px: int, big: bool | None = None) -> int:
    """A picture's size in pixels for the mode: PRESENTER_SCALE times larger in presenter mode."""
    return int(px * PRESENTER_SCALE) if fonts(big) is PRESENTER else px


def style(fig: go.Figure, big: bool | None = None) -> go.Figure:
    """Set every text size of `fig` for the current mode; text set smaller than the mode's minimum grows.

    big=None reads the session's presenter mode. Margins grow with the title so it is never cut.
    """
    f = fonts(big)
    lay = fig.layout
    fig.update_layout(font=dict(size=f.body), legend=dict(font=dict(size=f.small)),
                      hoverlabel=dict(font=dict(size=f.small + 2 if f is PRESENTER else 13)))
    if lay.title and lay.title.text:
        fig.update_layout(title=dict(font=dict(size=f.title), automargin=True))
    fig.update_xaxes(tickfont=dict(size=f.small), title_font=dict(size=f.body))
    fig.update_yaxes(tickfont=dict(size=f.small), title_font=dict(size=f.body))
    for ann in lay.annotations or ():
        if f is PRESENTER or ann.font.size is None:
            ann.font.size = max(ann.font.size or 0, f.small)
    for trace in fig.data:
        text = getattr(trace, "textfont", None)
        if text is not None and (text.size is None or (f is PRESENTER and not isinstance(text.size, tuple)
                                                         and text.size < f.small)):
            trace.textfont.size = f.small
    return fig


def wrap(title: str, big: bool | None = None, limit: int | None = None) -> str:
    """Break a chart title at word boundaries so it fits a half-width column at 1024 px (Plotly never
    wraps a title; it cuts it). Lines are joined with <br>; existing <br> breaks are kept. limit: characters
    per line for narrower charts (the presenter mode's limit is 2/3 of it, its text being larger)."""
    limit = limit or 44
    limit = round(limit * 2 / 3) if fonts(big) is PRESENTER else limit
    lines = []
    for part in title.split("<br>"):
        line = ""
        for word in part.split(" "):
            if line and len(line) + 1 + len(word) > limit:
                lines.append(line)
                line = word
            else:
                line = f"{line} {word}" if line else word
        lines.append(line)
    return "<br>".join(lines)


def title(text: str, big: bool | None = None) -> dict:
    """A chart title at the top of its figure, inside it: Plotly lifts a title of two or more lines by about 0.7
    of a line when it is anchored at its top (its first line then sticks out above the chart and is cut), so the
    pad moves it back down. Pair with `top_margin`."""
    lift = 0.7 * fonts(big).title if "<br>" in text else 0
    return dict(text=text, y=1.0, yanchor="top", yref="container", pad=dict(t=int(6 + lift)))


def top_margin(title: str | None, legend: bool, big: bool | None = None) -> int:
    """Room above the plot for a (wrapped) title and a one-row legend between it and the plot."""
    f = fonts(big)
    lines = title.count("<br>") + 1 if title else 0
    lift = 0.7 * f.title if lines > 1 else 0   # see `title`
    return int(8 + lift + lines * f.title * 1.35 + (f.small * 2.2 if legend else 0))
