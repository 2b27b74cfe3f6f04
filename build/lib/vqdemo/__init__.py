"""vqdemo: the library behind the VQ-VAE / RQ-VAE teaching app (no streamlit in here).

Entry points call `vqdemo.runtime.configure()` before anything imports torch; importing vqdemo sets nothing up and
imports nothing heavy. The names below (the public API the exported notebooks use, docs/API.md) load on first use,
after `configure()`: `vqdemo.load_or_train(...)` in a notebook gets the same process set-up as the app.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> "module:attribute" (or "module" for a whole module), imported on first use
_EXPORTS = {
    # models at hand: a shipped checkpoint or run folder, else its recipe trained here
    "load_or_train": "at_hand:load_or_train", "find_checkpoint": "at_hand:find_checkpoint",
    "recipe": "at_hand:recipe", "AtHand": "at_hand:AtHand",
    # configs and training
    "model_config": "fit:model_config", "train": "fit:fit", "ModelConfig": "models:ModelConfig",
    "QuantizerConfig": "quantize:QuantizerConfig", "DataConfig": "data:DataConfig", "load_data": "data:load_data",
    "TrainConfig": "trainer:TrainConfig", "resolve_device": "trainer:resolve_device",
    # runs on disk
    "load_model": "runs:load_model", "read_metrics": "runs:read_metrics", "new_run_dir": "runs:new_run_dir",
    "default_runs_dir": "runs:default_runs_dir",
    # what the pages compute
    "perplexity_of": "quantize:perplexity_of", "psnr_per_image": "metrics:psnr_per_image",
    "PlaygroundConfig": "playground:PlaygroundConfig",
    "run_playground": "playground:run", "build_notebook": "notebook:build",
    # modules
    "analysis": "analysis", "explain": "explain", "prior": "prior", "playground": "playground",
    "code_canvas": "code_canvas", "grid_url": "grid_url", "images": "images", "notebook": "notebook", "runs": "runs",
    "runtime": "runtime",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    target = _EXPORTS.get(name)
    if target is None:
        raise AttributeError(f"module 'vqdemo' has no attribute {name!r}")
    from .runtime import configure

    configure()   # first: before the export below imports torch
    module, _, attr = target.partition(":")
    value = importlib.import_module(f".{module}", __name__)
    value = getattr(value, attr) if attr else value
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
