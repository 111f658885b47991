"""Sampling nodes: a KSampler that spends its steps on the masked object, and Clockwork
feature reuse across sampling steps.

Thin wrappers over ocd.sampling.comfy_sampler and ocd.sampling.comfy_feature_reuse (ComfyUI
glue), ocd.sampling.dual_rate (the plan) and ocd.sampling.feature_reuse (the schedule).
"""
from __future__ import annotations

from comfy_api.latest import io

from ..ocd import host, windows
from ..ocd.errors import OCDInputError
from ..ocd.sampling.comfy_feature_reuse import apply_feature_reuse
from ..ocd.sampling.comfy_sampler import sample_dual_rate
from ..ocd.sampling.dual_rate import BLEND_MODES, DualRateSettings
from ..ocd.sampling.feature_reuse import FeatureReuseSettings
from ._inputs import OCDNode
from ._report import new_report, node_ref, publish


def dual_rate_inputs() -> list:
    """The Object-Centric Sampling inputs after the mask, shared by every dual-rate node."""
    return [
        io.Float.Input("background_step_ratio", default=4.0, min=1.0, max=100.0, step=0.5,
                       tooltip="phi: the background branch takes this many times fewer steps "
                       "than the foreground before the blend point (1 = as many)."),
        io.Float.Input("blend_point", default=0.25, min=0.0, max=1.0, step=0.05,
                       tooltip="gamma: the fraction of the schedule denoised jointly after "
                       "blending the branches (1 = everything joint: ordinary sampling)."),
        io.Int.Input("crop_padding", default=2, min=0, max=64,
                     tooltip="Latent pixels (x8 image pixels) added around the mask's bounding "
                     "box for the foreground crop, so the object sees some context. The crop "
                     "is then rounded out to the UNet's grid (8 latent px for SD1.5). On a video "
                     "transformer (Wan): the margin around the object whose tokens run with it on "
                     "every step (rounded up to whole tokens of 2 latent px)."),
        io.Combo.Input("blend", options=list(BLEND_MODES), default="feathered",
                       tooltip="feathered: the mask edge is blurred over ~2 latent pixels so the "
                       "branches fade into each other; hard: a 0/1 mask."),
    ]


def dual_rate_settings(background_step_ratio, blend_point, crop_padding, blend) -> DualRateSettings:
    """The library's settings from the inputs ``dual_rate_inputs`` declares."""
    return DualRateSettings(float(background_step_ratio), float(blend_point), int(crop_padding), blend)


