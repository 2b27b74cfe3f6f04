"""One source for every setting: the command line, the Train page and the URL read a config field's default, bounds
and choices from the field itself, every config checks itself the same way, and old saved configs still load."""

import argparse
import dataclasses
import json
import re
from pathlib import Path

import pytest

from tests import bounds
from tests.bounds import CONFIGS, bounded_fields
from ui import state
from vqdemo import app_limits, cli, fit, runs, settings
from vqdemo import train_settings as page
from vqdemo.data import DataConfig, data_config
from vqdemo.fsq import FSQConfig
from vqdemo.models import ModelConfig
from vqdemo.playground import PlaygroundConfig
from vqdemo.prior import PriorConfig
from vqdemo.quantize import QuantizerConfig, ResidualConfig
from vqdemo.trainer import TrainConfig

REPO = Path(__file__).resolve().parents[1]
# (config, field) whose flag defaults to none on purpose: the builder fills it (width by channels, K at every depth)
UNSET_FLAGS = {(ModelConfig, "hidden"), (ResidualConfig, "codebook_sizes"), (FSQConfig, "levels")}


def train_flags() -> dict[str, argparse.Action]:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["train"]
    return {a.option_strings[0]: a for a in sub._actions if a.option_strings}


def test_every_command_line_default_is_the_fields_default():
    flags = train_flags()
    args = cli.build_parser().parse_args(["train"])
    seen = 0
    for cls in CONFIGS[:-2]:
        for name in settings.specs(cls):
            flag = settings.flag_name(cls, name)
            if not flag or flag not in flags:
                continue
            seen += 1
            want = None if (cls, name) in UNSET_FLAGS else settings.default(cls, name)
            assert getattr(args, name) == want, (cls.__name__, name)
            assert flags[flag].help and settings.spec(cls, name).help in flags[flag].help, flag
    assert seen >= 30


def test_every_choice_on_the_command_line_is_the_fields():
    flags = train_flags()
    for cls, name in [(QuantizerConfig, "codebook"), (QuantizerConfig, "init"), (QuantizerConfig, "ste"),
                      (ModelConfig, "kind"), (ModelConfig, "arch"), (TrainConfig, "device"), (DataConfig, "name")]:
        assert tuple(flags[settings.flag_name(cls, name)].choices) == settings.spec(cls, name).choices


# The page offers fewer values than these fields allow, on purpose: sliders with stops, built-in datasets only.
NARROWED = {"data", "down", "k", "d", "kl", "lr", "batch"}


def test_every_choice_the_train_page_offers_is_accepted_and_every_choice_field_is_offered_whole():
    fields = {cls: settings.specs(cls) for cls in CONFIGS}
    for name, param in page.SETTINGS.items():
        if param.field is None or param.field in ("codebook_sizes", "levels"):
            continue
        cls = next(c for c, specs in fields.items() if param.field in specs and
                   (c is not DataConfig or name == "data") and (c is not PlaygroundConfig))
        for value in param.options:
            assert settings.accepts(cls, param.field, value), (name, value)
        spec = settings.spec(cls, param.field)
        if spec.choices and name not in NARROWED:
            assert param.options == spec.choices, name            # vice versa: nothing the config allows is missing
        if name not in ("steps",):
            assert param.default == settings.default(cls, param.field), name
    for levels in page.FSQ_LEVELS:
        FSQConfig(settings.int_list(levels))
    assert page.SETTINGS["levels"].default == ",".join(map(str, FSQConfig().levels))
    assert page.SETTINGS["k"].options == tuple(app_limits.KS) and max(app_limits.KS) == app_limits.MAX_K
    assert max(page.DIMS) == app_limits.MAX_DIM


def test_the_one_builder_gives_the_same_config_from_the_command_line_and_from_the_page():
    argv = ["train", "--model", "rq", "--k", "128", "--dim", "32", "--beta", "0.5", "--codebook", "grad", "--init",
            "uniform", "--restart-dead", "off", "--ste", "both", "--depth", "3", "--ks", "128,64,32",
            "--norm-residual", "--progressive-steps", "200", "--arch", "patch", "--downsample", "7"]
    a = cli.build_parser().parse_args(argv)
    from_cli = fit.model_config(a.kind, 1, 28, hidden=a.hidden, **cli.model_settings(a))
    v = {name: p.default for name, p in page.SETTINGS.items()}
    v.update(kind="rq", k=128, d=32, beta=0.5, cb="grad", init="uniform", restart=False, ste="both", depth=3,
             sizes="128,64,32", norm=True, prog=200, arch="patch", down=7)
    from_page = fit.model_config(v["kind"], 1, 28, **page.model_settings(v))
    assert from_cli == from_page
    assert from_cli.rq.codebook_sizes == [128, 64, 32] and from_cli.vq.ste == "both"


