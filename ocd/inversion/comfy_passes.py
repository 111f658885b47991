"""Inversion and inversion-based editing through ComfyUI's own sampling machinery (the glue;
the solvers are in ``solvers.py``, the record in ``record.py``, the attention record and
fusion in ``ocd.attention.fusion``).

Schedules come from the model's noise levels and a ComfyUI scheduler (``ocd.host``), and both
passes run through ``comfy.sample.sample_custom`` with a ``KSAMPLER`` built from
``solvers``, so conditioning, CFG, ControlNet and every model patch (cross-frame attention,
token merging, AnimateDiff) apply exactly as in ordinary sampling.

Data flow:  latent --invert(source prompt, ascending sigmas)--> inverted latent + record
            inverted latent + record --edit(target prompt, the record's descending sigmas)--> edit
            inverted latent + record --edit_dual_rate(target prompt, object mask)--> edit, with
                the object's crop inverted on its own (``CropReinversion``)
"""
from __future__ import annotations

from typing import Callable

import torch

from .. import comfy_report, host
from ..attention import comfy_patches
from ..attention.comfy_patches import set_attention_hook
from ..attention.fusion import AttentionRecord, CrossAttentionRecord, FusionHook, RecordingHook, recorded_steps
from ..errors import OCDInputError
from ..masks import ops
from ..report import NodeRef, RunReport
from ..sampling import dual_rate
from ..sampling.comfy_sampler import DualRateHooks, DualRateResult, DualRateStart, TokenStepResult, run_dual_rate
from ..sampling.comfy_token_steps import run_token_steps
from .record import CROSS_ATTENTION, SELF_ATTENTION, InversionRecord
from .solvers import SOLVERS, inversion_schedule, k_sampler_function


# Report parts of passes run without a node (library use)
INVERT_NODE = NodeRef("Invert Latents (OCD)")
EDIT_NODE = NodeRef("Edit From Inversion (OCD)")


def generation_sigmas(model, scheduler: str, steps: int, depth: float = 1.0) -> torch.Tensor:
    """The editing schedule: ``steps`` steps covering the last ``depth`` of the full schedule.

    Same convention as KSampler's ``denoise``: depth 1 starts from pure noise, depth 0.5
    from the middle of a schedule of ``steps / depth`` steps.
    """
    if steps < 1:
        raise OCDInputError("steps", f"must be at least 1, got {steps}")
    if not 0.0 < depth <= 1.0:
        raise OCDInputError("inversion_depth", f"must be in (0, 1], got {depth}")
    if scheduler not in host.scheduler_names():
        raise OCDInputError("scheduler", f"must be one of {host.scheduler_names()}, got '{scheduler}'")
    total = steps if depth >= 0.9999 else int(steps / depth)
    return host.schedule_sigmas(model, scheduler, total)[-(steps + 1):]


def ocd_sampler(solver: str):
    """A ComfyUI SAMPLER that integrates with ``solver`` in whichever direction sigmas run."""
    if solver not in SOLVERS:
        raise OCDInputError("solver", f"must be one of {SOLVERS}, got '{solver}'")
    return host.ode_sampler(k_sampler_function(solver))


def _negative_or_empty(negative, cfg: float):
    if negative is None:
        if abs(cfg - 1.0) > 1e-6:
            raise OCDInputError("negative", f"is needed when cfg is not 1 (cfg = {cfg})")
        return []
    return negative


class _TrajectoryRecorder:
    """A sampler callback that keeps the latent after every step (user latent space, on the
    CPU), then calls ``callback``."""

    def __init__(self, model, callback: Callable | None = None):
        self.model = model
        self.callback = callback
        self.states: list[torch.Tensor] = []

    def __call__(self, step, x0, x, total):
        self.states.append(host.to_user_space(self.model, x.detach().float()).cpu())
        if self.callback is not None:
            self.callback(step, x0, x, total)

    def in_generation_order(self, source: torch.Tensor) -> list[torch.Tensor]:
        """The inversion's latents re-indexed by the generation schedule: after inversion step
        i the latent is at generation sigma n - 1 - i; the source is at sigma n (0)."""
        return self.states[::-1] + [source.detach().float().cpu()]


