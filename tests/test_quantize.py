"""The VQ layer and the residual quantiser: nearest codes, losses, gradients, codebook upkeep."""

import math

import pytest
import torch
import torch.nn.functional as F

from vqdemo.quantize import (
    QuantizerConfig,
    ResidualConfig,
    ResidualQuantizer,
    VectorQuantizer,
    nearest_code,
    perplexity_of,
)


def clustered(n=512, d=4, centers=8, seed=0):
    """(n, d, 1, 1) latents around `centers` well separated points."""
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(centers, d, generator=g) * 5
    x = c[torch.randint(centers, (n,), generator=g)] + 0.05 * torch.randn(n, d, generator=g)
    return x[:, :, None, None], c


def test_expanded_distance_matches_brute_force():
    g = torch.Generator().manual_seed(1)
    x, e = torch.randn(300, 16, generator=g), torch.randn(64, 16, generator=g)
    codes, dist = nearest_code(x, e)
    brute = ((x[:, None, :] - e[None, :, :]) ** 2).sum(-1)
    assert torch.equal(codes, brute.argmin(1))
    assert torch.allclose(dist, brute, atol=1e-4)


def test_quantizer_snaps_to_codebook_rows_with_shapes():
    vq = VectorQuantizer(QuantizerConfig(k=8, dim=4, init="normal", restart_dead=False)).eval()
    z = torch.randn(2, 4, 3, 5)
    out = vq(z)
    assert out.z_q.shape == z.shape and out.codes.shape == (2, 3, 5)
    flat = z.permute(0, 2, 3, 1).reshape(-1, 4)
    brute = torch.cdist(flat, vq.codebook).argmin(1)
    assert torch.equal(out.codes.flatten(), brute)
    assert torch.allclose(out.z_q.permute(0, 2, 3, 1).reshape(-1, 4), vq.codebook[brute], atol=1e-6)
    assert int(out.counts.sum()) == 30


def test_paper_ste_copies_decoder_gradient_to_encoder_only():
    vq = VectorQuantizer(QuantizerConfig(k=8, dim=4, codebook="grad", init="normal", restart_dead=False, beta=0.0))
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    out = vq(z)
    upstream = torch.randn_like(out.z_q)
    (out.z_q * upstream).sum().backward()
    assert torch.allclose(z.grad, upstream)          # straight through: dL/dz_e = dL/dz_q
    assert vq.codebook.grad is None or vq.codebook.grad.abs().sum() == 0


def test_both_ste_also_trains_the_codebook_from_the_decoder():
    vq = VectorQuantizer(QuantizerConfig(k=8, dim=4, codebook="grad", init="normal", restart_dead=False, ste="both"))
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    out = vq(z)
    upstream = torch.randn_like(out.z_q)
    (out.z_q * upstream).sum().backward()
    assert torch.allclose(z.grad, upstream)
    assert vq.codebook.grad.abs().sum() > 0


def test_codebook_and_commitment_losses_pull_the_right_way():
    vq = VectorQuantizer(QuantizerConfig(k=8, dim=4, codebook="grad", init="normal", restart_dead=False, beta=0.25))
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    out = vq(z)
    e = vq.codebook[out.codes.flatten()]
    flat = z.permute(0, 2, 3, 1).reshape(-1, 4)
    assert math.isclose(float(out.commit_loss.detach()), float(F.mse_loss(flat, e).detach()), rel_tol=1e-5)
    want = out.codebook_loss + 0.25 * out.commit_loss
    assert math.isclose(float(out.loss.detach()), float(want.detach()), rel_tol=1e-5)
    out.codebook_loss.backward(retain_graph=True)
    assert z.grad is None                             # sg[z_e]: the codebook term never moves the encoder
    assert vq.codebook.grad.abs().sum() > 0
    vq.codebook.grad = None
    out.commit_loss.backward()
    assert z.grad.abs().sum() > 0 and (vq.codebook.grad is None or vq.codebook.grad.abs().sum() == 0)


def test_ema_codebook_has_no_codebook_loss_and_moves_codes_to_cluster_means():
    x, centers = clustered()
    vq = VectorQuantizer(QuantizerConfig(k=8, dim=4, codebook="ema", decay=0.5, init="kmeans")).train()
    for _ in range(20):
        out = vq(x)
    assert float(out.codebook_loss) == 0.0
    nearest = torch.cdist(centers, vq.codebook).min(1).values
    assert nearest.max() < 0.2                        # every true centre has a code on it


def test_uniform_init_is_the_papers_small_box():
    vq = VectorQuantizer(QuantizerConfig(k=50, dim=4, init="uniform"))
    assert vq.codebook.abs().max() <= 1 / 50


