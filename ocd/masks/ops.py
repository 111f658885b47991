"""Mask tools for video masks: normalise, resize, grow/shrink, feather, threshold, invert,
temporal smoothing and "tubes".

Every function takes and returns a float mask ``[F, H, W]`` in 0..1 (foreground = 1), the
layout ``normalize_mask`` produces from any pack's MASK (``[H, W]``, ``[F, H, W]``,
``[F, 1, H, W]``, bool or integer). Soft masks stay soft: grow/shrink are grey-scale
dilation/erosion (max/min over a disk), so they act on binary masks exactly as the
morphological operations do and never invent values outside the input's range.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import OCDInputError
from ..video.codec import follow_aspect


FINITE_CHUNK = 1 << 24  # elements looked at at once: a long clip's IMAGE is not copied whole


def require_finite(values: torch.Tensor, input_name: str, kind: str = "MASK") -> torch.Tensor:
    """``values`` unchanged if every element is finite; else ``OCDInputError`` naming the input
    and how many elements are NaN or infinite.

    The one rule for masks and the images a node reads as masks or analyses: NaN or infinity
    (a broken upstream node, a division by zero in a mask graph) is refused, never clamped
    into 0..1 or passed on (clamping keeps NaN, and a NaN weight makes a latent of NaN).
    """
    if not values.is_floating_point() or values.numel() == 0:
        return values  # bool and integer tensors hold finite values only
    rows = values.reshape(values.shape[0], -1) if values.ndim else values.reshape(1, 1)  # a view when contiguous
    step = max(1, FINITE_CHUNK // rows.shape[1])
    parts = (rows[i:i + step] for i in range(0, rows.shape[0], step))
    nan = inf = 0
    for part in parts:
        if bool(torch.isfinite(part).all()):
            continue
        nan += int(torch.isnan(part).sum())
        inf += int(torch.isinf(part).sum())
    if nan or inf:
        found = " and ".join(f"{n} {what}" for n, what in ((nan, "NaN"), (inf, "infinite")) if n)
        raise OCDInputError(
            input_name,
            f"holds {found} values (of {values.numel()}): {'an' if kind[:1] in 'AEIOU' else 'a'} {kind} must "
            "hold finite values; fix the node that made it (a division by zero, a broken model or decode)",
        )
    return values


def normalize_mask(mask, input_name: str = "mask") -> torch.Tensor:
    """Any MASK layout -> float32 ``[F, H, W]`` in 0..1.

    Accepts ``[H, W]`` (one frame), ``[F, H, W]`` (ComfyUI's MASK) and ``[F, 1, H, W]``
    (what some SAM packs return). Bool/integer masks are mapped to 0/1 (uint8 0..255 is
    divided by 255); values outside 0..1 are clamped. NaN and infinite values are refused
    (``require_finite``), naming ``input_name``.
    """
    if not isinstance(mask, torch.Tensor):
        raise OCDInputError(input_name, f"expected a MASK tensor, got {type(mask).__name__}")
    m = mask
    if m.ndim == 4 and m.shape[1] == 1:
        m = m[:, 0]
    elif m.ndim == 2:
        m = m[None]
    if m.ndim != 3:
        raise OCDInputError(
            input_name,
            f"expected a MASK of shape [H,W], [F,H,W] or [F,1,H,W], got {tuple(mask.shape)}",
        )
    if m.shape[0] == 0 or m.shape[1] == 0 or m.shape[2] == 0:
        raise OCDInputError(input_name, f"the mask is empty (shape {tuple(mask.shape)})")
    require_finite(m, input_name)
    if m.dtype == torch.bool:
        m = m.to(torch.float32)
    elif m.dtype == torch.uint8:
        m = m.to(torch.float32) / 255.0
    elif not m.is_floating_point():
        m = m.to(torch.float32)
    return m.to(torch.float32).clamp(0.0, 1.0).contiguous()


def match_frames(mask: torch.Tensor, frames: int, input_name: str = "mask") -> torch.Tensor:
    """Broadcast a one-frame mask to ``frames`` frames; refuse any other mismatch."""
    if mask.shape[0] == frames:
        return mask
    if mask.shape[0] == 1:
        return mask.expand(frames, -1, -1).contiguous()
    raise OCDInputError(
        input_name,
        f"has {mask.shape[0]} frames but the video has {frames}; give one mask per frame "
        "(or a single mask to use for every frame)",
    )


def resize(mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``[F, H, W]`` -> ``[F, height, width]`` (bilinear; area when shrinking, so thin
    parts of the object keep a proportional weight instead of vanishing)."""
    if (mask.shape[1], mask.shape[2]) == (height, width):
        return mask
    if height < 1 or width < 1:
        raise OCDInputError("width/height", f"the target size must be positive, got {width}x{height}")
    x = mask[:, None]
    shrinking = height <= mask.shape[1] and width <= mask.shape[2]
    if shrinking:
        out = F.interpolate(x, size=(height, width), mode="area")
    else:
        out = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)
    return out[:, 0].clamp(0.0, 1.0)


