"""Inversion nodes: DDIM / DPM++ 2M inversion of video latents and editing from it.

Thin wrappers over ocd.inversion.comfy_passes (ComfyUI glue), ocd.inversion.solvers and
ocd.inversion.record.
"""
from __future__ import annotations

import torch
from comfy_api.latest import io

from ..ocd import host
from ..ocd.attention.fusion import cross_attention_mask
from ..ocd.errors import OCDInputError
from ..ocd.inversion import comfy_passes
from ..ocd.inversion.record import CROSS_ATTENTION, ensure_record
from ..ocd.inversion.solvers import SOLVERS
from ._inputs import OCDNode
from ._report import new_report, publish
from .sampling import dual_rate_inputs, dual_rate_settings

RECORD_PRECISIONS = {"float16": torch.float16, "float32": torch.float32}

# The socket type of an inversion record (ocd.inversion.record.InversionRecord).
InversionRecordType = io.Custom("OCD_INVERSION")


def _edit_inputs() -> list:
    """The inputs every edit-from-inversion node starts with."""
    return [
        io.Model.Input("model", tooltip="The editing model (may carry OCD attention/merging patches); same base "
                       "weights as the inversion."),
        InversionRecordType.Input("inversion", tooltip="The record from Invert Latents (OCD)."),
        io.Latent.Input("inverted_latent", tooltip="The inverted latent from Invert Latents (OCD)."),
        io.Conditioning.Input("positive", tooltip="The TARGET prompt: what the video should become."),
        io.Conditioning.Input("negative", tooltip="Negative prompt."),
        io.Float.Input("cfg", default=7.5, min=0.0, max=30.0, step=0.1, round=0.01,
                       tooltip="Guidance scale of the edit (FateZero used 7.5)."),
    ]


