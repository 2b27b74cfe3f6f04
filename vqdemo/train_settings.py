"""The Train page's new-run settings: their URL names, the widgets' stops and ranges, and how they become a model.

A setting that is a config field takes its default, bounds, choices and help from the field (vqdemo/settings.py);
the page only narrows them to its widgets (K in powers of two up to the slider's end). The model is assembled by
the library's one builder, `fit.model_config`, which the command line uses too. In the library (no streamlit), so
`vqdemo.notebook` reads a Train link's settings with the same names and bounds as the page.
"""

from __future__ import annotations

from . import fit
from .app_limits import BETA_MAX, KS, MAX_BATCH, MAX_DEPTH, MAX_DIM, MAX_SEED, MAX_STEPS, RUN_SECONDS
from .data import DATASETS, DataConfig
from .fsq import FSQConfig
from .models import CONV_DOWNSAMPLE, ModelConfig
from .quantize import QuantizerConfig, ResidualConfig
from .settings import default, int_list
from .trainer import TrainConfig
from .urlstate import Param, field_param

BUILT_IN = [name for name in DATASETS if name not in ("mnist-full", "cifar10", "folder")]
KLS = [0.0, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0]
FSQ_LEVELS = ["4,4,4", "8,6,5", "8,5,5,5"]  # 64, 240 and 1,000 codes (the last two from Mentzer et al. 2023)
DIMS = [2 ** i for i in range(MAX_DIM.bit_length())]       # 1, 2, ..., MAX_DIM
LRS = sorted({1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, default(TrainConfig, "lr")})
BATCHES = sorted({16, 32, 64, 128, MAX_BATCH, default(TrainConfig, "batch_size")})
DOWN = {"conv": list(CONV_DOWNSAMPLE), "patch": [2, 4, 7, 8]}

F = field_param
# ?name= -> every new-run setting, shareable in the URL. A config field's default, bounds, choices and help come from
# the field (vqdemo/settings.py); the page narrows them to its widgets' stops (options) or ranges (lo, hi).
SETTINGS = {
    "data": F("data", DataConfig, "name", options=BUILT_IN + ["folder"]), "kind": F("kind", ModelConfig, "kind"),
    "arch": F("arch", ModelConfig, "arch"),
    "down": F("down", ModelConfig, "downsample", options=sorted(set(DOWN["conv"] + DOWN["patch"]))),
    "k": F("k", QuantizerConfig, "k", options=KS), "d": F("d", QuantizerConfig, "dim", options=DIMS),
    "beta": F("beta", QuantizerConfig, "beta", hi=BETA_MAX), "kl": F("kl", ModelConfig, "kl_weight", options=KLS),
    "lr": F("lr", TrainConfig, "lr", options=LRS), "batch": F("batch", TrainConfig, "batch_size", options=BATCHES),
    "budget": Param("budget", "seconds", options=("seconds", "steps")),
    "secs": Param("secs", 30, lo=RUN_SECONDS[0], hi=RUN_SECONDS[1], cast=int),   # TrainConfig.seconds, whole seconds
    "steps": F("steps", TrainConfig, "steps", hi=MAX_STEPS, default=500),
    "seed": F("seed", TrainConfig, "seed", hi=MAX_SEED),
    "cb": F("cb", QuantizerConfig, "codebook"), "init": F("init", QuantizerConfig, "init"),
    "restart": F("restart", QuantizerConfig, "restart_dead"), "cosine": F("cosine", QuantizerConfig, "cosine"),
    "ste": F("ste", QuantizerConfig, "ste"),
    "depth": F("depth", ResidualConfig, "depth", hi=MAX_DEPTH),
    "sizes": Param("sizes", "", hi=80, field="codebook_sizes"),   # K per depth as typed; empty: K at every depth
    "shared": F("shared", ResidualConfig, "shared"), "norm": F("norm", ResidualConfig, "norm_residual"),
    "prog": F("prog", ResidualConfig, "progressive_steps", hi=MAX_STEPS),
    "var": Param("var", False, cast=bool),   # fit's normalize_recon
    "levels": Param("levels", ",".join(map(str, default(FSQConfig, "levels"))), options=tuple(FSQ_LEVELS),
                          field="levels"),
}


def model_settings(v: dict) -> dict:
    """The page's values (by URL name) -> the builder's keyword arguments (by field name)."""
    given = {p.field: v[name] for name, p in SETTINGS.items() if p.field in fit.USER_SETTINGS}
    given["levels"] = int_list(v["levels"])
    return given


def model_config(v: dict, channels: int, image_size: int) -> ModelConfig:
    """The page's settings through the library's one builder, within the widgets' limits (typed K per depth and
    ?sizes= get the K slider's bounds), for data of this shape (`data.data_shape`: nothing is decoded to know it)."""
    given = model_settings(v)
    fit.check_app_settings(v["kind"], v["batch"], **given)
    return fit.model_config(v["kind"], channels, image_size, **given)