class DualRateKSampler(OCDNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="OCD_DualRateKSampler",
            display_name="Dual-Rate KSampler (OCD)",
            category="OCD/sampling",
            description="Object-Centric Sampling: a KSampler that denoises the masked object (a crop "
            "around it) with every step and the background with background_step_ratio times fewer "
            "steps, blends the two at blend_point and finishes the rest of the schedule jointly. "
            "On a video transformer (Wan) the branches share one pass: on the background's steps "
            "every token runs, on the others only the object's tokens and a margin, the rest of the "
            "frame keeping the last full step's prediction. Same seed, schedule and noise as "
            "KSampler; with blend_point 1 it is KSampler.",
            inputs=[
                io.Model.Input("model", tooltip="The model used for denoising (patched models, e.g. "
                               "token merging or context windows, work as in KSampler)."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="The random seed for the noise (the same noise as KSampler)."),
                io.Int.Input("steps", default=20, min=1, max=10000,
                             tooltip="Steps of the full schedule: the foreground branch and the joint "
                             "finish use all of them."),
                io.Float.Input("cfg", default=8.0, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Classifier-free guidance scale, as in KSampler."),
                io.Combo.Input("sampler_name", options=host.sampler_names(),
                               tooltip="The sampling algorithm, as in KSampler."),
                io.Combo.Input("scheduler", options=host.scheduler_names(),
                               tooltip="The noise schedule, as in KSampler."),
                io.Conditioning.Input("positive", tooltip="Positive conditioning; ControlNet hints are "
                                      "cropped with the latent for the foreground branch."),
                io.Conditioning.Input("negative", tooltip="Negative conditioning."),
                io.Latent.Input("latent_image", tooltip="The latent video to denoise: [frames, 4, h, w] "
                                "for a UNet, [1, channels, frames, h, w] for a video transformer (Wan's empty "
                                "latent or a VAE-encoded clip). A noise_mask in it is honoured in every branch."),
                io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="How much to denoise, as in KSampler (below 1 keeps the input's "
                               "structure, e.g. for editing an encoded video)."),
                io.Mask.Input("mask", tooltip="The foreground (the edited object): one mask per frame "
                              "or one for all frames, any resolution (for Wan: one per video frame, one "
                              "per latent frame, or one for all). Empty: background schedule "
                              "everywhere; full: ordinary sampling."),
                *dual_rate_inputs(),
            ],
            outputs=[io.Latent.Output(display_name="LATENT", tooltip="The denoised latent.")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image,
                denoise, mask, background_step_ratio, blend_point, crop_padding, blend) -> io.NodeOutput:
        report = new_report(cls)
        result = sample_dual_rate(
            model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image, denoise,
            mask, dual_rate_settings(background_step_ratio, blend_point, crop_padding, blend), report=report)
        return io.NodeOutput(result.latent, ui=publish(report))


class FeatureReuse(OCDNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="OCD_FeatureReuse",
            display_name="Feature Reuse (OCD)",
            category="OCD/sampling",
            description="Clockwork Diffusion, training-free: the UNet's low-resolution features change slowly "
            "from step to step, so the whole UNet runs only every clock-th sampling step; in between only "
            "its highest-resolution levels run and the low-resolution features of the last full step stand "
            "in for the rest. Works with any sampler, the pack's attention and dual-rate nodes, ControlNet "
            "and context windows. Returns a patched copy of the model.",
            inputs=[
                io.Model.Input("model", tooltip="The model to patch (not changed; a patched copy is returned)."),
                io.Int.Input("clock", default=3, min=1, max=64,
                             tooltip="A full UNet every this many sampling steps (1 = every step: no reuse). "
                             "Higher is faster and further from the unpatched result; 3 measured 1.4-1.8x "
                             "faster at 20 DPM++ 2M steps (docs/BENCHMARKS.md)."),
                io.Int.Input("recomputed_levels", default=1, min=1, max=3,
                             tooltip="How many of the UNet's highest-resolution levels run on every step "
                             "(1 = Clockwork: the most saving; SD1.5 has 4 levels, SDXL 3)."),
                io.Float.Input("start", default=0.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Reuse only from this fraction of the schedule on (the first step "
                               "always runs fully)."),
                io.Float.Input("end", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Reuse only before this fraction of the schedule (the last step always "
                               "runs fully)."),
                io.Boolean.Input("during_inversion", default=False,
                                 tooltip="Also reuse while inverting (Invert Latents). Off: an inversion "
                                 "accumulates every error it makes, so it runs fully."),
            ],
            outputs=[io.Model.Output(tooltip="The patched copy of the model.")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model, clock, recomputed_levels, start, end, during_inversion) -> io.NodeOutput:
        settings = FeatureReuseSettings(int(clock), int(recomputed_levels), float(start), float(end),
                                        bool(during_inversion), node_ref(cls))
        return io.NodeOutput(apply_feature_reuse(model, settings))


class LatentFrameNumbers(OCDNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="OCD_LatentFrameNumbers",
            display_name="Latent Frame Numbers (OCD)",
            category="OCD/sampling",
            description="Numbers a latent's frames by their place in the whole clip, so a sampler draws each "
            "frame's noise by its number (ComfyUI's batch_index): a long clip edited in windows, one run each "
            "(python -m ocd edit does), gives a frame the same noise in every window that holds it, and its "
            "anchor frames the noise they had in the first window. Without it every window draws its noise "
            "from its first frame on, so two windows give the frames they share different noise. For latents "
            "whose frames are a batch (SD1.5, SDXL); a video transformer's latent (Wan) holds the clip as one "
            "batch item and is refused.",
            inputs=[
                io.Latent.Input("samples", tooltip="A window's latent: its anchor frames first, then its own."),
                io.Int.Input("first_frame", default=0, min=0, max=10**7,
                             tooltip="The clip frame number of the window's first own frame (after the anchors)."),
                io.Int.Input("anchors", default=0, min=0, max=4096,
                             tooltip="How many of the latent's first frames are the clip's first frames (0, 1, "
                             "...), edited in front of the window's own."),
            ],
            outputs=[io.Latent.Output(display_name="LATENT", tooltip="The latent, its frames numbered.")],
        )

    @classmethod
    def execute(cls, samples, first_frame, anchors) -> io.NodeOutput:
        latent = samples["samples"]
        if latent.ndim != 4:
            raise OCDInputError("samples", f"has shape {tuple(latent.shape)}: a video transformer's latent holds "
                                "the clip as one batch item, its noise drawn for the whole clip at once; frames "
                                "can be numbered only where they are a batch (SD1.5, SDXL)")
        try:
            numbers = windows.frame_numbers(latent.shape[0], int(first_frame), int(anchors))
        except ValueError as error:
            raise OCDInputError("anchors" if str(error).startswith("anchors") else "first_frame",
                                str(error).split(": ", 1)[1]) from None
        return io.NodeOutput({**samples, "batch_index": numbers})


NODES = [DualRateKSampler, FeatureReuse, LatentFrameNumbers]
