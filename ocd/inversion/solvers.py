"""Deterministic integration of the probability-flow ODE, in either direction.

ComfyUI's models work in k-diffusion's parametrisation: a latent at noise level sigma is
``x = x0 + sigma * eps`` and the model returns ``denoised(x, sigma)``, an estimate of x0.
The probability-flow ODE is ``dx/dsigma = (x - denoised(x, sigma)) / sigma``.

- DDIM (eta 0) is exactly Euler on that ODE.
- DPM-Solver++(2M) is a second-order multistep exponential integrator in
  ``lambda = -log(sigma)`` (the same update as ComfyUI's ``sample_dpmpp_2m``).

Both formulas only need consecutive sigmas, so the same code integrates *down* (generation:
sigmas descending to 0) and *up* (inversion: sigmas ascending from ~0). Inverting with a
solver and regenerating with the same solver on the reversed schedule reconstructs the input
up to the solvers' discretisation error: first order in the step size for DDIM, second order
for DPM++ 2M.
"""
from __future__ import annotations

from typing import Callable

import torch

SOLVERS = ("ddim", "dpmpp_2m")
# Inversion cannot start at sigma = 0 (DPM++ takes log sigma); core's FlipSigmas uses the same.
SIGMA_FLOOR = 1e-4

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def inversion_schedule(generation_sigmas: torch.Tensor) -> torch.Tensor:
    """The generation schedule (descending, usually ending at 0) reversed for inversion."""
    sigmas = generation_sigmas.flip(0).clone()
    sigmas[sigmas < SIGMA_FLOOR] = SIGMA_FLOOR
    return sigmas


def integrate(
    denoise: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    solver: str = "ddim",
    callback: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Carry ``x`` from ``sigmas[0]`` to ``sigmas[-1]`` along the probability-flow ODE.

    Args:
        denoise: ``denoise(x, sigma) -> x0 estimate`` with ``sigma`` a 0-d tensor.
        x: the latent at ``sigmas[0]``, any shape.
        sigmas: 1-d, strictly monotone; ascending = inversion, descending = generation.
        solver: "ddim" (Euler, first order) or "dpmpp_2m" (second order multistep).
        callback: ``callback(i, x, denoised)`` after each model evaluation.
    Returns:
        The latent at ``sigmas[-1]``.
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    old_denoised = None
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = denoise(x, sigma)
        if callback is not None:
            callback(i, x, denoised)
        if solver == "ddim" or sigma_next == 0:
            # Euler: x + (sigma_next - sigma) * eps; at sigma_next = 0 this is x0 itself.
            x = denoised + (sigma_next / sigma) * (x - denoised) if sigma_next > 0 else denoised
            old_denoised = denoised
            continue
        # DPM-Solver++ in lambda = -log sigma; h < 0 when integrating upwards (inversion).
        lam, lam_next = -torch.log(sigma), -torch.log(sigma_next)
        h = lam_next - lam
        if old_denoised is None:
            d = denoised
        else:
            r = (lam - (-torch.log(sigmas[i - 1]))) / h
            d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
        x = (sigma_next / sigma) * x - torch.expm1(-h) * d
        old_denoised = denoised
    return x


def k_sampler_function(solver: str):
    """A k-diffusion style sampler function (ComfyUI's ``KSAMPLER`` contract) for ``solver``.

    Works on ascending sigmas (inversion, e.g. after core's FlipSigmas) and descending ones.
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")

    @torch.no_grad()
    def sample(model, x, sigmas, extra_args=None, callback=None, disable=None):
        extra_args = {} if extra_args is None else extra_args
        s_in = x.new_ones([x.shape[0]])
        if sigmas[0] < sigmas[-1] and sigmas[0] < SIGMA_FLOOR:
            sigmas = sigmas.clone()
            sigmas[0] = SIGMA_FLOOR

        def denoise(x_, sigma):
            return model(x_, sigma * s_in, **extra_args)

        def report(i, x_, denoised):
            if callback is not None:
                callback({"x": x_, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})

        return integrate(denoise, x, sigmas, solver, report)

    sample.__name__ = f"sample_{solver}_ocd"
    return sample
