"""Object-Centric Diffusion (arXiv 2401.05735) as a library, grouped by family.

    video/      codec.py: probe, select, resize, decode and encode clips (pure)
    masks/      ops.py (mask tools), grid.py (the one mask-to-grid rule), saliency.py, sam_video.py (pure)
    attention/  cross_frame.py, token_merge.py, fusion.py (pure); comfy_patches.py (ComfyUI glue)
    inversion/  solvers.py, record.py (pure); comfy_passes.py (ComfyUI glue)
    sampling/   dual_rate.py (the plan, pure); comfy_sampler.py, comfy_token_steps.py (ComfyUI glue)
    host/       the host adapter: the only code that knows ComfyUI's private conventions
    tokens.py   the tokens a video transformer's block runs on (pure); comfy_dit.py (its glue)
    shared.py   the one mechanism for state shared across model clones
    errors.py, paths.py

Rules: only ``host/`` and the ``comfy_*.py`` glue modules import ComfyUI, and only ``host/``
reads its private conventions; everything else is plain PyTorch/NumPy/OpenCV. See
docs/ARCHITECTURE.md for the data flow and which module owns each step.
"""
