"""One model call as ComfyUI describes it, and this pack's state in a model's options.

ComfyUI hands every attention patch an ``extra_options`` dict (a shallow copy of the call's
``transformer_options`` plus the block's ``n_heads``, ``dim_head``, ``attn_precision``). The
keys are ComfyUI's private conventions (comfy/samplers.py, comfy/ldm/modules/attention.py,
comfy/ldm/modules/diffusionmodules/openaimodel.py, 0.3.75); this module is the only place in
the pack that reads them:

- ``sigmas`` (the call's noise levels), ``sample_sigmas`` (the running pass's schedule);
- ``block`` (("input" | "middle" | "output", number)), ``block_index`` (transformer index);
- ``activations_shape`` (the block's input [B, C, h, w]), ``original_shape`` (the latent's);
- ``cond_or_uncond`` (the CFG groups batched in this call);
- ``ad_params["sub_idxs"]`` (AnimateDiff-Evolved's context window: absolute frame indices)
  and ``context_window.index_list`` (core's context windows, the same);
- ``n_heads``, ``attn_precision``.

This pack's own entries live in ``model_options["transformer_options"]`` under the
``*_KEY`` names below (the clone's options, so two patched clones never see each other's
settings); what is put there derives from ``ocd.shared.SharedAcrossClones``.
"""
from __future__ import annotations

import copy
import math

import torch

from ..attention.cross_frame import FrameLayout

CROSS_FRAME_KEY = "ocd_cross_frame"  # CrossFrameSettings
TOKEN_MERGE_KEY = "ocd_token_merge"  # TokenMergeSettings
ATTENTION_HOOK_KEY = "ocd_attention_hook"  # hook(attend, q, k, v, call), see comfy_patches
CROSS_ATTENTION_RECORD_KEY = "ocd_cross_attention_record"  # a video transformer's CrossAttentionRecord
STEP_SCHEDULE_KEY = "ocd_step_schedule"  # a sampler's full schedule when it runs it in pieces
RUN_REPORT_KEY = "ocd_run_report"  # the running sampling run's RunReport (ocd/report.py)
FEATURE_REUSE_KEY = "ocd_feature_reuse"  # FeatureReuseSettings
FEATURE_CACHE_KEY = "ocd_feature_cache"  # the running sampling run's kept features (per run)
TOKEN_STEPS_KEY = "ocd_token_steps"  # a dual-rate run's token-step plan on a video transformer
DIT_RUN_KEY = "ocd_dit_run"  # the running sampling run's token state on a video transformer (per run)
DIT_CALL_KEY = "ocd_dit_call"  # one call's token work, for the block patches (per call)


# ---------------------------------------------------------------------------------------------
# This pack's state in a ModelPatcher's options (call on a clone)
# ---------------------------------------------------------------------------------------------

def _transformer_options(model_patcher) -> dict:
    return model_patcher.model_options.setdefault("transformer_options", {})


def put_state(model_patcher, key: str, value) -> None:
    """Store ``value`` under ``key`` in (a clone's) transformer options."""
    _transformer_options(model_patcher)[key] = value


def pop_state(model_patcher, key: str) -> None:
    _transformer_options(model_patcher).pop(key, None)


def state_of(model_patcher, key: str, default=None):
    """What this pack stored under ``key`` in a ModelPatcher's options."""
    return model_patcher.model_options.get("transformer_options", {}).get(key, default)


def guider_state(guider, key: str, default=None):
    """The same for a CFG guider (what OUTER_SAMPLE and PREDICT_NOISE wrappers are given)."""
    return guider.model_options.get("transformer_options", {}).get(key, default)


def guider_options(guider) -> dict:
    """The transformer options of a guider's running sample call. ``CFGGuider.sample`` works
    on its own copy of the model's options (``create_model_options_clone``), so what an
    OUTER_SAMPLE wrapper puts here lasts for that sampling run only."""
    return guider.model_options.setdefault("transformer_options", {})


def guider_has_controlnet(guider) -> bool:
    """Whether the conditioning a guider samples with carries a ControlNet (or T2I adapter)."""
    conds = getattr(guider, "original_conds", {}) or {}
    return any(c.get("control") is not None for group in conds.values() for c in group if isinstance(c, dict))


def has_patch(model_patcher, kind: str, function) -> bool:
    """Whether ``function`` is already in the patch list ``kind`` (e.g. "attn1_patch")."""
    return function in _transformer_options(model_patcher).get("patches", {}).get(kind, [])


def attn1_replace_of(model_patcher, key: tuple):
    """The attn1 replace installed on block ``key`` (name, number, index), or None."""
    return _transformer_options(model_patcher).get("patches_replace", {}).get("attn1", {}).get(key)


# ---------------------------------------------------------------------------------------------
# Reading one call's extra_options
# ---------------------------------------------------------------------------------------------

def call_state(options: dict, key: str, default=None):
    """This pack's entry ``key`` as seen by one model call (a ``*_KEY`` above)."""
    return options.get(key, default)


