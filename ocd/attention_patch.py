"""ComfyUI glue for cross-frame attention and object-centric token merging.

The one module of this family that speaks ComfyUI's model-patching language; the math is in
ocd/cross_frame_attention.py and ocd/token_merge.py. Both features patch a *clone* of the
model and keep their settings in the clone's ``model_options["transformer_options"]``
(``ocd_cross_frame``, ``ocd_token_merge``), so two patched clones in one graph never see each
other's settings. The patch functions are stateless module functions: whatever one UNet
call needs travels in that call's ``extra_options``.

Patch points (comfy/ldm/modules/attention.py, BasicTransformerBlock):
- ``attn1_patch`` (token merging): merges the normed hidden states of each frame before the
  q/k/v projections (queries always; keys/values too when there is no cross-frame
  attention, tomesd-style), and leaves the merge plan in ``extra_options``;
- ``attn1_replace`` (cross-frame attention): gathers each frame's key/value pool from its
  reference frames, merges the pool across frames when token merging is on (the temporal
  axis is where most redundancy is), and runs ComfyUI's ``optimized_attention``;
- ``attn1_output_patch`` (token merging): unmerges the attention output back to every token.

Seam for attention recording/editing (FateZero-style fusion, issue 4): if
``transformer_options["ocd_attention_hook"]`` holds a callable, the replace calls
``hook(attend, q, k, v, call)`` instead of ``attend(q, k, v)`` and uses what it returns;
``call`` is an ``AttentionCall`` (layer, step, frames, reference frames, the query merge plan,
the key/value pool plans and ``key_bias``, the log size of each merged key, which a hook
computing its own softmax must add to the logits). See docs/attention.md.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from .cross_frame_attention import CROSS_FRAME_MODES, FrameLayout, cross_frame_attention, frame_layout, reference_frames
from .errors import OCDInputError
from .token_merge import MergePlan, TokenMergeSettings, plan_token_sets

CROSS_FRAME_KEY = "ocd_cross_frame"
TOKEN_MERGE_KEY = "ocd_token_merge"
ATTENTION_HOOK_KEY = "ocd_attention_hook"
STEP_SCHEDULE_KEY = "ocd_step_schedule"  # a sampler's full schedule when it runs it in pieces
_QUERY_MERGE_KEY = "ocd_query_merge"  # per block call, in extra_options: (plan, layout)
_WRAPPER_KEY = "ocd_token_merge"


@dataclass(frozen=True, eq=False)
class CrossFrameSettings:
    """OCD_CrossFrameAttention's settings (immutable; model clones share them)."""

    mode: str = "full"
    window: int = 2

    def __deepcopy__(self, memo):
        return self

    def validate(self) -> "CrossFrameSettings":
        if self.mode not in CROSS_FRAME_MODES:
            raise OCDInputError("mode", f"'{self.mode}' is not one of {CROSS_FRAME_MODES}")
        if self.window < 0:
            raise OCDInputError("window_size", f"{self.window} is negative")
        return self


@dataclass
class AttentionCall:
    """What the attention hook is told about the attention it is asked to compute."""

    layer: tuple
    step: int
    layout: FrameLayout
    refs: list[tuple[int, ...]] | None  # reference frames per frame (None: per-frame attention)
    query_plan: MergePlan | None  # per-frame merge of the queries, None when not merged
    pool_plans: list[MergePlan] = field(default_factory=list)  # key/value pool merges so far
    extra_options: dict = field(default_factory=dict)
    key_bias: torch.Tensor | None = None  # [B, 1, Nk] added to the logits (merged keys' log sizes)


# ---------------------------------------------------------------------------------------------
# Reading a UNet call's extra_options
# ---------------------------------------------------------------------------------------------

