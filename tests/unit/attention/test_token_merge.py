"""ocd.attention.token_merge: bipartite soft matching against tomesd 0.1.3, the foreground penalty,
destinations per frame, pools across frames, record and replay."""
from __future__ import annotations

import pytest
import torch
import tomesd.merge

from ocd.attention import token_merge as tm
from ocd.errors import OCDInputError


def partition(slot: torch.Tensor) -> set[frozenset[int]]:
    """The groups of tokens that share a slot (a merge assignment, independent of layout)."""
    groups: dict[int, set[int]] = {}
    for token, s in enumerate(slot.tolist()):
        groups.setdefault(s, set()).add(token)
    return {frozenset(g) for g in groups.values()}


def tomesd_partition(merge, unmerge, tokens: int) -> set[frozenset[int]]:
    size = merge(torch.zeros(1, tokens, 1)).shape[1]
    labels = unmerge(torch.arange(size, dtype=torch.float32)[None, :, None])[0, :, 0].long()
    return partition(labels)


def redundant_tokens(tokens: int, channels: int, seed: int) -> torch.Tensor:
    """Random tokens, a third of them near-copies of others (so merges are not arbitrary)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, tokens, channels, generator=gen)
    third = tokens // 3
    x[:, :third] = x[:, third : 2 * third] + 0.05 * torch.randn(1, third, channels, generator=gen)
    return x


@pytest.mark.parametrize("h,w,sx,sy,ratio", [(16, 16, 2, 2, 0.5), (12, 10, 2, 2, 0.7), (9, 7, 2, 2, 0.3),
                                             (12, 12, 3, 2, 0.6)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_assignment_equals_tomesd_with_the_same_destinations(h, w, sx, sy, ratio, seed):
    x = redundant_tokens(h * w, 24, seed)
    r = int(h * w * ratio)
    merge, unmerge = tomesd.merge.bipartite_soft_matching_random2d(
        x, w, h, sx, sy, r, generator=torch.Generator().manual_seed(100 + seed))
    choice = tm.draw_destination_choice(h, w, sx, sy, torch.Generator().manual_seed(100 + seed))
    # protection 0 with a mask given: the mask must not matter
    foreground = torch.rand(1, h * w, generator=torch.Generator().manual_seed(seed))
    plan = tm.bipartite_soft_matching(x, tm.destination_mask(h, w, sx, sy, choice)[None], r, foreground, 0.0)

    assert plan.size == h * w - min(r, h * w - (h // sy) * (w // sx))
    assert partition(plan.slot[0]) == tomesd_partition(merge, unmerge, h * w)
    # and the merged-then-unmerged values agree (means of the same groups)
    torch.testing.assert_close(plan.unmerge(plan.merge(x)), unmerge(merge(x)), rtol=1e-5, atol=1e-6)


def test_destination_mask_has_one_destination_per_cell_and_follows_the_seed():
    h, w = 8, 6
    choice = tm.draw_destination_choice(h, w, 2, 2, tm.frame_generator(7, 3, 5))
    mask = tm.destination_mask(h, w, 2, 2, choice).view(h, w)
    cells = mask.view(h // 2, 2, w // 2, 2).sum(dim=(1, 3))
    assert torch.equal(cells, torch.ones(h // 2, w // 2, dtype=torch.int64))

    def draw(seed, frame, step):
        return tm.destination_mask(h, w, 2, 2, tm.draw_destination_choice(h, w, 2, 2, tm.frame_generator(seed, frame, step)))

    assert torch.equal(draw(7, 3, 5), mask.reshape(-1))  # deterministic
    # re-drawn per frame and per step (and per seed)
    assert not torch.equal(draw(7, 4, 5), draw(7, 3, 5))
    assert not torch.equal(draw(7, 3, 6), draw(7, 3, 5))
    assert not torch.equal(draw(8, 3, 5), draw(7, 3, 5))


def object_scene(h=16, w=16, channels=32, seed=0):
    """Tokens where the object (a centred square) is the MOST redundant part, so plain merging
    would take object tokens first."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, h * w, channels, generator=gen)
    fg = torch.zeros(h, w)
    fg[4:12, 4:12] = 1.0
    fg = fg.reshape(1, -1)
    obj = torch.randn(channels, generator=gen)
    x[0, fg[0] > 0] = obj + 0.01 * torch.randn(int(fg.sum()), channels, generator=gen)
    choice = tm.draw_destination_choice(h, w, 2, 2, torch.Generator().manual_seed(seed))
    return x, fg, tm.destination_mask(h, w, 2, 2, choice)[None]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_full_protection_merges_no_foreground_token_while_background_remains(seed):
    x, fg, is_dst = object_scene(seed=seed)
    background_sources = int(((fg == 0) & ~is_dst).sum())
    r = background_sources  # ratio == background share of the sources: the limit
    plain = tm.bipartite_soft_matching(x, is_dst, r, fg, protection=0.0)
    protected = tm.bipartite_soft_matching(x, is_dst, r, fg, protection=1.0)
    # instrumented: which tokens were merged into another
    assert (plain.merged_away() & (fg > 0)).any(), "plain merging should take object tokens here"
    assert not (protected.merged_away() & (fg > 0) & ~is_dst).any()
    # and no background source went into an object destination: object tokens are untouched
    assert not (protected.merged_away() & (fg > 0)).any()
    # merging everything: object sources go to object destinations, background to background
    everything = tm.bipartite_soft_matching(x, is_dst, x.shape[1], fg, protection=1.0)
    for group in partition(everything.slot[0]):
        assert len({float(fg[0, t]) for t in group}) == 1, "a merge crossed the object's boundary"
    # one more merge than there are background sources must take a foreground source
    more = tm.bipartite_soft_matching(x, is_dst, r + 1, fg, protection=1.0)
    assert int((more.merged_away() & (fg > 0) & ~is_dst).sum()) == 1


