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


# ---------------------------------------------------------------------------------------------
# Video latents: latent frames that each hold several video frames
# ---------------------------------------------------------------------------------------------
# A video VAE compresses time too (Wan's: 4x, causally: latent frame 0 holds video frame 0
# alone, latent frame j > 0 holds video frames 4j-3 .. 4j). A cell of such a latent spans its
# video frames as well as its area, so its coverage is the mask's share of that whole volume:
# the area coverage averaged over the cell's video frames. The rule above then applies as is.

def latent_frame_groups(mask_frames: int, latent_frames: int, temporal_scale: int,
                        input_name: str = "mask") -> list[list[int]]:
    """For each latent frame ``0 .. latent_frames - 1``, the mask frames it covers.

    A mask may give one frame for every frame, one frame per video frame (the clip the latent
    was encoded from: ``(latent_frames - 1) * temporal_scale + 1`` frames, up to
    ``temporal_scale - 1`` more that the encoder dropped) or one frame per latent frame.
    """
    if mask_frames == 1:
        return [[0]] * latent_frames
    video = (latent_frames - 1) * temporal_scale + 1
    if video <= mask_frames < video + temporal_scale:
        return [[0]] + [list(range(temporal_scale * j - temporal_scale + 1, temporal_scale * j + 1))
                        for j in range(1, latent_frames)]
    if mask_frames == latent_frames:
        return [[j] for j in range(latent_frames)]
    raise OCDInputError(input_name, f"has {mask_frames} frames; the latent has {latent_frames} frames, which hold "
                        f"{video} video frames (the first alone, then {temporal_scale} per latent frame): give one "
                        f"mask per video frame ({video}), one per latent frame ({latent_frames}) or one for all frames")


def latent_coverage(mask, frames: Sequence[int], latent_frames: int, temporal_scale: int, height: int, width: int,
                    input_name: str = "mask") -> torch.Tensor:
    """``[len(frames), height, width]``: the share of each cell of the absolute latent frames
    ``frames`` (of a latent of ``latent_frames`` frames) that the mask covers, over the cell's
    area and its video frames."""
    m = ops.normalize_mask(mask, input_name)
    groups = latent_frame_groups(m.shape[0], latent_frames, temporal_scale, input_name)
    last = max(frames) if len(frames) else -1
    if last >= latent_frames:
        raise OCDInputError(input_name, f"latent frame {last} is being sampled but the latent has {latent_frames}")
    needed = sorted({f for j in frames for f in groups[j]})
    area = dict(zip(needed, ops.resize(m[needed], height, width)))
    return torch.stack([torch.stack([area[f] for f in groups[j]]).mean(0) for j in frames]) if len(frames) else \
        torch.zeros(0, height, width)


def latent_token_weights(mask, frames: Sequence[int], latent_frames: int, temporal_scale: int, h: int, w: int,
                         device=None, input_name: str = "mask") -> torch.Tensor:
    """``[len(frames), h * w]``: the object weight of every token of an ``h x w`` token grid on
    absolute latent frames ``frames``, by the rule above."""
    cover = latent_coverage(mask, frames, latent_frames, temporal_scale, h, w, input_name)
    return weights_from_coverage(cover).reshape(len(frames), h * w).to(device)
