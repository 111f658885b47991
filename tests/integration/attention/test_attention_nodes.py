"""OCD_CrossFrameAttention and OCD_TokenMerge inside a real ComfyUI (tiny random UNet):
identity at ratio 0, the input model untouched, independent clones, object protection in
the patched model, record/replay, core context windows and a ControlNet."""
from __future__ import annotations

import copy

import pytest
import torch

from ocd import host
from ocd.attention import token_merge as tm
from ocd.masks import grid
from tests.support import random_models as rm

FRAMES, LATENT = 4, 16
# The pack is loaded by ComfyUI under its own module name: its OCDInputError is not
# tests' ocd.errors.OCDInputError, so errors are matched as ValueError (its base) + message.


@pytest.fixture(scope="module")
def base(comfy):
    return rm.build_model_patcher(rm.tiny_unet_config(), seed=0)


@pytest.fixture(scope="module")
def conditioning():
    return rm.random_text_conditioning(1, 64, 0), rm.random_text_conditioning(1, 64, 1)


def object_mask(frames: int = 1, size: int = 128) -> torch.Tensor:
    mask = torch.zeros(frames, size, size)
    mask[:, size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1.0  # 25% of the frame
    return mask


def sample(model, conditioning, frames=FRAMES, seed=7, steps=2):
    import nodes

    latent = {"samples": torch.zeros(frames, 4, LATENT, LATENT)}
    pos, neg = conditioning
    with torch.inference_mode():
        return nodes.KSampler().sample(model, seed, steps, 5.0, "euler", "normal", pos, neg, latent)[0]["samples"]


def cross_frame(ocd_nodes, run, model, mode="full", window_size=2):
    return run(ocd_nodes["OCD_CrossFrameAttention"], model=model, mode=mode, window_size=window_size).result[0]


def token_merge(ocd_nodes, run, model, **inputs):
    values = dict(merge_ratio=0.5, stride_x=2, stride_y=2, max_downsample="1", blocks="input,middle,output",
                  foreground_protection=1.0, seed=0, pairing="off")
    values.update(inputs)
    return run(ocd_nodes["OCD_TokenMerge"], model=model, **values).result


def test_nodes_are_registered_with_tooltips(ocd_nodes):
    for node_id in ("OCD_CrossFrameAttention", "OCD_TokenMerge"):
        schema = ocd_nodes[node_id].define_schema()
        assert schema.category == "OCD/attention" and schema.description
        assert all(i.tooltip for i in schema.inputs), node_id


def test_ratio_zero_is_identical_to_the_unpatched_model(ocd_nodes, run, base, conditioning):
    reference = sample(base, conditioning)
    merged0, _ = token_merge(ocd_nodes, run, base, merge_ratio=0.0, mask=object_mask())
    assert torch.equal(sample(merged0, conditioning), reference)
    # on top of cross-frame attention: identical to cross-frame attention alone
    full = cross_frame(ocd_nodes, run, base)
    full_out = sample(full, conditioning)
    assert not torch.equal(full_out, reference)  # cross-frame attention does change the output
    full0, _ = token_merge(ocd_nodes, run, full, merge_ratio=0.0)
    assert torch.equal(sample(full0, conditioning), full_out)
    # and merging for real changes it
    full5, _ = token_merge(ocd_nodes, run, full, merge_ratio=0.5)
    assert not torch.equal(sample(full5, conditioning), full_out)


def test_input_model_is_unchanged(ocd_nodes, run, base, conditioning):
    options = copy.deepcopy(base.model_options)
    wrappers = copy.deepcopy(base.wrappers)
    weights = {k: v.clone() for k, v in base.model.state_dict().items()}
    before = sample(base, conditioning)

    patched = cross_frame(ocd_nodes, run, base, "sparse_causal")
    patched, record = token_merge(ocd_nodes, run, patched, merge_ratio=0.5, pairing="record", mask=object_mask())
    sample(patched, conditioning)
    assert len(record) > 0  # the patched clone did run its patches

    assert base.model_options == options and base.wrappers == wrappers
    assert "patches_replace" in patched.model_options["transformer_options"]
    state = base.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in weights.items())
    assert torch.equal(sample(base, conditioning), before)


def test_two_patched_clones_do_not_interfere(ocd_nodes, run, base, conditioning):
    full = cross_frame(ocd_nodes, run, base, "full")
    first = cross_frame(ocd_nodes, run, base, "first")
    a, record_a = token_merge(ocd_nodes, run, full, merge_ratio=0.5, seed=1, pairing="record")
    b, record_b = token_merge(ocd_nodes, run, first, merge_ratio=0.25, seed=2, pairing="record")

    out_a = sample(a, conditioning)
    out_b = sample(b, conditioning)
    again_a = sample(a, conditioning)  # after b ran: nothing of b's leaked into a
    assert torch.equal(out_a, again_a)
    fresh_b, _ = token_merge(ocd_nodes, run, cross_frame(ocd_nodes, run, base, "first"), merge_ratio=0.25,
                             seed=2, pairing="record")
    assert torch.equal(sample(fresh_b, conditioning), out_b)
    assert not torch.equal(out_a, out_b)

    # each recorded its own pools: full = all frames together, first = frame 0 with each frame
    pools_a = {k[2] for k in record_a.plans if isinstance(k[2], tuple)}
    pools_b = {k[2] for k in record_b.plans if isinstance(k[2], tuple)}
    assert pools_a == {(0, 1, 2, 3)}
    assert pools_b == {(0,), (0, 1), (0, 2), (0, 3)}
    settings_a = host.state_of(a, host.TOKEN_MERGE_KEY)
    assert settings_a.ratio == 0.5 and settings_a.store is record_a


