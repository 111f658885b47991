"""Object-Centric Sampling through ComfyUI's sampling machinery (the glue; the plan is in
``ocd.sampling.dual_rate``).

Every phase runs through ComfyUI's own machinery: ``comfy.sample.sample_custom`` (CFG
guider, model patches, wrappers, ControlNet, context windows, noise masks) on the phase's
sigma sub-list, as KSamplerAdvanced does with start/end steps. ``sample_dual_rate`` is the
KSampler-shaped entry (schedule and noise exactly as core's KSampler makes them from steps,
scheduler, denoise and seed); ``run_dual_rate`` runs a plan from any ``DualRateStart`` (the
inversion edit starts from the inverted latent with no noise):

1. background: the full frame, ``phi`` times fewer steps down to the blend sigma;
2. foreground: the crop of the latent, noise, noise mask and ControlNet hints, every step
   of the schedule down to the blend sigma;
3. blend ``z = m * paste(z_fg) + (1 - m) * z_bg`` in the latent space the user sees;
4. joint: the full frame from the blend sigma to the end, no new noise.

Frames stay in the batch dimension in every phase (cropping is spatial only), so context
windows (core or AnimateDiff-Evolved) see the same frame count and absolute indices. Every
phase's model numbers steps in the FULL schedule (``comfy_patches.number_steps_by``), so
step-keyed records (attention maps, merge plans) line up in every branch; the foreground
branch runs on a crop and so neither replays nor records them (``restrict_to_crop``).

The progress bar counts denoiser evaluations (one per sampler model call: the UNet on the
cond/uncond batch) across all phases, through a keyed PREDICT_NOISE wrapper on a clone of
the model; interruption is checked before every evaluation.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from .. import comfy_report, host
from ..attention.comfy_patches import number_steps_by, restrict_to_crop
from ..errors import OCDInputError
from ..masks import grid
from ..report import NodeRef, RunReport
from . import dual_rate
from .dual_rate import CropBox, DualRatePlan, DualRateSettings

log = logging.getLogger("ocd.sampling")

PROGRESS_WRAPPER_KEY = "ocd_dual_rate_progress"
DUAL_RATE_NODE = NodeRef("Dual-Rate KSampler (OCD)")  # the report's part without a node (library use)


@dataclass(frozen=True)
class DualRateStart:
    """Where a dual-rate run starts: ``latent_image`` (user latent space, ``[F,C,h,w]``) with
    ``noise`` added by the sampler at the first sigma (zeros: start from the latent itself,
    as KSamplerAdvanced with add_noise disabled), the full descending schedule ``sigmas``,
    the ComfyUI SAMPLER and the name the cost prediction knows it by."""

    latent_image: torch.Tensor
    noise: torch.Tensor
    sigmas: torch.Tensor
    sampler: object
    sampler_name: str
    seed: int = 0


class DualRateHooks:
    """What a caller may change or watch in a dual-rate run; every method defaults to
    nothing. The inversion edit (``ocd.inversion.comfy_passes``) overrides the first three;
    tests watch with the last two."""

    def phase_model(self, phase: str, model):
        """The model for ``phase`` ("background", "foreground", "joint", "full")."""
        return model

    def foreground_start(self, box: CropBox, crop_model) -> torch.Tensor | None:
        """The foreground branch's start latent for ``box``, or None for the crop of the start
        latent. Its model evaluations count as the phase "foreground_start"."""
        return None

    def foreground_start_evaluations(self, sigmas: torch.Tensor) -> int:
        """Model evaluations ``foreground_start`` makes (for the progress bar)."""
        return 0

    def foreground_finish(self, box: CropBox, z_fg: torch.Tensor, step: int) -> torch.Tensor:
        """The foreground branch's latent at the blend point (full-schedule index ``step``),
        changed before blending."""
        return z_fg

    def blended(self, z_fg: torch.Tensor, z_bg: torch.Tensor, weights: torch.Tensor, z: torch.Tensor) -> None:
        """Once at the blend point (user latent space; z_fg is the crop)."""

    def stepped(self, phase: str, step: int, sigma: float, x: torch.Tensor) -> None:
        """After each sampler step: ``step`` in the full schedule, ``x`` in model space."""


@dataclass
class DualRateResult:
    latent: dict
    plan: DualRatePlan
    evaluations: int = 0  # counted, all phases
    phase_evaluations: dict = field(default_factory=dict)
    report: RunReport | None = None

    @property
    def mode(self) -> str:
        return self.plan.mode

    @property
    def reason(self) -> str:
        return self.plan.reason

    @property
    def box(self) -> CropBox | None:
        return self.plan.box

    @property
    def schedule(self) -> dual_rate.DualRateSchedule:
        return self.plan.schedule

    @property
    def prediction(self) -> dual_rate.CostPrediction:
        return self.plan.prediction

    def summary(self) -> str:
        pred = self.prediction
        text = f"OCD dual-rate sampling: {self.mode} ({self.reason}); {self.evaluations} evaluations"
        if pred.evaluations is not None:
            text += f" (predicted {pred.evaluations})"
        if self.mode == "dual":
            s = self.schedule
            text += (f"; foreground crop {self.box.height}x{self.box.width} latent px, "
                     f"{s.foreground_steps} steps; background {s.background_steps} steps; joint "
                     f"{s.joint_steps} steps")
        if pred.speedup is not None:
            text += f"; predicted token-step speed-up {pred.speedup:.2f}x"
        return text


@dataclass
class TokenStepResult:
    """What ``sample_dual_rate`` returns for a video transformer."""

    latent: dict
    plan: object  # dual_rate.TokenStepPlan
    report: RunReport | None = None

    @property
    def mode(self) -> str:
        return self.plan.mode


class _EvaluationCounter:
    """Counts denoiser evaluations per phase; drives the progress bar; interrupt point."""

    def __init__(self, total: int):
        self.total = max(1, total)
        self.count = 0
        self.phase = "?"
        self.per_phase: dict[str, int] = {}
        self.progress = host.Progress(self.total)

    def wrapper(self, executor, *args, **kwargs):
        host.check_interrupted()
        out = executor(*args, **kwargs)
        self.count += 1
        self.per_phase[self.phase] = self.per_phase.get(self.phase, 0) + 1
        self.total = max(self.total, self.count)  # a sampler we could not predict: grow the bar
        self.progress.set(self.count, self.total)
        return out


@dataclass
class _Run:
    """One dual-rate run: what every phase shares."""

    model: object  # numbered by the full schedule, counting evaluations
    start: DualRateStart
    plan: DualRatePlan
    positive: list
    negative: list
    cfg: float
    noise_mask: torch.Tensor | None
    hooks: DualRateHooks
    counter: _EvaluationCounter
    report: RunReport

    @property
    def latent_hw(self) -> tuple[int, int]:
        return tuple(self.start.latent_image.shape[-2:])

    def sample(self, phase: str, model, step_indices: list[int], noise, latent_image, sigmas, noise_mask,
               positive=None, negative=None) -> torch.Tensor:
        """One ComfyUI sampling run over ``sigmas`` (what KSampler does with a sigma list)."""
        import comfy.sample

        self.counter.phase = phase
        model = self.hooks.phase_model(phase, model)
        hooks = self.hooks

        def callback(i, denoised, x, total):
            hooks.stepped(phase, step_indices[i], float(sigmas[i]), x)

        with self.report.phase(phase):
            return comfy.sample.sample_custom(
                model, noise, self.cfg, self.start.sampler, sigmas.to(model.load_device),
                self.positive if positive is None else positive, self.negative if negative is None else negative,
                latent_image, noise_mask=noise_mask, callback=callback, disable_pbar=True, seed=self.start.seed)


def _background_phase(run: _Run) -> torch.Tensor:
    schedule = run.plan.schedule
    return run.sample("background", run.model, list(schedule.background_indices), run.start.noise,
                      run.start.latent_image, schedule.background, run.noise_mask)


def _foreground_phase(run: _Run) -> torch.Tensor:
    """The object's crop, every step down to the blend sigma; the hooks may give it its own
    start latent and move it at the end."""
    import comfy.sampler_helpers

    box, schedule = run.plan.box, run.plan.schedule
    frames = run.start.latent_image.shape[0]
    height, width = run.latent_hw
    crop_noise_mask = None
    if run.noise_mask is not None:
        # one channel: comfy's reshape_mask folds channels into the batch
        crop_noise_mask = box.crop(comfy.sampler_helpers.prepare_mask(
            run.noise_mask, (frames, 1, height, width), "cpu"))

    def crop_mask(mask: torch.Tensor) -> torch.Tensor:
        # [M, H, W] at any resolution -> its part under the box, at latent resolution (token
        # grids are at most that fine)
        return box.crop(grid.coverage(mask, mask.shape[0], height, width))

    crop_model = restrict_to_crop(run.model, crop_mask)
    extra = run.hooks.foreground_start_evaluations(run.start.sigmas)
    if extra:
        # counted like a phase (progress bar, interrupt point, run report)
        run.counter.total += extra
        run.counter.phase = "foreground_start"
        with run.report.phase("foreground_start"):
            start = run.hooks.foreground_start(box, crop_model)
    else:
        start = run.hooks.foreground_start(box, crop_model)
    if start is None:
        start = box.crop(run.start.latent_image)
    memo: dict = {}
    scale = host.latent_scale(run.model)
    owner = run.report.owner or DUAL_RATE_NODE

    def warn(message: str) -> None:
        run.report.warn(owner, message)

    z_fg = run.sample("foreground", crop_model, list(range(schedule.blend_index + 1)), box.crop(run.start.noise),
                      start, schedule.foreground, crop_noise_mask,
                      host.crop_conditioning(run.positive, box, run.latent_hw, memo, scale, warn),
                      host.crop_conditioning(run.negative, box, run.latent_hw, memo, scale, warn))
    return run.hooks.foreground_finish(box, z_fg, schedule.blend_index)


def _joint_phase(run: _Run, z: torch.Tensor) -> torch.Tensor:
    """The whole frame from the blend sigma to the end, starting from the blended latent."""
    schedule = run.plan.schedule
    noise, latent = torch.zeros_like(z), z
    if run.noise_mask is not None:
        # Inpainting keeps the unmasked region at the ORIGINAL latent: start from z by
        # choosing the noise that noise_scaling turns into z.
        noise = host.noise_reaching(run.model, z, run.start.latent_image, float(schedule.joint[0]))
        latent = run.start.latent_image
    return run.sample("joint", run.model, list(range(schedule.blend_index, len(schedule.sigmas))), noise, latent,
                      schedule.joint, run.noise_mask)


def _report_plan(report: RunReport, plan: DualRatePlan, height: int, width: int) -> None:
    owner = report.owner or DUAL_RATE_NODE
    s = plan.schedule
    facts = {"mode": plan.mode, "latent": [height, width]}
    if plan.mode == "dual":
        facts.update(crop=[plan.box.height, plan.box.width], foreground_steps=s.foreground_steps,
                     background_steps=s.background_steps, joint_steps=s.joint_steps)
    elif plan.mode == "background_only":
        facts.update(background_steps=s.background_steps, joint_steps=s.joint_steps)
    facts["predicted_evaluations"] = {p.name: p.evaluations for p in plan.prediction.phases}
    if plan.prediction.speedup is not None:
        facts["predicted_speedup"] = round(plan.prediction.speedup, 3)
    report.note(owner, dual_rate=facts)
    if plan.mode == "background_only" or plan.box is not None and plan.box.covers(height, width):
        report.warn(owner, f"not object-centric in this run: {plan.reason}"
                    + (" (a smaller object, a lower crop_padding or a larger frame gives a crop)"
                       if plan.mode == "ordinary" else " (connect the object's mask)"))


def run_dual_rate(model, start: DualRateStart, cfg: float, positive, negative, mask,
                  settings: DualRateSettings, noise_mask: torch.Tensor | None = None,
                  hooks: DualRateHooks | None = None, report: RunReport | None = None) -> DualRateResult:
    """Plan and run dual-rate sampling from ``start`` with the object ``mask``; returns the
    samples and what was done (``result.report``: the run report, ``report`` when given). The
    input model is cloned, never mutated."""
    latent_image = start.latent_image
    if latent_image.ndim != 4:
        raise OCDInputError("latent_image", f"has shape {tuple(latent_image.shape)}; OCD dual-rate "
                            "sampling needs image latents [frames, channels, height, width]")
    frames, _, height, width = latent_image.shape
    plan = dual_rate.plan_dual_rate(start.sigmas, mask, frames, height, width, settings,
                                    host.downsampling(model), start.sampler_name)
    report = report if report is not None else RunReport()
    _report_plan(report, plan, height, width)
    if plan.mode == "background_only":
        log.warning("OCD dual-rate sampling: the mask is empty; running the background schedule "
                    "(%d steps) over the whole frame, then %d joint steps",
                    plan.schedule.background_steps, plan.schedule.joint_steps)
    elif plan.mode == "ordinary":
        log.info("OCD dual-rate sampling: ordinary sampling (%s)", plan.reason)

    import comfy.patcher_extension

    counter = _EvaluationCounter(plan.prediction.evaluations or max(1, len(start.sigmas) - 1))
    work = comfy_report.attach(number_steps_by(model, start.sigmas), report)
    work.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.PREDICT_NOISE, PROGRESS_WRAPPER_KEY,
                              counter.wrapper)
    run = _Run(work, start, plan, positive, negative, cfg, noise_mask, hooks or DualRateHooks(), counter, report)

    if plan.mode == "ordinary":
        samples = run.sample("full", work, list(range(len(start.sigmas))), start.noise, latent_image,
                             start.sigmas, noise_mask)
    else:
        z_bg = _background_phase(run)
        if plan.mode == "dual":
            z_fg = _foreground_phase(run)
            z = dual_rate.blend(z_fg, z_bg, plan.weights, plan.box)
            run.hooks.blended(z_fg, z_bg, plan.weights, z)
        else:
            z = z_bg
        samples = _joint_phase(run, z)
    samples = samples.to(host.intermediate_device())
    result = DualRateResult({"samples": samples}, plan, counter.count, dict(counter.per_phase), report)
    log.info(result.summary())
    return result


def sample_dual_rate(model, seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str,
                     positive, negative, latent: dict, denoise: float, mask,
                     settings: DualRateSettings = DualRateSettings(),
                     hooks: DualRateHooks | None = None, report: RunReport | None = None) -> DualRateResult:
    """OCD dual-rate sampling with core KSampler's inputs plus the object ``mask``: the same
    schedule and seeded noise as KSampler. Returns a copy of ``latent`` with new samples."""
    import comfy.sample
    import comfy.samplers

    if host.family_of(model).is_transformer:  # one pass, object tokens on most steps
        from .comfy_token_steps import sample_token_steps

        out, plan = sample_token_steps(model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent,
                                       denoise, mask, settings, report)
        return TokenStepResult(out, plan, report)
    latent_image = comfy.sample.fix_empty_latent_channels(model, latent["samples"])
    if latent_image.ndim != 4:
        raise OCDInputError("latent_image", f"has shape {tuple(latent_image.shape)}; OCD dual-rate "
                            "sampling needs image latents [frames, channels, height, width]")
    noise = comfy.sample.prepare_noise(latent_image, seed, latent.get("batch_index"))
    sigmas = host.ksampler_sigmas(model, steps, sampler_name, scheduler, denoise)
    start = DualRateStart(latent_image, noise, sigmas, comfy.samplers.sampler_object(sampler_name), sampler_name,
                          seed)
    result = run_dual_rate(model, start, cfg, positive, negative, mask, settings, latent.get("noise_mask"), hooks,
                           report)
    out = latent.copy()
    out["samples"] = result.latent["samples"]
    result.latent = out
    return result
