"""Playground: vector quantisation in a latent space of D = 2, where every vector can be drawn.

A toy autoencoder on 2-D points; its encoder outputs (dots), the codebook (discs, dead ones as red crosses)
and each code's cell (Voronoi for VQ, FSQ's rounding boxes), moving as training runs. The run is computed
once per setting (shared by every student through the cache) and played in the browser, so the server does no
work per frame.
"""

import streamlit as st

from ui import figures as fg
from ui import state, text
from ui.playground_player import player
from vqdemo import playground as pg

INITS = {"normal": "N(0, 1): far from the data", "uniform": "U(-1/K, 1/K): tiny, around 0",
         "data": "on the data (k-means)"}
CODEBOOKS = {"grad": "gradient (codebook loss)", "ema": "EMA (running k-means)"}
QUANTIZERS = {"vq": "VQ: a learned codebook", "fsq": "FSQ: a fixed rounding grid"}
# widget key -> the toy's setting (?name=), as vqdemo/page_urls.py defines it for the page and its notebook: defaults
# and choices from PlaygroundConfig's fields, K and steps on the page's stops
URL_NAMES = {"pg_data": "data", "pg_k": "k", "pg_init": "init", "pg_cb": "cb", "pg_quant": "q", "pg_steps": "steps",
             "pg_restart": "restart", "pg_beta": "beta"}
PARAMS = {key: state.page_param("playground", name) for key, name in URL_NAMES.items()}


@st.cache_data(max_entries=64, show_spinner="Training the toy autoencoder...")
def recorded(data: str, k: int, beta: float, init: str, codebook: str, restart: bool, quantizer: str,
             steps: int) -> tuple[dict, dict]:
    """The packed run for the browser and what the caption states about it (first and last frame)."""
    frames = pg.run(pg.PlaygroundConfig(data=data, k=k, beta=beta, init=init, codebook=codebook,
                                        restart_dead=restart, quantizer=quantizer, steps=steps,
                                        every=max(1, steps // 100)))
    used, ppl = frames.used, frames.perplexity
    return pg.pack(frames), {"k": frames.codes.shape[1], "used0": int(used[0]), "used": int(used[-1]),
                             "ppl": float(ppl[-1]), "steps": int(frames.step[-1]), "frames": len(frames.step),
                             "levels": None if frames.edges is None else len(frames.edges[0]) + 1,
                             "loss0": float(frames.loss[0]), "loss": float(frames.loss[-1])}


state.current()   # the sidebar (model picker, presenter mode) on every page
st.title("Playground: a codebook you can see")
st.markdown("A toy autoencoder squeezes 2-D points through a latent space of **D = 2**, so every encoder output "
            "(dot), every code (disc) and the region each code owns (its cell) fit on one picture. "
            "Press Restart, change one thing, and watch the codes move.")

for key, param in PARAMS.items():
    state.url_value(key, param)

controls, picture = st.columns([2, 3], gap="medium")
with controls:
    quantizer = st.radio("Quantiser", PARAMS["pg_quant"].options, format_func=QUANTIZERS.get, key="pg_quant",
                         horizontal=True)
    data = st.radio("Data", PARAMS["pg_data"].options, key="pg_data", horizontal=True)
    k = st.select_slider("Codebook size K", PARAMS["pg_k"].options, key="pg_k",
                         help="FSQ: L levels per axis with L x L closest to K.")
    is_vq = quantizer == "vq"
    init = st.radio("Codebook init", PARAMS["pg_init"].options, format_func=INITS.get, key="pg_init",
                    disabled=not is_vq)
    codebook = st.radio("Codebook update", PARAMS["pg_cb"].options, format_func=CODEBOOKS.get, key="pg_cb",
                        disabled=not is_vq, horizontal=True)
    restart = st.toggle("Dead-code restart", key="pg_restart", disabled=not is_vq,
                        help="Move codes that no point picks onto random encoder outputs.")
    beta = st.slider("Commitment weight beta", PARAMS["pg_beta"].lo, PARAMS["pg_beta"].hi, step=0.05, key="pg_beta",
                     disabled=not is_vq)
    steps = st.select_slider("Training steps", PARAMS["pg_steps"].options, key="pg_steps")

state.to_url(*((PARAMS[key], st.session_state[key]) for key in PARAMS))
try:
    run, facts = recorded(data, k, float(beta), init, codebook, bool(restart), quantizer, steps)
except ValueError as e:
    st.error(f"These settings cannot be trained: {text.md(e, 400)}")
    st.stop()

with picture:
    rev = f"{data}-{k}-{beta}-{init}-{codebook}-{restart}-{quantizer}-{steps}"
    player(run, list(fg.code_colors(facts["k"])), fg.DEAD, rev, grid=not is_vq)

dead = facts["k"] - facts["used"]
if is_vq:
    st.markdown(f"**What happened:** {facts['used0']} of {facts['k']} codes were picked at step 0 and "
                f"{facts['used']} after {facts['steps']} steps; **{dead} dead** (red crosses: on this page, codes no "
                f"point picked at that step), perplexity "
                f"{facts['ppl']:.1f}; loss {facts['loss0']:.3f} -> {facts['loss']:.4f}.")
    ask = {"normal": "Why do codes far from the dots never move? (No point picks them, so neither the codebook "
                     "loss nor the EMA ever reaches them.) Now switch dead-code restart on.",
           "uniform": "All codes start in a tiny square around 0: which ones win the dots, and what happens "
                      "to the ones inside?",
           "data": "Codes start on the data: does every code keep its dots? Compare gradient and EMA updates."}
    st.caption(f"Ask the class: {ask[init]}")
else:
    st.markdown(f"**What happened:** the grid has {facts['k']} fixed codes; {facts['used']} hold dots after "
                f"{facts['steps']} steps (perplexity {facts['ppl']:.1f}); loss {facts['loss0']:.3f} -> "
                f"{facts['loss']:.4f}. Finite scalar quantisation (Mentzer et al., 2023) squashes each latent number "
                f"with tanh and rounds it to one of {facts['levels']} levels, exactly as the app's FSQ models do: no "
                "codebook to learn, so no code drifts away, but the encoder must bring its outputs to the grid.")
cells = ("code's Voronoi cell (the points nearer to it than to any other code)" if is_vq else
         "code's rounding cell: a box between the values where rounding switches level on each axis. The boxes are "
         "narrow near 0 and wide outside, because tanh squashes the outside; the outer codes sit far out, where tanh "
         "reaches their level, and are drawn on the border")
st.caption(f"The whole run ({facts['frames']} frames) is computed once for these settings and played in your "
           "browser: the dots are encoder outputs coloured by the code they snap to, the pale regions are each "
           f"{cells}.")

state.notebook_button("playground")   # this setup as a Jupyter notebook (ui/notebook_button.py)
