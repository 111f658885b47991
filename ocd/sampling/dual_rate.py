"""Object-Centric Sampling: the plan of a dual-rate run (pure; no ComfyUI import).

OCD spends many diffusion steps on the edited object (foreground) and few on the rest
(background): both are denoised as separate branches down to a blend point, blended with
the mask, and the remainder of the schedule is denoised jointly so the seam disappears.
The foreground branch only saves compute if it costs less than a full frame, so it
denoises a crop: the padded bounding box of the mask over all frames.

``plan_dual_rate`` decides everything before a model runs, from pieces this module owns:

- ``blend_weights``: hard (0/1) or feathered (blurred) weights ``m`` for
  ``z = m * z_fg + (1 - m) * z_bg``, from the mask's coverage of each latent pixel
  (``ocd.masks.grid``: a pixel at least half covered is the object's);
- ``crop_box``: the padded, UNet-aligned bounding box of ``m > 0`` over all frames;
- ``split_schedule``: the full sigma list -> foreground, background and joint sigma lists;
- ``predicted_cost``: UNet evaluations and token-steps (latent pixels x evaluations)
  of a dual-rate run and of ordinary sampling;
- the mode: "dual", or "background_only" (empty mask) or "ordinary" (nothing to split),
  with the reason.

ocd/sampling/comfy_sampler.py runs the plan's phases through ComfyUI.

Shapes: latents are ``[F, C, h, w]`` (frames in the batch dimension, as ComfyUI keeps
video latents); ``h, w`` are latent pixels (image pixels / 8 for SD1.5).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import OCDInputError
from ..masks import grid, ops

BLEND_MODES = ("feathered", "hard")

# The feathered blend blurs the hard mask with a Gaussian of this many latent pixels;
# the kernel reaches FEATHER_RADIUS pixels, so the crop grows by that much as well.
FEATHER_SIGMA = 1.0
FEATHER_RADIUS = 2

# SD1.5's UNet downsamples three times (64 -> 32 -> 16 -> 8 latent pixels at 512x512):
# a crop that is a multiple of 2**3 latent pixels is halved exactly at every level.
SD15_ALIGNMENT = 8

# Model evaluations per step of ComfyUI's samplers (comfy/k_diffusion/sampling.py,
# comfy/extra_samplers/uni_pc.py). Second-order single-step samplers evaluate twice per
# step, except on a last step that goes to sigma 0 (an Euler step there).
_ONE_EVALUATION = {
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "lms", "dpm_fast",
    "dpmpp_2m", "dpmpp_2m_cfg_pp", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu", "dpmpp_3m_sde",
    "dpmpp_3m_sde_gpu", "ddpm", "lcm", "ipndm", "ipndm_v", "deis", "res_multistep",
    "res_multistep_cfg_pp", "res_multistep_ancestral", "res_multistep_ancestral_cfg_pp",
    "gradient_estimation", "gradient_estimation_cfg_pp", "ddim", "uni_pc", "uni_pc_bh2",
}
_TWO_EVALUATIONS_EULER_LAST = {
    "heun", "dpm_2", "dpm_2_ancestral", "dpmpp_2s_ancestral", "dpmpp_2s_ancestral_cfg_pp",
    "dpmpp_sde", "dpmpp_sde_gpu",
}


@dataclass(frozen=True)
class CropBox:
    """A rectangle in latent pixels: rows ``top:bottom``, columns ``left:right`` (ends excluded)."""

    top: int
    left: int
    bottom: int
    right: int

    @property
    def height(self) -> int:
        return self.bottom - self.top

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def area(self) -> int:
        return self.height * self.width

    def covers(self, height: int, width: int) -> bool:
        return self.top <= 0 and self.left <= 0 and self.bottom >= height and self.right >= width

    def crop(self, x: torch.Tensor) -> torch.Tensor:
        """``x[..., top:bottom, left:right]`` (any leading dimensions)."""
        return x[..., self.top:self.bottom, self.left:self.right]

    def scaled(self, factor: int) -> "CropBox":
        """The same region at ``factor`` times the resolution (e.g. image pixels = 8 x latent)."""
        return CropBox(self.top * factor, self.left * factor, self.bottom * factor, self.right * factor)

    def paste(self, background: torch.Tensor, foreground: torch.Tensor) -> torch.Tensor:
        """A copy of ``background [..., h, w]`` with the box replaced by ``foreground``."""
        out = background.clone()
        out[..., self.top:self.bottom, self.left:self.right] = foreground
        return out


def blend_weights(cover: torch.Tensor, blend: str) -> torch.Tensor:
    """Blend weights ``m [F,1,h,w]`` in 0..1 from the mask's coverage of each latent pixel
    ``[F,1,h,w]`` (``ocd.masks.grid.coverage``).

    hard: ``m = 1`` on the object's pixels (the pack's mask-to-grid rule: at least half
    covered), else 0.
    feathered: the hard mask blurred by a Gaussian (sigma FEATHER_SIGMA latent px), so the
    foreground fades into the background over about two latent pixels on both sides of
    the edge. Zero padding: the frame border is not treated as foreground.
    """
    if blend not in BLEND_MODES:
        raise OCDInputError("blend", f"is {blend!r}; allowed: {', '.join(BLEND_MODES)}")
    hard = grid.object_cells(cover)
    if blend == "hard":
        return hard
    out = ops.gaussian_blur(hard[:, 0], FEATHER_SIGMA, FEATHER_RADIUS, border="zeros")[:, None]
    # exact zeros stay zeros (no 1e-9 leaks that would widen the crop)
    out = torch.where(out < 1e-6, torch.zeros_like(out), out)
    return out.clamp(0.0, 1.0)


def _axis_span(lo: int, hi: int, size: int, padding: int, align: int) -> tuple[int, int]:
    """Pad ``[lo, hi)`` by ``padding``, grow it evenly to a multiple of ``align``, keep it
    inside ``[0, size)``; the whole axis when that cannot be done."""
    lo = max(0, lo - padding)
    hi = min(size, hi + padding)
    length = -(-(hi - lo) // align) * align
    if length >= size:
        return 0, size
    lo = max(0, lo - (length - (hi - lo)) // 2)  # centre the growth on the box
    lo = min(lo, size - length)
    return lo, lo + length


def crop_box(weights: torch.Tensor, padding: int, align: int = SD15_ALIGNMENT) -> CropBox | None:
    """The padded bounding box of ``weights > 0`` over all frames, in latent pixels.

    weights: ``[F,1,h,w]`` (or ``[F,h,w]``). The box is padded by ``padding`` latent pixels
    per side, grown evenly to a multiple of ``align`` (the UNet's total downsampling
    factor: every level then halves the crop exactly, so no level rounds a border row
    away; ComfyUI's UNet would upsample odd sizes back with ``output_shape``, but with
    resampled borders) and shifted to lie inside the frame; a side that cannot be a multiple
    of ``align`` inside the frame becomes the whole side. The position is not snapped to
    the grid: a convolutional UNet accepts any offset, and snapping would grow small
    crops a lot. None when the weights are zero everywhere.
    """
    if padding < 0:
        raise OCDInputError("crop_padding", f"is {padding}; it must be >= 0")
    if align < 1:
        raise ValueError(f"align must be >= 1, got {align}")
    support = (weights > 0).reshape(-1, weights.shape[-2], weights.shape[-1]).any(dim=0)
    rows = torch.nonzero(support.any(dim=1)).flatten()
    cols = torch.nonzero(support.any(dim=0)).flatten()
    if rows.numel() == 0:
        return None
    h, w = support.shape
    top, bottom = _axis_span(int(rows[0]), int(rows[-1]) + 1, h, padding, align)
    left, right = _axis_span(int(cols[0]), int(cols[-1]) + 1, w, padding, align)
    return CropBox(top, left, bottom, right)


def blend(z_fg: torch.Tensor, z_bg: torch.Tensor, weights: torch.Tensor, box: CropBox) -> torch.Tensor:
    """``z = m * paste(z_fg) + (1 - m) * z_bg``.

    z_fg: ``[F,C,box.height,box.width]`` (the foreground branch's crop); z_bg: ``[F,C,h,w]``;
    weights ``m``: ``[F,1,h,w]``, zero outside the box. Returns ``[F,C,h,w]``.
    """
    m = weights.to(device=z_bg.device, dtype=z_bg.dtype)
    return m * box.paste(z_bg, z_fg.to(z_bg)) + (1.0 - m) * z_bg


@dataclass(frozen=True)
class DualRateSchedule:
    """The sigma lists of the three phases (each includes both endpoints).

    foreground: ``sigmas[0 .. blend_index]`` (every step of the full schedule);
    background: ``background_steps + 1`` sigmas taken from the same list between the same
    endpoints (phi times fewer steps); joint: ``sigmas[blend_index .. end]``.
    With ``blend_index == 0`` everything is joint (ordinary sampling).
    """

    sigmas: torch.Tensor
    blend_index: int
    background_indices: tuple[int, ...]

    @property
    def steps(self) -> int:
        return len(self.sigmas) - 1

    @property
    def foreground(self) -> torch.Tensor:
        return self.sigmas[: self.blend_index + 1]

    @property
    def background(self) -> torch.Tensor:
        return self.sigmas[list(self.background_indices)]

    @property
    def joint(self) -> torch.Tensor:
        return self.sigmas[self.blend_index:]

    @property
    def foreground_steps(self) -> int:
        return self.blend_index

    @property
    def background_steps(self) -> int:
        return len(self.background_indices) - 1

    @property
    def joint_steps(self) -> int:
        return self.steps - self.blend_index


def _round_half_up(x: float) -> int:
    # not Python's round(): banker's rounding would make 10 steps x 0.25 two joint steps
    return int(math.floor(x + 0.5))


def split_schedule(sigmas: torch.Tensor, background_step_ratio: float, blend_point: float) -> DualRateSchedule:
    """Split a sampler's sigma list ``[steps + 1]`` (as comfy.samplers.KSampler computes it).

    blend_point (gamma, 0..1): the fraction of the steps denoised jointly after blending;
    the branches run the first ``steps - round(gamma * steps)`` steps (halves round up).
    background_step_ratio (phi >= 1): the background branch takes ``max(1, round(k / phi))``
    steps for the foreground's ``k``, at sigmas picked evenly (by index) from the
    foreground's list, so both branches start at the same sigma and meet at the same blend
    sigma, and the scheduler's spacing is kept. phi = 1 gives the foreground's list.
    """
    if not (background_step_ratio >= 1.0 and math.isfinite(background_step_ratio)):
        raise OCDInputError("background_step_ratio", f"is {background_step_ratio}; it must be >= 1")
    if not (0.0 <= blend_point <= 1.0):
        raise OCDInputError("blend_point", f"is {blend_point}; it must be in 0..1")
    steps = len(sigmas) - 1
    joint_steps = _round_half_up(blend_point * steps)
    k = steps - joint_steps
    if k <= 0:
        return DualRateSchedule(sigmas, 0, (0,))
    n_bg = max(1, _round_half_up(k / background_step_ratio))
    indices = tuple(_round_half_up(i * k / n_bg) for i in range(n_bg + 1))
    return DualRateSchedule(sigmas, k, indices)


def evaluations(sampler_name: str, sigmas: torch.Tensor) -> int | None:
    """Model (UNet) evaluations a ComfyUI sampler makes over ``sigmas``; None if unknown.

    One evaluation here is one call of the denoiser: with CFG it runs the UNet on the
    conditional and unconditional batch (ComfyUI batches the two when memory allows).
    """
    steps = len(sigmas) - 1
    if steps <= 0:
        return 0
    if sampler_name in _ONE_EVALUATION:
        return steps
    if sampler_name in _TWO_EVALUATIONS_EULER_LAST:
        return 2 * steps - (1 if float(sigmas[-1]) == 0.0 else 0)
    return None


@dataclass(frozen=True)
class PhaseCost:
    name: str  # "foreground", "background", "joint" or "full"
    evaluations: int | None
    height: int
    width: int
    frames: int

    @property
    def latent_pixels(self) -> int | None:
        """Latent pixels processed: evaluations x frames x h x w (the token-steps)."""
        if self.evaluations is None:
            return None
        return self.evaluations * self.frames * self.height * self.width


@dataclass(frozen=True)
class CostPrediction:
    phases: tuple[PhaseCost, ...]
    full: PhaseCost  # ordinary sampling with the same schedule

    @property
    def evaluations(self) -> int | None:
        counts = [p.evaluations for p in self.phases]
        return None if any(c is None for c in counts) else sum(counts)

    @property
    def latent_pixels(self) -> int | None:
        counts = [p.latent_pixels for p in self.phases]
        return None if any(c is None for c in counts) else sum(counts)

    @property
    def speedup(self) -> float | None:
        """Predicted speed-up over ordinary sampling if cost is linear in token-steps."""
        mine, full = self.latent_pixels, self.full.latent_pixels
        if not mine or full is None:
            return None
        return full / mine


def predicted_cost(schedule: DualRateSchedule, sampler_name: str, frames: int, height: int,
                   width: int, box: CropBox | None, mode: str = "dual") -> CostPrediction:
    """Evaluations and token-steps of each phase.

    mode: "dual" (foreground on ``box``, background on the frame, joint on the frame),
    "background_only" (empty mask: background schedule then joint), or "ordinary".
    """
    full = PhaseCost("full", evaluations(sampler_name, schedule.sigmas), height, width, frames)
    if mode == "ordinary" or schedule.blend_index == 0:
        return CostPrediction((full,), full)
    phases = []
    if mode == "dual":
        assert box is not None
        phases.append(PhaseCost("foreground", evaluations(sampler_name, schedule.foreground),
                                box.height, box.width, frames))
    elif mode != "background_only":
        raise ValueError(f"unknown mode {mode!r}")
    phases.append(PhaseCost("background", evaluations(sampler_name, schedule.background), height, width, frames))
    phases.append(PhaseCost("joint", evaluations(sampler_name, schedule.joint), height, width, frames))
    return CostPrediction(tuple(phases), full)


# ---------------------------------------------------------------------------------------------
# The plan
# ---------------------------------------------------------------------------------------------

MODES = ("dual", "background_only", "ordinary")


@dataclass(frozen=True)
class DualRateSettings:
    """The Object-Centric Sampling inputs of the dual-rate nodes."""

    background_step_ratio: float = 4.0  # phi
    blend_point: float = 0.25  # gamma
    crop_padding: int = 2
    blend: str = "feathered"


@dataclass(frozen=True)
class DualRatePlan:
    """What a dual-rate run will do, decided before any model runs."""

    mode: str  # one of MODES
    reason: str
    schedule: DualRateSchedule
    weights: torch.Tensor  # [F,1,h,w] blend weights
    box: CropBox | None  # the foreground crop (None: empty mask)
    prediction: CostPrediction


def plan_dual_rate(sigmas: torch.Tensor, mask, frames: int, height: int, width: int,
                   settings: DualRateSettings, alignment: int = SD15_ALIGNMENT,
                   sampler_name: str = "euler") -> DualRatePlan:
    """The plan of a dual-rate run over ``sigmas`` (the full schedule) for latents
    ``[frames, C, height, width]``, the object ``mask`` (any resolution and layout, one frame
    or one per frame) and the UNet's ``alignment`` (its total downsampling)."""
    schedule = split_schedule(sigmas.detach().cpu(), settings.background_step_ratio, settings.blend_point)
    weights = blend_weights(grid.coverage(mask, frames, height, width)[:, None], settings.blend)
    box = crop_box(weights, settings.crop_padding, alignment)
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
    prediction = predicted_cost(schedule, sampler_name, frames, height, width, box, mode)
    return DualRatePlan(mode, reason, schedule, weights, box, prediction)


# ---------------------------------------------------------------------------------------------
# The plan in token form (video transformers)
# ---------------------------------------------------------------------------------------------
# A transformer needs no rectangle: it runs any set of tokens, each at its own position. So
# on a video transformer the two branches share one latent and one sampling pass. The steps
# where the background branch would step ("full steps": the background's ``phi`` times fewer
# steps, then every joint step) run every token; the others ("subset steps") run only the
# tokens of the object and a margin around it, each at its own position, while the rest of
# the frame keeps the model's output of the last full step; with the keys/values of that step
# as the subset's context. With Euler on a flow-matching model this moves the background by
# exactly one Euler step from its last full step to the next: the background branch of the
# plan above, with phi times fewer steps. The blend weights decide, on every subset step,
# how much of each latent pixel the new output owns (feathered: a seam two pixels wide).

@dataclass(frozen=True)
class TokenStepPlan:
    """What a dual-rate run on a video transformer will do, decided before any model runs.

    - weights ``[T, 1, h, w]``: the blend weights on the latent grid (T latent frames)
    - subset ``[T, th, tw]`` bool: the tokens a subset step runs (the weights' support, grown
      by the margin), on the token grid (``patch`` latent pixels per token)
    """

    mode: str  # one of MODES
    reason: str
    schedule: DualRateSchedule
    weights: torch.Tensor
    subset: torch.Tensor
    patch: tuple[int, int]
    evaluations: int | None  # model evaluations of the run (None: a sampler the plan does not know)

    @property
    def full_steps(self) -> frozenset[int]:
        """Step indices (in the full schedule) that run every token."""
        s = self.schedule
        if self.mode == "ordinary":
            return frozenset(range(s.steps))
        return frozenset(s.background_indices[:-1]) | frozenset(range(s.blend_index, s.steps))

    def is_subset_step(self, step: int) -> bool:
        return self.mode != "ordinary" and step < self.schedule.blend_index and step not in self.full_steps

    @property
    def subset_steps(self) -> list[int]:
        """Step indices that run only the object's tokens and their margin."""
        return [i for i in range(self.schedule.steps) if self.is_subset_step(i)]

    @property
    def subset_evaluations(self) -> int | None:
        """Evaluations on subset steps (1 or nearly 2 per step, as the sampler evaluates)."""
        if self.evaluations is None:
            return None
        return round(len(self.subset_steps) * self.evaluations / self.schedule.steps) if self.schedule.steps else 0

    @property
    def tokens(self) -> int:
        return int(self.subset.numel())

    @property
    def subset_tokens(self) -> int:
        return int(self.subset.sum())

    @property
    def predicted_speedup(self) -> float | None:
        """Token-steps of ordinary sampling over this plan's, if a step costs its tokens."""
        if self.evaluations is None or self.subset_evaluations is None:
            return None
        mine = (self.evaluations - self.subset_evaluations) * self.tokens + self.subset_evaluations * self.subset_tokens
        return self.evaluations * self.tokens / mine if mine else None


def token_subset(weights: torch.Tensor, patch: tuple[int, int], margin: int) -> torch.Tensor:
    """``[T, th, tw]`` bool: tokens whose ``patch`` of latent pixels holds any weight, grown by
    ``margin`` latent pixels (rounded up to whole tokens) within each frame.

    weights: ``[T, 1, h, w]`` (or ``[T, h, w]``) on the latent grid.
    """
    if margin < 0:
        raise OCDInputError("crop_padding", f"is {margin}; it must be >= 0")
    ph, pw = patch
    w = weights.reshape(-1, weights.shape[-2], weights.shape[-1])
    h_pad, w_pad = (-w.shape[1]) % ph, (-w.shape[2]) % pw
    support = torch.nn.functional.pad((w > 0).to(torch.float32), (0, w_pad, 0, h_pad))
    tokens = torch.nn.functional.max_pool2d(support[:, None], (ph, pw))[:, 0]
    grow_h, grow_w = -(-margin // ph), -(-margin // pw)
    if grow_h or grow_w:
        tokens = torch.nn.functional.max_pool2d(tokens[:, None], (2 * grow_h + 1, 2 * grow_w + 1), stride=1,
                                                padding=(grow_h, grow_w))[:, 0]
    return tokens > 0


def plan_token_steps(sigmas: torch.Tensor, cover: torch.Tensor, settings: DualRateSettings,
                     patch: tuple[int, int], sampler_name: str = "euler") -> TokenStepPlan:
    """The plan of a dual-rate run on a video transformer over ``sigmas`` (the full schedule).

    cover: ``[T, h, w]``, the mask's coverage of every latent pixel of the T latent frames
    (``ocd.masks.grid.latent_coverage``); patch: latent pixels per token (height, width).
    """
    schedule = split_schedule(sigmas.detach().cpu(), settings.background_step_ratio, settings.blend_point)
    weights = blend_weights(cover[:, None], settings.blend)
    subset = token_subset(weights, patch, settings.crop_padding)
    if len(sigmas) <= 1:
        mode, reason = "ordinary", "nothing to denoise (denoise = 0)"
    elif schedule.blend_index == 0:
        mode, reason = "ordinary", "blend_point leaves no branch steps"
    elif not bool(subset.any()):
        mode, reason = "background_only", ("the mask is empty: every branch step the background skips keeps the "
                                           "last full step's output everywhere")
    elif bool(subset.all()):
        mode, reason = "ordinary", "the object and its margin cover every token"
    else:
        mode, reason = "dual", "object tokens on every step, the whole frame on the background's steps"
    return TokenStepPlan(mode, reason, schedule, weights, subset, tuple(patch),
                         evaluations(sampler_name, schedule.sigmas))
