"""Inversion on a flow-matching video transformer (random small Wan 2.1 inside a real ComfyUI):
OCD_InvertLatents carries the clip's latent up the flow to noise, OCD_EditFromInversion brings
it back; the same solvers as on SD, with their orders."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from tests.support import random_wan as rw

FRAMES, SIZE = 9, 64  # 3 latent frames of 8 x 8 latent pixels: 3 x 4 x 4 tokens


@pytest.fixture(scope="module")
def wan_shift1(wan21_small):
    """The small Wan with core's ModelSamplingSD3 at shift 1: Wan's shift 8 spends most steps at
    high noise, where this random model's flow is straight, and few near the data, where it is
    not; at shift 1 the solvers' orders show at a few dozen steps (at shift 8: docs/inversion.md)."""
    from comfy_extras.nodes_model_advanced import ModelSamplingSD3

    return ModelSamplingSD3().patch(wan21_small, 1.0)[0]


def source_latent(seed=5, frames=FRAMES, size=SIZE):
    gen = torch.Generator().manual_seed(seed)
    # a Wan 2.1 VAE latent: per-channel mean/std as latent_format.process_in undoes them
    return {"samples": torch.randn(1, 16, (frames - 1) // 4 + 1, size // 8, size // 8, generator=gen)}


def invert(run, ocd_nodes, model, latent, solver, steps, depth=1.0, scheduler="simple", **extra):
    values = dict(model=model, latent=latent, positive=rw.text_conditioning("a red car"), solver=solver, steps=steps,
                  scheduler=scheduler, cfg=1.0, inversion_depth=depth, record_attention=0.0,
                  max_record_tokens=1024, record_cross_attention=False, offload_record=False)
    values.update(extra)
    return run(ocd_nodes["OCD_InvertLatents"], **values).result


def edit(run, ocd_nodes, model, record, inverted, prompt="a red car", **extra):
    values = dict(model=model, inversion=record, inverted_latent=inverted, positive=rw.text_conditioning(prompt),
                  negative=rw.text_conditioning(""), cfg=1.0, self_replace=0.0)
    values.update(extra)
    return run(ocd_nodes["OCD_EditFromInversion"], **values).result[0]["samples"]


def reconstruction(run, ocd_nodes, model, solver, steps, depth=1.0):
    latent = source_latent()
    inverted, record = invert(run, ocd_nodes, model, latent, solver, steps, depth)[:2]
    back = edit(run, ocd_nodes, model, record, inverted)
    return (back - latent["samples"]).pow(2).mean().sqrt().item(), inverted["samples"], record


@pytest.mark.parametrize("solver, low, high", [("ddim", 0.8, 1.3), ("dpmpp_2m", 1.7, 2.8)])
def test_invert_to_noise_and_back_reconstructs_with_the_solver_order(ocd_nodes, run, wan_shift1, inference, solver,
                                                                     low, high):
    """Edit with the source prompt from the inversion: the source again, up to the solver's error,
    whose empirical order from 8 -> 16 -> 32 steps over the whole flow is the solver's (measured:
    Euler 0.98, 1.00; DPM++ 2M 2.2, 2.4)."""
    latent = source_latent()["samples"]
    runs = [reconstruction(run, ocd_nodes, wan_shift1, solver, n) for n in (8, 16, 32)]
    errors = [r[0] for r in runs]
    _, inverted, record = runs[-1]
    # depth 1 on flow matching goes all the way to sigma 1: the inverted latent is noise, with
    # nothing of the source's scale left to divide by (core's sampler would divide by 1 - sigma)
    assert float(record.generation_sigmas[0]) == pytest.approx(1.0)
    assert torch.isfinite(inverted).all()
    assert (inverted - latent).abs().mean() > 0.5 * latent.std()
    # 32 steps: Euler within ~9% of the latent's scale, DPM++ 2M within ~0.6%
    assert errors[-1] < (0.12 if solver == "ddim" else 0.01) * latent.std().item(), errors
    orders = [math.log2(errors[i] / errors[i + 1]) for i in range(2)]
    assert all(low < p < high for p in orders), (errors, orders)


TOKENS = 3 * 4 * 4  # the clip's tokens: every block attends over all of them at once
NODE_EDIT = "Dual-Rate Edit From Inversion (OCD)"


def object_mask(frames=FRAMES, size=SIZE):
    mask = torch.zeros(frames, size, size)
    mask[:, size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 1.0
    return mask


def test_self_attention_is_recorded_per_block_over_the_whole_clip(ocd_nodes, run, wan_shift1, inference):
    from ocd.inversion.record import SELF_ATTENTION

    _, record = invert(run, ocd_nodes, wan_shift1, source_latent(), "ddim", 4, record_attention=0.5,
                       max_record_tokens=TOKENS)[:2]
    attention = record.extras[SELF_ATTENTION]
    # the first half of the 4 editing steps, both blocks, one map each: [video, heads, queries, keys]
    assert set(attention.maps) == {(step, ("block", b, 0)) for step in (0, 1) for b in (0, 1)}
    p = attention.maps[(0, ("block", 0, 0))][0]
    assert p.shape == (1, 3, TOKENS, TOKENS) and p.dtype == torch.float16
    torch.testing.assert_close(p.float().sum(-1), torch.ones(1, 3, TOKENS), atol=2e-3, rtol=0)
    # a clip of more tokens than max_record_tokens is not recorded, and the report says why
    _, small = invert(run, ocd_nodes, wan_shift1, source_latent(), "ddim", 4, record_attention=0.5,
                      max_record_tokens=TOKENS - 1)[:2]
    assert small.extras[SELF_ATTENTION].maps == {}


def test_fusing_an_edits_own_attention_gives_that_edit(ocd_nodes, run, wan_shift1, inference):
    """Fusion looks up each (step, block) of the record: fusing what a pass recorded of its own
    attention gives that pass again; fusing the inversion's (the source prompt's) changes it."""
    from ocd.attention.comfy_patches import set_attention_hook
    from ocd.attention.fusion import AttentionRecord, RecordingHook
    from ocd.inversion import comfy_passes
    from ocd.inversion.record import SELF_ATTENTION
    from ocd.report import RunReport

    inverted, record = invert(run, ocd_nodes, wan_shift1, source_latent(), "dpmpp_2m", 6, record_attention=1.0,
                              max_record_tokens=TOKENS)[:2]
    target = rw.text_conditioning("a blue bird")
    own = AttentionRecord(frozenset(range(6)), TOKENS, torch.float32)
    recording = set_attention_hook(wan_shift1, RecordingHook(own))
    plain = comfy_passes._run(recording, inverted["samples"], record.generation_sigmas, "dpmpp_2m", target, None,
                              1.0, None)
    assert len(own.maps) == 6 * 2
    replayed = dataclasses.replace(record, extras={SELF_ATTENTION: own})
    report = RunReport()
    again, hook = comfy_passes.edit(wan_shift1, replayed, inverted["samples"], target, None, 1.0, self_replace=1.0,
                                    report=report)
    assert sorted(set(hook.fused)) == sorted(own.maps)
    torch.testing.assert_close(again, plain, atol=1e-4, rtol=1e-4)
    fused, _ = comfy_passes.edit(wan_shift1, record, inverted["samples"], target, None, 1.0, self_replace=1.0)
    assert (fused - plain).abs().max() > 1e-2


def test_the_blend_mask_weighs_each_query_by_its_object_share(ocd_nodes, run, wan_shift1, inference):
    """Each of the clip's queries (merged ones: the mean of their tokens) gets its token's object
    weight by the pack's mask-to-token rule; a mask over everything fuses nothing."""
    from ocd.attention.comfy_patches import set_attention_hook
    from ocd.inversion import comfy_passes
    from ocd.masks import grid

    seen = []
    mask = torch.zeros(FRAMES, SIZE, SIZE)  # the object in the top-left, from the third frame on
    mask[2:, :SIZE // 2, : 3 * SIZE // 8] = 1.0

    def capture(attend, q, k, v, call):
        seen.append(call.query_weights(mask, q.device))
        return attend(q, k, v)

    inverted, record = invert(run, ocd_nodes, wan_shift1, source_latent(), "ddim", 2)[:2]
    comfy_passes._run(set_attention_hook(wan_shift1, capture), inverted["samples"], record.generation_sigmas, "ddim",
                      rw.text_conditioning("a blue bird"), None, 1.0, None)
    expected = grid.latent_token_weights(mask, range(3), 3, 4, 4, 4).reshape(1, -1)
    assert len(seen) == 2 * 2 and all(torch.equal(w, expected) for w in seen)
    assert 0 < float(expected.mean()) < 1


def test_cross_attention_is_recorded_per_latent_frame_and_masks_every_video_frame(ocd_nodes, run, wan_shift1,
                                                                                   inference):
    from ocd.attention.fusion import cross_attention_mask
    from ocd.inversion.record import CROSS_ATTENTION

    _, record = invert(run, ocd_nodes, wan_shift1, source_latent(), "ddim", 3, record_cross_attention=True,
                       max_record_tokens=TOKENS)[:2]
    cross = record.extras[CROSS_ATTENTION]
    assert set(cross.maps) == {(step, ("block", b, 0)) for step in range(3) for b in (0, 1)}
    p = cross.maps[(0, ("block", 1, 0))]
    assert p.shape == (3, 16, 16)  # latent frames, 4 x 4 tokens, the stand-in's 16 text tokens
    torch.testing.assert_close(p.float().sum(-1), torch.ones(3, 16), atol=2e-3, rtol=0)
    mask = cross_attention_mask(cross, [2, 3], record.image_size, threshold=0.5)
    # one mask per video frame: frame 0 is latent frame 0, frames 1-4 latent frame 1, 5-8 latent frame 2
    assert mask.shape == (FRAMES, SIZE, SIZE) and 0 < float(mask.mean()) < 1
    assert torch.equal(mask[1], mask[4]) and torch.equal(mask[5], mask[8])
    assert not torch.equal(mask[0], mask[1]) or not torch.equal(mask[4], mask[5])
    # a clip of more tokens than max_record_tokens records nothing
    _, none = invert(run, ocd_nodes, wan_shift1, source_latent(), "ddim", 3, record_cross_attention=True,
                     max_record_tokens=TOKENS - 1)[:2]
    assert none.extras[CROSS_ATTENTION].maps == {}


def dual_rate_edit(ocd_nodes, run, model, record, inverted, prompt, mask, **overrides):
    from tests.support import interface

    node = ocd_nodes["OCD_DualRateEditFromInversion"]
    values = interface.defaults("OCD_DualRateEditFromInversion", node)
    values.update(model=model, inversion=record, inverted_latent=inverted, positive=rw.text_conditioning(prompt),
                  negative=rw.text_conditioning(""), cfg=1.0, self_replace=0.0, mask=mask, crop_padding=0)
    values.update(overrides)
    out = run(node, **values)
    report = out.ui["ocd_run"][0]
    section = next(s for s in report["nodes"].values() if s["name"] == NODE_EDIT)
    return out.result[0]["samples"], report, section


def test_dual_rate_edit_runs_the_object_on_every_step_and_the_rest_on_fewer(ocd_nodes, run, wan_shift1, inference):
    size = 128  # 8 x 8 tokens per latent frame: the object's 4 x 4 and its edge leave background
    mask = object_mask(size=size)
    inverted, record = invert(run, ocd_nodes, wan_shift1, source_latent(size=size), "ddim", 8)[:2]
    full = edit(run, ocd_nodes, wan_shift1, record, inverted, prompt="a blue bird")
    out, report, section = dual_rate_edit(ocd_nodes, run, wan_shift1, record, inverted, "a blue bird", mask)
    plan = section["facts"]["dual_rate"]
    # 8 steps, blend_point 0.25: 6 branch steps, the background's 2 (0, 3), then 2 joint; the
    # object's tokens and their feathered edge run the other 4
    assert plan["mode"] == "dual" and plan["full_steps"] == [0, 3, 6, 7]
    assert plan["object_token_steps"] == [1, 2, 4, 5]
    assert report["phases"]["foreground"]["tokens"] == 4 * plan["object_tokens"] < 4 * 3 * 64
    assert "not needed on a video transformer" in section["facts"]["reinvert_object"]
    assert torch.isfinite(out).all() and not torch.allclose(out, full, atol=1e-3)
    # the edit's own result where the object is, within the steps it skipped elsewhere
    inside = (slice(None),) * 3 + (slice(6, 10), slice(6, 10))
    assert (out - full)[inside].abs().mean() < 0.5 * (out - full).abs().mean()
    # blend_point 1: every step on every token, Edit From Inversion's result
    same, _, section = dual_rate_edit(ocd_nodes, run, wan_shift1, record, inverted, "a blue bird", mask,
                                      blend_point=1.0)
    assert section["facts"]["dual_rate"]["mode"] == "ordinary" and torch.equal(same, full)


def test_a_mask_of_another_frame_count_is_refused_by_name(ocd_nodes, run, wan_shift1, inference):
    inverted, record = invert(run, ocd_nodes, wan_shift1, source_latent(), "ddim", 2)[:2]
    with pytest.raises(ValueError, match="input 'mask'.*5 frames; give 1 or 3 or 9"):
        dual_rate_edit(ocd_nodes, run, wan_shift1, record, inverted, "a blue bird", torch.ones(5, SIZE, SIZE))


def test_inversion_sampler_with_core_custom_sampling_inverts_and_generates_on_wan(ocd_nodes, run, wan_shift1,
                                                                                  inference):
    """OCD_InversionSampler with core's FlipSigmas / DisableNoise / SamplerCustomAdvanced: the
    same inversion as OCD_InvertLatents, and back down the same edit, on flow matching too (core's
    own samplers would start a zero-noise pass at sigma 1 from nothing)."""
    from comfy_extras import nodes_custom_sampler as core

    latent = source_latent()
    expected, record = invert(run, ocd_nodes, wan_shift1, latent, "dpmpp_2m", 8)[:2]
    back = edit(run, ocd_nodes, wan_shift1, record, expected)
    m = {name: getattr(core, name) for name in
         ("BasicScheduler", "FlipSigmas", "DisableNoise", "CFGGuider", "SamplerCustomAdvanced")}
    cond = rw.text_conditioning("a red car")
    sigmas = run(m["BasicScheduler"], model=wan_shift1, scheduler="simple", steps=8, denoise=1.0).result[0]
    noise = run(m["DisableNoise"]).result[0]
    guider = run(m["CFGGuider"], model=wan_shift1, positive=cond, negative=cond, cfg=1.0).result[0]
    sampler = run(ocd_nodes["OCD_InversionSampler"], solver="dpmpp_2m").result[0]
    up = run(m["SamplerCustomAdvanced"], noise=noise, guider=guider, sampler=sampler,
             sigmas=run(m["FlipSigmas"], sigmas=sigmas).result[0], latent_image=latent).result[0]
    torch.testing.assert_close(up["samples"], expected["samples"], rtol=1e-4, atol=1e-4)
    down = run(m["SamplerCustomAdvanced"], noise=noise, guider=guider, sampler=sampler, sigmas=sigmas,
               latent_image=up).result[0]
    torch.testing.assert_close(down["samples"], back, rtol=1e-4, atol=1e-4)
    # and that is the source again, up to 8 steps of DPM++ 2M (measured: 13% of its scale)
    source = latent["samples"]
    assert (down["samples"] - source).pow(2).mean().sqrt() < 0.25 * source.std()
