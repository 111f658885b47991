"""Object-Centric Sampling in ComfyUI's sampling language (the glue; the math is in
``ocd.object_centric_sampling``).

Every phase runs through ComfyUI's own machinery: ``comfy.samplers.KSampler`` computes the
schedule exactly as the core KSampler node does (any sampler_name and scheduler, denoise,
the samplers that discard the penultimate sigma), ``comfy.sample.prepare_noise`` makes the
noise from the seed exactly as core does, and ``comfy.samplers.sample`` (CFG guider, model
patches, wrappers, ControlNet, context windows, noise masks) runs each phase on its sigma
sub-list, as KSamplerAdvanced does with start/end steps:

1. foreground: the crop of the latent, noise, noise mask and ControlNet hints, the full
   schedule down to the blend sigma;
2. background: the full frame, ``phi`` times fewer steps between the same sigmas;
3. blend ``z = m * paste(z_fg) + (1 - m) * z_bg`` in the latent space the user sees;
4. joint: the full frame from the blend sigma to the end, no new noise.

Frames stay in the batch dimension in every phase (cropping is spatial only), so context
windows (core or AnimateDiff-Evolved) see the same frame count and absolute indices.

The progress bar counts denoiser evaluations (one per sampler model call: the UNet on the
cond/uncond batch) across all phases, through a keyed PREDICT_NOISE wrapper on a clone
of the model; interruption is checked before every evaluation.

comfy is imported lazily so ``ocd`` stays importable without ComfyUI.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

import torch

from . import object_centric_sampling as ocs
from .errors import OCDInputError

log = logging.getLogger("ocd.sampling")

PROGRESS_WRAPPER_KEY = "ocd_dual_rate_progress"

# Conditioning keys holding spatial tensors that must follow the crop when their size is
# the latent's or the image's (inpainting models' concat inputs, ConditioningSetMask).
_SPATIAL_COND_KEYS = ("concat_latent_image", "concat_mask", "mask")


@dataclass
class SamplingSeam:
    """Optional inputs for callers beyond the KSampler set (the inversion record, issue 4).

    start_latent: ``[F,C,h,w]`` a latent that is already at the first sigma of the
        schedule (e.g. DDIM-inverted through ComfyUI's flipped sigmas). It replaces
        ``latent + seed noise``: every phase starts from it with no noise added, as
        KSamplerAdvanced does with add_noise disabled. Its crop feeds the foreground branch.
    on_step: ``on_step(phase, step, sigma, x)`` after each sampler step; ``step`` is the
        index in the FULL schedule (the background's steps map to the indices they skip
        to), so a record indexed by step or sigma can be replayed in every branch;
        ``x`` is the sampler's current latent in model space (batch = frames).
    on_blend: ``on_blend(z_fg, z_bg, weights, z)`` once at the blend point (latents in the
        user's latent space; z_fg is the crop).
    phase_model: ``phase_model(phase, model) -> model`` lets a caller patch a clone per
        phase (e.g. attention replay that must know it runs on the crop).
    sigmas: the full descending schedule ``[steps + 1]`` to use instead of the one from
        steps/scheduler/denoise (e.g. an inversion record's generation sigmas, so the
        editing pass walks back exactly the sigmas the inversion walked up).
    sampler: a ComfyUI SAMPLER object to use instead of ``sampler_name``'s (e.g. the
        inversion's solver); ``sampler_name`` still names it for the cost prediction.
    foreground_start: ``foreground_start(box, crop_model) -> [F,C,bh,bw]`` the foreground
        branch's start latent for the crop ``box``, given the foreground branch's model
        (``restrict_to_crop``). None: the crop of start_latent. Its model evaluations count
        as the phase "foreground_start" (the progress bar's total grows by one walk of the
        schedule). Why: an inverted latent belongs to the whole frame. A UNet sees a crop
        differently (normalisation statistics, borders, fewer tokens), so the crop of a
        whole-frame inversion does not walk back to its source; an inversion of the crop
        itself does (``inversion_sampler.edit_dual_rate``).
    foreground_finish: ``foreground_finish(box, z_fg, step) -> z_fg`` applied to the
        foreground branch's latent at the blend point (``step``: its index in the full
        schedule) before blending, e.g. to move it from the crop's trajectory onto the whole
        frame's.

    Every phase's model numbers steps in the FULL schedule
    (``ocd.attention_patch.number_steps_by``), so step-keyed records (attention maps, merge
    plans) line up in every branch; the foreground branch runs on a crop and so neither
    replays nor records them (``ocd.attention_patch.restrict_to_crop``).
    """

    start_latent: torch.Tensor | None = None
    sigmas: torch.Tensor | None = None
    sampler: object | None = None
    on_step: Callable[[str, int, float, torch.Tensor], None] | None = None
    on_blend: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], None] | None = None
    phase_model: Callable[[str, object], object] | None = None
    foreground_start: Callable[[ocs.CropBox, object], torch.Tensor] | None = None
    foreground_finish: Callable[[ocs.CropBox, torch.Tensor, int], torch.Tensor] | None = None


@dataclass
class DualRateResult:
    latent: dict
    mode: str  # "dual", "background_only" or "ordinary"
    reason: str
    box: ocs.CropBox | None
    schedule: ocs.DualRateSchedule
    prediction: ocs.CostPrediction
    evaluations: int = 0  # counted, all phases
    phase_evaluations: dict = field(default_factory=dict)

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


def unet_alignment(model) -> int:
    """The UNet's total downsampling factor (2 ** (levels - 1)); 8 for SD1.5."""
    try:
        mult = model.model.model_config.unet_config.get("channel_mult")
        if mult:
            return 2 ** (len(mult) - 1)
    except AttributeError:
        pass
    return ocs.SD15_ALIGNMENT


# ---------------------------------------------------------------- conditioning crop

def crop_hint(hint: torch.Tensor, box: ocs.CropBox, latent_hw: tuple[int, int], ratio: int,
              upscale_method: str) -> torch.Tensor:
    """The part of a ControlNet hint ``[B,C,H',W']`` that lies under ``box``.

    ControlNet objects resize ``cond_hint_original`` to (latent size x ratio) with
    ``comfy.utils.common_upscale(..., "center")``; resizing the full hint to the FULL
    latent's size the same way and cutting ``box * ratio`` out of it gives the foreground
    branch exactly the pixels the full frame would have seen there (its own resize is then
    to the same size, an identity).
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


def crop_control(control, box: ocs.CropBox, latent_hw: tuple[int, int], memo: dict):
    """A copy of a ControlNet chain whose hints cover only ``box``; the input is untouched.

    Works for every object with ControlBase's interface (``copy()``,
    ``cond_hint_original``, ``compression_ratio``, ``upscale_algorithm``,
    ``previous_controlnet``): core ControlNet, ControlLora, T2IAdapter and packs that
    subclass them. ``memo`` keeps objects shared between positive and negative shared.
    """
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


def _crop_spatial(value, box: ocs.CropBox, latent_hw: tuple[int, int], key: str):
    h, w = latent_hw
    if torch.is_tensor(value) and value.ndim >= 2:
        for ratio in (1, 8):
            if tuple(value.shape[-2:]) == (h * ratio, w * ratio):
                return box.scaled(ratio).crop(value)
        log.warning("OCD dual-rate sampling: conditioning '%s' of shape %s is not cropped for the "
                    "foreground branch (its size is neither the latent's nor the image's)",
                    key, tuple(value.shape))
    return value


def crop_conditioning(conditioning: list, box: ocs.CropBox, latent_hw: tuple[int, int], memo: dict) -> list:
    """CONDITIONING for the foreground branch: new lists and dicts, ControlNet hints and
    spatial conds cropped to ``box``; the user's conditioning is not mutated."""
    out = []
    for embedding, options in conditioning:
        options = dict(options)
        if options.get("control") is not None:
            options["control"] = crop_control(options["control"], box, latent_hw, memo)
        for key in _SPATIAL_COND_KEYS:
            if key in options:
                options[key] = _crop_spatial(options[key], box, latent_hw, key)
        if "area" in options:
            log.warning("OCD dual-rate sampling: an area-restricted conditioning is applied to the "
                        "foreground crop in crop coordinates")
        out.append([embedding, options])
    return out


