"""What the app lets a class do: the bounds every way into it shares, each written once.

The Train page's widgets and their URL (`train_settings`), the checks on every submission to the app's queue
(`fit.check_app_settings`), the other pages' URL settings (`page_urls`), the Class page's sweep picker and the
notebook export all read these. They are narrower than what a config field allows (a field's own bounds live in
its metadata, vqdemo/settings.py; the command line takes those): a class of 30-300 on one CPU server trains small
models for seconds to minutes. No imports, so anything may read it.
"""

from __future__ import annotations

MAX_K = 1024         # the K slider stops here, and so does every other way into the app
KS = [2 ** i for i in range(1, MAX_K.bit_length())]   # the K sliders' stops (Train, live K, Class sweeps): 2 .. MAX_K
MAX_DEPTH = 8        # RQ depths
MAX_DIM = 64         # code size D
MAX_BATCH = 256
BETA_MAX = 2.0       # the beta sliders (new run and live) end here; the field itself allows more
RUN_SECONDS = (5, 600)   # a run's time budget on the Train page, in whole seconds; the app's queue caps every job at
                         # the upper end (ui/jobs.py)
MAX_STEPS = 100_000      # a run's step budget, and so its progressive-training steps
MAX_SEED = 999_999       # seeds offered by the pages (six digits: easy to read off a projector and type)
MAX_ZIP_MB = 64          # an upload of the user's own images to train on
MAX_IMAGE_MB = 10        # one image uploaded to Reconstruct
