"""Sampling family: Object-Centric Sampling (the object at every step, the background at
fewer, blended and finished jointly).

Pure: ``dual_rate`` (the plan: schedule split, blend weights, crop, cost, mode).
ComfyUI glue: ``comfy_sampler`` (the phases through ComfyUI's samplers).
"""
