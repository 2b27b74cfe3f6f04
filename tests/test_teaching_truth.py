"""What students are told must be what the code does: one test per claim that once was false on screen."""

import math
from dataclasses import asdict

import pytest
import torch

from helpers import tiny_config
from vqdemo import analysis, explain, prior, runs
from vqdemo.models import ModelConfig, build_model
from vqdemo.quantize import (
    USAGE_DECAY,
    QuantizerConfig,
    ResidualConfig,
    ResidualQuantizer,
    VectorQuantizer,
    nearest_code,
)

# ---- the expanded distance with a large shared offset -------------------------------------------------------------

def test_nearest_code_is_exact_for_latents_sharing_an_offset_of_1000():
    g = torch.Generator().manual_seed(0)
    x = 1000 + torch.randn(2048, 16, generator=g)
    e = 1000 + torch.randn(64, 16, generator=g)
    codes, dist = nearest_code(x, e)
    exact = torch.cdist(x.double(), e.double())
    assert torch.equal(codes, exact.argmin(1))
    assert (dist >= 0).all()
    assert torch.allclose(dist.double(), exact.pow(2), atol=1e-2)


def test_offset_check_shows_the_plain_expansion_failing_and_the_centred_one_not():
    oc = explain.offset_check(1000.0)
    assert oc.naive_wrong > 0.1 and oc.wrong == 0.0


# ---- straight-through forms ----------------------------------------------------------------------------------

def test_old_seed004_value_loads_as_what_it_did():
    assert QuantizerConfig(codebook="grad", ste="seed004").ste == "both"
    assert QuantizerConfig(codebook="ema", ste="seed004").ste == "paper"  # with EMA it never differed from the paper
    cfg = ModelConfig.from_dict({**ModelConfig().to_dict(), "vq": {**asdict(QuantizerConfig()), "ste": "seed004"}})
    cfg.validate()


def test_the_both_form_with_an_ema_codebook_is_refused():
    with pytest.raises(ValueError, match="EMA codebook takes no gradient"):
        QuantizerConfig(codebook="ema", ste="both").validate()


def test_ste_summary_says_what_an_ema_model_does():
    assert "no gradient reaches it" in explain.ste_summary(QuantizerConfig(codebook="ema"))
    assert "decoder's gradient" in explain.ste_summary(QuantizerConfig(codebook="grad", ste="both"))


# ---- z_q is the code that was compared ----------------------------------------------------------------------------

def test_z_q_uses_the_codes_as_compared_before_the_ema_step_and_restarts():
    torch.manual_seed(0)
    vq = VectorQuantizer(QuantizerConfig(k=8, dim=4, init="uniform", decay=0.5, dead_threshold=100.0))
    vq.train()
    before = vq.codebook.detach().clone()
    z = torch.randn(2, 4, 3, 3)
    out = vq(z)
    assert not torch.equal(vq.codebook.detach(), before)      # the EMA step and restarts moved the codebook
    expected = before[out.codes.flatten()]                    # (B*H*W, D)
    got = out.z_q.permute(0, 2, 3, 1).reshape(-1, 4)
    assert torch.allclose(got, expected, atol=1e-6)


# ---- progressive RQ stopped early ---------------------------------------------------------------------------------

def test_a_progressive_rq_stopped_early_uses_only_its_trained_depths(tmp_path):
    cfg = tiny_config("rq")
    cfg.rq = ResidualConfig(depth=3, codebook_sizes=[16, 16, 16], progressive_steps=10)
    model = build_model(cfg)
    model.train()
    x = torch.rand(4, 1, 28, 28)
    for _ in range(12):                                      # depth 2 switched on at step 10, depth 3 never
        out = model(x)
    assert out.codes.shape[1] == 2
    model.eval()
    assert model.quantizer.trained_depth == 2 and model.codebook_sizes == [16, 16]
    assert model.encode_codes(x).shape[1] == 2
    assert "mse@3" not in model.evaluate(x, None, 4)
    runs.save_weights(tmp_path / runs.WEIGHTS, model, {"model": cfg.to_dict(), "kind": "rq"})
    loaded, _ = runs.load_model(tmp_path)
    assert loaded.encode_codes(x).shape[1] == 2 and loaded.codebook_sizes == [16, 16]
    assert len(analysis.coarse_to_fine(loaded, x)) == 2
    assert prior.prior_config_for(loaded).codebook_sizes == [16, 16]  # a prior models the trained depths only


def test_a_finished_progressive_rq_uses_every_depth():
    q = ResidualQuantizer(QuantizerConfig(k=8, dim=4),
                          ResidualConfig(depth=3, codebook_sizes=[8, 8, 8], progressive_steps=5))
    q.steps.fill_(11)  # steps 10 and 11 ran with depth 3
    assert q.trained_depth == 3
    q.steps.fill_(0)   # never trained: depth 1 is what would train first
    assert q.trained_depth == 1


