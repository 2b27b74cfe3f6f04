"""Sample: a VQ-VAE only generates once a prior draws its "small image" of codes (seed 001).

Beside the prior's samples sit the two ways that do not work: uniformly random codes, and Gaussian
noise pushed through the decoder (seed 003's "random" images). The settings live in the URL so a
teacher can share an exact setup; models, priors and samples are cached for the whole class.
"""

import numpy as np
import streamlit as st
import torch

from ui import figures, state
from vqdemo import analysis, painting, prior, runs

PRIOR_SECONDS = 60

loaded = state.current()
if loaded is None:
    st.stop()

st.title("Sample new images")
st.caption("A VQ-VAE is an autoencoder, not a generator: a PixelCNN prior learns which code maps are likely, "
           "draws new ones cell by cell, and the decoder turns them into images.")


@st.cache_resource(show_spinner="Loading the prior...", max_entries=16)
def load_prior(path: str, mtime: float):
    """The prior of one run, shared by the class; reloaded when its weights file changes."""
    return prior.load_prior(path)[0]


@st.cache_resource
def trainer() -> painting.PriorTrainer:
    """One server-wide prior trainer: at most one prior trains at a time on the shared CPU."""
    return painting.PriorTrainer()


@st.cache_data(show_spinner="Sampling code maps...", max_entries=64)
def draw(path: str, mtime: float, n: int, temperature: float, top_k: int, seed: int, label: int,
         _ae, _prior) -> tuple[np.ndarray, np.ndarray]:
    """n code maps from the prior and their images, cached by every setting (a class shares one URL)."""
    codes, images = painting.sample_with_codes(_ae, _prior, n, temperature, top_k or None, seed,
                                               None if label < 0 else label)
    return codes.numpy(), images.numpy()


def prior_mtime(path) -> float | None:
    file = path / prior.PRIOR_DIR / runs.WEIGHTS
    return file.stat().st_mtime if file.is_file() else None


def grid_image(images: torch.Tensor, width: int = 300) -> np.ndarray:
    return state.crisp(analysis.image_grid(images, nrow=int(np.ceil(np.sqrt(len(images))))), width)


def vae_for(dataset: str):
    """A VAE trained on the same dataset among the models on offer, loaded (cached), or None."""
    for choice in state.model_choices():
        if choice.kind != "vae":
            continue
        try:
            if runs.read_json(choice.path / "config.json").get("data", {}).get("name") == dataset:
                return state.load_choice(choice)
        except (runs.CheckpointError, ValueError, OSError):
            continue
    return None


if loaded.kind not in ("vq", "rq"):
    st.info(f"{loaded.choice.label} is a VAE: it generates by decoding N(0, I) noise, no prior over codes needed. "
            "Pick a VQ-VAE or RQ-VAE model in the sidebar to see why those need one.")
    st.image(grid_image(loaded.model.sample(16, 0)), output_format="PNG")
    st.caption("The VAE's own samples: Gaussian noise through its decoder.")
    st.stop()

ae, run_dir = loaded.model, loaded.choice.path
sizes = ae.codebook_sizes
h, w = ae.latent_shape
mtime = prior_mtime(run_dir)
the_prior = None
if mtime is not None:
    try:
        the_prior = load_prior(str(run_dir), mtime)
    except (runs.CheckpointError, ValueError, OSError) as e:
        st.error(f"The prior of {loaded.choice.label} could not be loaded: {e}. Train it again below.")
num_classes = the_prior.config.num_classes if the_prior is not None else None

# --- settings, kept in the URL -------------------------------------------------------------------
if "sample_n" not in st.session_state:  # a new session starts from the URL (clamped; junk -> defaults)
    st.session_state.sample_n = state.int_param("n", 16, 1, 64)
    temperature = state.float_param("temperature", 1.0, 0.05, 3.0)
    st.session_state.sample_temperature = round(round(temperature / 0.05) * 0.05, 2)  # on the slider's steps
    st.session_state.sample_top_k = state.int_param("top_k", 0, 0, max(sizes))
    st.session_state.sample_seed = state.int_param("seed", 0, 0, 999_999)
    st.session_state.sample_label = state.int_param("label", -1, -1, 9_999)
if num_classes is None or st.session_state.sample_label >= num_classes:
    st.session_state.sample_label = -1
