"""Conditioning and ControlNet internals, for sampling a spatial crop of the latent.

A CONDITIONING is a list of ``[embedding, options]``; spatial entries of the options and
the ControlNet chain under ``options["control"]`` are sized for the whole latent. The
dual-rate sampler's foreground branch denoises a crop, so those must be cut the same way.
ControlNet objects (comfy/controlnet.py ``ControlBase`` and packs that subclass it: core
ControlNet, ControlLora, T2IAdapter, Advanced-ControlNet's) resize ``cond_hint_original``
to ``latent size x compression_ratio`` (x the VAE's compression when they carry one) with
``upscale_algorithm`` and "center" cropping, and chain through ``previous_controlnet``.
"""
from __future__ import annotations

import logging
from typing import Callable

import torch

from ..errors import OCDInputError

log = logging.getLogger("ocd.sampling")

# Conditioning keys holding spatial tensors that must follow the crop when their size is
# the latent's or the image's (inpainting models' concat inputs, ConditioningSetMask).
SPATIAL_KEYS = ("concat_latent_image", "concat_mask", "mask")


def crop_hint(hint: torch.Tensor, box, latent_hw: tuple[int, int], ratio: int, upscale_method: str) -> torch.Tensor:
    """The part of a ControlNet hint ``[B,C,H',W']`` that lies under ``box`` (latent pixels).

    Resizing the full hint to the FULL latent's size x ``ratio`` as ControlNet does and
    cutting ``box * ratio`` out of it gives the crop exactly the pixels the full frame would
    have seen there (ControlNet's own resize of the cut hint is then an identity).
    """
    import comfy.utils

    h, w = latent_hw
    if hint.ndim != 4:
        raise OCDInputError("positive", f"a ControlNet hint of shape {tuple(hint.shape)} cannot be "
                            "cropped for the foreground branch (expected [B,C,H,W])")
    full = comfy.utils.common_upscale(hint, w * ratio, h * ratio, upscale_method, "center")
    return box.scaled(ratio).crop(full)


def _control_ratio(control) -> int:
    ratio = int(getattr(control, "compression_ratio", 8))
    vae = getattr(control, "vae", None)
    if vae is not None:
        ratio *= int(vae.spacial_compression_encode())
    return ratio


def crop_control(control, box, latent_hw: tuple[int, int], memo: dict):
    """A copy of a ControlNet chain whose hints cover only ``box``; the input is untouched.
    ``memo`` keeps objects shared between positive and negative shared."""
    if id(control) in memo:
        return memo[id(control)]
    new = control.copy()
    ratio = _control_ratio(control)
    method = getattr(control, "upscale_algorithm", "nearest-exact")
    hint = getattr(control, "cond_hint_original", None)
    if hint is not None:
        new.cond_hint_original = crop_hint(hint, box, latent_hw, ratio, method)
    extra = getattr(control, "extra_concat_orig", None)
    if extra:
        new.extra_concat_orig = [
            crop_hint(e, box, latent_hw, ratio, method) if e.ndim == 4 and e.shape[-1] > 1 else e
            for e in extra
        ]
    previous = getattr(control, "previous_controlnet", None)
    new.previous_controlnet = None if previous is None else crop_control(previous, box, latent_hw, memo)
    memo[id(control)] = new
    return new


def _log_warning(message: str) -> None:
    log.warning("OCD dual-rate sampling: %s", message)


def _crop_spatial(value, box, latent_hw: tuple[int, int], key: str, scale: int, warn: Callable[[str], None]):
    h, w = latent_hw
    if torch.is_tensor(value) and value.ndim >= 2:
        for ratio in (1, scale):
            if tuple(value.shape[-2:]) == (h * ratio, w * ratio):
                return box.scaled(ratio).crop(value)
        warn(f"conditioning '{key}' of shape {tuple(value.shape)} is not cropped for the foreground branch "
             "(its size is neither the latent's nor the image's)")
    return value


def crop_conditioning(conditioning: list, box, latent_hw: tuple[int, int], memo: dict, scale: int = 8,
                      warn: Callable[[str], None] = _log_warning) -> list:
    """CONDITIONING for a crop of the latent: new lists and dicts, ControlNet hints and
    spatial conds cut to ``box``; the user's conditioning is not mutated. ``scale``: image
    pixels per latent pixel; ``warn(message)`` hears what could not be cut to the crop."""
    out = []
    for embedding, options in conditioning:
        options = dict(options)
        if options.get("control") is not None:
            options["control"] = crop_control(options["control"], box, latent_hw, memo)
        for key in SPATIAL_KEYS:
            if key in options:
                options[key] = _crop_spatial(options[key], box, latent_hw, key, scale, warn)
        if "area" in options:
            warn("an area-restricted conditioning is applied to the foreground crop in crop coordinates")
        out.append([embedding, options])
    return out