def _check_context_windows(model, latent: torch.Tensor, sigmas: torch.Tensor, input_name: str) -> None:
    """Refuse a schedule that core's context windows on ``model`` cannot step through (ComfyUI
    0.3.75 over a UNet's frames: only as many sigmas as frames), by name, before any work."""
    needed = host.context_window_schedule_length(model, latent)
    if needed is not None and len(sigmas) != needed:
        raise OCDInputError(input_name, f"{len(sigmas) - 1} steps with the model under core's context windows over "
                            f"its {needed} frames: this ComfyUI steps a sampler through them only with {needed - 1} "
                            "steps (IndexListContextHandler.set_step compares the schedule's sigmas with the frames' "
                            f"timesteps one by one): set steps to {needed - 1} on Invert Latents (OCD), or remove "
                            "the context windows")


def _run(model, latent: torch.Tensor, sigmas, solver, positive, negative, cfg, callback, noise_mask=None):
    import comfy.sample

    negative = _negative_or_empty(negative, cfg)
    # No noise is added: the starting point is the latent itself (an ODE, not SDE, pass; on
    # every model's noise levels, host.ode_sampler).
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
    report: RunReport | None = None,
) -> tuple[torch.Tensor, InversionRecord]:
    """Carry ``latent`` [F, C, H, W] up to the noise level where editing will start.

    ``record_attention`` > 0 records the self-attention of layers with at most
    ``max_record_tokens`` queries for that fraction of the editing steps (FateZero: 0.8), in
    ``record_dtype`` on ``record_device`` (None: the compute device), for ``edit``'s fusion.
    ``record_cross_attention`` keeps the head-averaged cross-attention of those layers at
    every step, for ``ocd.attention.fusion.cross_attention_mask``. ``report`` (a node's run
    report) is told what was recorded.
    """
    import comfy.sample

    report = report if report is not None else RunReport()
    owner = report.owner or INVERT_NODE
    latent = comfy.sample.fix_empty_latent_channels(model, latent)
    sigmas = generation_sigmas(model, scheduler, steps, depth)
    _check_context_windows(model, latent, sigmas, "steps")
    model = comfy_report.attach(model, report)
    extras = {}
    if record_attention > 0:
        attention = AttentionRecord(recorded_steps(steps, record_attention), max_record_tokens, record_dtype,
                                    record_device)
        model = set_attention_hook(model, RecordingHook(attention))
        extras[SELF_ATTENTION] = attention
    if record_cross_attention:
        cross = CrossAttentionRecord(max_record_tokens)
        model = comfy_patches.record_cross_attention(model, cross)
        extras[CROSS_ATTENTION] = cross
    trajectory = _TrajectoryRecorder(model, callback)
    with report.phase("inversion"):
        inverted = _run(model, latent, inversion_schedule(sigmas), solver, positive, negative, cfg, trajectory)
    report.note(owner, solver=solver, steps=steps, inversion_depth=depth)
    if SELF_ATTENTION in extras:
        attention = extras[SELF_ATTENTION]
        report.note(owner, attention_record=describe_record(attention, model))
        if not attention.maps:
            report.warn(owner, f"recorded no self-attention: no layer attends with at most {max_record_tokens} "
                        "queries (max_record_tokens); the edit will have nothing to fuse")
    if CROSS_ATTENTION in extras:
        cross = extras[CROSS_ATTENTION]
        report.note(owner, cross_attention_record={"maps": len(cross.maps), "MiB": round(cross.nbytes / 2**20, 2)})
        if not cross.maps:
            report.warn(owner, f"recorded no cross-attention: no layer attends with at most {max_record_tokens} "
                        "queries (max_record_tokens); Cross-Attention Mask (OCD) will have no map to read")
    record = InversionRecord(
        solver=solver,
        generation_sigmas=sigmas,
        latent_shape=tuple(inverted.shape),
        model_fingerprint=host.model_fingerprint(model),
        source_latent=latent.detach().cpu(),
        extras=extras,
        prompt=(positive, negative, cfg),
        trajectory=trajectory.in_generation_order(latent),
        image_scale=host.latent_scale(model),
        temporal_scale=host.family_of(model).temporal_scale,
    )
    return inverted, record


