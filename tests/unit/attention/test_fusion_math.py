"""ocd.attention.fusion's pure parts: probabilities, cross-attention masks, token positions."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ocd.attention.fusion import (CrossAttentionRecord, attend_with, attention_probabilities,
                                  cross_attention_mask, predicted_record_bytes, word_token_positions)
from ocd.errors import OCDInputError


def test_probabilities_and_attend_equal_scaled_dot_product_attention():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, n, 2 * 8, generator=g) for n in (5, 7, 7))
    p = attention_probabilities(q, k, heads=2)
    assert p.shape == (3, 2, 5, 7)
    ours = attend_with(p, v, heads=2)
    heads = lambda t: t.reshape(3, t.shape[1], 2, 8).transpose(1, 2)  # noqa: E731
    ref = F.scaled_dot_product_attention(heads(q), heads(k), heads(v)).transpose(1, 2).reshape(3, 5, 16)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_predicted_record_bytes():
    assert predicted_record_bytes([(2, 8, 64, 64), (2, 8, 16, 16)], steps=3) == (2 * 8 * 64 * 64 + 2 * 8 * 16 * 16) * 3 * 2
    assert predicted_record_bytes([(1, 1, 4, 4)], steps=1, dtype=torch.float32) == 64


def test_word_token_positions_finds_every_run():
    assert word_token_positions([1, 5, 6, 9, 5, 6], [5, 6]) == [1, 2, 4, 5]
    assert word_token_positions([1, 2, 3], [4]) == []
    assert word_token_positions([1, 2, 3], []) == []


def _record_with_object(frames=2, grid=(4, 4), tokens=6, word=3):
    """Token `word` attends to the top-left 2x2 cells (shifted right by one in frame 1)."""
    record = CrossAttentionRecord(max_tokens=64)
    for step, layer in ((1, ("input", 1, 0)), (2, ("output", 3, 0))):
        p = torch.full((frames, grid[0] * grid[1], tokens), 1.0 / tokens)
        for f in range(frames):
            cells = torch.zeros(grid)
            cells[0:2, f:f + 2] = 1
            p[f, :, word] = 0.01 + cells.flatten()
        record.maps[(step, layer)] = p.half()
        record.grids[layer] = grid
    return record


def test_cross_attention_mask_marks_where_the_word_is_attended():
    mask = cross_attention_mask(_record_with_object(), [3], size=(8, 8), threshold=0.5)
    assert mask.shape == (2, 8, 8) and set(mask.unique().tolist()) <= {0.0, 1.0}
    expected0 = torch.zeros(8, 8)
    expected0[0:4, 0:4] = 1
    assert (mask[0] == expected0).float().mean() > 0.9  # bilinear edges may differ by a pixel row
    assert mask[1, :4, 2:6].mean() > 0.9 and mask[1, 4:].sum() == 0  # follows the object in frame 1
    grown = cross_attention_mask(_record_with_object(), [3], size=(8, 8), threshold=0.5, dilation=1)
    assert grown.sum() > mask.sum() and bool((grown >= mask).all())


def test_cross_attention_mask_bad_input():
    with pytest.raises(OCDInputError, match="words"):
        cross_attention_mask(_record_with_object(), [], size=(8, 8))
    with pytest.raises(OCDInputError, match="words"):
        cross_attention_mask(_record_with_object(tokens=6), [9], size=(8, 8))
    with pytest.raises(OCDInputError, match="inversion"):
        cross_attention_mask(CrossAttentionRecord(max_tokens=64), [1], size=(8, 8))