def target_size(mask_hw: tuple[int, int], width: int = 0, height: int = 0,
                reference_hw: tuple[int, int] | None = None) -> tuple[int, int] | None:
    """(height, width) to resize a mask to: the reference's size (frames or latent) when given,
    then ``width``/``height`` when above 0, a side of 0 following the aspect ratio of what it
    would otherwise be. None: keep the mask's size."""
    size = reference_hw
    if width > 0 or height > 0:
        h0, w0 = size if size is not None else mask_hw
        w, h = follow_aspect(w0, h0, width, height)
        size = (max(1, round(h)), max(1, round(w)))
    return None if size is None else (int(size[0]), int(size[1]))


def reference_shape(images=None, latent_samples=None) -> tuple[int | None, tuple[int, int] | None]:
    """(frames, (height, width)) of what a mask should match: IMAGE frames ``[F, H, W, C]`` or
    latent samples ``[F, C, h, w]`` (``[B, C, F, h, w]`` for video latents); (None, None) for
    neither. Refuses both at once and malformed references, naming the input."""
    if images is not None and latent_samples is not None:
        raise OCDInputError("reference_latent", "connect either reference_images or reference_latent, not both")
    if images is not None:
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[0] == 0:
            raise OCDInputError("reference_images", "expected IMAGE frames [frames, height, width, 3]")
        return images.shape[0], (images.shape[1], images.shape[2])
    if latent_samples is not None:
        if not isinstance(latent_samples, torch.Tensor) or latent_samples.ndim not in (4, 5):
            raise OCDInputError("reference_latent", "expected a LATENT with 'samples' [frames, C, h, w]")
        frames = latent_samples.shape[0] if latent_samples.ndim == 4 else latent_samples.shape[2]
        return frames, tuple(latent_samples.shape[-2:])
    return None, None


def _disk(radius: int, device=None) -> torch.Tensor:
    r = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
    return (r[None] ** 2 + r[:, None] ** 2) <= radius * radius + 1e-6


def grow(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """Dilate (``pixels > 0``) or erode (``pixels < 0``) by a disk of that radius.

    Grey-scale: each output pixel is the max (dilation) or min (erosion) of the input over
    the disk around it. Pixels outside the frame count as background for dilation and as
    foreground for erosion, so an object touching the border is not eaten from outside.
    """
    if pixels == 0:
        return mask
    radius = abs(int(pixels))
    disk = _disk(radius, mask.device)
    offsets = disk.nonzero() - radius  # [K, 2] (dy, dx)
    src = mask if pixels > 0 else 1.0 - mask
    padded = F.pad(src[:, None], (radius,) * 4, value=0.0)[:, 0]
    h, w = mask.shape[1:]
    out = torch.zeros_like(src)
    for dy, dx in offsets.tolist():
        y0, x0 = radius + dy, radius + dx
        torch.maximum(out, padded[:, y0:y0 + h, x0:x0 + w], out=out)
    return out if pixels > 0 else 1.0 - out


def gaussian_kernel(sigma: float, radius: int, device=None) -> torch.Tensor:
    """A normalised 1-d Gaussian of ``2 * radius + 1`` taps."""
    t = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    return kernel / kernel.sum()


BLUR_BORDERS = ("replicate", "zeros")


def gaussian_blur(mask: torch.Tensor, sigma: float, radius: int | None = None, border: str = "replicate") -> torch.Tensor:
    """Separable Gaussian blur of ``[F, H, W]`` (standard deviation ``sigma`` pixels, reaching
    ``radius`` pixels, default ``ceil(3 sigma)``). ``border``: "replicate" continues the
    frame's edge (an object touching the border stays whole); "zeros" treats outside the
    frame as background."""
    if border not in BLUR_BORDERS:
        raise ValueError(f"border must be one of {BLUR_BORDERS}, got {border!r}")
    radius = max(1, int(math.ceil(3 * sigma))) if radius is None else int(radius)
    kernel = gaussian_kernel(sigma, radius, mask.device)
    mode = "replicate" if border == "replicate" else "constant"
    x = mask[:, None]
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode=mode), kernel.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode=mode), kernel.view(1, 1, -1, 1))
    return x[:, 0]