def describe_record(attention: AttentionRecord, model) -> dict:
    """The attention record as the run report shows it. Under context windows it also says
    how the record splits over them: ``windows`` recorded and the largest one's share
    (``largest_window_MiB``); a longer clip adds windows of the same size."""
    device = attention.device if attention.device is not None else str(host.compute_device())
    facts = {"steps": sorted(attention.steps), "layers": len({layer for _, layer in attention.maps}),
             "maps": sum(len(v) for v in attention.maps.values()), "MiB": round(attention.nbytes / 2**20, 2),
             "dtype": str(attention.dtype).replace("torch.", ""), "device": str(device)}
    by_window = attention.bytes_by_window()
    if any(window is not None for window in by_window):
        facts.update(windows=len(by_window), largest_window_MiB=round(max(by_window.values()) / 2**20, 2))
    return facts


def _check(record: InversionRecord, latent: torch.Tensor, model) -> None:
    record.check_compatible(latent, host.model_fingerprint(model))


def _blend_mask(record: InversionRecord, mask, input_name: str):
    """A blend mask as ``[M, H, W]`` with M = 1 or the record's frame count."""
    if mask is None:
        return None
    counts = record.mask_frames
    mask = ops.normalize_mask(mask, input_name)
    if mask.shape[0] not in counts:
        raise OCDInputError(input_name, f"has {mask.shape[0]} frames; give {' or '.join(map(str, counts))}")
    return mask


def _fusion_hook(record: InversionRecord, self_replace: float, blend_mask: torch.Tensor | None,
                 report: RunReport, owner: NodeRef) -> FusionHook:
    """The fusion of the first ``self_replace`` of the steps; refuses an edit that would fuse
    nothing, says what it can fuse only in part."""
    attention = record.extras.get(SELF_ATTENTION)
    if attention is None:
        raise OCDInputError("self_replace", "is above 0 but the inversion recorded no attention: "
                            "set record_attention above 0 on Invert Latents (OCD)")
    if not attention.maps:
        raise OCDInputError("self_replace", f"is {self_replace} but the inversion's attention record is empty (no "
                            f"layer had at most max_record_tokens = {attention.max_tokens} queries): raise "
                            "max_record_tokens on Invert Latents (OCD), or set self_replace to 0")
    steps = recorded_steps(record.steps, self_replace)
    unrecorded = sorted(steps - attention.steps)
    if unrecorded:
        report.warn(owner, f"self_replace {self_replace} fuses steps 0..{max(steps)} but the inversion recorded "
                    f"steps 0..{max(attention.steps) if attention.steps else -1} (record_attention): steps "
                    f"{unrecorded[0]}..{unrecorded[-1]} use the edit's own attention")
    if blend_mask is not None:
        if float(blend_mask.amax()) <= 0.0:
            report.warn(owner, "the blend mask is empty: every query takes the recorded attention (as without a mask)")
        elif float(blend_mask.amin()) >= 0.5:
            report.warn(owner, "the blend mask covers every pixel: every query keeps its own attention, nothing "
                        "is fused")
    layers = {layer for _, layer in attention.maps}
    report.note(owner, self_replace=self_replace, fused_steps_asked=sorted(steps & attention.steps),
                fused_layers_recorded=len(layers), blend_mask=blend_mask is not None)
    return FusionHook(attention, steps, blend_mask, owner)


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
    report: RunReport | None = None,
) -> tuple[torch.Tensor, FusionHook | None]:
    """Denoise an inverted latent along the record's schedule with the target prompt.

    ``self_replace`` > 0 fuses the recorded self-attention into the first fraction of the
    steps; ``blend_mask`` [F, H, W] (the edited object) lets the object's queries keep their
    own attention. Returns the latent and the fusion hook (None without fusion), which
    lists the (step, layer) pairs it fused. ``report``: the node's run report.
    """
    _check(record, inverted, model)
    _check_context_windows(model, inverted, record.generation_sigmas, "inversion")
    report = report if report is not None else RunReport()
    owner = report.owner or EDIT_NODE
    blend_mask = _blend_mask(record, blend_mask, "blend_mask")
    model = comfy_report.attach(model, report)
    report.note(owner, self_replace=self_replace)
    hook = None
    if self_replace > 0:
        hook = _fusion_hook(record, self_replace, blend_mask, report, owner)
        model = set_attention_hook(model, hook)
    with report.phase("edit"):
        out = _run(model, inverted, record.generation_sigmas, record.solver, positive, negative, cfg, callback,
                   noise_mask)
    return out, hook


