"""Mask tools node: one node applying ocd.mask_ops in a fixed order to any pack's MASK."""
from __future__ import annotations

import torch
from comfy_api.latest import io

from ..ocd import mask_ops
from ..ocd.errors import OCDInputError



class MaskOps(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="OCD_MaskOps",
            display_name="Mask Ops (OCD)",
            category="OCD/saliency",
            description="Cleans up a video mask from any pack ([H,W], [F,H,W] or [F,1,H,W]). Applied in "
            "this order: resize -> temporal smoothing -> threshold -> grow/shrink -> tube -> invert -> "
            "feather. Pixel amounts are in output pixels.",
            inputs=[
                io.Mask.Input("mask", tooltip="The mask: [H,W], [F,H,W] or [F,1,H,W], 0..1 (1 = object)."),
                io.Int.Input(
                    "grow_pixels", default=0, min=-512, max=512,
                    tooltip="Grow the mask by this many pixels (negative = shrink). A margin around the "
                    "object keeps its edge inside the edited region.",
                ),
                io.Float.Input(
                    "feather_pixels", default=0.0, min=0.0, max=256.0, step=0.5,
                    tooltip="Soften the edge over about twice this many pixels (Gaussian); 0 = hard edge.",
                ),
                io.Float.Input(
                    "threshold", default=-1.0, min=-1.0, max=1.0, step=0.01,
                    tooltip="Make the mask binary: 1 where it exceeds this level; negative = keep soft values.",
                ),
                io.Boolean.Input("invert", default=False, tooltip="Swap object and background."),
                io.Int.Input(
                    "smooth_frames", default=1, min=1, max=63,
                    tooltip="Average over a centred window of this many frames (1 = off): steadies a "
                    "flickering mask (threshold afterwards to keep it binary).",
                ),
                io.Int.Input(
                    "tube_frames", default=1, min=0, max=1000,
                    tooltip="Union over a centred window of this many frames (1 = off, 0 = all frames): a "
                    "crop or foreground branch then sees the object in every frame of the window.",
                ),
                io.Int.Input(
                    "width", default=0, min=0, max=8192,
                    tooltip="Resize to this width (0 = keep, or follow the reference).",
                ),
                io.Int.Input(
                    "height", default=0, min=0, max=8192,
                    tooltip="Resize to this height (0 = keep, or follow the reference).",
                ),
                io.Image.Input(
                    "reference_images", optional=True,
                    tooltip="Resize to these frames' size, and check the mask has one frame per image "
                    "(a single-frame mask is repeated).",
                ),
                io.Latent.Input(
                    "reference_latent", optional=True,
                    tooltip="Resize to this latent's size (latent pixels, 1/8 of the image), and check "
                    "the frame count. For masks used in latent space.",
                ),
            ],
            outputs=[io.Mask.Output(display_name="mask", tooltip="The processed mask, [frames, height, width], 0..1.")],
        )

    @classmethod
    def execute(cls, mask, grow_pixels, feather_pixels, threshold, invert, smooth_frames, tube_frames,
                width, height, reference_images=None, reference_latent=None) -> io.NodeOutput:
        m = mask_ops.normalize_mask(mask, "mask")
        size = None
        frames = None
        if reference_images is not None and reference_latent is not None:
            raise OCDInputError("reference_latent", "connect either reference_images or reference_latent, not both")
        if reference_images is not None:
            if not isinstance(reference_images, torch.Tensor) or reference_images.ndim != 4 or reference_images.shape[0] == 0:
                raise OCDInputError("reference_images", "expected IMAGE frames [frames, height, width, 3]")
            frames, size = reference_images.shape[0], (reference_images.shape[1], reference_images.shape[2])
        if reference_latent is not None:
            samples = reference_latent.get("samples") if isinstance(reference_latent, dict) else None
            if not isinstance(samples, torch.Tensor) or samples.ndim not in (4, 5):
                raise OCDInputError("reference_latent", "expected a LATENT with 'samples' [frames, C, h, w]")
            frames, size = samples.shape[0] if samples.ndim == 4 else samples.shape[2], tuple(samples.shape[-2:])
        if frames is not None:
            m = mask_ops.match_frames(m, frames, "mask")
        if width > 0 or height > 0:
            h0, w0 = size if size is not None else m.shape[1:]
            # one side given: keep the aspect ratio
            size = (height or max(1, round(h0 * width / w0)), width or max(1, round(w0 * height / h0)))
        out = mask_ops.apply_ops(
            m, size=size, smooth_frames=smooth_frames, threshold_level=threshold, grow_pixels=grow_pixels,
            tube_frames=tube_frames, invert_mask=invert, feather_pixels=feather_pixels,
        )
        return io.NodeOutput(out)


NODES = [MaskOps]