def test_penalty_is_monotone_also_with_negative_scores():
    x, fg, is_dst = object_scene(seed=5)
    # make every foreground score negative: scaling by a factor < 1 would *raise* them
    x[0, fg[0] > 0] = -x[0, fg[0] > 0].mean(0) + 0.5 * torch.randn(int(fg.sum()), x.shape[-1])
    r = int(0.5 * x.shape[1])
    merged_fg = []
    for p in (0.0, 0.1, 0.25, 0.5, 0.75, 1.0):
        plan = tm.bipartite_soft_matching(x, is_dst, r, fg, protection=p)
        merged_fg.append(int((plan.merged_away() & (fg > 0) & ~is_dst).sum()))
    assert merged_fg == sorted(merged_fg, reverse=True)
    assert merged_fg[-1] == 0


def test_merge_is_a_mean_and_unmerge_copies_back():
    x, fg, is_dst = object_scene(seed=1)
    plan = tm.bipartite_soft_matching(x, is_dst, 100, None)
    merged = plan.merge(x)
    assert merged.shape == (1, x.shape[1] - 100, x.shape[2])
    back = plan.unmerge(merged)
    for group in list(partition(plan.slot[0]))[:50]:
        idx = sorted(group)
        torch.testing.assert_close(back[0, idx], x[0, idx].mean(0).expand(len(idx), -1))
    # leading dimensions broadcast over the plan's rows: [G, B, T, C]
    stacked = torch.stack([x, 2 * x])
    torch.testing.assert_close(plan.merge(stacked)[1], 2 * merged)


def settings_for(pairing="off", store=None, **kw):
    return tm.TokenMergeSettings(ratio=kw.pop("ratio", 0.5), pairing=pairing, store=store, **kw).validate()


