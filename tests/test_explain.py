"""vqdemo.explain: the numbers the teaching pages show must agree with the model they describe."""


import pytest
import torch

from vqdemo import explain
from vqdemo.models import ModelConfig, build_model
from vqdemo.quantize import QuantizerConfig, ResidualConfig, VectorQuantizer, rows


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


# ---- one search: forward and the teaching view run the same code -------------------------------------------------

@pytest.mark.parametrize("kind,cosine", [("vq", False), ("vq", True), ("rq", False)])
def test_forward_carries_the_same_steps_it_shows(kind, cosine):
    model = tiny(kind, cosine=cosine)
    z_e = model.encode(images())
    shown = model.quantizer.depth_steps(z_e)
    out = model.quantizer(z_e)
    ran = [o.step for o in out.layers] if kind == "rq" else [out.step]
    assert len(ran) == len(shown)
    for a, b in zip(ran, shown):
        for name in ("residual", "compared", "codes", "picked", "chosen"):
            assert torch.equal(getattr(a, name), getattr(b, name)), name
        assert a.dist is None and b.dist is not None   # training does not hold the (N, K) distances
    assert torch.allclose(out.z_q, sum(s.chosen for s in shown), atol=1e-6)


def test_depth_steps_change_nothing_even_in_training_mode():
    model = tiny("rq", codebook="ema")
    model.config.rq.norm_residual = True
    model.train()
    before = {n: t.clone() for n, t in model.quantizer.state_dict().items()}
    model.quantizer.depth_steps(model.encode(images()).detach())
    assert all(torch.equal(before[n], t) for n, t in model.quantizer.state_dict().items())
    model.quantizer(model.encode(images()).detach())  # forward in training does move them
    assert not all(torch.equal(before[n], t) for n, t in model.quantizer.state_dict().items())


def test_rq_training_passes_each_depth_what_the_last_one_left():
    model = tiny("rq", codebook="grad")
    model.train()
    out = model.quantizer(model.encode(images()))
    for a, b in zip(out.layers, out.layers[1:]):
        assert torch.allclose(b.step.residual, a.step.residual - a.step.chosen, atol=1e-6)


# ---- the Learn page's one-line code computes what the library computes -------------------------------------------

def run_line(line: str, **names) -> dict:
    scope = {"F": torch.nn.functional, **names}
    exec(line, scope)  # the page's own text, run on real tensors
    return scope


def test_the_distance_line_gives_the_quantisers_distances():
    model = tiny("vq")
    [step] = explain.quantize_steps(model, model.encode(images()))
    got = run_line(explain.DISTANCE_CODE, x=step.compared, e=model.quantizer.vectors().detach())["dist"]
    assert got.shape == step.dist.shape
    assert torch.allclose(got, step.dist, atol=1e-4)
    assert torch.equal(got.argmin(1), step.codes.flatten())


@pytest.mark.parametrize("kind", ["vq", "rq"])
def test_the_loss_lines_give_the_models_loss_terms(kind):
    model = tiny(kind, codebook="grad", beta=0.3)
    model.config.data_variance = 0.07
    x = images()
    out = model(x)
    q = model.quantizer(out.z_e)
    x_hat = model.decode_raw(q.z_q)
    recon = run_line(explain.RECON_CODE, x_hat=x_hat, x=x, data_variance=0.07)["recon"]
    assert torch.allclose(recon, out.terms["recon"], rtol=1e-5)
    if kind == "vq":
        names = {"e": q.step.chosen, "z_e": out.z_e, "beta": 0.3}
        assert torch.allclose(run_line(explain.CODEBOOK_CODE, **names)["codebook"], out.terms["codebook"], rtol=1e-5)
        assert torch.allclose(run_line(explain.COMMIT_CODE, **names)["commit"], 0.3 * out.terms["commit"], rtol=1e-5)
    else:
        steps = [o.step for o in q.layers]
        loss = run_line(explain.RQ_LOSS_CODE, recon=recon, beta=0.3, residuals=[s.residual for s in steps],
                        chosen=[s.chosen for s in steps])["loss"]
        assert torch.allclose(loss, out.loss, rtol=1e-5)


@pytest.mark.parametrize("form", ["paper", "both"])
def test_the_straight_through_lines_match_the_quantisers_value_and_gradients(form):
    vq = VectorQuantizer(QuantizerConfig(k=6, dim=3, codebook="grad", init="normal", restart_dead=False, ste=form))
    vq.eval()
    z = torch.randn(2, 3, 2, 2, generator=torch.Generator().manual_seed(2), requires_grad=True)
    upstream = torch.randn(2, 3, 2, 2, generator=torch.Generator().manual_seed(3))
    out = vq(z)
    (out.z_q * upstream).sum().backward()
    z_e = z.detach().clone().requires_grad_(True)
    e = out.step.chosen.detach().clone().requires_grad_(True)
    shown = run_line(explain.STE_CODE[form], z_e=z_e, z_q=e)["z_q"]
    (shown * upstream).sum().backward()
    assert torch.allclose(shown, out.z_q, atol=1e-6)  # the same forward value: the code itself
    assert torch.allclose(z_e.grad, z.grad)
    e_grad = torch.zeros_like(vq.codebook).index_add_(0, out.codes.flatten(), rows(e.grad) if e.grad is not None
                                                      else torch.zeros(8, 3))
    assert torch.allclose(e_grad, vq.codebook.grad if vq.codebook.grad is not None else torch.zeros_like(e_grad))
    assert (e.grad is not None and e.grad.abs().sum() > 0) == (form == "both")
