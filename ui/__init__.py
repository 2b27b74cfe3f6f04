"""Streamlit-only helpers for the vqdemo pages (`vqdemo/` itself never imports streamlit)."""