def test_kmeans_init_uses_every_code_on_clustered_data():
    x, _ = clustered(centers=8)
    vq = VectorQuantizer(QuantizerConfig(k=8, dim=4, init="kmeans", restart_dead=False)).train()
    assert not bool(vq.initted)
    out = vq(x)
    assert bool(vq.initted) and out.used == 8


@pytest.mark.parametrize("restart", [True, False])
def test_dead_codes_are_restarted_only_when_asked(restart):
    x, _ = clustered(centers=4)
    cfg = QuantizerConfig(k=16, dim=4, init="normal", codebook="grad", restart_dead=restart, dead_threshold=0.5)
    vq = VectorQuantizer(cfg).train()
    vq.codebook.data[8:] += 1000.0                    # codes nobody will ever pick
    before = vq.codebook.data[8:].clone()
    for _ in range(300):
        vq(x)
    moved = (vq.codebook.data[8:] - before).abs().sum(1) > 1
    assert bool(moved.all()) == restart


def test_cosine_codebook_compares_unit_vectors():
    vq = VectorQuantizer(QuantizerConfig(k=8, dim=4, cosine=True, init="normal")).eval()
    out = vq(torch.randn(2, 4, 3, 3) * 10)
    assert torch.allclose(out.z_q.norm(dim=1), torch.ones(2, 3, 3), atol=1e-5)


def test_resize_grows_by_splitting_busy_codes_and_shrinks_by_dropping_idle_ones():
    vq = VectorQuantizer(QuantizerConfig(k=8, dim=4, init="normal"))
    vq.usage.copy_(torch.arange(8, dtype=torch.float))  # code 7 is the busiest, code 0 idle
    busiest = vq.codebook.data[7].clone()
    vq.resize(10)
    assert vq.k == 10 and vq.cfg.k == 10 and vq.usage.shape == (10,) and vq.ema_sum.shape == (10, 4)
    assert torch.allclose(vq.codebook.data[8], busiest, atol=0.05)
    kept = vq.codebook.data[[3, 4, 5]].clone()
    vq.resize(7)
    assert vq.k == 7
    for row in kept:                                  # codes 3..5 were among the busiest 7: still there
        assert (vq.codebook.data - row).abs().sum(1).min() < 1e-6
    out = vq.eval()(torch.randn(1, 4, 2, 2))
    assert int(out.codes.max()) < 7


def test_perplexity_is_effective_number_of_codes():
    assert math.isclose(perplexity_of(torch.ones(16)), 16, rel_tol=1e-5)
    assert math.isclose(perplexity_of(torch.tensor([5.0, 0, 0, 0])), 1, rel_tol=1e-5)


def test_residual_quantizer_is_depth_many_vq_layers_and_refines():
    x = torch.randn(256, 4, 2, 2)
    rq = ResidualQuantizer(QuantizerConfig(k=16, dim=4), ResidualConfig(depth=3, codebook_sizes=[16, 8, 4])).train()
    assert all(isinstance(layer, VectorQuantizer) for layer in rq.layers) and rq.codebook_sizes == [16, 8, 4]
    for _ in range(10):
        rq(x)
    out = rq.eval()(x)
    assert out.codes.shape == (256, 3, 2, 2)
    errors = [float(F.mse_loss(rq.lookup(out.codes, d), x)) for d in (1, 2, 3)]
    assert errors[0] > errors[1] > errors[2]          # each depth explains part of what was left
    assert torch.allclose(rq.lookup(out.codes), out.z_q, atol=1e-5)


def test_shared_codebook_is_one_layer():
    rq = ResidualQuantizer(QuantizerConfig(k=16, dim=4), ResidualConfig(depth=4, shared=True))
    assert len(rq.layers) == 1 and rq.codebook_sizes == [16] * 4


def test_residual_norm_keeps_codes_decodable_and_progressive_depths_switch_on():
    x = torch.randn(64, 4, 2, 2) * 3
    rq = ResidualQuantizer(QuantizerConfig(k=8, dim=4), ResidualConfig(depth=3, codebook_sizes=[8, 8, 8],
                                                                       norm_residual=True, progressive_steps=5)).train()
    depths = []
    for _ in range(15):
        depths.append(rq(x).codes.shape[1])
    assert depths[0] == 1 and depths[-1] == 3
    assert rq.scales[0] > 1.5                          # the first residual (z itself) has RMS about 3
    out = rq.eval()(x)
    assert torch.allclose(rq.lookup(out.codes), out.z_q, atol=1e-4)


def test_running_usage_is_vectors_per_step_the_unit_of_dead_threshold():
    vq = VectorQuantizer(QuantizerConfig(k=8, dim=4, init="normal", codebook="grad", restart_dead=False)).train()
    z = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(0))
    vq.usage.zero_()
    for _ in range(700):   # the codebook has no optimiser here, so every step picks the same codes
        out = vq(z)
    assert torch.allclose(vq.usage, out.counts.float(), atol=0.05)