st.session_state.sample_top_k = min(st.session_state.sample_top_k, max(sizes))  # another model, another K


def new_seed() -> None:
    st.session_state.sample_seed = (st.session_state.sample_seed + 1) % 1_000_000


with st.expander("Settings", expanded=not state.presenter()):
    c1, c2, c3, c4, c5 = st.columns([2, 2, 1.3, 1.5, 1.5])
    c1.slider("Temperature", 0.05, 3.0, step=0.05, key="sample_temperature",
              help="Divides the prior's logits: low = safe, typical codes; high = wilder, noisier maps.")
    c2.slider("Samples", 1, 64, key="sample_n")
    c3.number_input("Top-k", 0, max(sizes), key="sample_top_k",
                    help="Keep only the k likeliest codes at each cell before drawing; 0 keeps them all.")
    c4.number_input("Seed", 0, 999_999, key="sample_seed", help="Same seed and settings, same samples.")
    c4.button("New seed", on_click=new_seed)
    if num_classes:
        c5.selectbox("Class", [-1, *range(num_classes)], key="sample_label",
                     format_func=lambda y: "any" if y < 0 else (
                         loaded.data.class_names[y] if loaded.data.class_names and y < len(loaded.data.class_names)
                         else str(y)),
                     help="The prior is class-conditional: ask it for one class.")
    else:
        c5.caption("Class: this prior is unconditional.")
s = st.session_state
n, temperature, top_k = s.sample_n, float(s.sample_temperature), s.sample_top_k
seed, label = s.sample_seed, s.sample_label
st.query_params.update({"n": str(n), "temperature": f"{temperature:g}", "top_k": str(top_k), "seed": str(seed),
                        "label": str(label)})

# --- the prior, or how to get one ----------------------------------------------------------------


@st.fragment(run_every=1)
def training_progress(path) -> None:
    """Polls the background job; never touched by the training thread itself."""
    job = trainer().job(path)
    if job is None:
        return
    if not job.finished:
        bits = "" if job.bits_per_code is None else f", {job.bits_per_code:.2f} bits per code"
        st.progress(min(1.0, job.elapsed / job.seconds),
                    text=f"Training the prior: step {job.step}, {job.elapsed:.0f} of {job.seconds:.0f} s{bits}")
        st.button("Stop training", on_click=trainer().stop, args=(path,))
    else:
        st.session_state.prior_job_seen = job.started
        st.rerun(scope="app")  # load and show the new prior


def start_training() -> None:
    try:
        trainer().start(run_dir, seconds=PRIOR_SECONDS, seed=seed)
    except (prior.PriorError, runs.CheckpointError) as e:
        st.session_state.prior_start_error = str(e)


job = trainer().job(run_dir)
if the_prior is None:
    st.warning(f"**{loaded.choice.label} has no prior yet.** Without one the only ways to 'generate' are the "
               "random codes and the noise below: see how badly they work, then train a prior.")
    if job is None or job.finished:
        st.button(f"Train a prior ({PRIOR_SECONDS} s)", type="primary", on_click=start_training,
                  help="Fits a PixelCNN to this model's code maps in the background; everyone sees the result.")
    st.caption("Or from a terminal, for longer:")
    st.code(f"python -m vqdemo prior train {run_dir} --seconds 300", language="bash")
if "prior_start_error" in st.session_state:
    st.error(st.session_state.pop("prior_start_error"))
if job is not None and job.state == "failed":
    st.error(f"Training the prior failed: {job.message}")
if job is not None and (not job.finished or st.session_state.get("prior_job_seen") != job.started):
    training_progress(run_dir)

if the_prior is not None:
    nll = painting.prior_figures(run_dir)
    uniform = painting.uniform_bits_per_image(sizes, h, w)
    m1, m2, m3, m4 = st.columns(4)
    if nll:
        m1.metric("Bits per code", f"{nll['bits_per_code']:.2f}",
                  help=f"The prior's validation NLL per code; a uniform guess pays log2(K) = {np.log2(sizes[0]):.1f}.")
        m2.metric("Bits per image", f"{nll['bits_per_image']:.0f}")
        m3.metric("Uniform baseline", f"{uniform:.0f} bits",
                  help=f"log2(K) x {len(sizes) * h * w} codes: the cost of an image if every code were equally likely.")
        m4.metric("Structure found", f"{1 - nll['bits_per_image'] / uniform:.0%}",
                  help="How much shorter the prior makes the description of an image than uniform codes.")
        st.caption(f"The prior's validation NLL at step {nll['step']}: the fewer bits per image below the "
                   "uniform baseline, the more of the code maps' structure it has learned.")
    else:
        st.caption("This prior records no validation NLL yet.")

