"""Priors over code maps: causality without a blind spot, learning, and sampling behaviour."""

import math
from dataclasses import asdict

import pytest
import torch
from safetensors.torch import load_file, save_file

from vqdemo import files, runs
from vqdemo.data import DataConfig
from vqdemo.models import ModelConfig, build_model
from vqdemo.prior import (
    DEFAULT_LABEL_DROP,
    GatedPixelCNN,
    PriorConfig,
    PriorError,
    RQPrior,
    build_prior,
    load_prior,
    prior_config_for,
    sample_images,
    train_prior,
)
from vqdemo.quantize import QuantizerConfig, ResidualConfig

torch.set_num_threads(1)

H = W = 7


def small(kind: str = "pixelcnn", sizes=(8,), **kw) -> PriorConfig:
    kw = {"channels": 16, "layers": 4, "kernel": 3, **kw}
    return PriorConfig(kind=kind, codebook_sizes=list(sizes), height=H, width=W, **kw)


def model(cfg: PriorConfig, seed: int = 0):
    torch.manual_seed(seed)
    return build_prior(cfg).eval()


def stack_logits(m, codes: torch.Tensor) -> torch.Tensor:
    """Logits as (B, D, Kmax, H, W) whatever the prior kind (smaller codebooks zero-padded)."""
    out = m(codes)
    out = [out] if isinstance(m, GatedPixelCNN) else out
    kmax = max(lg.shape[1] for lg in out)
    return torch.stack([torch.nn.functional.pad(lg, (0, 0, 0, 0, 0, kmax - lg.shape[1])) for lg in out], dim=1)


def dependency(m, codes: torch.Tensor) -> torch.Tensor:
    """dep[d', i', j', d, i, j] = max change of the logits of code (d', i', j') when code (d, i, j) changes."""
    stacked = codes if codes.dim() == 4 else codes[:, None]  # (1, D, H, W)
    depth = stacked.shape[1]
    sizes = m.config.codebook_sizes
    variants = []
    for d in range(depth):
        for i in range(H):
            for j in range(W):
                v = stacked.clone()
                v[0, d, i, j] = (v[0, d, i, j] + 1) % sizes[d]
                variants.append(v)
    batch = torch.cat([stacked, *variants])  # (1 + D*H*W, D, H, W)
    with torch.no_grad():
        logits = stack_logits(m, batch if codes.dim() == 4 else batch[:, 0])  # (N, D, K, H, W)
    diff = (logits[1:] - logits[:1]).abs().amax(dim=2)  # (D*H*W, D, H, W): perturbed code -> logits changed
    return diff.view(depth, H, W, depth, H, W).permute(3, 4, 5, 0, 1, 2)


def order(depth: int) -> torch.Tensor:
    """Generation step of each code (d, i, j): raster over positions, depth inside a position."""
    i, j, d = torch.meshgrid(torch.arange(H), torch.arange(W), torch.arange(depth), indexing="ij")
    return ((i * W + j) * depth + d).permute(2, 0, 1)  # (D, H, W)


@pytest.mark.parametrize("kind,sizes", [("pixelcnn", (8,)), ("rq", (8, 6, 4))])
def test_causal_and_no_blind_spot(kind, sizes):
    m = model(small(kind, sizes, num_classes=None))
    codes = torch.stack([torch.randint(k, (H, W)) for k in sizes])[None]  # (1, D, H, W)
    dep = dependency(m, codes[:, 0] if kind == "pixelcnn" else codes)
    step = order(len(sizes))
    later_or_same = step[:, :, :, None, None, None] <= step[None, None, None]  # target step <= perturbed step
    assert dep[later_or_same].max() < 1e-5, "a logit saw a code at or after its own position"
    # Sanity: the check can fail, i.e. the net does use the past (left neighbour, the row above).
    assert dep[0, 3, 3, 0, 3, 2] > 1e-3 and dep[0, 3, 3, 0, 2, 3] > 1e-3
    # The spot a naive PixelCNN misses: up one row, two columns to the right.
    assert dep[0, 3, 2, 0, 2, 4] > 1e-4
    if kind == "rq":  # later depths of a position read its earlier depths
        assert dep[1, 4, 4, 0, 4, 4] > 1e-3 and dep[2, 4, 4, 1, 4, 4] > 1e-3


