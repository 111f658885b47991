"""What an inversion pass leaves for the editing pass: the ``InversionRecord`` (pure data).

Made by ``comfy_passes.invert`` (Invert Latents (OCD)), consumed by ``comfy_passes.edit`` and
``edit_dual_rate``. The record checks that an edit starts from the latent and the model it
was made from.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import OCDInputError

SELF_ATTENTION = "self_attention"  # InversionRecord.extras key of the AttentionRecord
CROSS_ATTENTION = "cross_attention"  # ... and of the CrossAttentionRecord


@dataclass
class InversionRecord:
    """What an editing pass needs to know about the inversion it starts from.

    ``generation_sigmas`` is the editing schedule (descending, ending at 0); the inversion
    ran along its reverse. ``extras`` is where other features attach what they recorded
    during the inversion pass (attention maps, token-merge indices), keyed by feature name.
    """

    solver: str
    generation_sigmas: torch.Tensor
    latent_shape: tuple[int, ...]
    model_fingerprint: str
    source_latent: torch.Tensor
    extras: dict[str, Any] = field(default_factory=dict)
    # (positive, negative, cfg) the inversion ran with: to invert a part of the frame again
    # (the dual-rate edit's crop)
    prompt: tuple | None = None
    # the inversion's latent at every generation sigma (user latent space, CPU):
    # trajectory[k] is at generation_sigmas[k]; [0] is the inverted latent, [-1] the source
    trajectory: list[torch.Tensor] | None = None
    # image pixels per latent pixel of the model's family (for masks at image size)
    image_scale: int = 8
    # a video transformer's latent [B, C, T, H, W]: video frames per latent frame (the first
    # alone); 1: a UNet's latent [F, C, H, W], one frame per batch item
    temporal_scale: int = 1

    @property
    def steps(self) -> int:
        return len(self.generation_sigmas) - 1

    @property
    def mask_frames(self) -> tuple[int, ...]:
        """The frame counts a mask for this latent may have: one for all, or one per frame (a
        video transformer's: per latent frame or per video frame)."""
        if len(self.latent_shape) == 5:
            t = self.latent_shape[2]
            return tuple(sorted({1, t, (t - 1) * self.temporal_scale + 1}))
        return tuple(sorted({1, self.latent_shape[0]}))

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) in image pixels of the inverted frames."""
        return self.latent_shape[-2] * self.image_scale, self.latent_shape[-1] * self.image_scale

    def check_compatible(self, latent: torch.Tensor, fingerprint: str, input_name: str = "inverted_latent") -> None:
        """Refuse a latent (``input_name``) or model (by its weights' fingerprint) this record was
        not made from."""
        if tuple(latent.shape) != tuple(self.latent_shape):
            layout = "(batch, channels, frames, height, width)" if len(self.latent_shape) == 5 else \
                "(frames, channels, height/8, width/8)"
            raise OCDInputError(
                input_name,
                f"has shape {tuple(latent.shape)} {layout} but the inversion record was made from "
                f"{tuple(self.latent_shape)}: connect the latent that OCD_InvertLatents produced with this record",
            )
        if fingerprint != self.model_fingerprint:
            raise OCDInputError(
                "model",
                "is not the model the inversion was run with (different weights or architecture); "
                "editing must use the same base model as the inversion",
            )


def ensure_record(value, input_name: str = "inversion") -> InversionRecord:
    """``value`` if it is an inversion record; duck-typed, so that a record made by another
    copy of this module (a reload of the pack) is still accepted."""
    if not all(hasattr(value, a) for a in ("generation_sigmas", "latent_shape", "extras", "check_compatible")):
        raise OCDInputError(input_name, "must come from Invert Latents (OCD)")
    return value
