"""Lesson: a 45-minute path through the app, one numbered step per page, each link carrying its settings.

Every step says what to show and what to ask the class; the links open the page with the right model and
settings (query parameters), so a lecturer clicks down the list and never sets anything by hand.
"""

from dataclasses import dataclass

import streamlit as st

from ui import state


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


state.current()
st.title("Lesson: vector quantisation in 45 minutes")
st.markdown(f"Seven steps, {sum(s.minutes for s in STEPS)} minutes. Each link opens the page with its settings; "
            "turn on **Presenter mode** in the sidebar first (larger text and charts; the page links move to the "
            "top bar), and come back here between steps.")
for i, step in enumerate(STEPS, 1):
    with st.container(border=True):
        st.page_link(step.page, label=f"{i}. {step.label} ({step.minutes} min)", query_params=step.params,
                     icon=":material/arrow_forward:")
        st.markdown(f"**Show:** {step.show}  \n**Ask:** {step.ask}")
