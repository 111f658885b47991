"""Object-centric sampling node: a KSampler that spends its steps on the masked object.

Thin wrapper over ocd.sampling.comfy_sampler (ComfyUI glue) and ocd.sampling.dual_rate
(the plan: crop, blend weights, schedule split, cost prediction).
"""
from __future__ import annotations

from comfy_api.latest import io

from ..ocd import host
from ..ocd.sampling.comfy_sampler import sample_dual_rate
from ..ocd.sampling.dual_rate import BLEND_MODES, DualRateSettings
from ._inputs import OCDNode
from ._report import new_report, publish


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
                     "is then rounded out to the UNet's grid (8 latent px for SD1.5)."),
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
            "Same seed, schedule and noise as KSampler; with blend_point 1 it is KSampler.",
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
                io.Latent.Input("latent_image", tooltip="The latent video [frames, 4, h, w] to denoise "
                                "(a noise_mask in it is honoured in every branch)."),
                io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="How much to denoise, as in KSampler (below 1 keeps the input's "
                               "structure, e.g. for editing an encoded video)."),
                io.Mask.Input("mask", tooltip="The foreground (the edited object): one mask per frame "
                              "or one for all frames, any resolution. Empty: background schedule "
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


NODES = [DualRateKSampler]