# ---------------------------------------------------------------- the sampler

class _EvaluationCounter:
    """Counts denoiser evaluations; drives ComfyUI's progress bar; interrupt point."""

    def __init__(self, total: int):
        import comfy.utils

        self.total = max(1, total)
        self.count = 0
        self.phase = "?"
        self.per_phase: dict[str, int] = {}
        self.progress = comfy.utils.ProgressBar(self.total)

    def wrapper(self, executor, *args, **kwargs):
        import comfy.model_management

        comfy.model_management.throw_exception_if_processing_interrupted()
        out = executor(*args, **kwargs)
        self.count += 1
        self.per_phase[self.phase] = self.per_phase.get(self.phase, 0) + 1
        if self.count > self.total:  # a sampler we could not predict: grow the bar
            self.total = self.count
            self.progress.total = self.total
        self.progress.update_absolute(self.count, self.total)
        return out


def _run_phase(model, counter: _EvaluationCounter, seam: SamplingSeam, phase: str,
               step_indices: list[int], noise, latent_image, sigmas, noise_mask,
               positive, negative, cfg, sampler_name, seed):
    """One ComfyUI sampling run over ``sigmas`` (what KSampler.sample does with a sigma list)."""
    import comfy.model_management
    import comfy.samplers

    counter.phase = phase
    if seam.phase_model is not None:
        model = seam.phase_model(phase, model)
    callback = None
    if seam.on_step is not None:
        def callback(i, denoised, x, total):
            seam.on_step(phase, step_indices[i], float(sigmas[i]), x)
    sampler = seam.sampler if seam.sampler is not None else comfy.samplers.sampler_object(sampler_name)
    samples = comfy.samplers.sample(
        model, noise, positive, negative, cfg, model.load_device, sampler, sigmas,
        model.model_options, latent_image=latent_image, denoise_mask=noise_mask,
        callback=callback, disable_pbar=True, seed=seed)
    return samples.to(comfy.model_management.intermediate_device())


