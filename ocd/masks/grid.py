"""The one rule that turns an object mask into weights on a grid of cells: the latent's
pixels (the dual-rate crop and blend) or a layer's attention tokens (token merging,
attention fusion).

    coverage(cell) = the share of the cell's area that the mask covers
                     (area average of the mask over the cell; bilinear when the grid is
                     finer than the mask)
    weight(cell)   = min(1, 2 * coverage):  a cell at least half covered is wholly the object

Why twice the coverage: cells on the outline hold object features. Merging such a token
into the background, giving it the source's attention, or leaving it out of the object's
crop and blend blurs or cuts the object's edge, while counting a few background cells as
object costs only a few tokens or latent pixels. Every user erring the same way keeps the
three features consistent: a token the merge protects is a token fusion leaves to the edit
and a latent pixel the foreground branch owns.

Shapes: masks are any layout ``ops.normalize_mask`` accepts, one frame (for every frame) or
one per video frame; grids are ``[frames, h, w]`` or, for tokens, ``[frames, h * w]``.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..errors import OCDInputError
from . import ops


def coverage(mask, frames: int, height: int, width: int, input_name: str = "mask") -> torch.Tensor:
    """``[frames, height, width]``: the share of each cell the mask covers, one grid per frame
    (a one-frame mask serves every frame)."""
    m = ops.normalize_mask(mask, input_name)
    if m.shape[0] not in (1, frames):
        raise OCDInputError(input_name, f"has {m.shape[0]} frames but the latent has {frames}; give one mask "
                            "per frame or a single mask for all frames")
    return ops.resize(m, height, width).expand(frames, height, width).contiguous()


def weights_from_coverage(cover: torch.Tensor) -> torch.Tensor:
    """The rule itself: ``min(1, 2 * coverage)``."""
    return (2.0 * cover).clamp(0.0, 1.0)


def object_cells(cover: torch.Tensor) -> torch.Tensor:
    """Cells that are wholly the object (weight 1, i.e. at least half covered), as 0/1 float."""
    return (weights_from_coverage(cover) >= 1.0).to(torch.float32)


def weights(mask, frames: int, height: int, width: int, input_name: str = "mask") -> torch.Tensor:
    """``[frames, height, width]`` object weights in [0, 1] by the rule above."""
    return weights_from_coverage(coverage(mask, frames, height, width, input_name))


def pick_frames(mask: torch.Tensor, frames: Sequence[int], input_name: str = "mask") -> torch.Tensor:
    """The masks of absolute video frames ``frames`` (context windows sample a part of the
    clip): ``[M, H, W]`` with M = 1 (every frame) or one per video frame -> ``[len(frames), H, W]``."""
    mask = ops.normalize_mask(mask, input_name)
    if mask.shape[0] == 1:
        return mask.expand(len(frames), *mask.shape[1:])
    last = max(frames)
    if last >= mask.shape[0]:
        raise OCDInputError(input_name, f"has {mask.shape[0]} frames but frame {last} is being sampled: "
                            "give one mask per video frame, or a single mask for all frames")
    return mask[list(frames)]


def token_weights(mask: torch.Tensor, frames: Sequence[int], h: int, w: int, device=None,
                  input_name: str = "mask") -> torch.Tensor:
    """``[len(frames), h * w]``: the object weight of every token of a layer's ``h x w`` grid,
    for absolute video frames ``frames``."""
    picked = pick_frames(mask, frames, input_name)
    return weights(picked, len(frames), h, w, input_name).reshape(len(frames), h * w).to(device)
