"""ComfyUI glue for cross-frame attention, object-centric token merging and the attention
hooks (record, fusion, cross-attention record).

The one module of the attention family that speaks ComfyUI's model-patching language; the
math is in cross_frame.py, token_merge.py and fusion.py, and everything read from ComfyUI's
options goes through ``ocd.host``. Every feature patches a *clone* of the model and keeps
its settings in the clone's options (``host.put_state``), so two patched clones in one graph
never see each other's settings. The patch functions are stateless module functions:
whatever one UNet call needs travels in that call's ``extra_options``.

Patch points (comfy/ldm/modules/attention.py, BasicTransformerBlock):
- ``attn1_patch`` (token merging): merges the normed hidden states of each frame before the
  q/k/v projections (queries always; keys/values too when there is no cross-frame
  attention, tomesd-style), and leaves the merge plan for the output patch;
- ``attn1_replace`` (cross-frame attention): gathers each frame's key/value pool from its
  reference frames, merges the pool across frames when token merging is on (the temporal
  axis is where most redundancy is), and runs ComfyUI's ``optimized_attention``;
- ``attn1_output_patch`` (token merging): unmerges the attention output back to every token;
- ``attn2_patch`` (cross-attention record): reads, changes nothing.

Seam for attention recording/editing (FateZero-style fusion): if the options hold a hook
(``host.ATTENTION_HOOK_KEY``), the replace calls ``hook(attend, q, k, v, call)`` instead of
``attend(q, k, v)`` and uses what it returns; ``call`` is a ``cross_frame.AttentionCall``
(layer, step, heads, frames, token grid, reference frames, which frames each attention row
holds, the query merge plan, the key/value pool plans and ``key_bias``, the log size of each
merged key, which a hook computing its own softmax must add to the logits).

Under context windows (core's Context Windows nodes), a CALC_COND_BATCH wrapper hands the
hook and a video transformer's cross-attention record the window of each batch they run in
(``in_window``): records are kept per window, and an edit fuses each window's own maps.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable

import torch

from .. import comfy_dit, comfy_report, host
from ..comfy_dit import TOKEN_MERGE_NODE
from ..errors import OCDInputError
from ..masks import grid
from ..report import NodeRef, layer_name
from ..shared import SharedAcrossClones
from .cross_frame import AttentionCall, CrossFrameSettings, cross_frame_attention, reference_frames
from .fusion import CrossAttentionRecord
from .token_merge import MergePlan, TokenMergeSettings, plan_token_sets

_QUERY_MERGE = "ocd_query_merge"  # stashed per block call: (plan, layout) from attn1_patch to output patch
_PAIRING_WRAPPER_KEY = "ocd_token_merge"
_WINDOW_WRAPPER_KEY = "ocd_attention_window"

log = logging.getLogger("ocd.attention")

# Report parts of patches made without a node (library use)
CROSS_FRAME_NODE = NodeRef("Cross-Frame Attention (OCD)")


@dataclasses.dataclass
class _MergeContext:
    settings: TokenMergeSettings
    layout: Any
    grid: tuple[int, int]
    step: int
    layer: tuple
    report: Any  # the run's RunReport or None

    @property
    def node(self) -> NodeRef:
        return self.settings.node or TOKEN_MERGE_NODE

    def objects(self, frames: tuple) -> torch.Tensor | None:
        """Boolean [len(frames), h*w]: the object's tokens of these frames (for the report)."""
        return self.report.object_tokens(self.settings.foreground_mask, frames, *self.grid, grid.token_weights)

    def count(self, plan: MergePlan, token_sets: list[tuple], pool: bool = False) -> None:
        if self.report is None:
            return
        objects = None
        if self.settings.foreground_mask is not None:
            by_frame = self.objects(self.layout.frames)
            row_of = {f: i for i, f in enumerate(self.layout.frames)}
            objects = torch.stack([torch.cat([by_frame[row_of[f]] for f in frames]) for frames in token_sets])
        self.report.merged(self.node, self.layer, self.grid, plan, objects, pool)