class CropReinversion:
    """The dual-rate edit's foreground branch, started from an inversion of the object's crop.

    The UNet sees a crop differently from the whole frame (normalisation statistics,
    borders, fewer tokens), so the crop of the whole-frame inversion does not walk back to
    its source. ``start`` inverts the crop of the source latent itself (the inversion's
    prompt, cfg, solver and sigmas) and keeps that inversion's trajectory; ``finish`` moves
    the branch's latent at the blend point by the difference between the two inversions
    there: ``z_fg + crop(whole-frame inversion at k) - (crop inversion at k)``. What the branch
    changed (the edit) is carried over to the whole frame's trajectory, which the joint phase
    continues; with the source prompt it is the whole frame's reconstruction again. Direct
    Inversion (Ju et al., 2023) corrects an editing branch by the same kind of difference.
    It costs one inversion of the crop.
    """

    def __init__(self, record: InversionRecord):
        if record.prompt is None or record.trajectory is None:
            raise OCDInputError("inversion", "does not keep its prompt and trajectory (made by an older "
                                "version of the pack?): run Invert Latents (OCD) again")
        self.record = record
        self.trajectory: list[torch.Tensor] | None = None

    def evaluations(self) -> int:
        return dual_rate.evaluations(self.record.solver, self.record.generation_sigmas) or 0

    def start(self, box, crop_model) -> torch.Tensor:
        record = self.record
        positive, negative, cfg = record.prompt
        latent_hw, memo, scale = tuple(record.latent_shape[-2:]), {}, record.image_scale
        if negative is not None:
            negative = host.crop_conditioning(negative, box, latent_hw, memo, scale)
        source = box.crop(record.source_latent)
        recorder = _TrajectoryRecorder(crop_model)
        top = _run(crop_model, source, inversion_schedule(record.generation_sigmas), record.solver,
                   host.crop_conditioning(positive, box, latent_hw, memo, scale), negative, cfg, recorder)
        self.trajectory = recorder.in_generation_order(source)
        return top

    def finish(self, box, z_fg: torch.Tensor, step: int) -> torch.Tensor:
        drift = box.crop(self.record.trajectory[step]) - self.trajectory[step]
        return z_fg + drift.to(z_fg)


class _DualRateEdit(DualRateHooks):
    """The inversion edit's hooks in the dual-rate run: fusion in the whole-frame phases, the
    crop's own inversion for the foreground branch. ``windows_schedule``: the one schedule
    length core's context windows on the model can step through (None: any)."""

    def __init__(self, fusion: FusionHook | None, reinversion: CropReinversion | None,
                 observer: DualRateHooks | None, windows_schedule: int | None = None):
        self.fusion = fusion
        self.reinversion = reinversion
        self.observer = observer or DualRateHooks()
        self.windows_schedule = windows_schedule

    def phase_model(self, phase, model):
        if phase != "full" and self.windows_schedule is not None:
            raise OCDInputError("model", "runs under core's context windows over its frames, which this ComfyUI "
                                f"steps a sampler through only over a whole schedule of {self.windows_schedule} "
                                "sigmas (IndexListContextHandler.set_step); the dual-rate edit samples its "
                                "branches over parts of the schedule: use Edit From Inversion (OCD) with the mask "
                                "as its blend_mask under context windows, or remove them")
        if self.fusion is None or phase == "foreground":
            return model
        return set_attention_hook(model, self.fusion)

    def foreground_start_evaluations(self, sigmas):
        return self.reinversion.evaluations() if self.reinversion is not None else 0

    def foreground_start(self, box, crop_model):
        return self.reinversion.start(box, crop_model) if self.reinversion is not None else None

    def foreground_finish(self, box, z_fg, step):
        return self.reinversion.finish(box, z_fg, step) if self.reinversion is not None else z_fg

    def blended(self, z_fg, z_bg, weights, z):
        self.observer.blended(z_fg, z_bg, weights, z)

    def stepped(self, phase, step, sigma, x):
        self.observer.stepped(phase, step, sigma, x)


