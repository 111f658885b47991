"""ocd.masks.ops against small cases computed by hand."""
from __future__ import annotations

import pytest
import torch

from ocd.masks import ops as mask_ops
from ocd.errors import OCDInputError


def dot(h=7, w=7, y=3, x=3, frames=1):
    m = torch.zeros(frames, h, w)
    m[:, y, x] = 1.0
    return m


@pytest.mark.parametrize("shape", [(5, 6), (2, 5, 6), (2, 1, 5, 6)])
def test_normalize_accepts_every_layout(shape):
    m = mask_ops.normalize_mask(torch.ones(shape))
    assert m.shape == ((1, 5, 6) if len(shape) == 2 else (2, 5, 6)) and m.dtype == torch.float32


def test_normalize_maps_bool_and_uint8_and_clamps():
    assert mask_ops.normalize_mask(torch.tensor([[True, False]])).tolist() == [[[1.0, 0.0]]]
    assert mask_ops.normalize_mask(torch.tensor([[255, 0]], dtype=torch.uint8)).tolist() == [[[1.0, 0.0]]]
    assert mask_ops.normalize_mask(torch.tensor([[2.0, -1.0]])).tolist() == [[[1.0, 0.0]]]


@pytest.mark.parametrize("bad", [torch.ones(2, 3, 4, 5), torch.ones(4), torch.ones(0, 4, 4)])
def test_normalize_refuses_other_shapes(bad):
    with pytest.raises(OCDInputError, match="input 'mask'"):
        mask_ops.normalize_mask(bad)


