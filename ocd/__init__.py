"""Object-Centric Diffusion (arXiv 2401.05735) as a plain PyTorch library.

One concept per module; nothing here imports the ComfyUI server. See docs/ARCHITECTURE.md
for the data flow and which module owns each step.
"""