def _recorded_merges(record, h, w, seed, fg):
    """Per recorded plan: (is a key/value pool, merged-away object sources, merges across the
    object's outline, merged-away sources)."""
    for (step, _layer, frames), plan in record.plans.items():
        pool = isinstance(frames, tuple)
        frames = frames if pool else (frames,)
        dst = torch.cat([tm.destination_mask(h, w, 2, 2, tm.draw_destination_choice(
            h, w, 2, 2, tm.frame_generator(seed, f, step))) for f in frames])
        is_fg = fg.repeat(len(frames))
        merged = plan.merged_away()[0]
        slot = plan.slot[0]
        # a slot holding both object and background tokens is a merge across the outline
        fg_in_slot = torch.zeros(plan.size, dtype=torch.long).index_add_(0, slot, is_fg.long())
        bg_in_slot = torch.zeros(plan.size, dtype=torch.long).index_add_(0, slot, (~is_fg).long())
        crossing = int(((fg_in_slot > 0) & (bg_in_slot > 0)).sum())
        yield pool, int((merged & is_fg & ~dst).sum()), crossing, int((merged & ~dst).sum())


@pytest.mark.parametrize("protect_object_keys", [False, True])
def test_no_object_token_is_merged_with_full_protection(ocd_nodes, run, base, conditioning, protect_object_keys):
    """Protection 1 at a ratio below the background's share: no object query is merged and
    nothing merges across the outline; the key/value pool keeps its object tokens only with
    protect_object_keys (by default it merges them among themselves)."""
    full = cross_frame(ocd_nodes, run, base, "full")
    mask = object_mask()
    model, record = token_merge(ocd_nodes, run, full, merge_ratio=0.5, foreground_protection=1.0,
                                seed=3, pairing="record", mask=mask, protect_object_keys=protect_object_keys)
    sample(model, conditioning)
    h = w = LATENT  # highest-resolution layers only (max_downsample 1)
    fg = grid.token_weights(mask, [0], h, w)[0] >= 1.0  # the mask is aligned to the token grid
    merges = list(_recorded_merges(record, h, w, 3, fg))
    assert sum(not pool for pool, *_ in merges) == 2 * 3 * FRAMES  # 2 steps x 3 layers x 4 frames
    assert sum(pool for pool, *_ in merges) == 2 * 3  # one pool of all frames per step and layer
    for pool, fg_merged, crossing, merged in merges:
        assert merged > 0 and crossing == 0
        if not pool or protect_object_keys:
            assert fg_merged == 0
    pool_fg_merged = sum(fg_merged for pool, fg_merged, *_ in merges if pool)
    assert (pool_fg_merged == 0) == protect_object_keys

    # plain merging on the same model does take object tokens and crosses the outline
    plain, plain_record = token_merge(ocd_nodes, run, full, merge_ratio=0.5, foreground_protection=0.0,
                                      seed=3, pairing="record", mask=mask)
    sample(plain, conditioning)
    plain_merges = list(_recorded_merges(plain_record, h, w, 3, fg))
    assert any(fg_merged for pool, fg_merged, *_ in plain_merges if not pool)
    assert any(crossing for *_, crossing, _ in plain_merges)


def test_replay_reproduces_recorded_merges_exactly(ocd_nodes, run, base, conditioning):
    full = cross_frame(ocd_nodes, run, base, "full")
    recording, record = token_merge(ocd_nodes, run, full, seed=1, pairing="record", mask=object_mask())
    recorded = sample(recording, conditioning)
    keys = set(record.plans)
    slots = {k: p.slot.clone() for k, p in record.plans.items()}

    # a different seed and no mask: only the replayed plans can make the outputs agree
    replaying, same_record = token_merge(ocd_nodes, run, full, seed=99, pairing="replay", merge_record=record)
    assert same_record is record
    assert torch.equal(sample(replaying, conditioning), recorded)
    assert set(record.plans) == keys and all(torch.equal(record.plans[k].slot, s) for k, s in slots.items())
    unpaired, _ = token_merge(ocd_nodes, run, full, seed=99, pairing="off")
    assert not torch.equal(sample(unpaired, conditioning), recorded)

    # a replay before anything was recorded is refused
    empty_replay, _ = token_merge(ocd_nodes, run, full, pairing="replay", merge_record=tm.MergeStore())
    with pytest.raises(ValueError, match="merge_record"):
        sample(empty_replay, conditioning)