def stash(options: dict, key: str, value) -> None:
    """Leave ``value`` for a later patch of the same block call (attn1_patch -> output patch):
    ComfyUI hands every patch of one block the same ``extra_options`` dict."""
    options[key] = value


def take(options: dict, key: str):
    """Remove and return what ``stash`` left, or None."""
    return options.pop(key, None)


def step_index(options: dict) -> int:
    """Index of the current step in the pass's schedule (the nearest scheduled sigma, so
    samplers evaluating the model between two scheduled sigmas land on one of them); 0
    outside a sampler.

    An ascending schedule is an inversion pass: its steps are numbered as the same
    transitions of the descending (editing) schedule, so the inversion step between sigma
    levels m+1 and m has index m, like the editing step between m and m+1. Records taken
    during inversion (merge plans, attention) then pair with the editing pass step by step,
    as FateZero pairs DDIM inversion and editing by timestep.

    A sampler that runs its schedule in pieces (the dual-rate sampler's branches) puts the
    full schedule under ``STEP_SCHEDULE_KEY``: steps are then numbered in it, so records and
    destination draws line up with an unsplit pass.
    """
    sigmas = options.get("sigmas")
    schedule = options.get(STEP_SCHEDULE_KEY)
    if schedule is None:
        schedule = options.get("sample_sigmas")
    if sigmas is None or schedule is None or len(schedule) == 0:
        return 0
    sigma = float(sigmas.reshape(-1)[0])
    schedule = schedule.detach().float().cpu()
    index = int(torch.argmin((schedule - sigma).abs()))
    if len(schedule) > 1 and schedule[-1] > schedule[0]:
        return max(0, len(schedule) - 2 - index)
    return index


def call_sigma(options: dict) -> float | None:
    """The noise level of this model call, or None outside a sampler."""
    sigmas = options.get("sigmas")
    return None if sigmas is None else float(sigmas.reshape(-1)[0])


def layer_of(options: dict) -> tuple:
    """The transformer block being run: (block name, number, transformer index), the key of
    ``set_model_attn1_replace`` and of every record."""
    block = options.get("block")
    index = options.get("block_index", 0)
    return (block[0], int(block[1]), int(index)) if block is not None else ("unknown", 0, int(index))


def block_of(options: dict) -> tuple | None:
    """(block name, number) of the running block, or None."""
    return options.get("block")


def token_grid(options: dict, tokens: int) -> tuple[int, int, int] | None:
    """(h, w, downsample) of a layer's token grid, or None when it cannot be told."""
    shape = options.get("activations_shape")
    original = options.get("original_shape")
    if shape is not None and len(shape) == 4 and shape[2] * shape[3] == tokens:
        h, w = int(shape[2]), int(shape[3])
    elif original is not None and len(original) == 4:
        # tomesd's way: the downsampling from the token count
        downsample = int(math.ceil(math.sqrt(original[2] * original[3] / tokens)))
        h, w = math.ceil(original[2] / downsample), math.ceil(original[3] / downsample)
        if h * w != tokens:
            return None
    else:
        return None
    downsample = max(1, round(original[2] / h)) if original is not None and len(original) == 4 else 1
    return h, w, downsample


def activation_grid(options: dict) -> tuple[int, int] | None:
    """(h, w) of the running block's activations, or None."""
    shape = options.get("activations_shape")
    return (int(shape[2]), int(shape[3])) if shape is not None and len(shape) == 4 else None


def cfg_groups(options: dict, batch: int) -> int:
    """How many CFG groups (cond, uncond, ...) of the same frames the batch holds."""
    groups = len(options.get("cond_or_uncond") or [0])
    return groups if groups >= 1 and batch % groups == 0 else 1


def frame_layout(batch: int, options: dict) -> FrameLayout:
    """The frames of a batch of ``batch`` items: CFG groups, and each item's absolute frame
    index under AnimateDiff-Evolved's or core's context windows (0..F-1 otherwise). When the
    options describe a batch that this is not, the layout says so in ``unread``."""
    groups = cfg_groups(options, batch)
    unread = None
    if groups != len(options.get("cond_or_uncond") or [0]):
        unread = f"a batch of {batch} is not {len(options['cond_or_uncond'])} CFG groups of equal size: read as one"
    count = batch // groups
    frames = context_window(options)
    if frames is not None and len(frames) != count:
        # A context window that does not describe this batch (e.g. a stale entry): the batch
        # is taken as the whole clip.
        unread = (f"the context window lists {len(frames)} frames but the batch holds {count}: frames "
                  f"numbered 0..{count - 1}")
        frames = None
    if frames is None:
        frames = range(count)
    return FrameLayout(groups, tuple(int(f) for f in frames), unread)


