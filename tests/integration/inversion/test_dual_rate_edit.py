"""Inversion-based editing run by the dual-rate sampler (issue 4 item 4 on issue 5's sampler).

The inversion record is consumed through ocd.sampling.comfy_sampler's DualRateStart and
DualRateHooks: every branch
starts from the inverted latent, walks the record's sigmas with the inversion's solver, and
numbers its steps in the full schedule, so fusion and merge replay line up in every branch.
"""
from __future__ import annotations

import pytest
import torch

from ocd.inversion import comfy_passes
from ocd.host import self_attention_keys as self_attention_blocks
from ocd.sampling.comfy_sampler import DualRateHooks
from ocd.sampling.dual_rate import DualRateSettings
from tests.support import random_models as rm

FRAMES, H, W = 2, 16, 16  # latent; the tiny UNet downsamples once (crop alignment 2)
STEPS = 6


@pytest.fixture(scope="module")
def model(comfy):
    return rm.build_model_patcher(rm.tiny_unet_config(), seed=41)


@pytest.fixture(scope="module")
def cond():
    return rm.random_text_conditioning(1, 64, 3)


class BlendSpy(DualRateHooks):
    """Keeps the background branch's latent at the blend point."""

    def __init__(self, seen: dict):
        self.seen = seen

    def blended(self, z_fg, z_bg, weights, z):
        self.seen.update(z_bg=z_bg)


def object_mask():
    """Latent rows 4..9, columns 5..10 of the 16x16 latent, in image pixels."""
    m = torch.zeros(FRAMES, H * 8, W * 8)
    m[:, 32:72, 40:88] = 1.0
    return m


@pytest.fixture(scope="module")
def inverted(model, cond):
    latent = torch.randn(FRAMES, 4, H, W, generator=torch.Generator().manual_seed(8)) / 0.18215
    with torch.inference_mode():
        out, record = comfy_passes.invert(model, latent, cond, solver="dpmpp_2m", steps=STEPS,
                                          record_attention=1.0, max_record_tokens=H * W)
    return out, record


def test_all_joint_equals_edit_from_inversion_with_the_mask_as_blend_mask(model, cond, inverted, inference):
    out, record = inverted
    mask = object_mask()
    ref, ref_hook = comfy_passes.edit(model, record, out, cond, None, cfg=1.0, self_replace=0.5,
                                      blend_mask=mask)
    result, hook = comfy_passes.edit_dual_rate(model, record, out, cond, None, 1.0, mask,
                                               DualRateSettings(background_step_ratio=1.0, blend_point=1.0),
                                               self_replace=0.5)
    assert result.mode == "ordinary"
    assert torch.equal(result.latent["samples"], ref)
    assert hook.fused == ref_hook.fused and len(hook.fused) > 0


def test_fusion_in_the_full_frame_branches_at_their_full_schedule_steps(model, cond, inverted, inference):
    out, record = inverted
    result, hook = comfy_passes.edit_dual_rate(model, record, out, cond, None, 1.0, object_mask(),
                                               DualRateSettings(background_step_ratio=2.0, blend_point=0.5),
                                               self_replace=1.0)
    s = result.schedule
    assert result.mode == "dual" and s.blend_index == STEPS // 2
    background_steps = list(s.background_indices[:-1])  # the steps it takes, by full-schedule index
    joint_steps = list(range(s.blend_index, STEPS))
    assert background_steps == [0, 2]
    layers = self_attention_blocks(model)
    expected = [(step, layer) for step in background_steps + joint_steps for layer in layers]
    # each full-frame step fused once per layer; the crop (foreground: steps 0, 1, 2) never
    assert sorted(hook.fused, key=str) == sorted(expected, key=str)
    # the crop is inverted once over the whole schedule before its branch runs
    assert result.phase_evaluations == {"foreground_start": STEPS, "foreground": 3, "background": 2, "joint": 3}


def test_background_branch_walks_the_same_ode_as_edit_from_inversion(model, cond, inverted, inference):
    """phi 1: at the blend point the background branch is EditFromInversion's state at that step."""
    out, record = inverted
    states = {}
    comfy_passes.edit(model, record, out, cond, None, cfg=1.0,
                      callback=lambda i, x0, x, n: states.setdefault(i, x.clone()))
    seen = {}
    result, _ = comfy_passes.edit_dual_rate(model, record, out, cond, None, 1.0, object_mask(),
                                            DualRateSettings(background_step_ratio=1.0, blend_point=0.5),
                                            observer=BlendSpy(seen))
    k = result.schedule.blend_index
    assert result.mode == "dual" and k == STEPS // 2
    plain_k = model.get_model_object("latent_format").process_out(states[k])
    torch.testing.assert_close(seen["z_bg"], plain_k, atol=1e-5, rtol=0)
    assert not torch.allclose(out, plain_k, atol=1e-2)  # the branch really moved