def test_pool_merges_across_frames():
    """Two identical frames in one pool: a source whose copy is a destination of the other
    frame matches it exactly (cosine 1); those are the temporal redundancy to remove first."""
    h = w = 8
    frame = torch.randn(1, h * w, 16, generator=torch.Generator().manual_seed(0))
    pool = torch.cat([frame, frame], dim=1)
    dst = [tm.destination_mask(h, w, 2, 2, tm.draw_destination_choice(h, w, 2, 2, tm.frame_generator(0, f, 0)))
           for f in (0, 1)]
    exact = int((dst[0] & ~dst[1]).sum() + (dst[1] & ~dst[0]).sum())
    assert exact > 0
    settings = settings_for(ratio=(exact + 0.5) / (2 * h * w))
    plan = tm.plan_token_sets(pool, [(0, 1)], [(0, ("input", 1, 0), (0, 1))], (h, w), 0, settings)
    assert plan.num_tokens == 2 * h * w and plan.size == 2 * h * w - exact
    groups = partition(plan.slot[0])
    across = [g for g in groups if len(g) > 1 and min(g) < h * w <= max(g)]
    assert len(across) == exact
    # only exact copies were merged: merging then unmerging changes nothing
    torch.testing.assert_close(plan.unmerge(plan.merge(pool)), pool)


def test_replay_reproduces_recorded_merges_exactly():
    h = w = 8
    frames = [(3,), (4,), (5,)]
    keys = [(2, ("output", 9, 0), f[0]) for f in frames]
    store = tm.MergeStore()
    record = settings_for("record", store, seed=1)
    metric = torch.randn(3, h * w, 16, generator=torch.Generator().manual_seed(0))
    recorded = tm.plan_token_sets(metric, frames, keys, (h, w), 2, record)
    assert len(store) == 3
    # record mode reuses a key's first plan, whatever the metric now
    again = tm.plan_token_sets(torch.randn_like(metric), frames, keys, (h, w), 2, record)
    assert torch.equal(again.slot, recorded.slot)

    other = torch.randn(3, h * w, 16, generator=torch.Generator().manual_seed(1))
    fresh = tm.plan_token_sets(other, frames, keys, (h, w), 2, settings_for(seed=2))
    assert not torch.equal(fresh.slot, recorded.slot)  # a fresh plan would differ
    replayed = tm.plan_token_sets(other, frames, keys, (h, w), 2, settings_for("replay", store, seed=2))
    assert torch.equal(replayed.slot, recorded.slot) and replayed.size == recorded.size
    # a subset of frames, in another order, replays row by row
    sub = tm.plan_token_sets(other[[2, 0]], [frames[2], frames[0]], [keys[2], keys[0]], (h, w), 2,
                             settings_for("replay", store))
    assert torch.equal(sub.slot, recorded.slot[[2, 0]])

    with pytest.raises(OCDInputError, match="merge_record"):
        tm.plan_token_sets(other, frames, [(3, k[1], k[2]) for k in keys], (h, w), 3,
                           settings_for("replay", store))


def test_settings_refuse_bad_values():
    with pytest.raises(OCDInputError, match="merge_ratio"):
        tm.TokenMergeSettings(ratio=0.8).validate()  # 2x2: at most 0.75
    tm.TokenMergeSettings(ratio=0.8, sx=3, sy=2).validate()
    with pytest.raises(OCDInputError, match="foreground_protection"):
        tm.TokenMergeSettings(protection=1.5).validate()
    with pytest.raises(OCDInputError, match="merge_record"):
        tm.TokenMergeSettings(pairing="replay").validate()
    mask = torch.ones(4, 8, 8)
    with pytest.raises(OCDInputError, match="mask"):
        tm.TokenMergeSettings(foreground_mask=mask).foreground([2, 7], 4, 4, "cpu")
    assert tm.TokenMergeSettings(foreground_mask=mask[:1]).foreground([2, 7], 4, 4, "cpu").shape == (2, 16)


def test_layer_selection():
    s = tm.TokenMergeSettings(max_downsample=2, blocks=("input", "output.9"))
    assert s.applies_to(("input", 4), 2) and not s.applies_to(("input", 7), 4)
    assert s.applies_to(("output", 9), 1) and not s.applies_to(("output", 10), 1)
    assert not s.applies_to(("middle", 0), 1)
    assert not tm.TokenMergeSettings(ratio=0.0).applies_to(("input", 1), 1)