def current_step(extra_options: dict) -> int:
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
    sigmas = extra_options.get("sigmas")
    schedule = extra_options.get(STEP_SCHEDULE_KEY)
    if schedule is None:
        schedule = extra_options.get("sample_sigmas")
    if sigmas is None or schedule is None or len(schedule) == 0:
        return 0
    sigma = float(sigmas.reshape(-1)[0])
    schedule = schedule.detach().float().cpu()
    index = int(torch.argmin((schedule - sigma).abs()))
    if len(schedule) > 1 and schedule[-1] > schedule[0]:
        return max(0, len(schedule) - 2 - index)
    return index


def layer_key(extra_options: dict) -> tuple:
    block = extra_options.get("block")
    index = extra_options.get("block_index", 0)
    return (block[0], int(block[1]), int(index)) if block is not None else ("unknown", 0, int(index))


def token_grid(extra_options: dict, tokens: int) -> tuple[int, int, int] | None:
    """(h, w, downsample) of a layer's token grid, or None when it cannot be told."""
    shape = extra_options.get("activations_shape")
    original = extra_options.get("original_shape")
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


@dataclass
class _MergeContext:
    settings: TokenMergeSettings
    layout: FrameLayout
    grid: tuple[int, int]
    step: int
    layer: tuple


def _merge_context(extra_options: dict, batch: int, tokens: int) -> _MergeContext | None:
    settings = extra_options.get(TOKEN_MERGE_KEY)
    if settings is None or settings.ratio <= 0:
        return None
    grid = token_grid(extra_options, tokens)
    if grid is None or not settings.applies_to(extra_options.get("block"), grid[2]):
        return None
    return _MergeContext(settings, frame_layout(batch, extra_options), grid[:2],
                         current_step(extra_options), layer_key(extra_options))


# ---------------------------------------------------------------------------------------------
# The patch functions
# ---------------------------------------------------------------------------------------------

def merge_tokens_patch(n, context, value, extra_options):
    """attn1_patch: merge each frame's tokens (queries; keys/values too without cross-frame
    attention). n [B, N, C] -> [B, N', C]."""
    B, N, C = n.shape
    ctx = _merge_context(extra_options, B, N)
    if ctx is None:
        return n, context, value
    G, Fn = ctx.layout.groups, ctx.layout.count
    frames = ctx.layout.frames
    # One plan per frame, shared by the cond/uncond groups (the same tokens are merged in
    # both, and a recorded plan replays whatever the batching).
    metric = n.view(G, Fn, N, C).mean(0)
    plan = plan_token_sets(metric, [(f,) for f in frames], [(ctx.step, ctx.layer, f) for f in frames],
                           ctx.grid, ctx.step, ctx.settings)
    if plan.size == N:
        return n, context, value
    extra_options[_QUERY_MERGE_KEY] = (plan, ctx.layout)
    merged = plan.merge(n.view(G, Fn, N, C)).reshape(B, plan.size, C)
    if extra_options.get(CROSS_FRAME_KEY) is None and context is n and value is n:
        return merged, merged, merged
    # Cross-frame attention merges its key/value pool across frames; leave keys/values whole.
    return merged, context, value


def unmerge_output_patch(out, extra_options):
    """attn1_output_patch: copy each merged token's output back to its tokens."""
    state = extra_options.pop(_QUERY_MERGE_KEY, None)
    if state is None:
        return out
    plan, layout = state
    B, _, C = out.shape
    return plan.unmerge(out.view(layout.groups, layout.count, plan.size, C)).reshape(B, plan.num_tokens, C)