def test_token_merge_replay_composes_and_the_crop_neither_replays_nor_records(model, cond, inference):
    from ocd.attention.comfy_patches import apply_cross_frame_attention, apply_token_merge, restrict_to_crop
    from ocd.host import TOKEN_MERGE_KEY, state_of
    from ocd.attention.token_merge import MergeStore, TokenMergeSettings

    cross = apply_cross_frame_attention(model, "sparse_causal")
    store = MergeStore()
    mask = object_mask()
    settings = dict(ratio=0.5, protection=1.0, foreground_mask=mask, store=store)
    recording = apply_token_merge(cross, TokenMergeSettings(pairing="record", **settings))
    replaying = apply_token_merge(cross, TokenMergeSettings(pairing="replay", **settings))
    latent = torch.randn(FRAMES, 4, H, W, generator=torch.Generator().manual_seed(9)) / 0.18215
    inverted, record = comfy_passes.invert(recording, latent, cond, solver="dpmpp_2m", steps=STEPS,
                                           record_attention=1.0, max_record_tokens=H * W)
    plans = dict(store.plans)
    result, hook = comfy_passes.edit_dual_rate(replaying, record, inverted, cond, None, 1.0, mask,
                                               DualRateSettings(background_step_ratio=2.0, blend_point=0.5),
                                               self_replace=1.0)
    assert result.mode == "dual" and torch.isfinite(result.latent["samples"]).all()
    assert len(hook.fused) > 0  # the merged-size record lined up with the replayed merges
    assert store.plans.keys() == plans.keys() and all(store.plans[k] is plans[k] for k in plans)

    # the crop's model: merging on, fresh (unpaired) plans, the protection mask cut to the crop
    box = result.box
    cropped = restrict_to_crop(replaying, lambda m: box.scaled(8).crop(m))
    crop_settings = state_of(cropped, TOKEN_MERGE_KEY)
    assert crop_settings.pairing == "off" and crop_settings.store is None and crop_settings.ratio == 0.5
    assert torch.equal(crop_settings.foreground_mask, box.scaled(8).crop(mask))
    assert state_of(replaying, TOKEN_MERGE_KEY).pairing == "replay"  # input untouched


def test_a_record_of_another_latent_is_refused(model, cond, inverted, inference):
    out, record = inverted
    with pytest.raises(ValueError, match="input 'inverted_latent'"):
        comfy_passes.edit_dual_rate(model, record, out[:1], cond, None, 1.0, object_mask()[:1])


def test_node_runs_through_comfy(model, cond, inverted, run, ocd_nodes, inference):
    out, record = inverted
    node = ocd_nodes["OCD_DualRateEditFromInversion"]
    edited = run(node, model=model, inversion=record, inverted_latent={"samples": out}, positive=cond,
                 negative=rm.random_text_conditioning(1, 64, 4), cfg=3.0, self_replace=0.8, mask=object_mask(),
                 background_step_ratio=2.0, blend_point=0.5, crop_padding=1, blend="feathered").result[0]
    plain = run(ocd_nodes["OCD_EditFromInversion"], model=model, inversion=record, inverted_latent={"samples": out},
                positive=cond, negative=rm.random_text_conditioning(1, 64, 4), cfg=3.0,
                self_replace=0.8).result[0]
    assert edited["samples"].shape == out.shape and torch.isfinite(edited["samples"]).all()
    assert not torch.equal(edited["samples"], plain["samples"])
    # reinvert_object (optional, on unless set): off skips the crop's own inversion
    inputs = dict(model=model, inversion=record, inverted_latent={"samples": out}, positive=cond,
                  negative=rm.random_text_conditioning(1, 64, 4), cfg=3.0, self_replace=0.8, mask=object_mask(),
                  background_step_ratio=2.0, blend_point=0.5, crop_padding=1, blend="feathered")
    assert torch.equal(run(node, reinvert_object=True, **inputs).result[0]["samples"], edited["samples"])
    fast = run(node, reinvert_object=False, **inputs).result[0]["samples"]
    assert not torch.equal(fast, edited["samples"])


@pytest.fixture(scope="module")
def smooth_model(comfy):
    """A random UNet whose output varies slowly with sigma, so that inversion round-trips."""
    model = rm.build_model_patcher(rm.tiny_unet_config(), seed=41)
    rm.smooth_time_dependence_(model)
    return model


def _relative_error(a, b, region):
    region = region.expand_as(a)
    return float((a - b)[region].norm() / b[region].norm())


@pytest.mark.parametrize("phi, gamma", [(1.0, 0.5), (4.0, 0.25)])
def test_the_object_reconstructs_with_the_source_prompt(smooth_model, cond, inference, phi, gamma):
    """Editing with the source prompt at cfg 1 gives the source back. Inside the object the
    crop is inverted on its own and moved onto the whole frame's trajectory at the blend
    point: without that, the crop of the whole-frame inversion walks elsewhere (a UNet sees a
    crop differently) and the object does not come back."""
    smooth = torch.randn(FRAMES, 4, 4, 4, generator=torch.Generator().manual_seed(8))
    source = torch.nn.functional.interpolate(smooth, size=(H, W), mode="bicubic") / 0.18215
    inside = torch.zeros(H, W, dtype=torch.bool)
    inside[4:9, 5:11] = True  # object_mask() at latent resolution
    inverted, record = comfy_passes.invert(smooth_model, source, cond, solver="dpmpp_2m", steps=12, depth=0.5)
    plain, _ = comfy_passes.edit(smooth_model, record, inverted, cond, None, cfg=1.0)
    errors = {}
    for reinvert in (True, False):
        result, _ = comfy_passes.edit_dual_rate(smooth_model, record, inverted, cond, None, 1.0, object_mask(),
                                                DualRateSettings(background_step_ratio=phi, blend_point=gamma,
                                                crop_padding=0),
                                                reinvert_object=reinvert)
        assert result.mode == "dual"
        errors[reinvert] = _relative_error(result.latent["samples"], source, inside)
    plain_error = _relative_error(plain, source, inside)
    assert plain_error < 0.06  # the round trip itself works on this model
    assert errors[True] < 2 * plain_error
    assert errors[False] > 4 * errors[True]  # the correction is what brings the object back
