"""vqdemo: the library behind the VQ-VAE / RQ-VAE teaching app (no streamlit in here)."""
