"""ocd.masks.grid: the one mask-to-grid rule (coverage, min(1, 2 x coverage)), and that
token merging, the dual-rate plan and attention fusion all use it."""
from __future__ import annotations

import pytest
import torch

from ocd.attention import token_merge as tm
from ocd.attention.cross_frame import AttentionCall, FrameLayout
from ocd.attention.fusion import AttentionRecord, FusionHook
from ocd.errors import OCDInputError
from ocd.masks import grid
from ocd.sampling import dual_rate


# ---------------------------------------------------------------- coverage

@pytest.mark.parametrize("shape", [(64, 96), (1, 64, 96), (3, 64, 96), (3, 1, 64, 96), (1, 1, 64, 96)])
def test_coverage_accepts_every_mask_layout(shape):
    mask = torch.zeros(shape)
    mask[..., 16:32, 24:56] = 1.0
    out = grid.coverage(mask, frames=3, height=8, width=12)
    assert out.shape == (3, 8, 12)
    # 8x downscale by area average: the 16..32 x 24..56 pixel block is latent rows 2..4, cols 3..7
    expected = torch.zeros(8, 12)
    expected[2:4, 3:7] = 1.0
    assert torch.equal(out[0], expected) and torch.equal(out[2], expected)


def test_coverage_is_the_area_average():
    mask = torch.zeros(16, 16)
    mask[0:4, 0:8] = 1.0  # half of the latent pixel (0, 0) at factor 8
    out = grid.coverage(mask, 1, 2, 2)
    assert out[0, 0, 0].item() == pytest.approx(0.5)
    assert out[0, 1, 1].item() == 0.0


def test_coverage_enlarges_small_masks():
    out = grid.coverage(torch.ones(1, 2, 2), 2, 8, 8)
    assert out.shape == (2, 8, 8) and torch.all(out == 1.0)


def test_mask_frame_count_mismatch_is_a_clear_error():
    with pytest.raises(OCDInputError) as e:
        grid.coverage(torch.zeros(5, 64, 64), frames=8, height=8, width=8)
    assert e.value.input_name == "mask" and "5 frames" in str(e.value) and "8" in str(e.value)


def test_mask_with_bad_layout_is_an_error():
    with pytest.raises(OCDInputError, match="mask"):
        grid.coverage(torch.zeros(2, 3, 64, 64), frames=2, height=8, width=8)


# ---------------------------------------------------------------- the rule

def test_token_weights_are_twice_the_coverage_capped_at_one():
    mask = torch.zeros(1, 64, 64)
    mask[:, :32, :] = 1.0  # top half
    mask[:, 32:40, :16] = 1.0  # half of the third row's first cell
    mask[:, 32:36, 16:32] = 1.0  # a quarter of the third row's second cell
    weights = grid.token_weights(mask, [0], 4, 4).view(4, 4)
    assert torch.equal(weights[:2], torch.ones(2, 4))
    assert weights[2, 0] == pytest.approx(1.0)  # half covered counts as the object
    assert weights[2, 1] == pytest.approx(0.5)  # a quarter covered: weight one half
    assert torch.equal(weights[3], torch.zeros(4))


def test_frames_are_picked_by_absolute_index():
    mask = torch.zeros(6, 8, 8)
    mask[4] = 1.0
    assert grid.token_weights(mask, [3, 4], 2, 2).tolist() == [[0.0] * 4, [1.0] * 4]
    assert grid.token_weights(mask[4:5], [0, 5], 2, 2).sum() == 8  # one mask for every frame
    with pytest.raises(OCDInputError, match="6 frames but frame 7"):
        grid.token_weights(mask, [6, 7], 2, 2)


def _half_covered_cell_mask():
    """A 16x16 mask on a 2x2 grid: cell (0, 0) fully covered, (0, 1) exactly half, (1, 0) a
    quarter, (1, 1) empty."""
    mask = torch.zeros(1, 16, 16)
    mask[:, 0:8, 0:8] = 1.0
    mask[:, 0:8, 8:12] = 1.0
    mask[:, 8:12, 0:4] = 1.0
    return mask