def test_deep_net_sees_every_earlier_position():
    m = model(small(layers=7))  # kernel 3: 7 layers reach 7 rows up and 7 columns each way
    dep = dependency(m, torch.randint(8, (1, H, W)))[0, :, :, 0]  # (H, W, H, W)
    step = order(1)[0]
    earlier = step[:, :, None, None] > step[None, None]
    assert dep[earlier].min() > 0


@pytest.mark.parametrize("kind,sizes", [("pixelcnn", (8,)), ("rq", (8, 4))])
def test_greedy_samples_match_full_forward(kind, sizes):
    """The incremental sampler computes the same logits as the full network: argmax is a fixed point."""
    m = model(small(kind, sizes, num_classes=3))
    labels = torch.arange(12) % 3
    codes = m.sample(12, temperature=1e-6, seed=3, labels=labels)
    with torch.no_grad():
        out = m(codes, labels)
    out = [out] if kind == "pixelcnn" else out
    stacked = codes[:, None] if kind == "pixelcnn" else codes
    for d, lg in enumerate(out):
        assert torch.equal(lg.argmax(1), stacked[:, d])


def stripes(n: int, k: int, seed: int) -> torch.Tensor:
    """Code maps whose rows all copy a random first row: 7 free codes of 49."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(k, (n, 1, W), generator=g).expand(n, H, W).clone()


def fit(m, codes, labels=None, steps: int = 150, lr: float = 3e-3) -> None:
    torch.manual_seed(0)
    opt = torch.optim.Adam(m.parameters(), lr=lr)
    m.train()
    for step in range(steps):
        part = slice((step * 32) % len(codes), (step * 32) % len(codes) + 32)
        loss, metrics = m.training_loss((codes[part], None if labels is None else labels[part]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert metrics["nll_bits"] == pytest.approx(loss.item() / math.log(2))


@pytest.mark.slow
def test_pixelcnn_learns_stripes():
    m = model(small(sizes=(16,)))
    before = m.evaluate(stripes(128, 16, 1), None, batch_size=64)
    fit(m, stripes(512, 16, 0))
    after = m.evaluate(stripes(128, 16, 1), None, batch_size=64)
    assert before["bits_per_code"] > 3.5  # about log2(16) = 4 untrained
    assert after["score"] == after["bits_per_code"] < 1.2  # ideal: 7 * 4 / 49 = 0.57
    assert after["bits_per_image"] == pytest.approx(after["bits_per_code"] * H * W)
    assert after["uniform_bits_per_image"] == pytest.approx(4 * H * W)


@pytest.mark.slow
def test_rq_prior_learns_stripes_and_depth_rule():
    top = stripes(512 + 128, 8, 0)
    codes = torch.stack([top, top % 4], dim=1)  # depth 1 is a function of depth 0 at the same position
    m = model(small("rq", (8, 4)))
    fit(m, codes[:512])
    out = m.evaluate(codes[512:], None, batch_size=64)
    assert out["bits_per_code"] < 0.5  # uniform: (3 + 2) / 2 = 2.5; ideal 7 * 3 / 98 = 0.21
    assert out["uniform_bits_per_image"] == pytest.approx(5 * H * W)
    with torch.no_grad():
        depth1 = m(codes[512:])[1].argmax(1)
    assert (depth1 == codes[512:, 1]).float().mean() > 0.95


def test_class_conditioning_is_learned():
    labels = torch.randint(4, (512,), generator=torch.Generator().manual_seed(0))
    codes = labels[:, None, None].expand(-1, H, W).clone()  # every code equals the class
    m = model(small(sizes=(4,), num_classes=4))
    fit(m, codes, labels, steps=60)
    for label in range(4):
        assert (m.sample(8, labels=torch.tensor(label), seed=label) == label).float().mean() > 0.9


@pytest.mark.parametrize("kind,sizes", [("pixelcnn", (8,)), ("rq", (8, 4))])
def test_sample_shape_seed_temperature_labels(kind, sizes):
    m = model(small(kind, sizes, num_classes=10))
    shape = (5, H, W) if kind == "pixelcnn" else (5, len(sizes), H, W)
    a = m.sample(5, seed=1, labels=torch.zeros(5, dtype=torch.long))
    assert a.shape == shape and a.dtype == torch.long
    stacked = a[:, None] if kind == "pixelcnn" else a
    for d, k in enumerate(sizes):
        assert stacked[:, d].min() >= 0 and stacked[:, d].max() < k
    assert torch.equal(a, m.sample(5, seed=1, labels=torch.zeros(5, dtype=torch.long)))
    assert not torch.equal(a, m.sample(5, seed=2, labels=torch.zeros(5, dtype=torch.long)))
    assert not torch.equal(a, m.sample(5, seed=1, labels=torch.ones(5, dtype=torch.long)))
    cold = [m.sample(5, seed=s, temperature=1e-6, labels=torch.tensor(2)) for s in range(3)]
    assert all(torch.equal(cold[0], c) for c in cold)
    assert torch.equal(cold[0], m.sample(5, seed=9, top_k=1, labels=torch.tensor(2)))
    assert m.training is False  # sampling restores the mode it found


def test_sample_rejects_bad_arguments():
    cond, uncond = model(small(num_classes=3)), model(small())
    bad = [
        lambda: uncond.sample(4, temperature=0.0),
        lambda: uncond.sample(4, temperature=-1.0),
        lambda: uncond.sample(4, temperature=float("nan")),
        lambda: uncond.sample(4, temperature=float("inf")),
        lambda: uncond.sample(4, top_k=0),
        lambda: uncond.sample(0),
        lambda: uncond.sample(4, labels=torch.zeros(4, dtype=torch.long)),
        lambda: cond.sample(4, labels=torch.tensor([0, 1, 3, 0])),
        lambda: cond.sample(4, labels=torch.tensor([-1, 0, 0, 0])),
        lambda: cond.sample(4, labels=torch.zeros(3, dtype=torch.long)),
    ]
    for call in bad:
        with pytest.raises(ValueError):
            call()
    assert cond.sample(4, seed=0).shape == (4, H, W)  # no labels: random classes from the seed


def test_bad_codes_and_configs_raise_value_errors():
    m = model(small())
    for codes in [torch.zeros(2, H, W), torch.zeros(2, H, W + 1, dtype=torch.long),
                  torch.full((2, H, W), 8), torch.zeros(2, 1, H, W, dtype=torch.long)]:
        with pytest.raises(ValueError):
            m.training_loss((codes, None))
    with pytest.raises(ValueError):
        model(small(num_classes=3)).training_loss((torch.zeros(2, H, W, dtype=torch.long), None))
    with pytest.raises(ValueError):
        RQPrior(PriorConfig())


def test_config_and_safetensors_round_trip(tmp_path):
    cfg = small("rq", (8, 4), num_classes=2)
    m = model(cfg)
    assert isinstance(m, RQPrior) and m.config == cfg
    assert not any("mask" in key for key in m.state_dict())  # fixed masks are not weights
    save_file(m.state_dict(), tmp_path / "prior.safetensors")
    again = build_prior(PriorConfig(**cfg.to_dict())).eval()
    again.load_state_dict(load_file(tmp_path / "prior.safetensors"))
    assert torch.equal(m.sample(3, seed=4, labels=torch.tensor(1)), again.sample(3, seed=4, labels=torch.tensor(1)))


# Glue: a prior for an autoencoder run folder.


@pytest.fixture(scope="module")
def ae_runs(tmp_path_factory):
    """Untrained VQ-VAE and RQ-VAE runs on a 200-image slice of the sklearn digits (offline, labelled)."""
    data = asdict(DataConfig(name="digits", max_images=200))
    out = {}
    for kind in ("vq", "rq", "vae"):
        cfg = ModelConfig(kind=kind, hidden=16, res_blocks=0, res_hidden=4, vq=QuantizerConfig(k=16, dim=8),
                          rq=ResidualConfig(depth=2, codebook_sizes=[8, 4]))
        torch.manual_seed(0)
        path = tmp_path_factory.mktemp(kind)
        meta = {"model": cfg.to_dict(), "data": data}
        files.write_json(path / "config.json", meta)
        runs.save_weights(path / runs.WEIGHTS, build_model(cfg), meta)
        out[kind] = path
    return out


@pytest.mark.parametrize("kind", ["vq", "rq"])
def test_train_load_and_sample_images(ae_runs, kind):
    ae, _ = runs.load_model(ae_runs[kind])
    cfg = prior_config_for(ae, 10, channels=8, layers=2)
    events = []
    out = train_prior(ae_runs[kind], steps=3, prior_cfg=cfg, on_event=events.append, batch_size=16)
    assert out == ae_runs[kind] / "prior" and (out / "model.safetensors").is_file()
    assert events[-1]["type"] == "end" and events[-1]["state"] == "done"
    assert any(e["type"] == "val" and "bits_per_code" in e for e in events)
    prior, meta = load_prior(ae_runs[kind])
    assert prior.config == cfg and meta["role"] == "prior" and meta["data"]["name"] == "digits"
    images = sample_images(ae_runs[kind], 3, seed=1, label=4)
    assert images.shape == (3, 1, 28, 28) and images.min() >= 0 and images.max() <= 1
    assert torch.equal(images, sample_images((ae, prior), 3, seed=1, label=4))
    with pytest.raises(ValueError):
        sample_images((ae, prior), 3, label=10)


def test_prior_glue_refuses_what_does_not_fit(ae_runs, tmp_path):
    with pytest.raises(ValueError, match="no discrete codes"):
        train_prior(ae_runs["vae"], steps=1)
    with pytest.raises(ValueError, match="autoencoder makes"):
        train_prior(ae_runs["vq"], steps=1, prior_cfg=small(sizes=(8,)))
    with pytest.raises(ValueError, match="no trained prior"):
        load_prior(tmp_path)
    meta = runs.read_json(ae_runs["vq"] / "config.json")
    del meta["data"]
    runs.save_weights(tmp_path / runs.WEIGHTS, runs.load_model(ae_runs["vq"])[0], meta)
    with pytest.raises(ValueError, match="no data config"):
        train_prior(tmp_path, steps=1)


# Classifier-free guidance (Ho & Salimans 2022): one network, a "no class" label, a guided mix of both.


class Guided(torch.nn.Module):
    """A prior's guided logits as a module (list per depth), so the causality helpers above can probe them."""

    def __init__(self, m, label: int, guidance: float):
        super().__init__()
        self.m, self.label, self.guidance, self.config = m, label, guidance, m.config

    def forward(self, codes, labels=None):
        return self.m.guided_logits(codes, torch.full((len(codes),), self.label), self.guidance)


