"""The 45-minute lesson: its steps, in one list that the Lesson page and every step's page read.

A step's link opens its page with the step's settings and `?step=N`; a page opened that way draws a bar at its top
with the step's title and Previous / Next links, so a lecturer walks the lesson without going back to the list.
The links also carry presenter mode: a page that finds its URL as the link left it writes nothing to it, and so adds
no browser-history entry beyond the visit itself (one press of Back leaves it). The student is the browser's cookie
(ui/identity.py), never part of a link.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from ui import state, theme

STEP_PARAM = "step"
PRESENT_PARAM = "present"


@dataclass(frozen=True)
class Step:
    page: str            # the view file
    label: str
    minutes: int
    show: str
    ask: str
    params: dict


STEPS = [
    Step("views/learn.py", "Learn: an image becomes a grid of codes", 8,
         "Follow one image through the real tensors: 28x28 pixels, a 7x7 grid of 16-numbers, each snapped to the "
         "nearest of 64 codes. Click a cell of the code map and show its distances to every code.",
         "The argmin has no gradient: how does the encoder still learn? (The straight-through estimator, a few "
         "lines further down the page.)", {"model": "shipped:mnist-vq", "row": "3", "col": "3"}),
    Step("views/paint.py", "Paint: the decoder reads codes, not pixels", 6,
         "Pick a code from the palette and paint a stroke over the grid: the decoder redraws the digit on every "
         "stroke.", "What does one code mean on its own, and why does the same code look different next to "
         "different neighbours?", {"model": "shipped:mnist-vq"}),
    Step("views/train.py", "Train: watch a codebook collapse", 8,
         "As the teacher, press Start the collapse pair: N(0, 1) init, codebook learned by gradient, no dead-code "
         "restart, beside the healthy default, 500 steps each on the teacher's own workers, on one live chart.",
         "Before pressing Start: how many of the 64 codes will still be in use after 500 steps?",
         {"init": "normal", "cb": "grad", "restart": "0", "secs": "30"}),
    Step("views/playground.py", "Playground: why codes die", 6,
         "The same collapse in two dimensions: codes far from the data are never picked, so nothing ever moves "
         "them. Then switch dead-code restart on, or start the codes on the data.",
         "Which code gets the gradient of the codebook loss, and which codes never do?",
         {"init": "normal", "cb": "grad", "restart": "0", "k": "64", "data": "rings"}),
    Step("views/codebook.py", "Codebook: what every code learned", 5,
         "Every code decoded alone, sorted by use; the usage bars and the perplexity against K; the 2-D map of "
         "codes among the encoder's outputs. Click a tile, a bar or a point of the map: that code is highlighted "
         "on every chart.", "Perplexity 41 of K = 64: what does that number mean in codes?",
         {"model": "shipped:mnist-vq"}),
    Step("views/sample.py", "Sample: why VQ-VAE needs a prior", 6,
         "Samples from the PixelCNN prior over codes beside uniformly random codes and Gaussian noise through the "
         "same decoder.", "Random codes are valid codes: why do they decode to noise?", {"model": "shipped:mnist-vq"}),
    Step("views/reconstruct.py", "RQ: residual quantisation, coarse to fine", 6,
         "The depth-4 RQ-VAE: decode with depth 1, 1..2, ... and watch PSNR climb; each depth quantises what the "
         "previous ones left over.", "Four codebooks of 64 codes: how many different images can one cell "
         "describe, and why is that cheaper than one codebook of 64^4 codes?", {"model": "shipped:mnist-rq"}),
]
LESSON_PAGE = "views/lesson.py"
STEP = state.Param(STEP_PARAM, 0, lo=0, hi=len(STEPS), cast=int)


def link_params(number: int) -> dict[str, str]:
    """The query of step `number`'s link (1-based): its settings, its number and presenter mode."""
    params = {**STEPS[number - 1].params, STEP_PARAM: str(number)}
    return {**params, **carried()}


def carried() -> dict[str, str]:
    """What every lesson link keeps from the page it is on: presenter mode, so the opened page finds it in its URL
    and has nothing to write there."""
    return {PRESENT_PARAM: "1"} if theme.presenter() else {}


def step_link(number: int, label: str, icon: str | None = None, **kwargs) -> None:
    state.page_link(STEPS[number - 1].page, link_params(number), label=label, icon=icon, **kwargs)


def current_step(url_path: str) -> int:
    """The lesson step this page was opened as (?step=N naming a step of the page at `url_path`), else 0."""
    number = STEP.read()
    return number if number and Path(STEPS[number - 1].page).stem == url_path else 0


def presenter_nav(pages: list) -> list:
    """The top bar's order in presenter mode: the Lesson first, so it stays in the bar however narrow the screen
    (Streamlit folds the last links into "N more"), then the pages in the lesson's order, then the rest."""
    order = [LESSON_PAGE] + [s.page for s in STEPS]
    rank = {Path(p).stem: i for i, p in enumerate(order)}
    return sorted(pages, key=lambda p: rank.get(p.url_path or "learn", len(rank)))


def step_bar(url_path: str) -> None:
    """At the top of a page opened from a Lesson step: which step this is, and links to the previous step, the
    Lesson and the next step, each opening its page with that step's settings."""
    number = current_step(url_path)
    if not number:
        return
    # a row that wraps: the links, as one group, go under the title where the page is narrow, never cut
    with st.container(border=True, key="lesson_step_bar", horizontal=True, vertical_alignment="center",
                      horizontal_alignment="distribute"):
        step = STEPS[number - 1]
        st.markdown(f"**Lesson step {number} of {len(STEPS)}:** {step.label}", width="content")
        with st.container(horizontal=True, width="content", vertical_alignment="center", gap="medium"):
            if number > 1:
                step_link(number - 1, "Previous step", ":material/arrow_back:", help=STEPS[number - 2].label)
            state.page_link(LESSON_PAGE, carried(), label="Lesson", icon=":material/format_list_numbered:")
            if number < len(STEPS):
                step_link(number + 1, "Next step", ":material/arrow_forward:", help=STEPS[number].label)
