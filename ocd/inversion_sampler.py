"""Inversion and inversion-based editing through ComfyUI's own sampling machinery.

The ComfyUI-facing half of ocd/inversion.py: schedules come from the model's
``model_sampling`` and a ComfyUI scheduler, and both passes run through
``comfy.sample.sample_custom`` with a ``KSAMPLER`` built from ``ocd.inversion``, so
conditioning, CFG, ControlNet and every model patch (cross-frame attention, token merging,
AnimateDiff) apply exactly as in ordinary sampling.

Data flow:  latent --invert(source prompt, ascending sigmas)--> inverted latent + record
            inverted latent + record --edit(target prompt, the record's descending sigmas)--> edit
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from .attention_fusion import (AttentionRecord, CrossAttentionRecord, CrossAttentionRecorder, FusionHook,
                               RecordingHook, recorded_steps)
from .errors import OCDInputError
from .inversion import SOLVERS, inversion_schedule, k_sampler_function

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

    @property
    def steps(self) -> int:
        return len(self.generation_sigmas) - 1

    def check_compatible(self, latent: torch.Tensor, model) -> None:
        """Refuse a latent or model that this record was not made from, with a clear message."""
        if tuple(latent.shape) != tuple(self.latent_shape):
            raise OCDInputError(
                "latent",
                f"has shape {tuple(latent.shape)} (frames, channels, height/8, width/8) but the "
                f"inversion record was made from {tuple(self.latent_shape)}: connect the latent "
                "that OCD_InvertLatents produced with this record",
            )
        fingerprint = model_fingerprint(model)
        if fingerprint != self.model_fingerprint:
            raise OCDInputError(
                "model",
                "is not the model the inversion was run with (different weights or architecture); "
                "editing must use the same base model as the inversion",
            )


def cross_attention_modules(model) -> dict[tuple, torch.nn.Module]:
    """(block name, number, transformer index) -> the attn2 module of every transformer block."""
    from .attention_patch import transformer_blocks

    return {key: tb.attn2 for key, tb in transformer_blocks(model) if getattr(tb, "attn2", None) is not None}


def model_fingerprint(model) -> str:
    """A cheap identity of a ModelPatcher's base weights (patches and clones share it)."""
    diffusion_model = model.model.diffusion_model
    params = list(diffusion_model.parameters())
    digest = hashlib.sha1(type(model.model).__name__.encode())
    digest.update(str(sum(p.numel() for p in params)).encode())
    for p in (params[0], params[len(params) // 2], params[-1]):
        digest.update(repr(p.detach().float().flatten()[:64].cpu().tolist()).encode())
    return digest.hexdigest()[:16]


def generation_sigmas(model, scheduler: str, steps: int, depth: float = 1.0) -> torch.Tensor:
    """The editing schedule: ``steps`` steps covering the last ``depth`` of the full schedule.

    Same convention as KSampler's ``denoise``: depth 1 starts from pure noise, depth 0.5
    from the middle of a schedule of ``steps / depth`` steps.
    """
    import comfy.samplers

    if steps < 1:
        raise OCDInputError("steps", f"must be at least 1, got {steps}")
    if not 0.0 < depth <= 1.0:
        raise OCDInputError("inversion_depth", f"must be in (0, 1], got {depth}")
    if scheduler not in comfy.samplers.SCHEDULER_NAMES:
        raise OCDInputError("scheduler", f"must be one of {comfy.samplers.SCHEDULER_NAMES}, got '{scheduler}'")
    model_sampling = model.get_model_object("model_sampling")
    total = steps if depth >= 0.9999 else int(steps / depth)
    sigmas = comfy.samplers.calculate_sigmas(model_sampling, scheduler, total).cpu()
    return sigmas[-(steps + 1):]


def ocd_sampler(solver: str):
    """A ComfyUI SAMPLER that integrates with ``solver`` in whichever direction sigmas run."""
    import comfy.samplers

    if solver not in SOLVERS:
        raise OCDInputError("solver", f"must be one of {SOLVERS}, got '{solver}'")
    return comfy.samplers.KSAMPLER(k_sampler_function(solver))


def _negative_or_empty(negative, cfg: float):
    if negative is None:
        if abs(cfg - 1.0) > 1e-6:
            raise OCDInputError("negative", f"is needed when cfg is not 1 (cfg = {cfg})")
        return []
    return negative


def _fusion_hook(record: InversionRecord, self_replace: float, blend_mask: torch.Tensor | None) -> FusionHook:
    attention = record.extras.get(SELF_ATTENTION)
    if attention is None:
        raise OCDInputError("self_replace", "is above 0 but the inversion recorded no attention: "
                            "set record_attention above 0 on Invert Latents (OCD)")
    return FusionHook(attention, recorded_steps(record.steps, self_replace), blend_mask)


def _trajectory_recorder(model, callback: Callable | None):
    """(states, sampler callback): the callback appends the latent after every step (user
    latent space, on the CPU) to states, and calls ``callback``."""
    latent_format = model.get_model_object("latent_format")
    states: list[torch.Tensor] = []

    def record(step, x0, x, total):
        states.append(latent_format.process_out(x.detach().float()).cpu())
        if callback is not None:
            callback(step, x0, x, total)

    return states, record


def _generation_order(inversion_states: list[torch.Tensor], source: torch.Tensor) -> list[torch.Tensor]:
    """An inversion's per-step latents re-indexed by the generation schedule: after inversion
    step i the latent is at generation sigma n - 1 - i; the source is at sigma n (0)."""
    return inversion_states[::-1] + [source.detach().float().cpu()]


def _run(model, latent: torch.Tensor, sigmas, solver, positive, negative, cfg, callback, noise_mask=None):
    import comfy.sample

    negative = _negative_or_empty(negative, cfg)
    # No noise is added: the starting point is the latent itself (an ODE, not SDE, pass).
    noise = torch.zeros_like(latent)
    return comfy.sample.sample_custom(
        model, noise, cfg, ocd_sampler(solver), sigmas.to(latent.device), positive, negative, latent,
        noise_mask=noise_mask, callback=callback, disable_pbar=True,
    )


def invert(
    model,
    latent: torch.Tensor,
    positive,
    negative=None,
    solver: str = "dpmpp_2m",
    steps: int = 20,
    scheduler: str = "normal",
    cfg: float = 1.0,
    depth: float = 1.0,
    callback: Callable | None = None,
    record_attention: float = 0.0,
    max_record_tokens: int = 32 * 32,
    record_dtype: torch.dtype = torch.float16,
    record_device: str | None = None,
    record_cross_attention: bool = False,
) -> tuple[torch.Tensor, InversionRecord]:
    """Carry ``latent`` [F, C, H, W] up to the noise level where editing will start.

    ``record_attention`` > 0 records the self-attention of layers with at most
    ``max_record_tokens`` queries for that fraction of the editing steps (FateZero: 0.8), in
    ``record_dtype`` on ``record_device`` (None: the compute device), for ``edit``'s fusion.
    ``record_cross_attention`` keeps the head-averaged cross-attention of those layers at
    every step, for ``cross_attention_mask``.
    """
    import comfy.sample

    from .attention_patch import set_attention_hook

    latent = comfy.sample.fix_empty_latent_channels(model, latent)
    sigmas = generation_sigmas(model, scheduler, steps, depth)
    extras = {}
    if record_attention > 0:
        attention = AttentionRecord(recorded_steps(steps, record_attention), max_record_tokens, record_dtype,
                                    record_device)
        model = set_attention_hook(model, RecordingHook(attention))
        extras[SELF_ATTENTION] = attention
    if record_cross_attention:
        from .attention_patch import current_step, layer_key

        cross = CrossAttentionRecord(max_record_tokens)
        model = model.clone()
        model.set_model_attn2_patch(CrossAttentionRecorder(cross, cross_attention_modules(model), current_step,
                                                           layer_key))
        extras[CROSS_ATTENTION] = cross
    states, recorder = _trajectory_recorder(model, callback)
    inverted = _run(model, latent, inversion_schedule(sigmas), solver, positive, negative, cfg, recorder)
    record = InversionRecord(
        solver=solver,
        generation_sigmas=sigmas,
        latent_shape=tuple(inverted.shape),
        model_fingerprint=model_fingerprint(model),
        source_latent=latent.detach().cpu(),
        extras=extras,
        prompt=(positive, negative, cfg),
        trajectory=_generation_order(states, latent),
    )
    return inverted, record


def edit(
    model,
    record: InversionRecord,
    inverted: torch.Tensor,
    positive,
    negative=None,
    cfg: float = 7.5,
    callback: Callable | None = None,
    noise_mask: torch.Tensor | None = None,
    self_replace: float = 0.0,
    blend_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, FusionHook | None]:
    """Denoise an inverted latent along the record's schedule with the target prompt.

    ``self_replace`` > 0 fuses the recorded self-attention into the first fraction of the
    steps; ``blend_mask`` [F, H, W] (the edited object) lets the object's queries keep their
    own attention. Returns the latent and the fusion hook (None without fusion), which
    lists the (step, layer) pairs it fused.
    """
    from .attention_patch import set_attention_hook

    record.check_compatible(inverted, model)
    hook = None
    if self_replace > 0:
        hook = _fusion_hook(record, self_replace, blend_mask)
        model = set_attention_hook(model, hook)
    out = _run(model, inverted, record.generation_sigmas, record.solver, positive, negative, cfg, callback,
               noise_mask)
    return out, hook


def edit_dual_rate(
    model,
    record: InversionRecord,
    inverted: torch.Tensor,
    positive,
    negative,
    cfg: float,
    mask: torch.Tensor,
    background_step_ratio: float = 4.0,
    blend_point: float = 0.25,
    crop_padding: int = 2,
    blend: str = "feathered",
    self_replace: float = 0.0,
    noise_mask: torch.Tensor | None = None,
    on_blend: Callable | None = None,
    reinvert_crop: bool = True,
):
    """``edit`` with Object-Centric Sampling: the object (``mask``) is denoised on a crop with
    every step of the record's schedule, the background with ``background_step_ratio`` times
    fewer, then both are blended and finished jointly (``ocd.dual_rate_sampler``).

    Every branch starts from the inverted latent (no noise is added) and walks the record's
    generation sigmas with the inversion's solver. Fusion (``self_replace``) applies to the
    full-frame branches, background and joint, at their steps of the full schedule (the
    background's skipped steps simply have no fusion); the object's queries keep their own
    attention there, as ``edit``'s blend mask does. The foreground branch is a crop, which
    the whole-frame record cannot describe: it runs without fusion, which is what the blend
    mask asks of the object anyway.

    ``reinvert_crop``: the UNet sees a crop differently from the whole frame (normalisation
    statistics, borders, fewer tokens), so the crop of the whole-frame inversion does not
    walk back to its source. The foreground branch therefore starts from an inversion of
    the crop itself (the inversion's prompt, cfg, solver and sigmas), and at the blend point
    its latent is moved by the difference between the two inversions' latents there:
    ``z_fg + crop(whole-frame inversion at k) - (crop inversion at k)``. What the branch
    changed (the edit) is carried over to the whole frame's trajectory, which the joint
    phase continues; with the source prompt it is the whole frame's reconstruction again.
    Direct Inversion (Ju et al., 2023) corrects an editing branch by the same kind of
    difference. It costs one inversion of the crop. Returns
    ``(DualRateResult, FusionHook | None)``.
    """
    from .attention_patch import set_attention_hook
    from .dual_rate_sampler import SamplingSeam, crop_conditioning, sample_dual_rate

    record.check_compatible(inverted, model)
    negative = _negative_or_empty(negative, cfg)
    hook = None
    phase_model = None
    if self_replace > 0:
        hook = _fusion_hook(record, self_replace, mask.reshape(-1, *mask.shape[-2:]).float())

        def phase_model(phase, phase_patcher):
            return phase_patcher if phase == "foreground" else set_attention_hook(phase_patcher, hook)

    foreground_start = foreground_finish = None
    if reinvert_crop and record.prompt is not None and record.trajectory is not None:
        crop_trajectory: list[torch.Tensor] = []

        def foreground_start(box, crop_model):
            source_positive, source_negative, source_cfg = record.prompt
            latent_hw, memo = tuple(record.latent_shape[-2:]), {}
            if source_negative is not None:
                source_negative = crop_conditioning(source_negative, box, latent_hw, memo)
            source = box.crop(record.source_latent)
            states, recorder = _trajectory_recorder(crop_model, None)
            top = _run(crop_model, source, inversion_schedule(record.generation_sigmas), record.solver,
                       crop_conditioning(source_positive, box, latent_hw, memo), source_negative, source_cfg,
                       recorder)
            crop_trajectory[:] = _generation_order(states, source)
            return top

        def foreground_finish(box, z_fg, step):
            drift = box.crop(record.trajectory[step]) - crop_trajectory[step]
            return z_fg + drift.to(z_fg)

    seam = SamplingSeam(start_latent=inverted, sigmas=record.generation_sigmas, sampler=ocd_sampler(record.solver),
                        phase_model=phase_model, on_blend=on_blend, foreground_start=foreground_start,
                        foreground_finish=foreground_finish)
    latent = {"samples": inverted}
    if noise_mask is not None:
        latent["noise_mask"] = noise_mask
    result = sample_dual_rate(model, 0, record.steps, cfg, record.solver, "normal", positive, negative, latent, 1.0,
                              mask, background_step_ratio=background_step_ratio, blend_point=blend_point,
                              crop_padding=crop_padding, blend=blend, seam=seam)
    return result, hook