def test_guided_prior_has_a_no_class_label_and_old_configs_have_none():
    guided, plain = small(num_classes=3, label_drop=0.2), small(num_classes=3)
    assert guided.guided and guided.label_count == 4 and not plain.guided and plain.label_count == 3
    assert model(guided).stack.layers[0].class_bias.num_embeddings == 4
    assert model(plain).stack.layers[0].class_bias.num_embeddings == 3
    old = plain.to_dict()
    del old["label_drop"]  # a prior saved before guidance existed
    assert PriorConfig(**old) == plain
    bad = [{"label_drop": 1.0}, {"label_drop": -0.1}, {"label_drop": True}, {"label_drop": 0.1, "num_classes": None}]
    for kw in bad:
        with pytest.raises(PriorError):
            small(**{"num_classes": 3, **kw})


@pytest.mark.parametrize("kind,sizes", [("pixelcnn", (8,)), ("rq", (8, 4))])
def test_label_drop_trains_the_no_class_path_only_in_training(kind, sizes):
    m = model(small(kind, sizes, num_classes=3, label_drop=0.999))
    codes = torch.stack([torch.randint(k, (16, H, W)) for k in sizes], 1)  # (16, D, H, W)
    codes = codes[:, 0] if kind == "pixelcnn" else codes
    labels = torch.arange(16) % 3
    stack = m._as_stack(codes)
    with torch.no_grad():
        as_none = m._nll_sum(stack, torch.full_like(labels, 3)).item() / stack.numel()
        as_class = m._nll_sum(stack, labels).item() / stack.numel()
        m.train()
        torch.manual_seed(0)
        dropped = m.training_loss((codes, labels))[0].item()
        m.eval()
        kept = m.training_loss((codes, labels))[0].item()
    assert as_none != pytest.approx(as_class)
    assert dropped == pytest.approx(as_none) and kept == pytest.approx(as_class)
    with pytest.raises(ValueError):  # the "no class" label is internal, never a class a caller can ask for
        m.sample(2, labels=torch.tensor(3))


