"""Object-Centric Sampling on a video transformer, through ComfyUI's sampling (the glue; the
plan is ``ocd.sampling.dual_rate.plan_token_steps``, the token work ``ocd.comfy_dit``).

One sampling pass of core's machinery (``comfy.sample.sample_custom``: CFG guider, model
patches and wrappers, context windows, noise masks, every sampler and scheduler) on a clone
that carries the plan. Its DIFFUSION_MODEL wrapper runs every token on the plan's full steps
(the background's steps, then the joint steps) and only the object's tokens and their margin
on the other branch steps, the rest of the frame keeping the last full step's output; see
``dual_rate.plan_token_steps`` for why this is the paper's background branch with fewer
steps. The schedule and the seeded noise are KSampler's, so with blend_point 1 the run is
KSampler's.
"""
from __future__ import annotations

import logging

from .. import comfy_dit, comfy_report, host
from ..errors import OCDInputError
from ..masks import grid
from ..report import RunReport
from . import dual_rate
from .comfy_sampler import DUAL_RATE_NODE, DualRateStart
from .dual_rate import DualRateSettings, TokenStepPlan

log = logging.getLogger("ocd.sampling")


def _report_plan(report: RunReport, node, plan: TokenStepPlan, shape) -> None:
    s = plan.schedule
    full = sorted(plan.full_steps)
    facts = {"mode": plan.mode, "latent": list(shape), "tokens": plan.tokens,
             "object_tokens": plan.subset_tokens, "steps": s.steps,
             "full_steps": full,
             "object_token_steps": plan.subset_steps,
             "joint_steps": s.joint_steps}
    if plan.predicted_speedup is not None:
        facts["predicted_speedup"] = round(plan.predicted_speedup, 3)
    report.note(node, dual_rate=facts)
    if plan.mode != "dual":
        report.warn(node, f"not object-centric in this run: {plan.reason}"
                    + (" (connect the object's mask)" if plan.mode == "background_only" else
                       " (a smaller object, a lower crop_padding or a larger frame leaves background tokens)"
                       if "cover" in plan.reason else ""))


def sample_token_steps(model, seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str,
                       positive, negative, latent: dict, denoise: float, mask,
                       settings: DualRateSettings, report: RunReport | None = None) -> tuple[dict, TokenStepPlan]:
    """OCD dual-rate sampling on a video transformer with core KSampler's inputs plus the object
    ``mask`` (one per video frame, per latent frame or one for all). Returns a copy of
    ``latent`` with new samples, and the plan."""
    import comfy.sample
    import comfy.samplers

    latent_image = comfy.sample.fix_empty_latent_channels(model, latent["samples"])
    noise = comfy.sample.prepare_noise(latent_image, seed, latent.get("batch_index"))
    sigmas = host.ksampler_sigmas(model, steps, sampler_name, scheduler, denoise)
    start = DualRateStart(latent_image, noise, sigmas, comfy.samplers.sampler_object(sampler_name), sampler_name,
                          seed)
    samples, plan = run_token_steps(model, start, cfg, positive, negative, mask, settings, latent.get("noise_mask"),
                                    report)
    out = latent.copy()
    out["samples"] = samples.to(host.intermediate_device())
    return out, plan


def run_token_steps(model, start: DualRateStart, cfg: float, positive, negative, mask, settings: DualRateSettings,
                    noise_mask=None, report: RunReport | None = None):
    """Plan and run dual-rate sampling on a video transformer from ``start`` (KSampler's noise
    and schedule, or an inversion's latent, sampler and schedule) with the object ``mask``.
    Returns the samples and the plan; the input model is cloned, never mutated."""
    import comfy.sample

    latent_image = start.latent_image
    if latent_image.ndim != 5:
        raise OCDInputError("latent_image", f"has shape {tuple(latent_image.shape)}; a video transformer samples "
                            "video latents [batch, channels, frames, height, width]")
    family = host.family_of(model)
    _, _, frames, height, width = latent_image.shape
    cover = grid.latent_coverage(mask, range(frames), frames, family.temporal_scale, height, width)
    sigmas = start.sigmas
    plan = dual_rate.plan_token_steps(sigmas, cover, settings, family.patch, start.sampler_name)
    report = report if report is not None else RunReport()
    node = report.owner or DUAL_RATE_NODE
    _report_plan(report, node, plan, (frames, height, width))

    work = model.clone()
    host.put_state(work, host.TOKEN_STEPS_KEY, comfy_dit.TokenSteps(plan, node))
    comfy_dit.install(work)
    work = comfy_report.attach(work, report)
    callback = host.sampler_progress(work, len(sigmas) - 1)
    try:
        samples = comfy.sample.sample_custom(
            work, start.noise, cfg, start.sampler, sigmas, positive, negative, latent_image,
            noise_mask=noise_mask, callback=callback, disable_pbar=True, seed=start.seed)
    finally:
        report.leave_phase()
    log.info("OCD dual-rate sampling (tokens): %s; %d of %d steps on the object's %d of %d tokens",
             plan.mode, len(plan.subset_steps), plan.schedule.steps, plan.subset_tokens, plan.tokens)
    return samples, plan
