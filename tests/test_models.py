"""The three autoencoders share one encoder/decoder and differ in the bottleneck; shapes and learning."""

import pytest
import torch

from helpers import tiny_config
from vqdemo.data import DataConfig, load_data
from vqdemo.models import VAE, VQVAE, ModelConfig, build_model


@pytest.mark.parametrize("kind", ["vq", "rq", "vae"])
@pytest.mark.parametrize("arch,down,size,channels,latent", [
    ("conv", 4, 28, 1, 7), ("conv", 8, 28, 1, 4), ("conv", 2, 32, 3, 16),
    ("patch", 4, 28, 1, 7), ("patch", 2, 32, 3, 16)])
def test_shapes_through_every_model(kind, arch, down, size, channels, latent):
    cfg = tiny_config(kind)
    cfg.arch, cfg.downsample, cfg.image_size, cfg.channels = arch, down, size, channels
    model = build_model(cfg).eval()
    x = torch.rand(2, channels, size, size)
    out = model(x)
    assert out.x_hat.shape == x.shape and float(out.x_hat.min()) >= 0 and float(out.x_hat.max()) <= 1
    assert model.latent_shape == (latent, latent)
    if kind == "vae":
        assert out.codes is None and model.sample(3).shape == (3, channels, size, size)
    else:
        codes = model.encode_codes(x)
        assert codes.shape == ((2, latent, latent) if kind == "vq" else (2, 3, latent, latent))
        assert torch.allclose(model.decode_codes(codes), out.x_hat, atol=1e-5)


def test_patch_model_is_the_seed004_patch_mlp():
    cfg = tiny_config()
    cfg.arch = "patch"
    model = build_model(cfg)
    conv = model.encoder.patchify
    assert conv.kernel_size == (4, 4) and conv.stride == (4, 4)


def _fit_steps(model, x, steps=60, lr=3e-3):
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    losses = []
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        batch = x[torch.randint(len(x), (64,), generator=g)]
        loss, stats = model.training_loss((batch, None))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(stats["mse"])
    return losses


@pytest.mark.parametrize("kind", ["vq", "rq", "vae"])
def test_reconstruction_error_falls(kind):
    torch.manual_seed(0)
    x = load_data(DataConfig(name="digits")).train_x[:512]
    model = build_model(tiny_config(kind))
    losses = _fit_steps(model, x)
    assert sum(losses[-10:]) / 10 < 0.6 * sum(losses[:3]) / 3


def test_rq_reconstruction_improves_with_depth_after_training():
    torch.manual_seed(0)
    x = load_data(DataConfig(name="digits")).train_x[:512]
    model = build_model(tiny_config("rq"))
    _fit_steps(model, x, steps=80)
    stats = model.eval().evaluate(x[:128], None, 64)
    assert stats["psnr@1"] < stats["psnr@2"] < stats["psnr@3"]


def test_live_beta_and_resize():
    model = build_model(tiny_config())
    model.set_beta(1.5)
    assert model.quantizer.cfg.beta == 1.5 and model.config.vq.beta == 1.5
    model.resize_codebook(24)
    assert model.codebook_sizes == [24] and model.config.vq.k == 24
    with pytest.raises(ValueError):
        build_model(tiny_config("rq")).resize_codebook(8)


@pytest.mark.parametrize("bad", [dict(kind="gan"), dict(arch="mlp"), dict(channels=2), dict(downsample=3),
                                 dict(image_size=1000), dict(kl_weight=float("inf"))])
def test_bad_model_settings_are_refused(bad):
    with pytest.raises(ValueError):
        ModelConfig(**bad).validate()


def test_build_model_picks_the_class():
    assert isinstance(build_model(tiny_config("vae")), VAE)
    assert isinstance(build_model(tiny_config("rq")), VQVAE)
