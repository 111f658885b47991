"""FateZero-style attention record (inversion) and fusion (editing), instrumented."""
from __future__ import annotations

import pytest
import torch

from ocd.inversion import comfy_passes
from ocd.inversion import record as record_module
from ocd.attention.fusion import predicted_record_bytes
from tests.support import random_models as rm

STEPS = 5


@pytest.fixture(scope="module")
def model(comfy):
    return rm.build_model_patcher(rm.tiny_unet_config(), seed=31)


@pytest.fixture(scope="module")
def inverted(model):
    latent = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(2)) / 0.18215
    cond = rm.random_text_conditioning(1, 64, 3)
    with torch.inference_mode():
        out, record = comfy_passes.invert(model, latent, cond, solver="ddim", steps=STEPS,
                                          record_attention=0.6, max_record_tokens=64)
    return out, record, cond


def self_attention_layers(model):
    from ocd.host import self_attention_keys

    return self_attention_keys(model)


def test_record_holds_the_requested_steps_and_layers_at_the_predicted_size(model, inverted):
    _, record, _ = inverted
    attention = record.extras[record_module.SELF_ATTENTION]
    # 0.6 of 5 editing steps = steps 0..2; the inversion records its mirror steps of those
    steps = {step for step, _ in attention.maps}
    assert steps == {0, 1, 2}
    layers = {layer for _, layer in attention.maps}
    # tiny UNet: 8x8 latent -> 64 tokens at level 0, 16 at level 1 and the middle; all <= 64
    assert layers == set(self_attention_layers(model))
    calls = []
    for layer in layers:
        (p,) = attention.maps[(0, layer)]
        assert p.dtype == torch.float16 and p.shape[0] == 2 and p.shape[1] == 2  # frames, heads
        calls.append(tuple(p.shape))
    assert attention.nbytes == predicted_record_bytes(calls, steps=3, dtype=torch.float16)
    # rows are probability distributions
    p = attention.maps[(1, next(iter(layers)))][0].float()
    torch.testing.assert_close(p.sum(-1), torch.ones_like(p.sum(-1)), atol=2e-3, rtol=0)


def test_max_tokens_limits_the_recorded_layers(model):
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(4)) / 0.18215
    cond = rm.random_text_conditioning(1, 64, 3)
    with torch.inference_mode():
        _, record = comfy_passes.invert(model, latent, cond, solver="ddim", steps=3,
                                        record_attention=1.0, max_record_tokens=16)
    maps = record.extras[record_module.SELF_ATTENTION].maps
    assert maps and all(ts[0].shape[2] <= 16 for ts in maps.values())
    assert len({layer for _, layer in maps}) < len(self_attention_layers(model))


def test_fusion_replaces_exactly_the_requested_steps_and_layers(model, inverted):
    out, record, cond = inverted
    with torch.inference_mode():
        _, hook = comfy_passes.edit(model, record, out, cond, None, cfg=1.0, self_replace=0.6)
    layers = set(self_attention_layers(model))
    expected = [(step, layer) for step in range(3) for layer in layers]
    assert sorted(hook.fused, key=str) == sorted(expected, key=str)  # each pair exactly once


def test_fusion_off_is_plain_sampling_bit_for_bit(model, inverted, run, ocd_nodes):
    from comfy_extras import nodes_custom_sampler as core

    out, record, cond = inverted
    with torch.inference_mode():
        edited, hook = comfy_passes.edit(model, record, out, cond, None, cfg=1.0, self_replace=0.0)
        assert hook is None
        sampler = run(ocd_nodes["OCD_InversionSampler"], solver="ddim").result[0]
        guider = run(core.CFGGuider, model=model, positive=cond, negative=cond, cfg=1.0).result[0]
        plain = run(core.SamplerCustomAdvanced, noise=run(core.DisableNoise).result[0], guider=guider,
                    sampler=sampler, sigmas=record.generation_sigmas, latent_image={"samples": out}).result[0]
    assert torch.equal(edited, plain["samples"])


