"""Shared test and benchmark support: the ComfyUI host, random-weight models, test data."""
