"""vqdemo: the library behind the VQ-VAE / RQ-VAE teaching app (no streamlit in here).

Entry points call `vqdemo.runtime.configure()` before anything imports torch; importing vqdemo sets nothing up.
"""
