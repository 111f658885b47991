"""Saliency masks without model weights: motion + spectral-residual saliency, thresholded
and smoothed over time (the library of OCD_AutoSaliency).

Pipeline for IMAGE frames ``[F, H, W, 3]`` (0..1), all on a working copy whose long side is
``working_size`` pixels (saliency is a coarse signal; optical flow dominates the cost):

1. motion saliency per frame, from
   - dense optical flow (Farneback) to the neighbouring frame, minus the median flow of the
     frame: the median is the camera's pan/tilt, so only things moving *relative to the
     scene* stand out;
   - and/or the difference from a robust background: the per-pixel temporal median of the
     clip (a static camera's background; moving objects are outliers the median ignores);
   normalised by a high percentile over the whole clip, so a frame without motion stays dark
   instead of being stretched to full range;
2. static saliency per frame: spectral residual (Hou & Zhang, CVPR 2007), through
   ``cv2.saliency`` when the opencv-contrib build is installed, otherwise the few-lines FFT
   version below (the same algorithm);
3. ``motion_weight * motion + (1 - motion_weight) * static``, averaged over a centred window
   of ``smooth_frames`` frames;
4. one threshold for the whole clip (Otsu over every frame's values, or a given level), so
   the mask does not flicker with per-frame statistics; a small opening/closing removes
   specks and holes; a majority vote over the same window steadies the binary result.
"""
from __future__ import annotations

from typing import Callable

import cv2
import numpy as np
import torch

from ..errors import OCDInputError
from . import ops

MOTION_SOURCES = ("flow", "background", "flow+background")


def has_contrib_saliency() -> bool:
    """True when ``cv2.saliency`` (opencv-contrib) is importable."""
    return hasattr(cv2, "saliency") and hasattr(cv2.saliency, "StaticSaliencySpectralResidual_create")


def spectral_residual(gray: np.ndarray, scale_width: int = 64, blur_sigma: float = 2.5) -> np.ndarray:
    """Static saliency of one ``[H, W]`` image (any range) -> ``[H, W]`` float32 in 0..1.

    The log amplitude spectrum minus its local (3x3) average is the "unexpected" part of the
    image; back in the image domain with the original phase it lights up regions that
    differ from their surroundings. Computed at ``scale_width`` pixels wide as in the paper
    (64), then blurred and resized back.
    """
    h, w = gray.shape
    small_h = max(1, round(h * scale_width / w))
    small = cv2.resize(gray.astype(np.float32), (scale_width, small_h), interpolation=cv2.INTER_AREA)
    spectrum = np.fft.fft2(small)
    log_amplitude = np.log(np.abs(spectrum) + 1e-8)
    phase = np.angle(spectrum)
    residual = log_amplitude - cv2.blur(log_amplitude.astype(np.float32), (3, 3))
    saliency = np.abs(np.fft.ifft2(np.exp(residual + 1j * phase))) ** 2
    saliency = cv2.GaussianBlur(saliency.astype(np.float32), (0, 0), blur_sigma)
    saliency = cv2.resize(saliency, (w, h), interpolation=cv2.INTER_LINEAR)
    return _normalise_max(saliency)


def _static_saliency(gray: np.ndarray) -> np.ndarray:
    if has_contrib_saliency():
        detector = cv2.saliency.StaticSaliencySpectralResidual_create()
        ok, sal = detector.computeSaliency((gray * 255).astype(np.uint8))
        if ok:
            return _normalise_max(sal.astype(np.float32))
    return spectral_residual(gray)


def _normalise_max(x: np.ndarray) -> np.ndarray:
    x = x - x.min()
    peak = float(x.max())
    return (x / peak).astype(np.float32) if peak > 0 else np.zeros_like(x, dtype=np.float32)


def _normalise_percentile(x: np.ndarray, percentile: float = 99.0) -> np.ndarray:
    """Clip-wide normalisation: divide by a high percentile of all frames, clip to 1."""
    peak = float(np.percentile(x, percentile))
    if peak <= 1e-6:
        peak = float(x.max())
    if peak <= 1e-6:
        return np.zeros_like(x, dtype=np.float32)
    return np.clip(x / peak, 0.0, 1.0).astype(np.float32)


def flow_magnitude(prev_gray: np.ndarray, next_gray: np.ndarray) -> np.ndarray:
    """Camera-compensated motion between two ``[H, W]`` float 0..1 frames -> ``[H, W]`` pixels.

    The frame's median flow is subtracted before taking the magnitude: for a panning camera
    it is the background's motion, so a static scene filmed while panning scores ~0.
    """
    flow = dense_flow(prev_gray, next_gray)
    flow = flow - np.median(flow.reshape(-1, 2), axis=0)
    return np.sqrt((flow ** 2).sum(axis=-1)).astype(np.float32)


def dense_flow(prev_gray: np.ndarray, next_gray: np.ndarray) -> np.ndarray:
    """Farneback optical flow ``[H, W, 2]`` (dx, dy) from ``prev`` to ``next`` (float 0..1 gray)."""
    a = (np.clip(prev_gray, 0, 1) * 255).astype(np.uint8)
    b = (np.clip(next_gray, 0, 1) * 255).astype(np.uint8)
    return cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)


