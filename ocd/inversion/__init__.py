"""Inversion family: DDIM / DPM++ 2M inversion of video latents and editing from it.

Pure: ``solvers`` (the probability-flow ODE in either direction), ``record`` (what an
inversion leaves for the edit). ComfyUI glue: ``comfy_passes`` (inversion, edit and dual-rate
edit through ComfyUI's samplers).
"""