def edit_dual_rate(
    model,
    record: InversionRecord,
    inverted: torch.Tensor,
    positive,
    negative,
    cfg: float,
    mask,
    settings: dual_rate.DualRateSettings = dual_rate.DualRateSettings(),
    self_replace: float = 0.0,
    noise_mask: torch.Tensor | None = None,
    reinvert_object: bool = True,
    observer: DualRateHooks | None = None,
    report: RunReport | None = None,
) -> tuple[DualRateResult, FusionHook | None]:
    """``edit`` with Object-Centric Sampling: the object (``mask``) is denoised on a crop with
    every step of the record's schedule, the background with ``background_step_ratio`` times
    fewer, then both are blended and finished jointly (``ocd.sampling.comfy_sampler``).

    Every branch starts from the inverted latent (no noise is added) and walks the record's
    generation sigmas with the inversion's solver. Fusion (``self_replace``) applies to the
    full-frame branches, background and joint, at their steps of the full schedule (the
    background's skipped steps simply have no fusion); the object's queries keep their own
    attention there, as ``edit``'s blend mask does. The foreground branch is a crop, which
    the whole-frame record cannot describe: it runs without fusion, which is what the blend
    mask asks of the object anyway. ``reinvert_object``: start the foreground branch from the
    crop's own inversion (``CropReinversion``). ``observer`` watches the run (tests).
    Returns ``(DualRateResult, FusionHook | None)``.
    """
    _check(record, inverted, model)
    _check_context_windows(model, inverted, record.generation_sigmas, "inversion")
    report = report if report is not None else RunReport()
    owner = report.owner or NodeRef("Dual-Rate Edit From Inversion (OCD)")
    negative = _negative_or_empty(negative, cfg)
    mask = _blend_mask(record, mask, "mask")
    fusion = _fusion_hook(record, self_replace, mask, report, owner) if self_replace > 0 else None
    if host.family_of(model).is_transformer:
        return _edit_token_steps(model, record, inverted, positive, negative, cfg, mask, settings, fusion,
                                 noise_mask, reinvert_object, report, owner), fusion
    reinversion = CropReinversion(record) if reinvert_object else None
    start = DualRateStart(inverted, torch.zeros_like(inverted, device="cpu"), record.generation_sigmas,
                          ocd_sampler(record.solver), record.solver)
    hooks = _DualRateEdit(fusion, reinversion, observer, host.context_window_schedule_length(model, inverted))
    result = run_dual_rate(model, start, cfg, positive, negative, mask, settings, noise_mask, hooks, report)
    return result, fusion


def _edit_token_steps(model, record, inverted, positive, negative, cfg, mask, settings, fusion, noise_mask,
                      reinvert_object, report, owner) -> TokenStepResult:
    """The dual-rate edit on a video transformer: one pass from the inverted latent along the
    record's schedule whose object-token steps run only the object's tokens (reading the rest's
    kept keys/values; ``ocd.sampling.comfy_token_steps``). Fusion applies on the full steps;
    the object-token steps keep the object's own attention, as the blend mask asks. There is no
    crop, so nothing to re-invert: the object's tokens attend in the whole clip's context."""
    if reinvert_object:
        report.note(owner, reinvert_object="not needed on a video transformer: the object's tokens run in the "
                    "whole clip's context, not on a crop (skipped)")
    if fusion is not None:
        model = set_attention_hook(model, fusion)
    sigmas = record.generation_sigmas
    start = DualRateStart(inverted, torch.zeros_like(inverted), sigmas, ocd_sampler(record.solver), record.solver)
    samples, plan = run_token_steps(model, start, cfg, positive, negative, mask, settings, noise_mask, report)
    return TokenStepResult({"samples": samples.to(host.intermediate_device())}, plan, report)


def word_positions(clip, prompt: str, words: str) -> list[int]:
    """Token positions of the comma-separated ``words`` in ``prompt``, as ``clip`` tokenizes."""
    from ..attention.fusion import word_token_positions

    names = [w.strip() for w in words.split(",") if w.strip()]
    if not names:
        raise OCDInputError("words", "is empty: name the object, e.g. 'car'")
    prompt_ids = host.prompt_token_ids(clip, prompt)
    special = set(host.prompt_token_ids(clip, ""))  # start, end and padding tokens
    positions: list[int] = []
    for word in names:
        ids = [t for t in host.prompt_token_ids(clip, word) if t not in special]
        positions += word_token_positions(prompt_ids, ids)
    return sorted(set(positions))