def _merge_context(options: dict, batch: int, tokens: int) -> _MergeContext | None:
    settings = host.call_state(options, host.TOKEN_MERGE_KEY)
    if settings is None or settings.ratio <= 0:
        return None
    report = host.call_state(options, host.RUN_REPORT_KEY)
    token_grid = host.token_grid(options, tokens)
    if token_grid is None:
        if report is not None and settings.applies_to(host.block_of(options), 1):
            report.warn(settings.node or TOKEN_MERGE_NODE, f"layer {host.layer_of(options)} not merged: its token "
                        f"grid cannot be told from {tokens} tokens")
        return None
    if not settings.applies_to(host.block_of(options), token_grid[2]):
        return None
    layout = host.frame_layout(batch, options)
    if report is not None and layout.unread:
        report.warn(settings.node or TOKEN_MERGE_NODE, layout.unread)
    return _MergeContext(settings, layout, token_grid[:2], host.step_index(options), host.layer_of(options), report)


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
    ctx.count(plan, [(f,) for f in frames])
    if plan.size == N:
        return n, context, value
    host.stash(extra_options, _QUERY_MERGE, (plan, ctx.layout))
    merged = plan.merge(n.view(G, Fn, N, C)).reshape(B, plan.size, C)
    if host.call_state(extra_options, host.CROSS_FRAME_KEY) is None and context is n and value is n:
        return merged, merged, merged
    # Cross-frame attention merges its key/value pool across frames; leave keys/values whole.
    return merged, context, value


def unmerge_output_patch(out, extra_options):
    """attn1_output_patch: copy each merged token's output back to its tokens."""
    state = host.take(extra_options, _QUERY_MERGE)
    if state is None:
        return out
    plan, layout = state
    B, _, C = out.shape
    return plan.unmerge(out.view(layout.groups, layout.count, plan.size, C)).reshape(B, plan.num_tokens, C)


def cross_frame_attention_replace(q, k, v, extra_options):
    """attn1_replace: self-attention over reference frames' keys/values (projected q [B, Nq,
    C], k/v [B, Nk, C] -> [B, Nq, C]), with the key/value pool merged when token merging is on."""
    from comfy.ldm.modules.attention import optimized_attention

    heads = host.attention_heads(extra_options)
    precision = host.attention_precision(extra_options)

    def attend(q_, k_, v_, key_bias=None):
        if key_bias is not None:
            key_bias = key_bias.to(q_.dtype)
        return optimized_attention(q_.contiguous(), k_.contiguous(), v_.contiguous(), heads, mask=key_bias,
                                   attn_precision=precision, transformer_options=extra_options)

    cross = host.call_state(extra_options, host.CROSS_FRAME_KEY)
    hook = host.call_state(extra_options, host.ATTENTION_HOOK_KEY)
    report = host.call_state(extra_options, host.RUN_REPORT_KEY)
    B, Nk, _ = k.shape
    layout = host.frame_layout(B, extra_options)
    refs = reference_frames(layout.frames, cross.mode, cross.window) if cross is not None else None
    if cross is not None and report is not None:
        _report_cross_frame(report, cross, layout, refs, Nk, host.layer_of(extra_options),
                            host.activation_grid(extra_options))
    query_state = extra_options.get(_QUERY_MERGE)
    call = None
    if hook is not None:
        call = AttentionCall(host.layer_of(extra_options), host.step_index(extra_options), heads, layout,
                             host.activation_grid(extra_options), refs,
                             query_plan=query_state[0] if query_state else None, report=report)

    def attend_hooked(q_, k_, v_, key_bias=None, rows=None):
        if hook is None:
            return attend(q_, k_, v_, key_bias)
        call.key_bias = key_bias
        call.query_rows = rows if rows is not None else [(p,) for p in range(layout.count)]
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
            ctx.count(plan, token_sets, pool=True)
            if call is not None:
                call.pool_plans.append(plan)
            # Proportional attention: a merged key weighs as many keys as it holds.
            key_bias = plan.log_sizes(k_pool.dtype).expand(k_pool.shape[0], -1, -1)  # [G, n, M]
            return plan.merge(k_pool), plan.merge(v_pool), key_bias

    return cross_frame_attention(q, k, v, layout, refs, attend_hooked, reduce_pool)