def working_gray_frames(images: torch.Tensor, working_size: int) -> np.ndarray:
    """IMAGE ``[F, H, W, 3]`` -> gray float32 ``[F, h, w]`` with long side ``working_size``."""
    f, h, w, _ = images.shape
    scale = min(1.0, working_size / max(h, w))
    size = (max(8, round(w * scale)), max(8, round(h * scale)))
    rgb = images[..., :3].clamp(0, 1).cpu().numpy().astype(np.float32)
    out = np.empty((f, size[1], size[0]), dtype=np.float32)
    for i in range(f):
        gray = cv2.cvtColor(rgb[i], cv2.COLOR_RGB2GRAY)
        out[i] = cv2.resize(gray, size, interpolation=cv2.INTER_AREA) if size != (w, h) else gray
    return out


def motion_saliency(gray: np.ndarray, source: str = "flow", on_frame: Callable[[int], None] | None = None) -> np.ndarray:
    """``[F, h, w]`` gray frames -> ``[F, h, w]`` motion saliency in 0..1 (zeros for one frame)."""
    if source not in MOTION_SOURCES:
        raise OCDInputError("motion_source", f"'{source}' is not one of {list(MOTION_SOURCES)}")
    f = gray.shape[0]
    if f < 2:
        return np.zeros_like(gray)
    maps = []
    if "flow" in source:
        flow = np.empty_like(gray)
        for i in range(f):
            # each frame against its successor (the last one against its predecessor)
            j = i + 1 if i + 1 < f else i - 1
            flow[i] = flow_magnitude(gray[i], gray[j])
            if on_frame is not None:
                on_frame(i)
        maps.append(_normalise_percentile(flow))
    if "background" in source:
        background = np.median(gray, axis=0)
        maps.append(_normalise_percentile(np.abs(gray - background[None])))
    return np.maximum.reduce(maps) if len(maps) > 1 else maps[0]


def otsu_level(values: np.ndarray) -> float:
    """Otsu's threshold of values in 0..1 (256 bins): maximises the between-class variance."""
    hist, edges = np.histogram(np.clip(values, 0, 1), bins=256, range=(0.0, 1.0))
    hist = hist.astype(np.float64)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mean0 = m0 / np.maximum(w0, 1e-12)
    mean1 = (m0[-1] - m0) / np.maximum(w1, 1e-12)
    between = w0 * w1 * (mean0 - mean1) ** 2
    return float(edges[int(np.argmax(between[:-1])) + 1])


def auto_saliency(
    images: torch.Tensor,
    *,
    motion_weight: float = 0.7,
    motion_source: str = "flow",
    threshold: float = -1.0,
    smooth_frames: int = 5,
    working_size: int = 256,
    cleanup_pixels: int = 2,
    on_frame: Callable[[int], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """IMAGE ``[F, H, W, 3]`` -> (binary MASK ``[F, H, W]`` float32, soft saliency ``[F, H, W]``).

    ``threshold < 0`` = Otsu over the whole clip; ``cleanup_pixels`` is the radius (in
    working pixels) of the opening/closing that removes specks and fills small holes.
    ``on_frame(i)`` is called once per frame and stage (progress, interruption).
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[-1] not in (3, 4):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise OCDInputError("images", f"expected IMAGE frames [frames, height, width, 3], got {shape}")
    if images.shape[0] == 0 or images.shape[1] == 0 or images.shape[2] == 0:
        raise OCDInputError("images", f"the video is empty (shape {tuple(images.shape)})")
    if not 0.0 <= motion_weight <= 1.0:
        raise OCDInputError("motion_weight", f"must be within 0..1, got {motion_weight}")
    if threshold > 1.0:
        raise OCDInputError("threshold", f"must be within 0..1 (or negative for Otsu), got {threshold}")
    f, h, w, _ = images.shape
    gray = working_gray_frames(images, working_size)
    weight = motion_weight if f > 1 else 0.0  # one frame has no motion: static only
    static = np.stack([_static_saliency(g) for g in gray]) if weight < 1.0 else np.zeros_like(gray)
    motion = motion_saliency(gray, motion_source, on_frame) if weight > 0.0 else np.zeros_like(gray)
    soft = torch.from_numpy(weight * motion + (1.0 - weight) * static)
    soft = ops.temporal_smooth(soft, smooth_frames)
    level = otsu_level(soft.numpy()) if threshold < 0 else float(threshold)
    binary = ops.threshold(soft, level)
    if cleanup_pixels > 0:
        binary = ops.grow(ops.grow(binary, -cleanup_pixels), cleanup_pixels)  # opening
        binary = ops.grow(ops.grow(binary, cleanup_pixels), -cleanup_pixels)  # closing
    if smooth_frames > 1:
        binary = ops.threshold(ops.temporal_smooth(binary, smooth_frames), 0.5)
    mask = ops.threshold(ops.resize(binary, h, w), 0.5)
    return mask.contiguous(), ops.resize(soft, h, w).contiguous()
