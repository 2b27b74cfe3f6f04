"""Sample: a VQ-VAE only generates once a prior draws its "small image" of codes (van den Oord et al. 2017).

Beside the prior's samples sit the two ways that do not work: uniformly random codes, and Gaussian
noise pushed through the decoder (the "random" images some tutorials show). The settings live in the URL so a
teacher can share an exact setup; models, priors and samples are cached for the whole class.
"""

import numpy as np
import streamlit as st
import torch

from ui import describe, figures, state, text, theme
from ui.jobs import job_queue, student, tick_seconds
from vqdemo import analysis, code_canvas, prior, runs
from vqdemo.jobs import JobError

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


@st.cache_data(show_spinner="Sampling code maps...", max_entries=64)
def draw(path: str, mtime: float, n: int, temperature: float, top_k: int, seed: int, label: int, guidance: float,
         _ae, _prior) -> tuple[np.ndarray, np.ndarray]:
    """n code maps from the prior and their images, cached by every setting (a class shares one URL)."""
    codes, images = prior.sample_with_codes(_ae, _prior, n, temperature, top_k or None, seed,
                                            None if label < 0 else label, guidance)
    return codes.numpy(), images.numpy()


def prior_mtime(path) -> float | None:
    file = prior.prior_dir(path) / runs.WEIGHTS   # its own prior/, or the runs folder's mirror for a shipped model
    return file.stat().st_mtime if file.is_file() else None


def grid_image(images: torch.Tensor, width: int = 300) -> np.ndarray:
    return state.crisp(analysis.image_grid(images, nrow=int(np.ceil(np.sqrt(len(images))))), width)


def vae_for(dataset: str):
    """A VAE trained on the same dataset among the models on offer, loaded (cached), or None."""
    for choice in state.model_choices():
        if choice.kind != "vae":
            continue
        try:
            if runs.run_info(choice.path).meta.get("data", {}).get("name") == dataset:
                return state.load_choice(choice)
        except (runs.CheckpointError, ValueError, OSError):
            continue
    return None


if loaded.kind == "fsq":
    st.info(f"{text.md(loaded.choice.label)} is an FSQ model: sampling with a prior is for VQ-VAE and RQ-VAE models "
            "here. Pick one in the sidebar.")
    st.stop()
if loaded.kind not in ("vq", "rq"):
    st.info(f"{text.md(loaded.choice.label)} is a VAE: it generates by decoding N(0, I) noise, no prior over codes "
            "needed. Pick a VQ-VAE or RQ-VAE model in the sidebar to see why those need one.")
    st.image(grid_image(loaded.model.sample(16, 0)), output_format="PNG",
             alt=describe.grid(16, "VAE samples: N(0, I) noise through its decoder, seed 0"))
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
        st.error(f"The prior of {text.md(loaded.choice.label)} could not be loaded: {text.md(e, 400)}. "
                 "Train it again below.")
num_classes = the_prior.config.num_classes if the_prior is not None else None
guided = the_prior is not None and the_prior.config.guided  # trained with label dropout: it can guide

# --- settings, kept in the URL -------------------------------------------------------------------
N, TOP_K = state.page_param("sample", "n"), state.page_param("sample", "top_k", hi=max(sizes))
TEMPERATURE, SEED = state.page_param("sample", "temperature"), state.page_param("sample", "seed")
LABEL, GUIDANCE = state.page_param("sample", "label"), state.page_param("sample", "guidance")
if "sample_n" not in st.session_state:  # a new session starts from the URL (clamped; junk -> defaults)
    st.session_state.sample_n = N.read()
    st.session_state.sample_temperature = round(round(TEMPERATURE.read() / 0.05) * 0.05, 2)  # on the slider's steps
    st.session_state.sample_top_k = TOP_K.read()
    st.session_state.sample_seed = SEED.read()
    st.session_state.sample_label = LABEL.read()
    st.session_state.sample_guidance = round(round(GUIDANCE.read() / 0.25) * 0.25, 2)  # on the slider's steps
if num_classes is None or st.session_state.sample_label >= num_classes:
    st.session_state.sample_label = -1
st.session_state.sample_top_k = min(st.session_state.sample_top_k, max(sizes))  # another model, another K


def new_seed() -> None:
    st.session_state.sample_seed = (st.session_state.sample_seed + 1) % (SEED.hi + 1)


with st.expander("Settings", expanded=not theme.presenter()):
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
                         text.plain(loaded.data.class_names[y])
                         if loaded.data.class_names and y < len(loaded.data.class_names) else str(y)),
                     help="The prior is class-conditional: ask it for one class.")
    else:
        c5.caption("Class: this prior is unconditional.")
    if guided:
        st.slider("Guidance", 0.0, 5.0, step=0.25, key="sample_guidance",
                  help="Classifier-free guidance (Ho & Salimans 2022): 1 = the class-conditional prior as trained, "
                       "0 = the same network with no class, above 1 = pushed towards the class.")