@pytest.mark.parametrize("kind,sizes", [("pixelcnn", (8,)), ("rq", (8, 4))])
def test_guidance_mixes_class_and_no_class_logits(kind, sizes):
    m = model(small(kind, sizes, num_classes=3, label_drop=0.1))
    codes = torch.stack([torch.randint(k, (5, H, W)) for k in sizes], 1)
    codes = codes[:, 0] if kind == "pixelcnn" else codes
    labels = torch.tensor([0, 1, 2, 0, 1])
    stack = m._as_stack(codes)
    with torch.no_grad():
        cond = m.depth_logits(stack, labels)
        none = m.depth_logits(stack, torch.full_like(labels, 3))
        at = {w: m.guided_logits(codes, labels, w) for w in (0.0, 1.0, 2.5)}
    for d, k in enumerate(sizes):
        assert at[1.0][d].shape == cond[d].shape == (5, k, H, W)
        assert torch.equal(at[1.0][d], cond[d])  # w = 1: the conditional prior
        assert torch.allclose(at[0.0][d], none[d], atol=1e-6)  # w = 0: the "no class" prior
        assert torch.allclose(at[2.5][d], none[d] + 2.5 * (cond[d] - none[d]), atol=1e-5)
        assert not torch.allclose(at[2.5][d], cond[d])