def context_window(options: dict) -> tuple[int, ...] | None:
    """The absolute frames of the context window this call runs on (AnimateDiff-Evolved's
    ``sub_idxs`` or core's ``context_window.index_list``: a UNet's frames, a video
    transformer's latent frames), or None when the call runs on the whole clip."""
    ad_params = options.get("ad_params")
    if isinstance(ad_params, dict) and ad_params.get("sub_idxs") is not None:
        return tuple(int(f) for f in ad_params["sub_idxs"])
    index = getattr(options.get("context_window"), "index_list", None)
    return tuple(int(f) for f in index) if index is not None else None


def attention_heads(options: dict) -> int:
    return int(options["n_heads"])


def attention_precision(options: dict):
    return options.get("attn_precision")


def batch_identity(batch_shape, options: dict) -> tuple:
    """What tells apart two model calls of one sampling run that must not share state: the
    batch shape (a crop has its own), the CFG groups the batch holds, in order (cond and
    uncond may run in one call or in two), and the absolute frames (context windows)."""
    layout = frame_layout(int(batch_shape[0]), options)
    return tuple(batch_shape), tuple(options.get("cond_or_uncond") or ()), layout.frames


def cond_batch_window(args: tuple, kwargs: dict) -> tuple[dict, tuple[int, ...] | None]:
    """A CALC_COND_BATCH wrapper's call ``(model, conds, x_in, timestep, model_options)``
    (comfy/samplers.py, 0.3.75): the running sampling run's transformer options (what every
    model call of the batch copies) and the context window the batch is of, or None. Core's
    handler runs one such call per window and leaves the last window in the options: a
    window that is not the batch's size along the handler's dimension is not this batch's."""
    values = dict(zip(("model", "conds", "x_in", "timestep", "model_options"), args), **kwargs)
    model_options = values["model_options"]
    options = model_options.setdefault("transformer_options", {})
    window = context_window(options)
    handler, x = model_options.get("context_handler"), values.get("x_in")
    dim = getattr(handler, "dim", None)
    if window is not None and dim is not None and (x is None or x.ndim <= dim or x.shape[dim] != len(window)):
        window = None
    return options, window


def context_window_schedule_length(model_patcher, latent: torch.Tensor) -> int | None:
    """The one schedule length (sigmas) that core's context windows on ``model_patcher`` can
    step a sampler through on ``latent``, or None where any length works or no window applies.

    Core 0.3.75's ``IndexListContextHandler.set_step`` compares the run's ``sample_sigmas`` with
    the call's timestep batch element by element: where the batch is the windowed frames (a
    UNet's frames, dim 0) only as many sigmas as frames pass, whatever the sampler. Probed on a
    copy of the handler, so a host that compares one timestep passes."""
    handler = model_patcher.model_options.get("context_handler")
    dim, length = getattr(handler, "dim", None), getattr(handler, "context_length", None)
    if not hasattr(handler, "set_step") or dim is None or length is None or latent.ndim <= dim \
            or latent.shape[dim] <= length:
        return None
    batch = int(latent.shape[0])
    schedule = torch.linspace(1.0, 0.0, batch + 2)  # not the batch's length; holds the timestep's sigma
    try:
        copy.copy(handler).set_step(torch.ones(batch), {"transformer_options": {"sample_sigmas": schedule}})
    except RuntimeError:
        return batch
    return None


# ---------------------------------------------------------------------------------------------
# A sampling run as an OUTER_SAMPLE wrapper receives it
# ---------------------------------------------------------------------------------------------
# CFGGuider.outer_sample(noise, latent_image, sampler, sigmas, denoise_mask, callback,
# disable_pbar, seed, latent_shapes=...) (comfy/samplers.py, 0.3.75)

_OUTER_SAMPLE_ARGS = ("noise", "latent_image", "sampler", "sigmas", "denoise_mask", "callback")


def _outer_sample_arg(args: tuple, kwargs: dict, name: str):
    index = _OUTER_SAMPLE_ARGS.index(name)
    return args[index] if len(args) > index else kwargs.get(name)


def run_latent(args: tuple, kwargs: dict):
    """The latent a sampling run starts from (its shape is the whole clip's, also under
    context windows)."""
    return _outer_sample_arg(args, kwargs, "latent_image")


def run_sigmas(args: tuple, kwargs: dict):
    """The schedule of the sampling run (descending for generation, ascending for inversion)."""
    return _outer_sample_arg(args, kwargs, "sigmas")


def with_step_callback(args: tuple, kwargs: dict, on_step) -> tuple[tuple, dict]:
    """The run's arguments with its sampler callback also calling ``on_step(i)`` after each
    sampling step i (samplers call it once per step, whatever they evaluate in between)."""
    index = _OUTER_SAMPLE_ARGS.index("callback")
    original = _outer_sample_arg(args, kwargs, "callback")

    def callback(i, *rest):
        on_step(i)
        if original is not None:
            return original(i, *rest)

    if len(args) > index:
        args = args[:index] + (callback,) + args[index + 1:]
    else:
        kwargs = dict(kwargs, callback=callback)
    return args, kwargs