# ---- where the codes start ----------------------------------------------------------------------------------------

def test_normal_codes_start_far_from_a_fresh_encoders_outputs_and_uniform_ones_near():
    x = torch.rand(32, 1, 28, 28)
    cfg = tiny_config(k=32, dim=16)
    far = analysis.init_geometry(cfg, x, "normal")
    near = analysis.init_geometry(cfg, x, "uniform")
    data = analysis.init_geometry(cfg, x, "kmeans")
    assert far.gap > 5 * near.gap and far.gap > 10 * far.spread  # N(0, 1) codes ~sqrt(D) away, outside the cloud
    assert abs(far.code_dist.mean() - math.sqrt(16)) < 1.0
    assert data.winners > far.winners and data.gap < near.gap


# ---- residuals do not always shrink -------------------------------------------------------------------------------

def test_residual_change_counts_vectors_whose_residual_grows():
    torch.manual_seed(0)
    cfg = tiny_config("rq")
    model = build_model(cfg).eval()
    x = torch.rand(8, 1, 28, 28)
    change = analysis.residual_change(model, x, batch_size=3)
    steps = explain.quantize_steps(model, model.encode(x))
    for d in range(1, len(steps)):
        before = steps[d].residual.norm(dim=1)
        after = (steps[d].residual - steps[d].chosen).norm(dim=1)
        assert change.grew[d - 1] == pytest.approx(float((after > before).float().mean()))
    assert len(change.worse_images) == len(steps) - 1
    assert all(0 <= w <= 1 for w in change.worse_images) and all(v >= 0 for v in change.worst_drop_db)


# ---- rates --------------------------------------------------------------------------------------------------------

def test_rate_bits_of_vq_and_vae():
    vq = build_model(tiny_config(k=64))
    assert analysis.rate_bits(vq, {}) == 49 * 6
    rq = build_model(tiny_config("rq"))
    assert analysis.rate_bits(rq, {}) == 49 * 3 * 4
    vae = build_model(tiny_config("vae"))
    assert analysis.rate_bits(vae, {"kl": 0.01}) == pytest.approx(0.01 * 784 / math.log(2))


def test_the_vae_kl_term_is_the_kl_per_pixel():
    torch.manual_seed(0)
    vae = build_model(tiny_config("vae")).eval().requires_grad_(False)
    x = torch.rand(3, 1, 28, 28)
    mu, logvar = vae.encode(x).chunk(2, dim=1)
    logvar = logvar.clamp(-10, 10)
    kl_nats = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum()
    assert float(vae(x).terms["kl"]) == pytest.approx(float(kl_nats) / x.numel(), rel=1e-5)


# ---- captions computed from what is shown -------------------------------------------------------------------------

def test_sample_note_claims_nothing_for_a_prior_that_learned_little():
    weak = analysis.sample_note({"bits_per_image": 290.0}, 294.0, 1.0)
    assert "learned little" in weak and "look like the data" not in weak
    good = analysis.sample_note({"bits_per_image": 135.0}, 294.0, 1.0)
    assert "54% fewer bits" in good
    assert "towards random codes" in analysis.sample_note({"bits_per_image": 135.0}, 294.0, 2.0)


def test_guidance_note_follows_the_setting_and_names_the_paper():
    notes = {w: analysis.guidance_note(w) for w in (0.0, 0.5, 1.0, 2.5)}
    assert all("Ho & Salimans 2022" in note for note in notes.values())
    assert "class is ignored" in notes[0.0] and "exactly as trained" in notes[1.0]
    assert "weaker pull" in notes[0.5] and "2.5 x (class logits - no-class logits)" in notes[2.5]
    assert "favoured further" in notes[2.5] and "favoured further" not in notes[0.5]


# ---- plain names --------------------------------------------------------------------------------------------------

BANNED = ("seed 00", "seed-style", "seeds'", "seed004", "the seeds")


def test_no_reference_article_numbers_in_anything_a_user_reads():
    from pathlib import Path
    repo = Path(__file__).resolve().parents[1]
    files = [repo / "README.md", repo / "app.py", *(repo / "views").glob("*.py"), *(repo / "ui").glob("*.py")]
    for f in files:
        text = f.read_text().lower()
        for word in BANNED:
            assert word not in text, f"{f.name} says {word!r}: name the idea and its paper instead"


def test_cli_help_uses_plain_names(capsys):
    from vqdemo import cli
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.lower().split())  # argparse wraps lines
    assert not any(word in out for word in BANNED)
    assert "both" in out and "mentzer et al. 2023" in out