@pytest.mark.parametrize("value, found", [(float("nan"), "3 NaN values"), (float("inf"), "3 infinite values"),
                                          (float("-inf"), "3 infinite values")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_normalize_refuses_non_finite_values_naming_the_input(value, found, dtype):
    """Never clamped into 0..1 (inf would become 1, -inf 0) nor passed on (NaN survives clamp)."""
    m = torch.full((2, 1, 4, 5), 0.5, dtype=dtype)
    m[1, 0, 2, 1:4] = value
    with pytest.raises(OCDInputError, match=rf"^input 'blend_mask': holds {found} \(of 40\): a MASK must hold finite"):
        mask_ops.normalize_mask(m, "blend_mask")


def test_require_finite_counts_nan_and_infinity_over_chunks(monkeypatch):
    monkeypatch.setattr(mask_ops, "FINITE_CHUNK", 7)  # frames of 12 values: one frame per chunk
    images = torch.rand(5, 2, 2, 3)
    assert mask_ops.require_finite(images, "images", "IMAGE") is images
    images[0, 0, 0, 0] = float("nan")
    images[4, 1, 1] = float("inf")
    images[2, :, 1, 2] = float("-inf")
    with pytest.raises(OCDInputError, match=r"^input 'images': holds 1 NaN and 5 infinite values \(of 60\): "
                       "an IMAGE must hold finite"):
        mask_ops.require_finite(images, "images", "IMAGE")
    with pytest.raises(OCDInputError, match="1 NaN"):  # not contiguous: counted on a copy
        mask_ops.require_finite(images.transpose(1, 2), "images", "IMAGE")
    for finite in (torch.ones(3, dtype=torch.bool), torch.full((2, 2), 255, dtype=torch.uint8), torch.zeros(0, 4)):
        assert mask_ops.require_finite(finite, "mask") is finite


def test_grow_by_one_is_the_plus_shaped_disk():
    grown = mask_ops.grow(dot(), 1)[0]
    expected = torch.zeros(7, 7)
    expected[3, 2:5] = 1
    expected[2:5, 3] = 1
    assert torch.equal(grown, expected)


def test_grow_by_two_is_the_radius_two_disk():
    grown = mask_ops.grow(dot(), 2)[0]
    # (dy, dx) with dy^2 + dx^2 <= 4: 13 pixels
    assert grown.sum() == 13 and grown[3, 1] == 1 and grown[2, 2] == 1 and grown[1, 2] == 0


def test_shrink_undoes_grow_and_keeps_border_objects():
    square = torch.zeros(1, 9, 9)
    square[0, 2:7, 2:7] = 1
    shrunk = mask_ops.grow(square, -1)[0]
    expected = torch.zeros(9, 9)
    expected[3:6, 3:6] = 1
    assert torch.equal(shrunk, expected)
    # the frame border counts as foreground for erosion: a full mask stays full
    assert torch.equal(mask_ops.grow(torch.ones(1, 4, 4), -2), torch.ones(1, 4, 4))


def test_grow_is_greyscale_on_soft_masks():
    m = torch.zeros(1, 1, 3)
    m[0, 0, 0] = 0.4
    assert mask_ops.grow(m, 1)[0, 0].tolist() == pytest.approx([0.4, 0.4, 0.0])


def test_threshold_and_invert():
    m = torch.tensor([[[0.2, 0.5, 0.8]]])
    assert mask_ops.threshold(m, 0.5).tolist() == [[[0.0, 0.0, 1.0]]]
    assert mask_ops.invert(m).flatten().tolist() == pytest.approx([0.8, 0.5, 0.2])


def test_feather_keeps_mass_and_softens_the_edge():
    m = torch.zeros(1, 1, 21)
    m[0, 0, 10] = 1.0
    f = mask_ops.feather(m, 2.0)[0, 0]  # sigma 1: a sampled Gaussian
    assert f.sum() == pytest.approx(1.0, abs=1e-5)
    g = torch.exp(-0.5 * torch.arange(-3, 4, dtype=torch.float32) ** 2)
    assert f[7:14].tolist() == pytest.approx((g / g.sum()).tolist(), abs=1e-6)
    # a uniform mask is unchanged (the border is replicated, not faded)
    assert torch.allclose(mask_ops.feather(torch.ones(1, 5, 5), 4.0), torch.ones(1, 5, 5))


def test_temporal_smooth_is_a_centred_mean():
    m = torch.tensor([0.0, 3.0, 0.0, 0.0, 6.0]).view(5, 1, 1) / 6
    out = mask_ops.temporal_smooth(m, 3).flatten() * 6
    assert out.tolist() == pytest.approx([1.5, 1.0, 1.0, 2.0, 3.0])


def test_tube_is_the_union_over_a_window():
    m = torch.zeros(5, 1, 3)
    m[0, 0, 0] = 1
    m[4, 0, 2] = 1
    out = mask_ops.tube(m, 3)[:, 0]
    assert out.tolist() == [[1, 0, 0], [1, 0, 0], [0, 0, 0], [0, 0, 1], [0, 0, 1]]
    everything = mask_ops.tube(m, 0)[:, 0]
    assert everything.tolist() == [[1, 0, 1]] * 5


def test_resize_area_and_bilinear():
    m = torch.tensor([[[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]]])
    assert mask_ops.resize(m, 1, 2).tolist() == [[[1.0, 0.0]]]
    up = mask_ops.resize(torch.tensor([[[0.0, 1.0]]]), 1, 4)
    assert up.flatten().tolist() == pytest.approx([0.0, 0.25, 0.75, 1.0])


def test_match_frames_broadcasts_one_and_refuses_others():
    assert mask_ops.match_frames(torch.ones(1, 2, 2), 4).shape == (4, 2, 2)
    with pytest.raises(OCDInputError, match="input 'mask'.*3 frames but the video has 4"):
        mask_ops.match_frames(torch.ones(3, 2, 2), 4)


def test_apply_ops_order_grow_then_invert_then_resize_first():
    m = dot(frames=2)
    out = mask_ops.apply_ops(m, grow_pixels=1, invert_mask=True)
    assert out.shape == (2, 7, 7) and out[0].sum() == 49 - 5
    # resize happens first, so grow works in output pixels
    big = mask_ops.apply_ops(torch.ones(1, 2, 2) * torch.tensor([[1.0, 0.0], [0.0, 0.0]]), size=(4, 4), threshold_level=0.5)
    assert big[0].tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
