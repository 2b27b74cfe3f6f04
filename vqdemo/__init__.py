"""vqdemo: the library behind the VQ-VAE / RQ-VAE teaching app (no streamlit in here)."""

from ._memory import keep_freed_memory

keep_freed_memory()
