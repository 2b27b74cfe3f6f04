"""vqdemo: the library behind the VQ-VAE / RQ-VAE teaching app (no streamlit in here)."""

import os

# Idle OpenMP threads sleep instead of spinning: with a busy CPU (a class on one server, training beside
# sampling) spinning threads made 2-thread torch 10-40x slower. Must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from ._memory import keep_freed_memory  # noqa: E402

keep_freed_memory()
