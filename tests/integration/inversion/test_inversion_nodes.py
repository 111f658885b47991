"""OCD_InvertLatents / OCD_EditFromInversion / OCD_InversionSampler on ComfyUI's model classes."""
from __future__ import annotations

import math

import pytest
import torch

from tests.support import random_models as rm


@pytest.fixture(scope="module")
def smooth_model(comfy):
    # smooth in sigma like a trained model (see smooth_time_dependence_), so solver orders show
    return rm.smooth_time_dependence_(rm.build_model_patcher(rm.tiny_unet_config(), seed=11))


@pytest.fixture(scope="module")
def source():
    gen = torch.Generator().manual_seed(5)
    # VAE-space latents of SD1.5 have std ~1/0.18215, i.e. ~1 in the model's space, where the
    # (GroupNorm-based) UNet is well-conditioned; far smaller inputs make any random UNet stiff.
    latent = {"samples": torch.randn(2, 4, 8, 8, generator=gen) / 0.18215}
    return latent, rm.random_text_conditioning(1, 64, 21)


def invert(run, ocd_nodes, model, latent, cond, solver, steps, depth=1.0, cfg=1.0, scheduler="normal",
           record_attention=0.0):
    return run(ocd_nodes["OCD_InvertLatents"], model=model, latent=latent, positive=cond, solver=solver,
               steps=steps, scheduler=scheduler, cfg=cfg, inversion_depth=depth,
               record_attention=record_attention, max_record_tokens=1024, record_cross_attention=False,
               offload_record=False).result


def edit(run, ocd_nodes, model, record, inverted, cond, cfg=1.0, self_replace=0.0):
    return run(ocd_nodes["OCD_EditFromInversion"], model=model, inversion=record, inverted_latent=inverted,
               positive=cond, negative=cond, cfg=cfg, self_replace=self_replace).result[0]


def reconstruction_error(run, ocd_nodes, model, source, solver, steps, depth):
    latent, cond = source
    inverted, record = invert(run, ocd_nodes, model, latent, cond, solver, steps, depth)
    back = edit(run, ocd_nodes, model, record, inverted, cond)["samples"]
    return (back - latent["samples"]).pow(2).mean().sqrt().item(), inverted["samples"]


@pytest.mark.parametrize("solver", ["ddim", "dpmpp_2m"])
def test_invert_then_edit_with_the_source_prompt_reconstructs(run, ocd_nodes, smooth_model, source, inference, solver):
    latent = source[0]["samples"]
    error, inverted = reconstruction_error(run, ocd_nodes, smooth_model, source, solver, steps=24, depth=0.5)
    assert (inverted - latent).abs().mean() > 0.5 * latent.std()  # inversion really moved the latent
    # 24 steps over half the schedule: DDIM within ~6% of the latent's scale, DPM++ 2M within ~1%
    assert error < (0.1 if solver == "ddim" else 0.02) * latent.std().item()


@pytest.mark.parametrize("solver, low, high", [("ddim", 0.8, 1.4), ("dpmpp_2m", 1.7, 2.6)])
def test_reconstruction_error_shrinks_with_the_solver_order(run, ocd_nodes, smooth_model, source, inference,
                                                            solver, low, high):
    """Empirical order from 12 -> 24 -> 48 steps over half of the schedule (see docs/inversion.md
    for the numbers at full depth, where this random model is not yet asymptotic)."""
    one_frame = ({"samples": source[0]["samples"][:1]}, source[1])
    errors = [reconstruction_error(run, ocd_nodes, smooth_model, one_frame, solver, n, depth=0.5)[0]
              for n in (12, 24, 48)]
    orders = [math.log2(errors[i] / errors[i + 1]) for i in range(2)]
    assert all(low < p < high for p in orders), (errors, orders)


def test_inversion_sampler_with_core_custom_sampling_matches_the_node(run, ocd_nodes, smooth_model, source, inference):
    """OCD_InversionSampler + core FlipSigmas / DisableNoise / SamplerCustomAdvanced = OCD_InvertLatents."""
    from comfy_extras import nodes_custom_sampler as core

    latent, cond = source
    expected, record = invert(run, ocd_nodes, smooth_model, latent, cond, "dpmpp_2m", 8)
    m = {name: getattr(core, name) for name in
         ("BasicScheduler", "FlipSigmas", "DisableNoise", "CFGGuider", "SamplerCustomAdvanced")}
    sigmas = run(m["BasicScheduler"], model=smooth_model, scheduler="normal", steps=8, denoise=1.0).result[0]
    flipped = run(m["FlipSigmas"], sigmas=sigmas).result[0]
    noise = run(m["DisableNoise"]).result[0]
    guider = run(m["CFGGuider"], model=smooth_model, positive=cond, negative=cond, cfg=1.0).result[0]
    sampler = run(ocd_nodes["OCD_InversionSampler"], solver="dpmpp_2m").result[0]
    out = run(m["SamplerCustomAdvanced"], noise=noise, guider=guider, sampler=sampler, sigmas=flipped,
              latent_image=latent).result[0]
    torch.testing.assert_close(out["samples"], expected["samples"], rtol=1e-5, atol=1e-5)
    assert torch.equal(record.generation_sigmas, sigmas.cpu())


def test_cfg_above_one_needs_a_negative(run, ocd_nodes, smooth_model, source, inference):
    latent, cond = source
    with pytest.raises(ValueError, match="input 'negative'"):
        invert(run, ocd_nodes, smooth_model, latent, cond, "ddim", 4, cfg=3.0)


def test_a_record_is_refused_for_another_latent_or_model(run, ocd_nodes, smooth_model, source, inference):
    latent, cond = source
    inverted, record = invert(run, ocd_nodes, smooth_model, latent, cond, "ddim", 4)
    other_size = {"samples": torch.zeros(2, 4, 16, 8)}
    with pytest.raises(ValueError, match="input 'inverted_latent'.*inversion record"):
        edit(run, ocd_nodes, smooth_model, record, other_size, cond)
    other_frames = {"samples": torch.zeros(3, 4, 8, 8)}
    with pytest.raises(ValueError, match="input 'inverted_latent'"):
        edit(run, ocd_nodes, smooth_model, record, other_frames, cond)
    other_model = rm.build_model_patcher(rm.tiny_unet_config(), seed=12)
    with pytest.raises(ValueError, match="input 'model'"):
        edit(run, ocd_nodes, other_model, record, inverted, cond)
    # a clone (how every patch node works) is the same model
    edit(run, ocd_nodes, smooth_model.clone(), record, inverted, cond)