def test_fusion_changes_the_result_and_needs_a_record(model, inverted):
    out, record, cond = inverted
    target = rm.random_text_conditioning(1, 64, 99)
    with torch.inference_mode():
        fused, _ = comfy_passes.edit(model, record, out, target, None, cfg=1.0, self_replace=0.6)
        plain, _ = comfy_passes.edit(model, record, out, target, None, cfg=1.0, self_replace=0.0)
        assert not torch.allclose(fused, plain)
        bare = record_module.InversionRecord(record.solver, record.generation_sigmas, record.latent_shape,
                                             record.model_fingerprint, record.source_latent)
        with pytest.raises(ValueError, match="input 'self_replace'"):
            comfy_passes.edit(model, bare, out, target, None, cfg=1.0, self_replace=0.5)


def test_fusion_applies_the_conditional_record_to_both_cfg_groups(model, inverted):
    out, record, cond = inverted
    neg = rm.random_text_conditioning(1, 64, 7)
    with torch.inference_mode():
        edited, hook = comfy_passes.edit(model, record, out, cond, neg, cfg=4.0, self_replace=0.6)
    assert torch.isfinite(edited).all() and len(hook.fused) == 3 * len(self_attention_layers(model))


def test_token_merge_pairs_inversion_and_edit_and_shrinks_the_record(model):
    """Merge plans recorded during inversion are replayed step by step during the edit, so the
    fused attention lines up, and the attention record is taken at the merged size."""
    from ocd.attention.comfy_patches import apply_cross_frame_attention, apply_token_merge
    from ocd.attention.token_merge import MergeStore, TokenMergeSettings

    cross = apply_cross_frame_attention(model, "sparse_causal")
    store = MergeStore()
    recording = apply_token_merge(cross, TokenMergeSettings(ratio=0.5, protection=0.0, pairing="record", store=store))
    replaying = apply_token_merge(cross, TokenMergeSettings(ratio=0.5, protection=0.0, pairing="replay", store=store))
    latent = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(6)) / 0.18215
    cond = rm.random_text_conditioning(1, 64, 3)
    with torch.inference_mode():
        _, unmerged = comfy_passes.invert(cross, latent, cond, solver="dpmpp_2m", steps=4, record_attention=1.0,
                                          max_record_tokens=64)
        inverted, merged = comfy_passes.invert(recording, latent, cond, solver="dpmpp_2m", steps=4,
                                               record_attention=1.0, max_record_tokens=64)
        assert {key[0] for key in store.plans} == {0, 1, 2, 3}  # every editing step has its mirror's plans
        edited, hook = comfy_passes.edit(replaying, merged, inverted, cond, None, cfg=1.0, self_replace=1.0)
    size = lambda r: r.extras[record_module.SELF_ATTENTION].nbytes  # noqa: E731
    assert size(merged) < 0.6 * size(unmerged)
    assert len(hook.fused) > 0 and torch.isfinite(edited).all()
    # without the replayed plans the merged record does not line up with the edit's attention
    with pytest.raises(ValueError, match="input 'inversion'"), torch.inference_mode():
        comfy_passes.edit(cross, merged, inverted, cond, None, cfg=1.0, self_replace=1.0)


def test_recording_attends_like_the_model_over_a_merged_key_pool(model):
    """The recording hook computes attention itself: over a merged key/value pool it must add
    the merged keys' log sizes (proportional attention) as the attention backend does, or
    recording would change the inversion it records."""
    from ocd.attention.comfy_patches import apply_cross_frame_attention, apply_token_merge
    from ocd.attention.token_merge import TokenMergeSettings

    merged = apply_token_merge(apply_cross_frame_attention(model, "full"), TokenMergeSettings(ratio=0.5, protection=0.0))
    latent = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(8)) / 0.18215
    cond = rm.random_text_conditioning(1, 64, 3)
    with torch.inference_mode():
        plain, _ = comfy_passes.invert(merged, latent, cond, solver="ddim", steps=3)
        recorded, record = comfy_passes.invert(merged, latent, cond, solver="ddim", steps=3,
                                               record_attention=1.0, max_record_tokens=4096,
                                               record_dtype=torch.float32)
    assert record.extras[record_module.SELF_ATTENTION].nbytes > 0
    torch.testing.assert_close(recorded, plain, rtol=1e-4, atol=1e-4)