@pytest.mark.parametrize("protection", [0.0, 1.0])
def test_matching_in_chunks_gives_the_same_plan(monkeypatch, protection):
    """Pools are matched a few sources at a time to bound memory: the plan must not depend
    on the chunk size."""
    x, fg, is_dst = object_scene(seed=4)
    r = int(0.5 * x.shape[1])
    whole = tm.bipartite_soft_matching(x, is_dst, r, fg, protection=protection)
    monkeypatch.setattr(tm, "_SCORE_CHUNK_ELEMENTS", 7 * int(is_dst.sum()))  # 7 sources per chunk
    chunked = tm.bipartite_soft_matching(x, is_dst, r, fg, protection=protection)
    assert torch.equal(chunked.slot, whole.slot) and chunked.size == whole.size


# ---------------------------------------------------------------- what video transformers need

def test_a_plan_knows_the_token_each_slot_stands_for():
    gen = torch.Generator().manual_seed(0)
    metric = torch.randn(2, 64, 8, generator=gen)
    is_dst = torch.zeros(2, 64, dtype=torch.bool)
    is_dst[:, ::4] = True
    plan = tm.bipartite_soft_matching(metric, is_dst, 24)
    rep = plan.representatives()
    assert rep.shape == (2, plan.size)
    # every slot's representative sits in that slot; merged slots are represented by their destination
    assert torch.equal(torch.gather(plan.slot, 1, rep), torch.arange(plan.size).expand(2, -1))
    merged = plan.slot_sizes() > 1
    assert bool(is_dst.gather(1, rep)[merged].all())
    # without the stored representatives, the lowest token of each slot
    bare = tm.MergePlan(plan.slot, plan.size)
    assert torch.equal(torch.gather(bare.slot, 1, bare.representatives()), torch.arange(plan.size).expand(2, -1))


def test_unmerge_update_is_exact_for_tokens_alone_and_residual_for_merged_ones():
    x = torch.randn(1, 6, 3)
    plan = tm.MergePlan(torch.tensor([[0, 1, 1, 2, 3, 4]]), 5)
    merged = plan.merge(x)
    out = merged * 2.0 + 1.0  # a "block"
    y = plan.unmerge_update(x, merged, out)
    assert torch.equal(y[:, 0], out[:, 0]) and torch.equal(y[:, 5], out[:, 4])  # alone: the block's output
    assert torch.allclose(y[:, 1], x[:, 1] + (out[:, 1] - merged[:, 1]))  # merged: own stream + slot's update
    assert torch.allclose(y[:, 2], x[:, 2] + (out[:, 1] - merged[:, 1]))
    identity = tm.MergePlan.identity(1, 6)
    assert torch.equal(identity.unmerge_update(x, identity.merge(x), x * 3), x * 3)


def test_with_prefix_keeps_leading_tokens_alone():
    plan = tm.MergePlan(torch.tensor([[0, 0, 1]]), 2).with_prefix(2)
    assert plan.slot.tolist() == [[0, 1, 2, 2, 3]] and plan.size == 4
    assert plan.representatives().tolist() == [[0, 1, 2, 4]]


def test_block_numbers_parse_ranges_and_name_the_input():
    assert tm.parse_block_numbers("all") == ((0, None),)
    assert tm.parse_block_numbers("0-9, 20-") == ((0, 9), (20, None))
    settings = tm.TokenMergeSettings(dit_blocks=tm.parse_block_numbers("2,5-6"))
    assert [i for i in range(8) if settings.merges_block(i)] == [2, 5, 6]
    assert settings.missing_blocks(6) == ["5-6"]
    for bad in ("", "x", "3-1", "-4", "input"):
        with pytest.raises(OCDInputError) as err:
            tm.parse_block_numbers(bad)
        assert "dit_blocks" in str(err.value)