def _report_cross_frame(report, cross: CrossFrameSettings, layout, refs, keys_per_frame: int, layer: tuple,
                        token_grid) -> None:
    node = cross.node or CROSS_FRAME_NODE
    pools = report.section(node).facts.setdefault("kv_pool_tokens", {})
    pools[layer_name(layer, token_grid)] = max(len(r) for r in refs) * keys_per_frame
    if layout.count == 1:
        report.warn(node, "one frame in the batch: there is no other frame to attend to (plain self-attention); "
                    "load more frames or a longer context window")
    if layout.unread:
        report.warn(node, layout.unread)


class CrossAttentionRecorder(SharedAcrossClones):
    """attn2_patch: records head-averaged cross-attention into a ``CrossAttentionRecord``
    without changing anything. A patch, not a replace: replace slots are per block and other
    packs (IP-Adapter, ...) use them. It recomputes q and k with the block's own projections,
    a small cost next to the attention itself."""

    def __init__(self, record: CrossAttentionRecord, modules: dict[tuple, torch.nn.Module]):
        self.record = record
        self.modules = modules  # layer key -> the block's attn2 module

    def __call__(self, n, context, value, extra_options):
        layer = host.layer_of(extra_options)
        module = self.modules.get(layer)
        grid = host.activation_grid(extra_options)
        if module is None or grid is None or not self.record.wants(n.shape[1]):
            return n, context, value
        per_group = n.shape[0] // host.cfg_groups(extra_options, n.shape[0])
        self.record.add(host.step_index(extra_options), layer, grid, module.to_q(n[:per_group]),
                        module.to_k(context[:per_group]), host.attention_heads(extra_options),
                        window=host.context_window(extra_options))
        return n, context, value


# ---------------------------------------------------------------------------------------------
# Installing the patches on a clone
# ---------------------------------------------------------------------------------------------

def install_attention_replace(model_patcher) -> None:
    """Put ``cross_frame_attention_replace`` on every self-attention block of (a clone's)
    options. Idempotent; another pack's replace on a block is replaced, with a warning."""
    for key in host.self_attention_keys(model_patcher):
        existing = host.attn1_replace_of(model_patcher, key)
        if existing is cross_frame_attention_replace:
            continue
        if existing is not None:
            log.warning("OCD: replacing another attn1 replace patch on block %s", key)
        model_patcher.set_model_attn1_replace(cross_frame_attention_replace, *key)


def apply_cross_frame_attention(model_patcher, mode: str = "full", window: int = 2, node: NodeRef | None = None):
    """A clone of ``model_patcher`` whose self-attention attends across frames."""
    settings = CrossFrameSettings(mode, int(window), node).validate()
    if host.family_of(model_patcher).is_transformer:  # refuses models the pack cannot patch, by name
        raise OCDInputError("model", "is a video transformer: its self-attention already spans every frame "
                            "(full 3D attention). Connect it to Object-Centric Token Merge (OCD) directly")
    patched = model_patcher.clone()
    host.put_state(patched, host.CROSS_FRAME_KEY, settings)
    install_attention_replace(patched)
    comfy_report.install(patched)
    return patched


def _pairing_wrapper(executor, noise, latent_image, sampler, sigmas, *args, **kwargs):
    """OUTER_SAMPLE wrapper: a recording pass starts from an empty record; a replaying pass
    refuses an empty one (its recording sampler has not run first)."""
    settings = host.guider_state(executor.class_obj, host.TOKEN_MERGE_KEY)
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
    family = host.family_of(model_patcher)
    patched = model_patcher.clone()
    wrapper_type = comfy.patcher_extension.WrappersMP.OUTER_SAMPLE
    if family.is_transformer:  # merged in whole blocks or in self-attention (ocd/comfy_dit.py)
        host.put_state(patched, host.TOKEN_MERGE_KEY, dataclasses.replace(settings, transformer=True))
        comfy_dit.install(patched)
        patched.remove_wrappers_with_key(wrapper_type, _PAIRING_WRAPPER_KEY)
        patched.add_wrapper_with_key(wrapper_type, _PAIRING_WRAPPER_KEY, _pairing_wrapper)
        return patched
    host.put_state(patched, host.TOKEN_MERGE_KEY, settings)
    if not host.has_patch(patched, "attn1_patch", merge_tokens_patch):
        patched.set_model_attn1_patch(merge_tokens_patch)
    if not host.has_patch(patched, "attn1_output_patch", unmerge_output_patch):
        patched.set_model_attn1_output_patch(unmerge_output_patch)
    patched.remove_wrappers_with_key(wrapper_type, _PAIRING_WRAPPER_KEY)
    patched.add_wrapper_with_key(wrapper_type, _PAIRING_WRAPPER_KEY, _pairing_wrapper)
    comfy_report.install(patched)
    return patched