def cross_frame_attention_replace(q, k, v, extra_options):
    """attn1_replace: self-attention over reference frames' keys/values (projected q [B, Nq,
    C], k/v [B, Nk, C] -> [B, Nq, C]), with the key/value pool merged when token merging is on."""
    from comfy.ldm.modules.attention import optimized_attention

    heads = extra_options["n_heads"]
    precision = extra_options.get("attn_precision")

    def attend(q_, k_, v_, key_bias=None):
        if key_bias is not None:
            key_bias = key_bias.to(q_.dtype)
        return optimized_attention(q_.contiguous(), k_.contiguous(), v_.contiguous(), heads, mask=key_bias,
                                   attn_precision=precision, transformer_options=extra_options)

    cross = extra_options.get(CROSS_FRAME_KEY)
    hook = extra_options.get(ATTENTION_HOOK_KEY)
    B, Nk, _ = k.shape
    layout = frame_layout(B, extra_options)
    refs = reference_frames(layout.frames, cross.mode, cross.window) if cross is not None else None
    query_state = extra_options.get(_QUERY_MERGE_KEY)
    call = None
    if hook is not None:
        call = AttentionCall(layer_key(extra_options), current_step(extra_options), layout, refs,
                             query_state[0] if query_state else None, [], extra_options)

    def attend_hooked(q_, k_, v_, key_bias=None):
        if hook is None:
            return attend(q_, k_, v_, key_bias)
        call.key_bias = key_bias
        return hook(lambda q2, k2, v2: attend(q2, k2, v2, key_bias), q_, k_, v_, call)

    if cross is None:  # installed for the hook only: plain per-frame attention
        return attend_hooked(q, k, v)

    reduce_pool = None
    ctx = _merge_context(extra_options, B, Nk)
    if ctx is not None:
        def reduce_pool(k_pool, v_pool, pools):
            # k_pool, v_pool [G, n, P*Nk, C]; one plan per pool, shared by the groups
            token_sets = [tuple(layout.frames[p] for p in pool) for pool in pools]
            keys = [(ctx.step, ctx.layer, frames) for frames in token_sets]
            plan = plan_token_sets(k_pool.mean(0), token_sets, keys, ctx.grid, ctx.step, ctx.settings,
                                   protect_sources=ctx.settings.protect_keys)
            if call is not None:
                call.pool_plans.append(plan)
            # Proportional attention: a merged key weighs as many keys as it holds.
            key_bias = plan.log_sizes(k_pool.dtype).expand(k_pool.shape[0], -1, -1)  # [G, n, M]
            return plan.merge(k_pool), plan.merge(v_pool), key_bias

    return cross_frame_attention(q, k, v, layout, refs, attend_hooked, reduce_pool)


# ---------------------------------------------------------------------------------------------
# Installing the patches on a clone
# ---------------------------------------------------------------------------------------------

def transformer_blocks(model_patcher):
    """Yield ((block name, number, transformer index), BasicTransformerBlock) for every
    transformer block of the model's UNet: the keys ComfyUI's attn patches use."""
    from comfy.ldm.modules.attention import SpatialTransformer

    unet = model_patcher.model.diffusion_model
    parts = [("input", list(unet.input_blocks)), ("middle", [unet.middle_block]), ("output", list(unet.output_blocks))]
    for name, blocks in parts:
        for number, block in enumerate(blocks):
            if block is None:
                continue
            for module in block.modules():
                if isinstance(module, SpatialTransformer):
                    for index, tb in enumerate(module.transformer_blocks):
                        yield (name, number, index), tb


def self_attention_blocks(model_patcher) -> list[tuple[str, int, int]]:
    """(block name, number, transformer index) of every transformer block with self-attention
    in the model's UNet: the keys of ``set_model_attn1_replace``."""
    return [key for key, tb in transformer_blocks(model_patcher) if not getattr(tb, "disable_self_attn", False)]


def install_attention_replace(model_patcher) -> None:
    """Put ``cross_frame_attention_replace`` on every self-attention block of (a clone's)
    model_options. Idempotent; another pack's replace on a block is replaced, with a warning."""
    to = model_patcher.model_options["transformer_options"]
    current = to.get("patches_replace", {}).get("attn1", {})
    for name, number, index in self_attention_blocks(model_patcher):
        existing = current.get((name, number, index))
        if existing is cross_frame_attention_replace:
            continue
        if existing is not None:
            logging.warning("OCD: replacing another attn1 replace patch on block %s", (name, number, index))
        model_patcher.set_model_attn1_replace(cross_frame_attention_replace, name, number, index)