def test_merging_sampling_and_fusion_follow_the_same_rule():
    mask = _half_covered_cell_mask()
    expected = torch.tensor([1.0, 1.0, 0.5, 0.0])  # min(1, 2 x [1, 0.5, 0.25, 0])

    # token merging's protection weights
    settings = tm.TokenMergeSettings(foreground_mask=mask)
    torch.testing.assert_close(settings.foreground([0], 2, 2, "cpu")[0], expected)

    # the dual-rate plan: the object's latent pixels are the cells of weight 1
    cover = grid.coverage(mask, 1, 2, 2)[:, None]
    assert dual_rate.blend_weights(cover, "hard").flatten().tolist() == [1.0, 1.0, 0.0, 0.0]

    # attention fusion: the weight of each query in the blend of edited and recorded attention
    record = AttentionRecord(frozenset({0}), 64, torch.float32)
    hook = FusionHook(record, frozenset({0}), mask)
    call = AttentionCall(("input", 1, 0), 0, 1, FrameLayout(1, (0,)), (2, 2), None, query_rows=[(0,)])
    torch.testing.assert_close(hook._query_mask(call, 4, 1, "cpu").flatten(), expected)


def test_fusion_merges_the_mask_with_the_query_plan():
    """Merged queries get the mean weight of the tokens they hold."""
    mask = _half_covered_cell_mask()
    # tokens 0 and 3 share slot 1 (weights 1 and 0 -> 0.5), token 1 slot 0, token 2 slot 2
    plan = tm.MergePlan(torch.tensor([[1, 0, 2, 1]]), 3)
    hook = FusionHook(AttentionRecord(frozenset({0}), 64, torch.float32), frozenset({0}), mask)
    call = AttentionCall(("input", 1, 0), 0, 1, FrameLayout(1, (0,)), (2, 2), None, query_rows=[(0,)],
                         query_plan=plan)
    torch.testing.assert_close(hook._query_mask(call, 3, 1, "cpu").flatten(), torch.tensor([1.0, 0.5, 0.5]))
    # full cross-frame attention: one row over two frames' merged queries
    two = torch.cat([mask, torch.zeros_like(mask)])
    hook = FusionHook(AttentionRecord(frozenset({0}), 64, torch.float32), frozenset({0}), two)
    call = AttentionCall(("input", 1, 0), 0, 1, FrameLayout(1, (0, 1)), (2, 2), None, query_rows=[(0, 1)],
                         query_plan=tm.MergePlan.stack([plan, plan]))
    torch.testing.assert_close(hook._query_mask(call, 6, 1, "cpu").flatten(),
                               torch.tensor([1.0, 0.5, 0.5, 0.0, 0.0, 0.0]))


# ---------------------------------------------------------------- video latents (time compressed)

def test_latent_frame_groups_follow_the_causal_video_vae():
    # 3 latent frames hold 9 video frames: frame 0 alone, then 4 each
    assert grid.latent_frame_groups(9, 3, 4) == [[0], [1, 2, 3, 4], [5, 6, 7, 8]]
    # up to 3 trailing frames the encoder dropped are accepted and ignored
    assert grid.latent_frame_groups(12, 3, 4) == [[0], [1, 2, 3, 4], [5, 6, 7, 8]]
    assert grid.latent_frame_groups(3, 3, 4) == [[0], [1], [2]]  # one mask per latent frame
    assert grid.latent_frame_groups(1, 3, 4) == [[0]] * 3  # one mask for all
    with pytest.raises(OCDInputError) as err:
        grid.latent_frame_groups(6, 3, 4, "object_mask")
    assert "object_mask" in str(err.value) and "9" in str(err.value)


def test_latent_coverage_averages_a_cells_video_frames():
    mask = torch.zeros(5, 16, 16)
    mask[1:3, :8, :8] = 1.0  # the object in two of latent frame 1's four video frames
    mask[0, 8:, 8:] = 1.0
    cover = grid.latent_coverage(mask, [0, 1], 2, 4, 2, 2)
    assert cover.shape == (2, 2, 2)
    assert cover[1, 0, 0].item() == pytest.approx(0.5) and cover[1, 1, 1].item() == 0.0
    assert cover[0, 1, 1].item() == 1.0 and cover[0, 0, 0].item() == 0.0
    weights = grid.latent_token_weights(mask, [1], 2, 4, 2, 2)
    assert weights.shape == (1, 4) and weights[0, 0].item() == 1.0  # half covered: the object's


def test_latent_coverage_picks_absolute_frames_of_a_window():
    mask = torch.zeros(9, 8, 8)
    mask[5:, :, :] = 1.0  # only latent frame 2 holds the object
    cover = grid.latent_coverage(mask, [2, 1], 3, 4, 4, 4)
    assert cover[0].min().item() == 1.0 and cover[1].max().item() == 0.0