# ---- dead codes: what the run on screen measured, by the quantizer's own test -------------------------------------

def _feed(vq: VectorQuantizer, point: list[float], steps: int) -> None:
    z = torch.tensor(point)[None, :, None, None].repeat(8, 1, 1, 1)   # (8, D, 1, 1) all at one point
    for _ in range(steps):
        vq(z, learn=True)


def test_dead_codes_can_come_back_without_restarts_and_the_caption_counts_it():
    vq = VectorQuantizer(QuantizerConfig(k=3, dim=2, init="uniform", codebook="grad", restart_dead=False))
    with torch.no_grad():
        vq.codebook.copy_(torch.tensor([[5.0, 5.0], [0.0, 0.0], [-5.0, 5.0]]))
    _feed(vq, [0.0, 0.0], 100)            # code 0 and 2 take nothing: their running usage falls below 0.5
    assert vq.upkeep()["deaths"] == 2 and vq.upkeep()["comebacks"] == 0
    _feed(vq, [5.0, 5.0], 100)            # the outputs move to code 0: it is picked again
    facts = vq.upkeep()
    assert facts["comebacks"] >= 1 and facts["restarts"] == 0
    note = analysis.usage_note(facts)
    assert "never come back" not in note and f"on their own {facts['comebacks']} times" in note
    assert "below 0.5" in note


def test_restarts_are_counted_and_said_only_when_the_run_has_them():
    vq = VectorQuantizer(QuantizerConfig(k=3, dim=2, init="uniform", codebook="grad", restart_dead=True))
    _feed(vq, [0.0, 0.0], 100)
    facts = vq.upkeep()
    assert facts["restarts"] >= 1 and facts["comebacks"] == 0
    assert f"{facts['restarts']} times a dead code was moved" in analysis.usage_note(facts)


def test_an_fsq_caption_never_comes_from_the_vq_settings_it_carries():
    model = build_model(tiny_config("fsq"))
    assert model.config.vq.restart_dead                       # FSQ configs still carry a VQ block ...
    facts = model.snapshot(torch.rand(2, 1, 28, 28))["upkeep"]
    assert facts["restart"] is None                           # ... but the caption reads the FSQ quantizer's facts
    note = analysis.usage_note(facts)
    assert "FSQ has no restarts" in note and "moved onto" not in note


def test_dead_is_below_the_threshold_on_charts_as_in_the_quantizer():
    from ui import charts
    vq = VectorQuantizer(QuantizerConfig(k=3, dim=2, init="uniform", restart_dead=False, dead_threshold=0.5))
    with torch.no_grad():
        vq.codebook.copy_(torch.tensor([[0.0, 0.0], [0.0, 1.0], [100.0, 100.0]]))
    vq.usage.copy_(torch.tensor([0.52 / USAGE_DECAY, 0.48 / USAGE_DECAY, 1.0]))   # after an empty step: 0.52, 0.48
    vq(torch.full((1, 2, 1, 1), 100.0), learn=True)            # code 2 takes the vector; 0 and 1 just decay
    usage = vq.usage.numpy()
    assert vq.was_dead.tolist() == [False, True, False]
    on_chart = {t.name: len(t.x) for t in charts.usage_histogram(usage, 0.5).data if t.name in ("in use", "dead")}
    assert on_chart.get("dead", 0) == 1 and on_chart.get("in use", 0) == 2
    assert charts.alive_codes(usage, 0.5) == 2
    assert charts.alive_codes([0.5, 0.49], 0.5) == 1          # at the threshold is alive, as `usage < threshold`
    assert charts.alive_codes([0, 1, 2]) == 2                 # counts of uses: dead means never picked


# ---- where U(-1/K, 1/K) codes start ------------------------------------------------------------------------------

def test_uniform_codes_start_bunched_but_not_at_the_outputs_centre():
    x = torch.rand(32, 1, 28, 28)
    u = analysis.init_geometry(tiny_config(k=32, dim=16), x, "uniform")
    n = analysis.init_geometry(tiny_config(k=32, dim=16), x, "normal")
    assert u.gap > 2 * u.spread                 # outside the fresh cloud, not at its centre
    assert u.bunch < u.gap / 2 and n.bunch > 10 * u.bunch   # but close together, unlike N(0, 1) codes


def test_no_page_says_uniform_codes_start_at_the_centre_or_in_the_paper():
    from pathlib import Path
    repo = Path(__file__).resolve().parents[1]
    files = [*(repo / "views").glob("*.py"), *(repo / "ui").glob("*.py"), *(repo / "vqdemo").rglob("*.py")]
    for f in files:
        text = " ".join(f.read_text().split()).lower()
        for claim in ("start at their centre", "at the centre of the outputs", "sit at the centre of",
                      "u(-1/k, 1/k) as in the"):
            assert claim not in text, f"{f.name} says {claim!r}"
    assert "reference implementation" in QuantizerConfig.__dataclass_fields__["init"].metadata["spec"].help