s = st.session_state
n, temperature, top_k = s.sample_n, float(s.sample_temperature), s.sample_top_k
seed, label = s.sample_seed, s.sample_label
guidance = float(s.sample_guidance) if guided else 1.0
state.to_url((N, n), (TEMPERATURE, temperature), (TOP_K, top_k), (SEED, seed), (LABEL, label),
             (GUIDANCE, float(s.sample_guidance)))

# --- the prior, or how to get one ----------------------------------------------------------------


def prior_job():
    """The class queue's job training this model's prior, if one was started on this server."""
    return job_queue().keyed(("prior", str(prior.prior_write_dir(run_dir).resolve())))


def may_train_prior() -> bool:
    """A run's prior is its owner's to train (or the teacher's): a student who stops someone else's prior after three
    steps would leave them a weak one. A shipped model's is the teacher's."""
    me = student()
    return me.teacher or (loaded.choice.id.startswith("run:") and loaded.meta.get("owner") == me.id)


def stop_prior(job) -> None:
    me = student()
    try:
        job.check_control(me.id, me.teacher)
        job.stop()
    except JobError as e:
        st.session_state.prior_start_error = str(e)


def training_progress() -> None:
    """Polls the prior's job in the class queue; the worker process never touches the page."""
    job = prior_job()
    if job is None:
        return
    v = job.view()
    if v.state == "queued":
        st.info(f"The prior waits in the class queue at place {v.place}; it starts by itself.")
    elif v.active:
        bits = [r["bits_per_code"] for r in v.val if isinstance(r.get("bits_per_code"), float)]
        text = f"Training the prior: step {v.step}, {v.elapsed:.0f} of {v.budget_s:.0f} s"
        st.progress(min(1.0, v.elapsed / max(v.budget_s, 1e-9)),
                    text=text + (f", {bits[-1]:.2f} bits per code" if bits else ""))
        me = student()
        if v.owner == me.id or me.teacher:   # only its owner (or the teacher) sees the control
            st.button("Stop training", on_click=stop_prior, args=(job,), disabled=v.state == "stopping")
    else:
        st.session_state.prior_job_seen = job.id
        st.rerun(scope="app")  # load and show the new prior


def start_training() -> None:
    me = student()
    try:
        if not may_train_prior():
            raise JobError("only the student who trained this run, or the teacher, can train its prior")
        job_queue().submit_prior(me.id, run_dir, prior.prior_write_dir(run_dir), seconds=PRIOR_SECONDS, seed=seed,
                                 address=me.address, teacher=me.teacher)
    except (JobError, prior.PriorError, runs.CheckpointError, OSError) as e:
        st.session_state.prior_start_error = str(e)


job = prior_job()
view = job.view() if job is not None else None
if the_prior is None:
    st.warning(f"**{text.md(loaded.choice.label)} has no prior yet.** Without one the only ways to 'generate' are the "
               "random codes and the noise below: see how badly they work, then train a prior.")
    if (view is None or not view.active) and may_train_prior():
        st.button(f"Train a prior ({PRIOR_SECONDS} s)", type="primary", on_click=start_training,
                  help="Fits a PixelCNN to this model's code maps in a background worker; everyone sees the result.")
    elif view is None or not view.active:
        st.caption("Only the student who trained this run, or the teacher, can train its prior here.")
    st.caption("Or from a terminal, for longer:")
    st.code(f"python -m vqdemo prior train {run_dir} --seconds 300", language="bash", wrap_lines=True)
if "prior_start_error" in st.session_state:
    st.error(text.md(st.session_state.pop("prior_start_error"), 400))
if view is not None and view.state == "failed":
    st.error(f"Training the prior failed: {text.md(view.reason, 400)}")
if view is not None and (view.active or st.session_state.get("prior_job_seen") != view.id):
    st.fragment(training_progress, run_every=tick_seconds(1.0))()

if the_prior is not None:
    nll = prior.prior_figures(run_dir)
    uniform = prior.uniform_bits_per_image(sizes, h, w)
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
        if 1 - nll["bits_per_image"] / uniform < analysis.WEAK_PRIOR:
            st.warning(f"This prior has learned little (under {analysis.WEAK_PRIOR:.0%} shorter than uniform codes): "
                       "its samples will look much like the random codes beside them.")
    else:
        st.caption("This prior records no validation NLL yet.")
    if loaded.choice.id.startswith("run:") and may_train_prior() and (view is None or not view.active):
        st.button(f"Train the prior again ({PRIOR_SECONDS} s)", on_click=start_training, key="sample_retrain_prior",
                  help="Replaces this run's prior with a newly trained one (for instance after a training that was "
                       "stopped early).")

