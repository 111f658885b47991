"""ocd.attention.cross_frame (and ocd.host.frame_layout): frame bookkeeping, reference frames, key/value gathering."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ocd import host
from ocd.attention import cross_frame as cfa
from ocd.errors import OCDInputError

HEADS = 2


def attend(q, k, v, key_bias=None, rows=None):
    """Multi-head attention, [B, N, C] -> [B, N, C], key_bias [B, 1, M] added to the logits
    (what ComfyUI's optimized attention does with a mask); ``rows``: which frames each row holds."""
    B, Nq, C = q.shape
    split = lambda t: t.view(B, -1, HEADS, C // HEADS).transpose(1, 2)  # noqa: E731
    mask = None if key_bias is None else key_bias.unsqueeze(1)
    out = F.scaled_dot_product_attention(split(q), split(k), split(v), attn_mask=mask)
    return out.transpose(1, 2).reshape(B, Nq, C)


def naive_attention(q, k, v, layout, refs):
    """Frame by frame, with an explicit softmax: the definition the module must match."""
    G, Fn = layout.groups, layout.count
    out = torch.empty_like(q)
    for g in range(G):
        for p in range(Fn):
            b = g * Fn + p
            keys = torch.cat([k[g * Fn + r] for r in refs[p]])
            values = torch.cat([v[g * Fn + r] for r in refs[p]])
            qh = q[b].view(-1, HEADS, q.shape[-1] // HEADS).transpose(0, 1)
            kh = keys.view(-1, HEADS, q.shape[-1] // HEADS).transpose(0, 1)
            vh = values.view(-1, HEADS, q.shape[-1] // HEADS).transpose(0, 1)
            w = torch.softmax(qh @ kh.transpose(-1, -2) / (qh.shape[-1] ** 0.5), dim=-1)
            out[b] = (w @ vh).transpose(0, 1).reshape(q.shape[1], -1)
    return out


def test_frame_layout_groups_and_absolute_indices():
    # cond + uncond of 4 frames
    layout = host.frame_layout(8, {"cond_or_uncond": [0, 1]})
    assert layout == cfa.FrameLayout(2, (0, 1, 2, 3))
    # AnimateDiff-Evolved: the context window's absolute frames
    layout = host.frame_layout(8, {"cond_or_uncond": [1, 0], "ad_params": {"sub_idxs": [12, 13, 14, 15]}})
    assert layout.frames == (12, 13, 14, 15) and layout.groups == 2
    # sub_idxs None (AnimateDiff without context windows): the batch is the clip
    assert host.frame_layout(3, {"cond_or_uncond": [0], "ad_params": {"sub_idxs": None}}).frames == (0, 1, 2)
    # a stale window that does not describe this batch is ignored
    assert host.frame_layout(4, {"cond_or_uncond": [0], "ad_params": {"sub_idxs": [5, 6]}}).frames == (0, 1, 2, 3)
    # a batch not divisible by the groups is one group
    assert host.frame_layout(3, {"cond_or_uncond": [0, 1]}).groups == 1


def test_reference_frames_per_mode():
    frames = (10, 11, 12, 13)
    assert cfa.reference_frames(frames, "full") == [(0, 1, 2, 3)] * 4
    assert cfa.reference_frames(frames, "first") == [(0,), (0, 1), (0, 2), (0, 3)]
    assert cfa.reference_frames(frames, "sparse_causal") == [(0,), (0,), (0, 1), (0, 2)]
    assert cfa.reference_frames(frames, "window", 1) == [(0, 1), (0, 1, 2), (1, 2, 3), (2, 3)]
    # absolute indices decide, not batch positions: a looped window [14, 15, 0, 1]
    looped = (14, 15, 0, 1)
    assert cfa.reference_frames(looped, "first") == [(2, 0), (2, 1), (2,), (2, 3)]
    # 14 has no frame 13 here: its previous present frame is 1
    assert cfa.reference_frames(looped, "sparse_causal") == [(2, 3), (2, 0), (2,), (2,)]
    assert cfa.reference_frames(looped, "window", 1) == [(0, 1), (0, 1), (2, 3), (2, 3)]
    with pytest.raises(OCDInputError, match="mode"):
        cfa.reference_frames(frames, "everything")


@pytest.mark.parametrize("mode", ["first", "sparse_causal", "window", "full"])
def test_matches_the_naive_definition(mode):
    gen = torch.Generator().manual_seed(0)
    layout = cfa.FrameLayout(2, (0, 1, 2, 3, 4))
    B, N, C = 10, 12, 8
    q, k, v = (torch.randn(B, N, C, generator=gen) for _ in range(3))
    refs = cfa.reference_frames(layout.frames, mode, 1)
    out = cfa.cross_frame_attention(q, k, v, layout, refs, attend)
    torch.testing.assert_close(out, naive_attention(q, k, v, layout, refs), rtol=1e-5, atol=1e-5)


def test_full_on_identical_frames_equals_per_frame_attention():
    gen = torch.Generator().manual_seed(1)
    groups, frames, N, C = 2, 6, 16, 8
    one = [torch.randn(groups, 1, N, C, generator=gen).expand(groups, frames, N, C).reshape(-1, N, C)
           for _ in range(3)]
    layout = cfa.FrameLayout(groups, tuple(range(frames)))
    full = cfa.cross_frame_attention(*one, layout, cfa.reference_frames(layout.frames, "full"), attend)
    torch.testing.assert_close(full, attend(*one), rtol=1e-5, atol=1e-6)


def test_merged_queries_and_pool_reduction():
    """Queries may be shorter than keys (merged); the pool reducer sees every pool once."""
    gen = torch.Generator().manual_seed(2)
    layout = cfa.FrameLayout(1, (0, 1, 2))
    q = torch.randn(3, 5, 8, generator=gen)
    k, v = torch.randn(3, 12, 8, generator=gen), torch.randn(3, 12, 8, generator=gen)
    seen = []

    def keep_half(k_pool, v_pool, pools):
        seen.extend(pools)
        assert k_pool.shape[:2] == (1, len(pools)) and k_pool.shape[2] == 12 * len(pools[0])
        return k_pool[:, :, ::2], v_pool[:, :, ::2], None

    rows = []

    def attend_noting_rows(q_, k_, v_, key_bias=None, rows=None):
        rows_seen.append((q_.shape[0], rows))
        return attend(q_, k_, v_, key_bias)

    rows_seen = rows
    refs = cfa.reference_frames(layout.frames, "first")
    out = cfa.cross_frame_attention(q, k, v, layout, refs, attend_noting_rows, keep_half)
    assert out.shape == (3, 5, 8)
    assert sorted(seen) == [(0,), (0, 1), (0, 2)]
    # each attention call says which frames its rows hold: frame 0 alone, then frames 1 and 2
    assert rows == [(1, [(0,)]), (2, [(1,), (2,)])]
    # the reduction was used: frame 1 attends to every other token of frames 0 and 1
    pool_k = torch.cat([k[0], k[1]])[::2][None]
    pool_v = torch.cat([v[0], v[1]])[::2][None]
    torch.testing.assert_close(out[1:2], attend(q[1:2], pool_k, pool_v))

    seen.clear()
    rows.clear()
    cfa.cross_frame_attention(q, k, v, layout, cfa.reference_frames(layout.frames, "full"), attend_noting_rows,
                              keep_half)
    assert seen == [(0, 1, 2)]  # full: one pool shared by all frames
    assert rows == [(1, [(0, 1, 2)])]  # one row holding every frame's queries


def test_merged_pool_with_proportional_attention_is_exact_on_identical_frames():
    """A pool of identical frames merged across frames (every source into its copy in another
    frame) gives the unmerged output only when merged keys weigh their size (log-size bias)."""
    from ocd.attention.token_merge import TokenMergeSettings, plan_token_sets

    gen = torch.Generator().manual_seed(3)
    frames, h, w, C = 4, 4, 4, 8
    N = h * w
    one = [torch.randn(1, 1, N, C, generator=gen).expand(1, frames, N, C).reshape(-1, N, C) for _ in range(3)]
    q, k, v = one
    layout = cfa.FrameLayout(1, tuple(range(frames)))
    refs = cfa.reference_frames(layout.frames, "full")
    # ratio 0.25: fewer merges than sources with a copy among the (per-frame random) destinations
    settings = TokenMergeSettings(ratio=0.25, protection=0.0)
    plans = []

    def merge_pool(k_pool, v_pool, pools, proportional):
        plan = plan_token_sets(k_pool.mean(0), pools, [None] * len(pools), (h, w), 0, settings)
        plans.append(plan)
        bias = plan.log_sizes().expand(k_pool.shape[0], -1, -1) if proportional else None
        return plan.merge(k_pool), plan.merge(v_pool), bias

    unmerged = cfa.cross_frame_attention(q, k, v, layout, refs, attend)
    proportional = cfa.cross_frame_attention(q, k, v, layout, refs, attend, lambda *a: merge_pool(*a, True))
    plain = cfa.cross_frame_attention(q, k, v, layout, refs, attend, lambda *a: merge_pool(*a, False))
    plan = plans[0]
    assert plan.size == frames * N - frames * N // 4  # a quarter of the pool was merged away
    position = torch.arange(frames * N) % N  # every merge joined copies of one token
    for slot in plan.slot[0].unique():
        assert position[plan.slot[0] == slot].unique().numel() == 1
    torch.testing.assert_close(proportional, unmerged, rtol=1e-5, atol=1e-5)
    assert (plain - unmerged).abs().max() > 1e-2  # without the sizes, merged keys lose weight
