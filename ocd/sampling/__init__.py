"""Sampling family: Object-Centric Sampling (the object at every step, the background at
fewer, blended and finished jointly).

Pure: ``dual_rate`` (the plan: schedule split, blend weights, crop, cost, mode; and in token
form for video transformers), ``feature_reuse`` (Clockwork's schedule).
ComfyUI glue: ``comfy_sampler`` (the phases through ComfyUI's samplers), ``comfy_token_steps``
(the token form's one pass), ``comfy_feature_reuse``.
"""