# --- the comparison ------------------------------------------------------------------------------
sampled = None
if the_prior is not None:
    try:
        sampled = draw(str(run_dir), mtime, n, temperature, top_k, seed, label, guidance, ae, the_prior)
    except (prior.PriorError, ValueError) as e:
        st.error(f"Sampling failed: {text.md(e, 400)}")

vae = vae_for(loaded.data.name)
HEADS = ("From the prior", "Uniformly random codes", "Noise through this decoder", "Noise through a VAE")
for head, c in zip(HEADS, st.columns(4)):   # a row of their own: a heading over two lines never lowers its picture
    c.markdown(f"**{head}**")
cols = st.columns(4)
with cols[0]:
    if sampled is not None:
        what = "any class" if label < 0 else f"class {label}"
        st.image(grid_image(torch.from_numpy(sampled[1])), output_format="PNG",
                 alt="Samples from the prior: " + describe.grid(
                     len(sampled[1]), f"code maps drawn by the prior ({what}, temperature {temperature:g}, "
                                      f"seed {seed})"))
        st.caption(f"{n} code maps drawn by the prior ({what}, temperature {temperature:g}"
                   f"{f', top-{top_k}' if top_k else ''}{f', guidance {guidance:g}' if guided else ''}, seed {seed}), "
                   "then decoded. " + analysis.sample_note(nll, uniform, temperature)
                   + (" " + analysis.guidance_note(guidance) if guided else ""))
    else:
        st.info("No prior to sample from yet.")
with cols[1]:
    st.image(grid_image(analysis.random_code_images(ae, n, seed)), output_format="PNG",
             alt="Uniformly random codes: " + describe.grid(n, f"code maps of random codes (seed {seed}), decoded"))
    st.caption("Every cell a uniformly random code: each code is a real piece of an image, "
               "but nothing makes them agree.")
with cols[2]:
    st.image(grid_image(analysis.gaussian_latent_images(ae, n, seed)), output_format="PNG",
             alt="Gaussian noise through the VQ decoder: " + describe.grid(n, f"N(0, I) latents (seed {seed})"))
    st.caption("N(0, I) latents straight into the VQ decoder (the 'random' images some tutorials show): "
               "noise is far from every code.")
with cols[3]:
    if vae is not None:
        st.image(grid_image(analysis.gaussian_latent_images(vae.model, n, seed)), output_format="PNG",
                 alt="Gaussian noise through a VAE: " + describe.grid(n, f"N(0, I) latents through {vae.choice.label}"))
        st.caption(f"The same noise through {text.md(vae.choice.label)}, a VAE trained so that N(0, I) decodes to "
                   f"images (KL weight {vae.model.config.kl_weight:g}: the lower it is, the more bits each image "
                   "carries and the less its latents are held to N(0, I)).")
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
    stack = code_canvas.as_stack(codes[None])[0]  # (D, h, w)
    maps = [stack[d].numpy() for d in range(len(sizes))]
    titles = [f"depth {d + 1}" for d in range(len(sizes))] if len(sizes) > 1 else None
    describe.chart(left, figures.code_maps(maps, max(sizes), titles, cell_px=40 if len(sizes) == 1 else 26),
                   describe.code_map(stack.numpy(), max(sizes)), key="sample_codes")
    left.caption(f"Sample {int(pick)}'s {h}x{w} code map{'s, one per depth' if len(sizes) > 1 else ''}: the "
                 "'small image' the prior drew, one code id (and colour) per cell, in raster order.")
    right.image(state.crisp(torch.from_numpy(sampled[1][int(pick)]), 280), output_format="PNG",
                alt=f"The sampled code map decoded: sample {int(pick)}, "
                    + describe.code_map(stack.numpy(), max(sizes)))
    right.caption("That code map decoded: the only thing the decoder ever sees is this grid of ids.")
    if len(sizes) > 1:
        steps = analysis.image_grid(torch.cat([ae.decode_codes(stack[None], d) for d in range(1, len(sizes) + 1)]),
                                    nrow=len(sizes))
        st.image(state.crisp(steps, 112 * len(sizes)), output_format="PNG",
                 alt=f"sample {int(pick)} decoded from depth 1, then depths 1 to 2, up to all {len(sizes)} depths")
        st.caption("The same sample decoded from depths 1, 1..2, ... all: the RQ prior draws depth by depth, "
                   "coarse to fine.")

state.notebook_button("sample")   # this setup as a Jupyter notebook (ui/notebook_button.py)