# ---- FSQ levels ---------------------------------------------------------------------------------------------------

def test_fsq_refuses_two_levels_with_its_reason_everywhere(capsys):
    from vqdemo import cli
    from vqdemo.fsq import FSQConfig
    from vqdemo.playground import fsq_levels
    from vqdemo.train_settings import FSQ_LEVELS
    with pytest.raises(ValueError, match="at least 3 levels"):
        FSQConfig([8, 2])
    with pytest.raises(SystemExit):
        cli.main(["train", "--model", "fsq", "--levels", "2,2,2,2,2,2,2,2", "--steps", "1"])
    assert "at least 3 levels" in capsys.readouterr().err
    assert all(min(int(n) for n in levels.split(",")) >= 3 for levels in FSQ_LEVELS)   # the Train page's choices
    assert fsq_levels(4) == 3                                                         # the Playground's smallest grid


# ---- RQ's residual normalisation ----------------------------------------------------------------------------------

def test_residual_normalisation_is_told_as_one_scalar_per_depth_with_the_models_values():
    cfg = tiny_config("rq")
    cfg.rq = ResidualConfig(depth=3, codebook_sizes=[8, 8, 8], norm_residual=True)
    model = build_model(cfg)
    model.quantizer.scales.copy_(torch.tensor([0.121, 0.02, 0.012]))
    note = explain.residual_norm_note(model)
    assert "0.121 / 0.020 / 0.012" in note and "one scalar per depth" in note
    assert "LayerNorm without the mean" not in note
    cfg.rq = ResidualConfig(depth=3, codebook_sizes=[8, 8, 8])
    assert "off" in explain.residual_norm_note(build_model(cfg))


# ---- one PSNR -----------------------------------------------------------------------------------------------------

def test_the_one_psnr_is_of_the_sets_mse_as_training_reports_it():
    from vqdemo.metrics import psnr_of, psnr_per_image
    torch.manual_seed(0)
    model = build_model(tiny_config()).eval()
    x = torch.rand(12, 1, 28, 28)
    x_hat, _ = analysis.reconstruct(model, x)
    assert psnr_of(x, x_hat) == pytest.approx(model.evaluate(x, None, 5)["psnr"], abs=1e-3)
    easy = torch.stack([x[0], x[1]])
    near = torch.stack([x[0] + 0.001, x[1] + 0.3]).clamp(0, 1)
    assert psnr_of(easy, near) < float(psnr_per_image(easy, near).mean())   # the other figure flatters


def test_no_page_averages_per_image_psnrs():
    import re
    from pathlib import Path
    repo = Path(__file__).resolve().parents[1]
    for f in [*(repo / "views").glob("*.py"), *(repo / "ui").glob("*.py")]:
        text = f.read_text()
        averaged = re.search(r"psnr[\w\[\]'\"]*(\([^()]*\))?\)?\.mean\(\)", text)
        assert not averaged, f"{f.name} averages per-image PSNRs"
        assert "mean PSNR" not in text, f"{f.name} shows a mean of PSNRs"


# ---- rates: what each model pays ----------------------------------------------------------------------------------

def test_a_code_model_pays_its_priors_bits_with_the_uniform_bound_beside():
    vq = build_model(tiny_config(k=64))
    with_prior = analysis.paid_rate(vq, {}, {"bits_per_image": 127.8})
    assert (with_prior.bits, with_prior.how, with_prior.bound) == (127.8, "prior", 294)
    without = analysis.paid_rate(vq, {}, None)
    assert (without.bits, without.how) == (294, "uniform bound")
    line = analysis.rate_line("mnist-vq", 25.02, with_prior)
    assert "128 bits (its prior's code length; uniform bound 294)" in line


def test_a_vae_is_scored_at_the_posterior_sample_its_kl_pays_for():
    torch.manual_seed(0)
    vae = build_model(tiny_config("vae"))
    x = torch.rand(6, 1, 28, 28)
    sampled = analysis.posterior_sample_psnr(vae, x, seed=0)
    assert sampled == analysis.posterior_sample_psnr(vae, x, seed=0)             # seeded
    mean_psnr = vae.evaluate(x, None, 6)["psnr"]
    assert sampled != pytest.approx(mean_psnr, abs=1e-4)
    rate = analysis.paid_rate(vae, {"kl": 0.01}, None)
    assert rate.how == "KL" and rate.bound is None
    assert f"{sampled:.2f} dB from a posterior sample ({mean_psnr:.2f} at the mean)" in \
        analysis.rate_line("vae", mean_psnr, rate, sampled)