def feather(mask: torch.Tensor, pixels: float) -> torch.Tensor:
    """Soften the edge with a Gaussian of standard deviation ``pixels / 2`` (so the ramp is
    about ``2 * pixels`` wide); the frame border is replicated, not faded to black."""
    if pixels <= 0:
        return mask
    return gaussian_blur(mask, pixels / 2.0).clamp(0.0, 1.0)


def threshold(mask: torch.Tensor, level: float) -> torch.Tensor:
    """Binary mask: 1 where ``mask > level``."""
    return (mask > level).to(torch.float32)


def invert(mask: torch.Tensor) -> torch.Tensor:
    return 1.0 - mask


def _windows(frames: int, window: int):
    """For each frame, the slice of a centred window of ``window`` frames (cut at the ends)."""
    before = (window - 1) // 2
    after = window - 1 - before
    for i in range(frames):
        yield i, slice(max(0, i - before), min(frames, i + after + 1))


def temporal_smooth(mask: torch.Tensor, window: int) -> torch.Tensor:
    """Mean over a centred window of ``window`` frames (shorter at the clip's ends)."""
    if window <= 1 or mask.shape[0] == 1:
        return mask
    out = torch.empty_like(mask)
    for i, s in _windows(mask.shape[0], window):
        out[i] = mask[s].mean(dim=0)
    return out


def tube(mask: torch.Tensor, window: int) -> torch.Tensor:
    """Union (max) over a centred window of ``window`` frames; ``window <= 0`` = all frames.

    A crop or a foreground branch built from the tube sees the object in every frame of the
    window even where the per-frame mask lags or flickers.
    """
    if window <= 0 or window >= 2 * mask.shape[0]:
        return mask.amax(dim=0, keepdim=True).expand_as(mask).contiguous()
    if window == 1:
        return mask
    out = torch.empty_like(mask)
    for i, s in _windows(mask.shape[0], window):
        out[i] = mask[s].amax(dim=0)
    return out


def apply_ops(
    mask: torch.Tensor,
    *,
    size: tuple[int, int] | None = None,
    smooth_frames: int = 1,
    threshold_level: float = -1.0,
    grow_pixels: int = 0,
    tube_frames: int = 1,
    invert_mask: bool = False,
    feather_pixels: float = 0.0,
) -> torch.Tensor:
    """The node's pipeline on a normalised ``[F, H, W]`` mask, in this fixed order:
    resize to ``size`` = (height, width) -> temporal smoothing -> threshold (``< 0`` = off)
    -> grow/shrink -> tube -> invert -> feather. Pixel amounts are in output pixels.
    """
    m = mask
    if size is not None:
        m = resize(m, size[0], size[1])
    m = temporal_smooth(m, smooth_frames)
    if threshold_level >= 0:
        m = threshold(m, threshold_level)
    m = grow(m, grow_pixels)
    m = tube(m, tube_frames)
    if invert_mask:
        m = invert(m)
    m = feather(m, feather_pixels)
    return m.contiguous()