def _mask_cropper(box: ocs.CropBox, latent_hw: tuple[int, int]):
    """``[M, H, W]`` mask at any resolution -> its part under ``box``, at latent resolution
    (token grids are at most that fine)."""
    def crop(mask: torch.Tensor) -> torch.Tensor:
        return box.crop(ocs.latent_masks(mask, mask.shape[0], *latent_hw)[:, 0])
    return crop


def _noise_reaching(model, z: torch.Tensor, latent_image: torch.Tensor, sigma: float) -> torch.Tensor:
    """The noise for which ComfyUI's start ``noise_scaling(sigma, noise, latent_image)``
    equals ``z`` in model space (noise_scaling is affine in the noise for every model type)."""
    latent_format = model.get_model_object("latent_format")
    model_sampling = model.get_model_object("model_sampling")
    s = torch.tensor(sigma)
    original = latent_image
    if torch.count_nonzero(original) > 0:  # core does not shift an empty latent either
        original = latent_format.process_in(original)
    offset = model_sampling.noise_scaling(s, torch.zeros_like(z), original, False)
    gain = model_sampling.noise_scaling(s, torch.ones_like(z), torch.zeros_like(z), False)
    return (latent_format.process_in(z) - offset) / gain


def sample_dual_rate(model, seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str,
                     positive, negative, latent: dict, denoise: float, mask: torch.Tensor,
                     background_step_ratio: float = 4.0, blend_point: float = 0.25,
                     crop_padding: int = 2, blend: str = "feathered",
                     seam: SamplingSeam | None = None) -> DualRateResult:
    """OCD dual-rate sampling of ``latent["samples"] [F,C,h,w]`` with a foreground ``mask``.

    Inputs are those of ComfyUI's KSampler plus the mask and the OCD parameters (see
    ``ocd.object_centric_sampling``). Returns the output LATENT dict (a copy of ``latent``
    with new samples) and what was done. The input model is cloned, never mutated.
    """
    import comfy.sample
    import comfy.sampler_helpers
    import comfy.samplers

    seam = seam or SamplingSeam()
    latent_image = comfy.sample.fix_empty_latent_channels(model, latent["samples"])
    if latent_image.ndim != 4:
        raise OCDInputError("latent_image", f"has shape {tuple(latent_image.shape)}; OCD dual-rate "
                            "sampling needs image latents [frames, channels, height, width]")
    frames, _, height, width = latent_image.shape
    if seam.start_latent is not None:
        if tuple(seam.start_latent.shape) != tuple(latent_image.shape):
            raise OCDInputError("latent_image", f"the start latent has shape {tuple(seam.start_latent.shape)}, "
                                f"the latent {tuple(latent_image.shape)}")
        latent_image = seam.start_latent
        noise = torch.zeros_like(latent_image, device="cpu")
    else:
        noise = comfy.sample.prepare_noise(latent_image, seed, latent.get("batch_index"))
    noise_mask = latent.get("noise_mask")

    if seam.sigmas is not None:
        sigmas = seam.sigmas.to(model.load_device)
    else:
        sigmas = comfy.samplers.KSampler(model, steps=steps, device=model.load_device, sampler=sampler_name,
                                         scheduler=scheduler, denoise=denoise,
                                         model_options=model.model_options).sigmas
    schedule = ocs.split_schedule(sigmas.cpu(), background_step_ratio, blend_point)
    weights = ocs.blend_weights(ocs.latent_masks(mask, frames, height, width), blend)
    box = ocs.crop_box(weights, crop_padding, unet_alignment(model))

    if len(sigmas) <= 1:
        mode, reason = "ordinary", "nothing to denoise (denoise = 0)"
    elif schedule.blend_index == 0:
        mode, reason = "ordinary", "blend_point leaves no branch steps"
    elif box is None:
        mode, reason = "background_only", "the mask is empty: background schedule over the whole frame"
    elif box.covers(height, width):
        mode, reason = "ordinary", "the crop covers the whole frame"
    else:
        mode, reason = "dual", "foreground crop and background branches"
    if mode == "background_only":
        log.warning("OCD dual-rate sampling: the mask is empty; running the background schedule "
                    "(%d steps) over the whole frame, then %d joint steps",
                    schedule.background_steps, schedule.joint_steps)
    elif mode == "ordinary":
        log.info("OCD dual-rate sampling: ordinary sampling (%s)", reason)

    prediction = ocs.predicted_cost(schedule, sampler_name, frames, height, width, box, mode)
    counter = _EvaluationCounter(prediction.evaluations or max(1, len(sigmas) - 1))
    import comfy.patcher_extension

    from .attention_patch import number_steps_by, restrict_to_crop

    work = number_steps_by(model, sigmas)

    work.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.PREDICT_NOISE, PROGRESS_WRAPPER_KEY,
                              counter.wrapper)
    common = dict(cfg=cfg, sampler_name=sampler_name, seed=seed)

    if mode == "ordinary":
        samples = _run_phase(work, counter, seam, "full", list(range(len(sigmas))), noise, latent_image,
                             sigmas, noise_mask, positive, negative, **common)
    else:
        z_bg = _run_phase(work, counter, seam, "background", list(schedule.background_indices), noise,
                          latent_image, schedule.background.to(sigmas.device), noise_mask,
                          positive, negative, **common)
        if mode == "dual":
            memo: dict = {}
            fg_mask = None
            if noise_mask is not None:
                # one channel: comfy's reshape_mask folds channels into the batch
                fg_mask = box.crop(comfy.sampler_helpers.prepare_mask(
                    noise_mask, (frames, 1, height, width), "cpu"))
            cropper = _mask_cropper(box, (height, width))
            fg_model = restrict_to_crop(work, cropper)
            fg_start = box.crop(latent_image)
            if seam.foreground_start is not None:
                # counted like a phase (progress bar, interrupt point): one walk of the schedule
                counter.total += ocs.evaluations(sampler_name, sigmas) or 0
                counter.phase = "foreground_start"
                fg_start = seam.foreground_start(box, fg_model)
            z_fg = _run_phase(fg_model, counter, seam, "foreground", list(range(schedule.blend_index + 1)),
                              box.crop(noise), fg_start, schedule.foreground.to(sigmas.device),
                              fg_mask, crop_conditioning(positive, box, (height, width), memo),
                              crop_conditioning(negative, box, (height, width), memo), **common)
            if seam.foreground_finish is not None:
                z_fg = seam.foreground_finish(box, z_fg, schedule.blend_index)
            z = ocs.blend(z_fg, z_bg, weights, box)
            if seam.on_blend is not None:
                seam.on_blend(z_fg, z_bg, weights, z)
        else:
            z = z_bg
        joint_noise, joint_latent = torch.zeros_like(z), z
        if noise_mask is not None:
            # Inpainting keeps the unmasked region at the ORIGINAL latent: start from z by
            # choosing the noise that noise_scaling turns into z.
            joint_noise = _noise_reaching(work, z, latent_image, float(schedule.joint[0]))
            joint_latent = latent_image
        samples = _run_phase(work, counter, seam, "joint", list(range(schedule.blend_index, len(sigmas))),
                             joint_noise, joint_latent, schedule.joint.to(sigmas.device), noise_mask,
                             positive, negative, **common)

    out = latent.copy()
    out["samples"] = samples
    result = DualRateResult(out, mode, reason, box, schedule, prediction, counter.count, dict(counter.per_phase))
    log.info(result.summary())
    return result
