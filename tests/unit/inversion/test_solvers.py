"""ocd.inversion.solvers: the ODE solvers, checked against an exactly solvable denoiser."""
from __future__ import annotations

import math

import pytest
import torch

from ocd.inversion.solvers import SIGMA_FLOOR, integrate, inversion_schedule, k_sampler_function

MU, S = 0.3, 0.5  # data ~ N(MU, S^2): the ideal denoiser is linear in x


def gaussian_denoiser(x, sigma):
    return MU + S**2 / (S**2 + sigma**2) * (x - MU)


def exact_flow(x, sigma_from, sigma_to):
    """The probability-flow ODE's solution for Gaussian data."""
    return MU + math.sqrt((S**2 + sigma_to**2) / (S**2 + sigma_from**2)) * (x - MU)


def karras(n, sigma_min=0.03, sigma_max=14.6, rho=7.0):
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    a, b = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (b + ramp * (a - b)) ** rho


def empirical_orders(solver, direction):
    x = torch.linspace(-2, 2, 11, dtype=torch.float64)
    errors = []
    for n in (16, 32, 64, 128):
        sigmas = karras(n + 1)
        if direction == "up":
            sigmas = sigmas.flip(0)
        out = integrate(gaussian_denoiser, x, sigmas, solver)
        exact = exact_flow(x, float(sigmas[0]), float(sigmas[-1]))
        errors.append((out - exact).abs().max().item())
    return [math.log2(errors[i] / errors[i + 1]) for i in range(len(errors) - 1)]


@pytest.mark.parametrize("direction", ["up", "down"])
def test_ddim_is_first_order(direction):
    orders = empirical_orders("ddim", direction)
    assert all(0.85 < p < 1.3 for p in orders), orders


@pytest.mark.parametrize("direction", ["up", "down"])
def test_dpmpp_2m_is_second_order(direction):
    orders = empirical_orders("dpmpp_2m", direction)
    assert all(1.7 < p < 2.6 for p in orders), orders


@pytest.mark.parametrize("solver", ["ddim", "dpmpp_2m"])
def test_invert_then_generate_reconstructs(solver):
    x0 = torch.linspace(-1, 1, 7, dtype=torch.float64)
    gen = torch.cat([karras(40), torch.zeros(1, dtype=torch.float64)])
    xt = integrate(gaussian_denoiser, x0, inversion_schedule(gen), solver)
    assert xt.std() > 5 * x0.std()  # it really went up to high noise
    back = integrate(gaussian_denoiser, xt, gen, solver)
    # 40 steps: DDIM is off by ~0.1 at the extremes, DPM++ 2M by ~0.004
    assert (back - x0).abs().max() < (0.15 if solver == "ddim" else 0.01)


def test_inversion_schedule_reverses_and_floors_zero():
    gen = torch.tensor([10.0, 1.0, 0.1, 0.0])
    assert inversion_schedule(gen).tolist() == pytest.approx([SIGMA_FLOOR, 0.1, 1.0, 10.0])
    assert gen[-1] == 0.0  # the input is not modified


def test_dpmpp_matches_comfyui_sample_dpmpp_2m(comfy):
    """Generating downwards, our DPM++ 2M is ComfyUI's own update."""
    from comfy.k_diffusion.sampling import sample_dpmpp_2m

    def model(x, sigma, **kwargs):
        return gaussian_denoiser(x, sigma[:, None])

    x = torch.randn(3, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 14.6
    sigmas = torch.cat([karras(12), torch.zeros(1, dtype=torch.float64)])
    ours = k_sampler_function("dpmpp_2m")(model, x, sigmas)
    theirs = sample_dpmpp_2m(model, x, sigmas, disable=True)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)


def test_unknown_solver_is_refused():
    with pytest.raises(ValueError, match="solver"):
        integrate(gaussian_denoiser, torch.zeros(1), torch.tensor([1.0, 0.0]), "heun")