def test_bad_inputs_are_refused(ocd_nodes, run, base):
    with pytest.raises(ValueError, match="blocks"):
        token_merge(ocd_nodes, run, base, blocks="input,decoder")
    with pytest.raises(ValueError, match="merge_ratio"):
        token_merge(ocd_nodes, run, base, merge_ratio=0.8)
    with pytest.raises(ValueError, match="merge_record"):
        token_merge(ocd_nodes, run, base, pairing="replay")


def test_works_under_core_context_windows(ocd_nodes, run, base, conditioning):
    from comfy_extras.nodes_context_windows import ContextWindowsManualNode

    seen = []

    def spy(attend, q, k, v, call):
        seen.append(call.layout.frames)
        return attend(q, k, v)

    full = cross_frame(ocd_nodes, run, base, "full")
    merged, record = token_merge(ocd_nodes, run, full, merge_ratio=0.5, pairing="record", mask=object_mask(6))
    spied = merged.clone()  # the replace is installed by cross-frame attention: add the hook only
    host.put_state(spied, host.ATTENTION_HOOK_KEY, spy)
    windowed = run(ContextWindowsManualNode, model=spied, context_length=4, context_overlap=2,
                   context_schedule="standard_static", context_stride=1, closed_loop=False,
                   fuse_method="pyramid", dim=0).result[0]
    # steps=5 (6 sigmas for 6 frames): core 0.3.75's IndexListContextHandler.set_step compares
    # sample_sigmas with the per-frame timestep batch by isclose, which needs equal lengths
    # when the frames are the batch (dim 0), with or without this pack.
    out = sample(windowed, conditioning, frames=6, steps=5)
    assert out.shape == (6, 4, LATENT, LATENT) and torch.isfinite(out).all()

    windows = set(seen)
    assert windows == {(0, 1, 2, 3), (2, 3, 4, 5)}  # absolute frames, from core's context_window
    pools = {k[2] for k in record.plans if isinstance(k[2], tuple)}
    assert pools == windows
    assert {k[2] for k in record.plans if isinstance(k[2], int)} == set(range(6))


def test_works_with_a_controlnet(ocd_nodes, run, base, conditioning):
    import nodes

    hint = torch.rand(FRAMES, 128, 128, 3, generator=torch.Generator().manual_seed(0))
    pos, neg = nodes.ControlNetApplyAdvanced().apply_controlnet(
        conditioning[0], conditioning[1], rm.controlnet(rm.tiny_unet_config(), seed=5), hint, 1.0, 0.0, 1.0)
    full = cross_frame(ocd_nodes, run, base, "full")
    model, record = token_merge(ocd_nodes, run, full, merge_ratio=0.5, pairing="record", mask=object_mask())

    controlled = sample(model, (pos, neg))
    assert torch.isfinite(controlled).all()
    assert len(record) > 0  # the patches ran under the ControlNet
    assert not torch.equal(controlled, sample(model, conditioning))  # the ControlNet acted
    assert not torch.equal(controlled, sample(base, (pos, neg)))  # and so did the patches


def unet_call(model, x, context, groups=2):
    """One UNet call as the sampler makes it: ``groups`` cond/uncond groups of frames."""
    options = dict(model.model_options["transformer_options"], cond_or_uncond=list(range(groups)))
    sigma = torch.full((x.shape[0],), 2.0)
    with torch.inference_mode():
        return model.model.apply_model(x, sigma, c_crossattn=context, transformer_options=options)


def test_full_on_identical_frames_equals_per_frame_attention(ocd_nodes, run, base):
    gen = torch.Generator().manual_seed(4)
    # two groups (cond, uncond) of four identical frames each, the groups different
    x = torch.randn(2, 1, 4, LATENT, LATENT, generator=gen).expand(2, FRAMES, 4, LATENT, LATENT).reshape(-1, 4, LATENT, LATENT)
    context = torch.randn(2, 1, 77, 64, generator=gen).expand(2, FRAMES, 77, 64).reshape(-1, 77, 64)
    reference = unet_call(base, x, context)
    full = unet_call(cross_frame(ocd_nodes, run, base, "full"), x, context)
    torch.testing.assert_close(full, reference, rtol=1e-4, atol=1e-4)
    # the frames really are attended jointly: with different frames the outputs differ
    y = torch.randn(2 * FRAMES, 4, LATENT, LATENT, generator=gen)
    assert not torch.allclose(unet_call(cross_frame(ocd_nodes, run, base, "full"), y, context),
                              unet_call(base, y, context), atol=1e-3)


def test_composes_with_core_tome(ocd_nodes, run, base):
    """Core TomePatchModel (queries only) on top of cross-frame attention: shorter queries
    than keys reach the replace."""
    from comfy_extras.nodes_tomesd import TomePatchModel

    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2 * FRAMES, 4, LATENT, LATENT, generator=gen)
    context = torch.randn(2 * FRAMES, 77, 64, generator=gen)
    full = cross_frame(ocd_nodes, run, base, "full")
    core = TomePatchModel.execute(full, 0.5).result[0]
    out = unet_call(core, x, context)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert not torch.equal(out, unet_call(full, x, context))