def apply_cross_frame_attention(model_patcher, mode: str = "full", window: int = 2):
    """A clone of ``model_patcher`` whose self-attention attends across frames."""
    settings = CrossFrameSettings(mode, int(window)).validate()
    patched = model_patcher.clone()
    patched.model_options["transformer_options"][CROSS_FRAME_KEY] = settings
    install_attention_replace(patched)
    return patched


def _pairing_wrapper(executor, noise, latent_image, sampler, sigmas, *args, **kwargs):
    """OUTER_SAMPLE wrapper: a recording pass starts from an empty record; a replaying pass
    refuses an empty one (its recording sampler has not run first)."""
    guider = executor.class_obj
    settings = guider.model_options.get("transformer_options", {}).get(TOKEN_MERGE_KEY)
    if settings is not None and settings.ratio > 0:
        if settings.pairing == "record":
            settings.store.clear(sigmas)
        elif settings.pairing == "replay" and len(settings.store) == 0:
            raise OCDInputError("merge_record", "is empty: the sampler using the recording OCD_TokenMerge "
                                "must run before this one (e.g. feed this sampler its LATENT output)")
    return executor(noise, latent_image, sampler, sigmas, *args, **kwargs)


def apply_token_merge(model_patcher, settings: TokenMergeSettings):
    """A clone of ``model_patcher`` whose self-attention merges tokens per ``settings``."""
    import comfy.patcher_extension

    settings.validate()
    patched = model_patcher.clone()
    to = patched.model_options["transformer_options"]
    to[TOKEN_MERGE_KEY] = settings
    patches = to.get("patches", {})
    if merge_tokens_patch not in patches.get("attn1_patch", []):
        patched.set_model_attn1_patch(merge_tokens_patch)
    if unmerge_output_patch not in patches.get("attn1_output_patch", []):
        patched.set_model_attn1_output_patch(unmerge_output_patch)
    wrapper_type = comfy.patcher_extension.WrappersMP.OUTER_SAMPLE
    patched.remove_wrappers_with_key(wrapper_type, _WRAPPER_KEY)
    patched.add_wrapper_with_key(wrapper_type, _WRAPPER_KEY, _pairing_wrapper)
    return patched


def number_steps_by(model_patcher, sigmas: torch.Tensor):
    """A clone whose attention patches number steps by their index in ``sigmas`` (the whole
    descending schedule) whichever sub-list of it a sampler runs."""
    patched = model_patcher.clone()
    patched.model_options["transformer_options"][STEP_SCHEDULE_KEY] = sigmas.detach().float().cpu()
    return patched


def restrict_to_crop(model_patcher, crop_mask: Callable[[torch.Tensor], torch.Tensor]):
    """A clone for denoising a spatial crop of the frames (the dual-rate foreground branch).

    Token merging's foreground mask is cut to the crop by ``crop_mask`` ([M, H, W] -> the
    part under the crop), and its pairing is off: recorded merge plans and attention maps
    are of whole frames, so the crop neither replays nor records them (the attention hook
    is removed). Returns the model itself when neither is set.
    """
    to = model_patcher.model_options.get("transformer_options", {})
    settings, hook = to.get(TOKEN_MERGE_KEY), to.get(ATTENTION_HOOK_KEY)
    if settings is None and hook is None:
        return model_patcher
    patched = model_patcher.clone()
    to = patched.model_options["transformer_options"]
    if settings is not None:
        mask = settings.foreground_mask
        to[TOKEN_MERGE_KEY] = dataclasses.replace(
            settings, foreground_mask=None if mask is None else crop_mask(mask), pairing="off", store=None)
    to.pop(ATTENTION_HOOK_KEY, None)
    return patched


def set_attention_hook(model_patcher, hook: Callable[..., Any] | None):
    """A clone whose attention calls ``hook(attend, q, k, v, call)`` (None removes it). The
    replace is installed on every self-attention block, also without cross-frame attention."""
    patched = model_patcher.clone()
    to = patched.model_options["transformer_options"]
    if hook is None:
        to.pop(ATTENTION_HOOK_KEY, None)
    else:
        to[ATTENTION_HOOK_KEY] = hook
        install_attention_replace(patched)
    return patched