@pytest.mark.parametrize("kind,sizes", [("pixelcnn", (8,)), ("rq", (8, 6, 4))])
def test_guided_logits_stay_causal(kind, sizes):
    m = Guided(model(small(kind, sizes, num_classes=3, label_drop=0.1)), label=1, guidance=3.0)
    codes = torch.stack([torch.randint(k, (H, W)) for k in sizes])[None]  # (1, D, H, W)
    dep = dependency(m, codes[:, 0] if kind == "pixelcnn" else codes)
    step = order(len(sizes))
    later_or_same = step[:, :, :, None, None, None] <= step[None, None, None]
    assert dep[later_or_same].max() < 1e-5, "a guided logit saw a code at or after its own position"
    assert dep[0, 3, 3, 0, 3, 2] > 1e-3 and dep[0, 3, 2, 0, 2, 4] > 1e-4


@pytest.mark.parametrize("kind,sizes", [("pixelcnn", (8,)), ("rq", (8, 4))])
def test_guided_greedy_samples_match_guided_logits(kind, sizes):
    """The sampler draws from exactly the guided mix: at temperature -> 0 its maps are the guided argmax."""
    m = model(small(kind, sizes, num_classes=3, label_drop=0.1))
    labels = torch.arange(12) % 3
    codes = m.sample(12, temperature=1e-6, seed=3, labels=labels, guidance=3.0)
    assert codes.shape == ((12, H, W) if kind == "pixelcnn" else (12, len(sizes), H, W))
    with torch.no_grad():
        out = m.guided_logits(codes, labels, 3.0)
    stacked = m._as_stack(codes)
    for d, lg in enumerate(out):
        assert torch.equal(lg.argmax(1), stacked[:, d])
    assert not torch.equal(m.sample(12, seed=3, labels=labels), m.sample(12, seed=3, labels=labels, guidance=3.0))


def test_guided_sampling_is_seeded_and_checked():
    guided, plain = model(small(num_classes=3, label_drop=0.1)), model(small(num_classes=3))
    a = guided.sample(6, seed=5, labels=torch.tensor(2), guidance=2.0)
    assert torch.equal(a, guided.sample(6, seed=5, labels=torch.tensor(2), guidance=2.0))
    assert not torch.equal(a, guided.sample(6, seed=6, labels=torch.tensor(2), guidance=2.0))
    assert guided.sample(4, seed=0, guidance=2.0).shape == (4, H, W)  # random classes, guided
    assert torch.equal(plain.sample(4, seed=1, labels=torch.tensor(0), guidance=1.0),
                       plain.sample(4, seed=1, labels=torch.tensor(0)))
    for call in [lambda: plain.sample(4, labels=torch.tensor(0), guidance=2.0),
                 lambda: guided.sample(4, guidance=-1.0), lambda: guided.sample(4, guidance=float("nan")),
                 lambda: guided.sample(4, guidance=True), lambda: guided.sample(4, guidance=21.0)]:
        with pytest.raises(PriorError):
            call()


def test_priors_for_labelled_data_are_guided_by_default(ae_runs):
    ae, _ = runs.load_model(ae_runs["vq"])
    assert prior_config_for(ae, 10).label_drop == DEFAULT_LABEL_DROP > 0 and prior_config_for(ae, 10).guided
    assert prior_config_for(ae, None).label_drop == 0 and prior_config_for(ae, 10, label_drop=0.0).guided is False
