"""The Train page's new-run settings: they live in the library (vqdemo/train_settings.py), shared with the notebook
export; the page imports them from here."""

from vqdemo.train_settings import BETA_MAX, DOWN, KS, LRS, SETTINGS, model_config

__all__ = ["BETA_MAX", "DOWN", "KS", "LRS", "SETTINGS", "model_config"]