class InvertLatents(OCDNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="OCD_InvertLatents",
            display_name="Invert Latents (OCD)",
            category="OCD/inversion",
            description="Runs the diffusion ODE backwards from a video's latents to noise with the "
            "source prompt (DDIM or DPM++ 2M), so an editing pass can start from it and keep the "
            "video's structure. Outputs the inverted latent and a record for the editing node. On Wan "
            "(flow matching) it integrates the velocity from the clip's latent up to noise.",
            inputs=[
                io.Model.Input("model", tooltip="The model to invert with; the editing pass must use the same base model."),
                io.Latent.Input("latent", tooltip="The encoded video frames (VAE Encode of Load Video's frames)."),
                io.Conditioning.Input("positive", tooltip="The SOURCE prompt: what the video shows now."),
                io.Combo.Input(
                    "solver", options=list(SOLVERS), default="dpmpp_2m",
                    tooltip="ddim: first order (FateZero used 50 steps; on Wan's flow matching it is "
                    "Euler); dpmpp_2m: second order, as accurate in fewer steps (20).",
                ),
                io.Int.Input("steps", default=20, min=1, max=1000,
                             tooltip="Inversion steps; the editing pass uses the same schedule."),
                io.Combo.Input("scheduler", options=host.scheduler_names(), default="normal",
                               tooltip="How the noise levels are spaced (same choices as KSampler)."),
                io.Float.Input(
                    "cfg", default=1.0, min=0.0, max=30.0, step=0.1, round=0.01,
                    tooltip="Guidance during inversion. 1.0 (no guidance) inverts the ODE faithfully; "
                    "higher values drift from the input.",
                ),
                io.Float.Input(
                    "inversion_depth", default=1.0, min=0.01, max=1.0, step=0.01,
                    tooltip="How far to invert, like KSampler's denoise: 1.0 = all the way to noise; "
                    "lower keeps more of the input and edits less.",
                ),
                io.Float.Input(
                    "record_attention", default=0.8, min=0.0, max=1.0, step=0.05,
                    tooltip="Record self-attention for this fraction of the editing steps (FateZero: "
                    "0.8), for Edit From Inversion's attention fusion; 0 = record nothing. Memory "
                    "grows with frames x steps x tokens^2: token merging shrinks it.",
                ),
                io.Int.Input(
                    "max_record_tokens", default=1024, min=1, max=65536,
                    tooltip="Record only layers with at most this many tokens per attention query set "
                    "(1024 = 32x32, FateZero's choice; at 512x512 the 64x64 layers are skipped). On Wan "
                    "every block attends over the whole clip (latent frames x height/16 x width/16 "
                    "tokens), or over one window under WAN Context Windows: its record grows with that "
                    "count squared, so only short, small clips (or windows) fit.",
                ),
                io.Boolean.Input(
                    "record_cross_attention", default=True,
                    tooltip="Also record where each prompt word is attended (small: head-averaged), "
                    "for Cross-Attention Mask (OCD).",
                ),
                io.Boolean.Input(
                    "offload_record", default=False,
                    tooltip="Keep the attention record in CPU RAM instead of on the GPU (slower, for "
                    "long clips). Its precision: record_precision.",
                ),
                io.Conditioning.Input("negative", optional=True,
                                      tooltip="Negative prompt; only needed when cfg is not 1."),
                io.Combo.Input(
                    "record_precision", options=list(RECORD_PRECISIONS), default="float16", optional=True,
                    tooltip="Precision of the attention record: float16 (half the memory, what Optimized-FateZero "
                    "and OCD use) or float32 (FateZero's vanilla record).",
                ),
            ],
            outputs=[
                io.Latent.Output(display_name="inverted_latent", tooltip="The latent at the starting noise level of the edit."),
                InversionRecordType.Output(display_name="inversion",
                                       tooltip="Schedule, solver and source of this inversion, for Edit From Inversion."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model, latent, positive, solver, steps, scheduler, cfg, inversion_depth,
                record_attention, max_record_tokens, record_cross_attention, offload_record, negative=None,
                record_precision="float16"):
        samples = latent["samples"]
        report = new_report(cls)
        inverted, record = comfy_passes.invert(
            model, samples, positive, negative, solver=solver, steps=steps, scheduler=scheduler,
            cfg=cfg, depth=inversion_depth, callback=host.sampler_progress(model, steps),
            record_attention=record_attention, max_record_tokens=max_record_tokens,
            record_device="cpu" if offload_record else None, record_cross_attention=record_cross_attention,
            record_dtype=RECORD_PRECISIONS[record_precision], report=report,
        )
        out = {k: v for k, v in latent.items() if k not in ("samples", "noise_mask")}
        out["samples"] = inverted
        return io.NodeOutput(out, record, ui=publish(report))


class EditFromInversion(OCDNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="OCD_EditFromInversion",
            display_name="Edit From Inversion (OCD)",
            category="OCD/inversion",
            description="Denoises an inverted latent with the TARGET prompt along the inversion's own "
            "schedule and solver. With the source prompt and cfg 1 it reconstructs the input.",
            inputs=[
                *_edit_inputs(),
                io.Float.Input(
                    "self_replace", default=0.8, min=0.0, max=1.0, step=0.05,
                    tooltip="Use the inversion's recorded self-attention for this fraction of the steps "
                    "(keeps structure and motion; FateZero: 0.8). 0 = plain sampling.",
                ),
                io.Mask.Input(
                    "blend_mask", optional=True,
                    tooltip="The edited object (one mask per frame or one for all): its tokens keep their "
                    "own attention so its shape may change; elsewhere the recorded attention is used.",
                ),
            ],
            outputs=[io.Latent.Output(tooltip="The edited latent; VAE Decode it.")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model, inversion, inverted_latent, positive, negative, cfg, self_replace, blend_mask=None):
        inversion = ensure_record(inversion)
        report = new_report(cls)
        samples, _ = comfy_passes.edit(
            model, inversion, inverted_latent["samples"], positive, negative, cfg=cfg,
            callback=host.sampler_progress(model, inversion.steps), noise_mask=inverted_latent.get("noise_mask"),
            self_replace=self_replace, blend_mask=blend_mask, report=report,
        )
        out = dict(inverted_latent)
        out["samples"] = samples
        return io.NodeOutput(out, ui=publish(report))


class DualRateEditFromInversion(OCDNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="OCD_DualRateEditFromInversion",
            display_name="Dual-Rate Edit From Inversion (OCD)",
            category="OCD/inversion",
            description="Edit From Inversion with Object-Centric Sampling: the object (mask) is "
            "denoised on a crop with every step of the inversion's schedule, the background with "
            "background_step_ratio times fewer steps (fusing the recorded attention), then both are "
            "blended and finished together. Faster than Edit From Inversion when the object is small. "
            "On Wan: one pass whose other steps run only the object's tokens, in the clip's context.",
            inputs=[
                *_edit_inputs(),
                io.Float.Input(
                    "self_replace", default=0.8, min=0.0, max=1.0, step=0.05,
                    tooltip="Use the inversion's recorded self-attention for this fraction of the steps "
                    "outside the object (the background and the joint finish); 0 = no fusion.",
                ),
                io.Mask.Input("mask", tooltip="The edited object: one mask per frame or one for all, any "
                              "resolution. It gets every step (on a crop) and keeps its own attention."),
                *dual_rate_inputs(),
                io.Boolean.Input(
                    "reinvert_object", default=True, optional=True,
                    tooltip="Invert the object's crop on its own first (one pass over the crop), so the "
                    "object keeps its source structure: a UNet sees a crop differently from the whole "
                    "frame, and without this the object does not walk back to its source. Off: faster, "
                    "the object's structure then comes only from the inverted noise. Not needed on Wan "
                    "(no crop: the report says it was skipped).",
                ),
            ],
            outputs=[io.Latent.Output(tooltip="The edited latent; VAE Decode it.")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model, inversion, inverted_latent, positive, negative, cfg, self_replace, mask,
                background_step_ratio, blend_point, crop_padding, blend, reinvert_object=True):
        inversion = ensure_record(inversion)
        report = new_report(cls)
        result, _ = comfy_passes.edit_dual_rate(
            model, inversion, inverted_latent["samples"], positive, negative, cfg, mask,
            dual_rate_settings(background_step_ratio, blend_point, crop_padding, blend),
            self_replace=self_replace, noise_mask=inverted_latent.get("noise_mask"),
            reinvert_object=bool(reinvert_object), report=report)
        out = dict(inverted_latent)
        out["samples"] = result.latent["samples"]
        return io.NodeOutput(out, ui=publish(report))


class InversionSampler(OCDNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="OCD_InversionSampler",
            display_name="Inversion Sampler (OCD)",
            category="OCD/inversion",
            description="A deterministic SAMPLER for SamplerCustomAdvanced that integrates in the "
            "direction its sigmas run: with FlipSigmas it inverts, with ordinary sigmas it generates. "
            "Use Disable Noise with it.",
            inputs=[
                io.Combo.Input("solver", options=list(SOLVERS), default="dpmpp_2m",
                               tooltip="ddim (first order) or dpmpp_2m (second order multistep)."),
            ],
            outputs=[io.Sampler.Output()],
        )

    @classmethod
    def execute(cls, solver):
        return io.NodeOutput(comfy_passes.ocd_sampler(solver))


class CrossAttentionMask(OCDNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="OCD_CrossAttentionMask",
            display_name="Cross-Attention Mask (OCD)",
            category="OCD/inversion",
            description="A per-frame mask of where the source prompt's words (e.g. 'car') were attended "
            "during inversion: a saliency mask that needs no extra model.",
            inputs=[
                InversionRecordType.Input("inversion", tooltip="From Invert Latents (OCD) with record_cross_attention on."),
                io.Clip.Input("clip", tooltip="The CLIP that encoded the source prompt (to find the words' tokens)."),
                io.String.Input("source_prompt", multiline=True,
                                tooltip="The source prompt exactly as given to the inversion's CLIP Text Encode."),
                io.String.Input("words", default="",
                                tooltip="The words of the object, comma separated, as they appear in the prompt."),
                io.Float.Input("threshold", default=0.3, min=0.0, max=1.0, step=0.01,
                               tooltip="Per-frame normalised attention above this is the object."),
                io.Int.Input("dilation", default=8, min=0, max=256,
                             tooltip="Grow the mask by this many pixels (object-centric methods want some margin)."),
            ],
            outputs=[io.Mask.Output(tooltip="[frames, height, width] at the image size of the inverted latent.")],
        )

    @classmethod
    def execute(cls, inversion, clip, source_prompt, words, threshold, dilation):
        inversion = ensure_record(inversion)
        record = inversion.extras.get(CROSS_ATTENTION)
        if record is None:
            raise OCDInputError("inversion", "has no cross-attention record: set record_cross_attention on "
                                "Invert Latents (OCD)")
        positions = comfy_passes.word_positions(clip, source_prompt, words)
        return io.NodeOutput(cross_attention_mask(record, positions, inversion.image_size, threshold, dilation))


NODES = [InvertLatents, EditFromInversion, DualRateEditFromInversion, InversionSampler, CrossAttentionMask]