def test_the_defaults_agree_and_colour_gets_the_wider_net():
    a = cli.build_parser().parse_args(["train"])
    v = {name: p.default for name, p in page.SETTINGS.items()}
    assert (fit.model_config(a.kind, 3, 32, **cli.model_settings(a))
            == fit.model_config(v["kind"], 3, 32, **page.model_settings(v)))
    rgb = fit.model_config("vq", 3, 32)
    assert (rgb.hidden, rgb.res_hidden) == (fit.RGB_HIDDEN, fit.RGB_HIDDEN // 2)
    assert fit.model_config("vq", 1, 28).hidden == ModelConfig().hidden
    assert fit.model_config("rq", 1, 28, k=16, depth=2).rq.codebook_sizes == [16, 16]   # K at every depth


def test_the_url_reads_a_fields_text_as_the_command_line_does():
    for name in ("k", "beta", "cb", "init", "ste", "restart", "depth"):
        param = page.SETTINGS[name]
        cls = next(c for c in CONFIGS if param.field in settings.specs(c))
        text = state.text_of(param.default)
        assert param.parse(text) == param.default == settings.parse_text(cls, param.field, text)


def test_a_fields_url_setting_has_bounds_of_the_fields_type():
    # st.slider refuses bounds of mixed types: QuantizerConfig.beta's lo is 0 beside a page's hi of 2.0
    beta = state.field_param("beta", PlaygroundConfig, "beta", hi=2)
    assert (type(beta.lo), type(beta.hi)) == (float, float) and (beta.lo, beta.hi) == (0.0, 2.0)
    steps = state.field_param("steps", TrainConfig, "steps", hi=100_000.0)
    assert (type(steps.lo), type(steps.hi)) == (int, int)


def test_every_config_is_checked_one_way_and_every_field_has_a_spec():
    for cls in CONFIGS:
        assert issubclass(cls, settings.Checked) and "validate" not in vars(cls) or cls is DataConfig, cls
        nested = {"vq", "rq", "fsq"} if cls is ModelConfig else set()
        assert set(settings.specs(cls)) | nested == {f.name for f in dataclasses.fields(cls)}, cls


# the other fields a value needs to pass the rules between fields (one K per depth, conv downsampling of 2, 4 or 8,
# a snapshot every <= steps, label dropout only with labels, the straight-through codebook gradient only for a
# gradient codebook, a path for the datasets read from files)
CONTEXT = {(ResidualConfig, "depth"): {"shared": True}, (ResidualConfig, "codebook_sizes"): {"depth": 1,
                                                                                          "codebook_sizes": [64]},
           (ModelConfig, "downsample"): {"arch": "patch"}, (PlaygroundConfig, "steps"): {"every": 1},
           (PriorConfig, "label_drop"): {"num_classes": 10}, (QuantizerConfig, "ste"): {"codebook": "grad"},
           (DataConfig, "name"): {"path": "images"}}
NESTED = {QuantizerConfig: ("vq", "vq"), ResidualConfig: ("rq", "rq"), FSQConfig: ("fsq", "fsq")}   # part, kind
NAMED = {(DataConfig, "name"): "dataset"}   # how a refusal names a field whose message says it in other words


@pytest.mark.parametrize("cls, field", bounded_fields(), ids=[f"{c.__name__}.{f}" for c, f in bounded_fields()])
def test_every_config_field_takes_its_bounds_and_refuses_past_them(cls, field):
    """The config layer: below, at and above each bound of the field's Spec (and its choices, and values of the
    wrong type) on construction; a refusal is one line naming the field and the value. A config changed in place
    is refused the same way by validate(), and a model config checks its quantizer parts again."""
    context, spec = CONTEXT.get((cls, field), {}), settings.spec(cls, field)
    named = re.escape(NAMED.get((cls, field), spec.label or field))
    cases = bounds.field_edges(cls, field) + [(v, False) for v in bounds.wrong_types(cls, field)]
    for value, taken in cases:
        assert settings.accepts(cls, field, value) == taken, (value, taken)
        if taken:
            if settings.kind_of(cls, field)[0] != "list" or len(value) == 1:
                assert getattr(cls(**{**context, field: value}), field) == value
            continue
        with pytest.raises(cls.error) as e:
            cls(**{**context, field: value})
        message = str(e.value)
        assert re.search(named, message) and repr(value) in message and "\n" not in message, message
        if not bounds.is_frozen(cls):
            cfg = cls(**context)
            setattr(cfg, field, value)        # changed in place: the same check, called again
            with pytest.raises(cls.error, match=named):
                cfg.validate()
        if cls in NESTED:
            part, kind = NESTED[cls]
            model = ModelConfig(kind=kind)
            setattr(getattr(model, part), field, value)
            with pytest.raises(ValueError, match=named):
                model.validate()


@pytest.mark.parametrize("cls, given, words", [
    (QuantizerConfig, {"ste": "both", "codebook": "ema"}, "EMA codebook takes no gradient"),
    (ResidualConfig, {"depth": 3, "codebook_sizes": [64, 64]}, "one codebook size per depth"),
    (FSQConfig, {"levels": [64, 64, 64]}, "at most 65,536"),
    (ModelConfig, {"arch": "conv", "downsample": 3}, "conv downsampling must be 2, 4 or 8"),
    (ModelConfig, {"arch": "patch", "downsample": 29}, "patch size"),
    (DataConfig, {"name": "folder"}, "needs a path"),
    (PriorConfig, {"kernel": 4}, "must be odd"),
    (PriorConfig, {"codebook_sizes": [8, 8]}, "needs one entry"),
    (PriorConfig, {"label_drop": 0.1}, "needs a class-conditional prior"),
    (PlaygroundConfig, {"steps": 10, "every": 11}, "every must be"),
])
def test_the_rules_between_fields_are_one_line_too(cls, given, words):
    with pytest.raises(cls.error, match=words) as e:
        cls(**given)
    assert "\n" not in str(e.value)


# ---- old saved configs -----------------------------------------------------------------------------------------

# model configs as runs wrote them before FSQ existed (no "fsq" key) and before the STE forms had plain names
OLD_MODELS = [
    {"arch": "conv", "channels": 1, "data_variance": 1.0, "downsample": 4, "hidden": 64, "image_size": 28,
     "kind": "rq", "kl_weight": 1.0, "res_blocks": 2, "res_hidden": 32,
     "rq": {"codebook_sizes": [64, 64, 64, 64], "depth": 4, "norm_residual": True, "progressive_steps": 0,
            "shared": False},
     "vq": {"beta": 0.25, "codebook": "ema", "cosine": False, "dead_threshold": 0.5, "decay": 0.95, "dim": 16,
            "init": "kmeans", "k": 64, "restart_dead": True, "ste": "paper"}},
    {"kind": "vq", "arch": "patch", "downsample": 4, "hidden": 32, "res_hidden": 16,
     "vq": {"k": 32, "dim": 8, "codebook": "grad", "init": "uniform", "ste": "seed004"}},
    {"kind": "vq", "vq": {"k": 32, "dim": 8, "codebook": "ema", "ste": "seed004"}},
]
OLD_DATA = {"channels": None, "download": False, "image_size": None, "max_images": None, "name": "mnist",
            "path": None, "seed": 0, "val_fraction": 0.1}
OLD_TRAIN = {"batch_size": 64, "device": "auto", "log_every": 10, "lr": 0.002, "seconds": None, "seed": 0,
             "snapshot_every": 50, "steps": 2500, "threads": 2, "val_every": 500}
OLD_PRIOR = {"channels": 64, "codebook_sizes": [64], "dropout": 0.0, "height": 7, "kernel": 3, "kind": "pixelcnn",
             "layers": 8, "num_classes": 10, "width": 7}


@pytest.mark.parametrize("model", OLD_MODELS)
def test_configs_written_by_older_versions_still_load(model):
    cfg = ModelConfig.from_dict(model)
    assert cfg.fsq == FSQConfig() and cfg.vq.ste in ("paper", "both")
    assert cfg.vq.ste == ("both" if cfg.vq.codebook == "grad" and model["vq"]["ste"] == "seed004" else "paper")
    runs.model_from_meta({"model": model}, "old run")
    assert data_config({"data": OLD_DATA}, "old run") == DataConfig()
    assert TrainConfig(**OLD_TRAIN).steps == 2500 and PriorConfig(**OLD_PRIOR).num_classes == 10


def test_every_shipped_checkpoint_and_prior_still_loads():
    shipped = [p for p in sorted((REPO / "checkpoints").iterdir()) if (p / "config.json").is_file()]
    assert len(shipped) >= 5
    for run in shipped:
        model, meta = runs.load_model(run)
        assert model.config.kind == meta["kind"]
        data_config(meta, run.name)
        prior = run / "prior" / "config.json"
        if prior.is_file():
            PriorConfig(**json.loads(prior.read_text())["model"])