def number_steps_by(model_patcher, sigmas: torch.Tensor):
    """A clone whose attention patches number steps by their index in ``sigmas`` (the whole
    descending schedule) whichever sub-list of it a sampler runs."""
    patched = model_patcher.clone()
    host.put_state(patched, host.STEP_SCHEDULE_KEY, sigmas.detach().float().cpu())
    return patched


def restrict_to_crop(model_patcher, crop_mask: Callable[[torch.Tensor], torch.Tensor]):
    """A clone for denoising a spatial crop of the frames (the dual-rate foreground branch).

    Token merging's foreground mask is cut to the crop by ``crop_mask`` ([M, H, W] -> the
    part under the crop), and its pairing is off: recorded merge plans and attention maps
    are of whole frames, so the crop neither replays nor records them (the attention hook
    is removed). Returns the model itself when neither is set.
    """
    settings = host.state_of(model_patcher, host.TOKEN_MERGE_KEY)
    hook = host.state_of(model_patcher, host.ATTENTION_HOOK_KEY)
    if settings is None and hook is None:
        return model_patcher
    patched = model_patcher.clone()
    if settings is not None:
        mask = settings.foreground_mask
        host.put_state(patched, host.TOKEN_MERGE_KEY, dataclasses.replace(
            settings, foreground_mask=None if mask is None else crop_mask(mask), pairing="off", store=None))
    host.pop_state(patched, host.ATTENTION_HOOK_KEY)
    return patched


def _in_context_window(executor, *args, **kwargs):
    """CALC_COND_BATCH wrapper: under context windows, the attention hook and the cross-attention
    record of the batch's model calls are told the batch's window (``in_window``). Core's
    handler runs this once per window, outside every model wrapper (Clockwork feature reuse
    runs attention without the network's own forward)."""
    options, window = host.cond_batch_window(args, kwargs)
    if window is None:
        return executor(*args, **kwargs)
    targets = {key: host.call_state(options, key) for key in (host.ATTENTION_HOOK_KEY,
                                                               host.CROSS_ATTENTION_RECORD_KEY)}
    targets = {key: t for key, t in targets.items() if hasattr(t, "in_window")}
    for key, target in targets.items():
        options[key] = target.in_window(window)
    try:
        return executor(*args, **kwargs)
    finally:
        options.update(targets)


def _install_window_wrapper(model_patcher) -> None:
    import comfy.patcher_extension

    kind = comfy.patcher_extension.WrappersMP.CALC_COND_BATCH
    model_patcher.remove_wrappers_with_key(kind, _WINDOW_WRAPPER_KEY)
    model_patcher.add_wrapper_with_key(kind, _WINDOW_WRAPPER_KEY, _in_context_window)


def set_attention_hook(model_patcher, hook: Callable[..., Any] | None):
    """A clone whose attention calls ``hook(attend, q, k, v, call)`` (None removes it). The
    replace is installed on every self-attention block, also without cross-frame attention."""
    patched = model_patcher.clone()
    if hook is None:
        host.pop_state(patched, host.ATTENTION_HOOK_KEY)
    else:
        host.put_state(patched, host.ATTENTION_HOOK_KEY, hook)
        _install_window_wrapper(patched)
        if host.family_of(patched).is_transformer:  # the blocks' self-attention (ocd/comfy_dit.py)
            comfy_dit.install(patched)
        else:
            install_attention_replace(patched)
    return patched


def record_cross_attention(model_patcher, record: CrossAttentionRecord):
    """A clone that records its cross-attention into ``record`` while sampling."""
    patched = model_patcher.clone()
    family = host.family_of(patched)
    if family.is_transformer:  # per latent frame, from the blocks' text attention (ocd/comfy_dit.py)
        record.temporal_scale = family.temporal_scale
        host.put_state(patched, host.CROSS_ATTENTION_RECORD_KEY, record)
        _install_window_wrapper(patched)
        comfy_dit.install(patched)
        return patched
    patched.set_model_attn2_patch(CrossAttentionRecorder(record, host.cross_attention_modules(patched)))
    return patched