# --- the comparison ------------------------------------------------------------------------------
sampled = None
if the_prior is not None:
    try:
        sampled = draw(str(run_dir), mtime, n, temperature, top_k, seed, label, ae, the_prior)
    except (prior.PriorError, ValueError) as e:
        st.error(f"Sampling failed: {e}")

vae = vae_for(loaded.data.name)
cols = st.columns(4)
with cols[0]:
    st.markdown("**From the prior**")
    if sampled is not None:
        st.image(grid_image(torch.from_numpy(sampled[1])), output_format="PNG", alt="Samples from the prior")
        what = "any class" if label < 0 else f"class {label}"
        st.caption(f"{n} code maps drawn by the prior ({what}, temperature {temperature:g}"
                   f"{f', top-{top_k}' if top_k else ''}, seed {seed}), then decoded: they look like the data "
                   "because the prior makes neighbouring codes fit together.")
    else:
        st.info("No prior to sample from yet.")
with cols[1]:
    st.markdown("**Uniformly random codes**")
    st.image(grid_image(analysis.random_code_images(ae, n, seed)), output_format="PNG", alt="Uniformly random codes")
    st.caption("Every cell a uniformly random code: each code is a real piece of an image, "
               "but nothing makes them agree.")
with cols[2]:
    st.markdown("**Noise through this decoder**")
    st.image(grid_image(analysis.gaussian_latent_images(ae, n, seed)), output_format="PNG",
             alt="Gaussian noise through the VQ decoder")
    st.caption("N(0, I) latents straight into the VQ decoder (seed 003's 'random' images): "
               "noise is far from every code.")
with cols[3]:
    st.markdown("**Noise through a VAE**")
    if vae is not None:
        st.image(grid_image(analysis.gaussian_latent_images(vae.model, n, seed)), output_format="PNG",
                 alt="Gaussian noise through a VAE")
        st.caption(f"The same noise through {vae.choice.label}, a VAE trained so that N(0, I) decodes to images: "
                   "blurrier, but like the data.")
    else:
        st.info(f"No VAE on {loaded.data.name} here. Train one on the Train page (model: VAE) to compare: "
                "a VAE is trained so that Gaussian noise decodes to images.")

# --- one sample up close -------------------------------------------------------------------------
if sampled is not None:
    st.subheader("One sample up close")
    st.session_state.sample_pick = min(st.session_state.get("sample_pick", 0), n - 1)
    left, right = st.columns([3, 2])
    pick = left.number_input("Sample", 0, n - 1, key="sample_pick", width=200,
                             help="Which of the samples above to inspect (0 = top left, row by row).")
    codes = torch.from_numpy(sampled[0][int(pick)])  # (h, w) or (D, h, w)
    stack = painting.as_stack(codes[None])[0]  # (D, h, w)
    maps = [stack[d].numpy() for d in range(len(sizes))]
    titles = [f"depth {d + 1}" for d in range(len(sizes))] if len(sizes) > 1 else None
    left.plotly_chart(figures.code_maps(maps, max(sizes), titles, cell_px=40 if len(sizes) == 1 else 26),
                      key="sample_codes")
    left.caption(f"Sample {int(pick)}'s {h}x{w} code map{'s, one per depth' if len(sizes) > 1 else ''}: the "
                 "'small image' the prior drew, one code id (and colour) per cell, in raster order.")
    right.image(state.crisp(torch.from_numpy(sampled[1][int(pick)]), 280), output_format="PNG",
                alt="The sampled code map decoded")
    right.caption("That code map decoded: the only thing the decoder ever sees is this grid of ids.")
    if len(sizes) > 1:
        steps = analysis.image_grid(torch.cat([ae.decode_codes(stack[None], d) for d in range(1, len(sizes) + 1)]),
                                    nrow=len(sizes))
        st.image(state.crisp(steps, 112 * len(sizes)), output_format="PNG")
        st.caption("The same sample decoded from depths 1, 1..2, ... all: the RQ prior draws depth by depth, "
                   "coarse to fine.")
