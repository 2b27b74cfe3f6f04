"""vqdemo.explain: the numbers the teaching pages show must agree with the model they describe."""


import pytest
import torch

from vqdemo import explain
from vqdemo.models import ModelConfig, build_model
from vqdemo.quantize import QuantizerConfig, ResidualConfig


def tiny(kind: str = "vq", **vq) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = ModelConfig(kind=kind, image_size=8, hidden=8, res_blocks=0, res_hidden=8, downsample=4,
                      vq=QuantizerConfig(k=6, dim=3, init="normal", **vq),
                      rq=ResidualConfig(depth=3, codebook_sizes=[6, 5, 4]))
    return build_model(cfg).eval()


def images(n: int = 5) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def test_distance_parts_match_brute_force():
    g = torch.Generator().manual_seed(0)
    x, e = torch.randn(16, generator=g), torch.randn(16, generator=g)
    p = explain.distance_parts(x, e)
    assert p.expanded == pytest.approx(p.direct, rel=1e-9)
    assert p.direct == pytest.approx(float(((x - e) ** 2).sum()), rel=1e-5)
    assert p.x_sq == pytest.approx(float(x @ x), rel=1e-5) and p.cross == pytest.approx(float(-2 * x @ e), rel=1e-5)


@pytest.mark.parametrize("kind,cosine", [("vq", False), ("vq", True), ("rq", False)])
def test_quantize_steps_agree_with_the_model(kind, cosine):
    model = tiny(kind, cosine=cosine)
    x = images()
    z_e = model.encode(x)
    steps = explain.quantize_steps(model, z_e)
    assert len(steps) == (3 if kind == "rq" else 1)
    codes = model.encode_codes(x)
    got = torch.stack([s.codes for s in steps], 1) if kind == "rq" else steps[0].codes
    assert torch.equal(got, codes)
    z_q = model.quantizer.lookup(codes)
    assert torch.allclose(sum(s.chosen for s in steps), z_q, atol=1e-5)
    for s in steps:  # the codes are the argmin of the distances
        k = s.dist.shape[1]
        assert s.dist.shape == (len(s.compared), k)
        assert torch.equal(s.dist.argmin(1), s.codes.flatten())
    # depth 2 quantises what depth 1 left over
    if kind == "rq":
        assert torch.allclose(steps[1].residual, steps[0].residual - steps[0].chosen, atol=1e-6)


def test_quantize_steps_follow_per_depth_residual_scales():
    model = tiny("rq")
    model.config.rq.norm_residual = True
    model.quantizer.scales.copy_(torch.tensor([1.0, 0.5, 0.2]))  # as a trained norm_residual model holds them
    x = images()
    steps = explain.quantize_steps(model, model.encode(x))
    assert torch.equal(torch.stack([s.codes for s in steps], 1), model.encode_codes(x))
    assert torch.allclose(sum(s.chosen for s in steps), model.quantizer.lookup(model.encode_codes(x)), atol=1e-5)


def test_quantize_steps_distances_are_squared_euclidean():
    model = tiny("rq")
    steps = explain.quantize_steps(model, model.encode(images(2)))
    for d, s in enumerate(steps):
        codebook = model.quantizer.layer(d).vectors()
        brute = ((s.compared[:, None, :] - codebook[None]) ** 2).sum(-1)
        assert torch.allclose(s.dist, brute, atol=1e-4)


def test_cell_steps_follow_one_cell():
    model = tiny("rq")
    x = images(3)
    steps = explain.quantize_steps(model, model.encode(x))
    cells = explain.cell_steps(steps, row=1, col=0, image=2)
    assert [c.depth for c in cells] == [1, 2, 3]
    assert [c.code for c in cells] == model.encode_codes(x)[2, :, 1, 0].tolist()
    for a, b in zip(cells, cells[1:]):  # what one depth leaves is what the next one sees
        assert b.residual_norm == pytest.approx(a.left_norm, rel=1e-5)
    first = cells[0]
    assert first.distance == pytest.approx(float(steps[0].dist[2 * 4 + 1 * 2 + 0].min()), rel=1e-6)


def test_loss_terms_leave_the_model_unchanged():
    model = tiny("vq", codebook="ema")
    model.train()
    before = model.quantizer.codebook.detach().clone()
    terms = explain.loss_terms(model, images())
    assert {"recon", "commit", "codebook", "loss"} <= set(terms)
    assert terms["commit"] > 0
    assert model.training and torch.equal(model.quantizer.codebook, before)


def test_ste_gradients_paper_vs_both():
    g = explain.ste_gradients(seed=3)
    for form in ("paper", "both"):
        assert g[form]["forward_error"] < 1e-6   # both decode the code itself
        assert g[form]["grad_z_e"] > 0           # both reach the encoder
    assert g["paper"]["grad_e"] == 0.0            # the paper's form leaves the codebook to its own loss
    assert g["both"]["grad_e"] > 0                # the "both" form also trains the codebook from the decoder


def test_pick_example_prefers_structured_well_reconstructed_images():
    x = torch.zeros(6, 1, 4, 4)
    x[1, :, :2] = 1  # structured
    x[3, :, ::2] = 1  # structured
    x[4, :, 0, 0] = 1
    psnr = torch.tensor([50.0, 20.0, 50.0, 30.0, 10.0, 50.0])  # blank images reconstruct best
    assert explain.pick_example(x, psnr) == 3
    with pytest.raises(ValueError):
        explain.pick_example(x[:0], psnr[:0])


def test_encoder_points_codes_are_the_nearest_codebook_rows():
    model = tiny("rq")
    x = images(4)
    for depth in range(3):
        p = explain.encoder_points(model, x, torch.arange(4), depth=depth, max_points=10, seed=0)
        assert p["points"].shape == (10, 3) and p["codebook"].shape == (model.codebook_sizes[depth], 3)
        d = ((p["points"][:, None] - p["codebook"][None]) ** 2).sum(-1)
        assert (d.argmin(1) == p["codes"]).all()
        assert set(p["labels"].tolist()) <= {0, 1, 2, 3}
    with pytest.raises(ValueError):
        explain.encoder_points(model, x, depth=3)
