"""ComfyUI glue for video transformers (DiTs, e.g. Wan): the one way the pack's token features
reach a transformer's blocks.

Object-centric token merging (``OCD_TokenMerge``, the attention family) and the token-subset
steps of object-centric sampling (``OCD_DualRateKSampler``, the sampling family) both change
which tokens a block runs on; on a video transformer they act through the same three keyed
pieces, installed on a clone by ``install``:

- a block patch on every block (the family's, ``ocd.host.models``): it asks the call's
  ``_Call`` which tokens the block runs on and what its self-attention reads, and runs the
  block so (``family.run_block``); without a ``_Call`` the block runs as it always does;
- a DIFFUSION_MODEL wrapper: reads the call's token grid (frames, absolute under context
  windows), makes its ``_Call`` (the step's merge plan, whether it is a full or a subset step
  and the keys/values it keeps or reads), and on a subset step blends the new output of the
  object's tokens with the last full step's output for the rest;
- an OUTER_SAMPLE wrapper: the sampling run's ``_Run`` (what full steps keep for subset
  steps, per batch identity and window), dropped when the run ends.

Step caches (core EasyCache, LazyCache) must see a subset step's blended output, never its raw
one: the dual-rate sampler installs these wrappers on its own clone, after every patch of
the model it was given, so its DIFFUSION_MODEL wrapper is the innermost (wrappers run in the
order their keys were added, ``install`` re-adds its keys last).

Per block, in order: a subset step runs the subset (``ocd.tokens.TokenSubset``), reading the
kept keys/values of the other tokens; a full step merges where the settings ask
(``MergedTokens`` for "tokens", a merged key/value pool for "keys_values"); a full step of a
dual-rate run keeps the keys/values of the tokens outside the subset. The merge plan is made
once per call, at its first merged block, from that block's input, over the whole
spatio-temporal pool (``token_merge.plan_token_sets``, one token set of all the call's
frames), so sources merge across frames as well.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from . import comfy_report, host
from .errors import OCDInputError
from .attention.cross_frame import AttentionCall, FrameLayout
from .attention.token_merge import TokenMergeSettings, plan_token_sets
from .masks import grid as mask_grid
from .report import NodeRef
from .shared import SharedAcrossClones
from .tokens import KeptKeys, MergedTokens, TokenSubset, attention_pool

_WRAPPER_KEY = "ocd_dit"
TOKEN_MERGE_NODE = NodeRef("Object-Centric Token Merge (OCD)")


@dataclass(frozen=True, eq=False)
class TokenSteps(SharedAcrossClones):
    """A dual-rate run's token-step plan (``ocd.sampling.dual_rate.TokenStepPlan``) and the node
    it reports to, in the clone the run samples."""

    plan: object
    node: NodeRef


@dataclass
class _Kept:
    """What the last full step of one batch identity left for subset steps."""

    output: torch.Tensor  # the network's output [B, C, T, H, W]
    keys: dict[int, KeptKeys] = field(default_factory=dict)  # block -> keys/values outside the subset

    def nbytes(self) -> int:
        return self.output.numel() * self.output.element_size() + sum(k.nbytes() for k in self.keys.values())


class _Run:
    """One sampling run's token state: the latent's frame count and what full steps kept."""

    def __init__(self, latent_frames: int | None):
        self.latent_frames = latent_frames
        self.kept: dict[tuple, _Kept] = {}
        self.weights: dict[tuple, torch.Tensor | None] = {}  # object weights per grid, for the run

    def kept_bytes(self) -> int:
        return sum(k.nbytes() for k in self.kept.values())


# ---------------------------------------------------------------------------------------------
# One call
# ---------------------------------------------------------------------------------------------

class _Call:
    """What one call of the transformer does to its blocks (put in the call's options for the
    block patches)."""

    def __init__(self, grid, groups: int, step: int, report, merge: TokenMergeSettings | None,
                 object_weights: torch.Tensor | None, steps: TokenSteps | None = None,
                 subset: torch.Tensor | None = None, context: _Kept | None = None, keep: torch.Tensor | None = None,
                 hook=None, cross=None):
        self.grid, self.groups, self.step, self.report = grid, groups, step, report
        # the attention hook (record / fusion) and the cross-attention record; a subset step
        # runs the object's own attention, as the blend mask asks of the object (see module doc)
        self.hook = hook if subset is None else None
        self.cross = cross if subset is None else None
        self.merge = merge
        self.object_weights = object_weights  # [T*h*w] video tokens' object weights, or None
        self.steps = steps  # the dual-rate run's plan and node, or None
        self.subset = subset  # [T*h*w] bool: the video tokens a subset step runs, or None (a full step)
        self.context = context  # what the last full step kept (subset steps)
        self.keep = keep  # [T*h*w] bool: the video tokens whose keys/values a full step keeps, or None
        self.kept: dict[int, KeptKeys] = {}  # block -> what this (full) step keeps
        self.plan = None  # the merge plan, one row per video, made at the first merged block
        self.objects = None  # [videos, L] bool: the object's tokens, for the report
        self.token_blocks = 0  # tokens run, summed over the blocks (per batch row)
        self.blocks = 0

    @property
    def merge_node(self) -> NodeRef:
        return self.merge.node or TOKEN_MERGE_NODE

    def _warn(self, message: str) -> None:
        if self.report is not None and (self.merge is not None or self.steps is not None):
            self.report.warn(self.merge_node if self.merge is not None else self.steps.node, message)

    def _prefix(self, tokens: int) -> int | None:
        """How many tokens before the video's a block holds (a reference image's), or None when
        the block holds fewer than the call's video tokens."""
        prefix = tokens - self.grid.video_tokens
        if prefix < 0:
            self._warn(f"a block of {tokens} tokens is not the call's {self.grid.video_tokens} video tokens: "
                       "left as it is")
            return None
        return prefix

    def _with_prefix(self, video: torch.Tensor, prefix: int, value: bool) -> torch.Tensor:
        return torch.cat([video.new_full((prefix,), value), video]) if prefix else video

    def _merge_plan(self, x: torch.Tensor, prefix: int):
        """The call's merge plan from the first merged block's input ``x`` [B, L, C]: one row per
        video of the batch (the CFG groups of a video share it)."""
        if self.plan is None:
            B, L, C = x.shape
            G, n = self.groups, B // self.groups
            frames = self.grid.frames
            metric = x[:, prefix:].reshape(G, n, L - prefix, C).mean(0)
            keys = [(self.step, ("dit",), frames)] * n
            weights = None
            if self.object_weights is not None:
                cache = self.object_weights.view(len(frames), -1)
                row = {f: i for i, f in enumerate(frames)}
                weights = lambda fs, h, w, device: cache[[row[f] for f in fs]].to(device)  # noqa: E731
            plan = plan_token_sets(metric, [frames] * n, keys, (self.grid.height, self.grid.width), self.step,
                                   self.merge, frame_weights=weights)
            self.plan = plan.with_prefix(prefix)
            objects = None
            if self.object_weights is not None:
                objects = self._with_prefix(self.object_weights >= 1.0, prefix, False).expand(n, -1)
                self._check_object_kept(objects)
            self.objects = objects
        return self.plan

    def _check_object_kept(self, objects: torch.Tensor) -> None:
        """Say so when merge_ratio asks for more merges than the background's tokens allow."""
        merged = int((objects & self.plan.merged_away()).sum())
        if merged == 0 or self.report is None:
            return
        share = float(objects[0].float().mean())
        most = (1.0 - share) * (1.0 - 1.0 / (self.merge.sx * self.merge.sy))
        # one warning per run: the counts of each call are in the merge stats (object_unmerged_share)
        self.report.warn(self.merge_node, f"merge_ratio {self.merge.ratio:g} merges more tokens than the background "
                         f"has to give ({share:.0%} of the tokens are the object's): some of the object's tokens "
                         f"were merged; at most about {most:.2f} keeps the object whole")

    def run_block(self, family, index: int, args: dict, run) -> torch.Tensor:
        x = family.block_tokens(args)
        B, L, _ = x.shape
        prefix = self._prefix(L)
        if prefix is None:
            return family.run_block(args, run)
        tokens, kv_plan = None, None
        if self.subset is not None:
            index_ = torch.nonzero(self._with_prefix(self.subset, prefix, True)).flatten()
            tokens = TokenSubset(index_.to(x.device))
        elif self.merge is not None and self.merge.merges_block(index):
            plan = self._merge_plan(x, prefix)
            if self.report is not None:
                self.report.merged(self.merge_node, ("block", index),
                                   (len(self.grid.frames), self.grid.height, self.grid.width), plan, self.objects)
            rows = plan.repeat_rows(self.groups)
            if self.merge.dit_merge == "tokens":
                tokens = MergedTokens(rows)
            else:
                kv_plan = rows
        context = self.context.keys.get(index) if self.context is not None else None
        if self.subset is not None and context is None and self.report is not None:
            self.report.warn(self.steps.node, f"block {index}: no keys/values kept from a full step; the object's "
                             "tokens attended among themselves")
        keep = self._with_prefix(self.keep, prefix, False) if self.keep is not None else None
        self.blocks += 1
        self.token_blocks += tokens.count() if tokens is not None else L
        hook = self.hook
        cross = self.cross if self.cross is not None and tokens is None and self.cross.wants(L) else None
        if tokens is None and kv_plan is None and keep is None and hook is None:
            return family.run_block(args, run, cross_attention=self._cross_recorder(cross, index, prefix))
        positions = tokens.positions(B) if tokens is not None else torch.arange(L, device=x.device).expand(B, L)
        bias = tokens.key_bias() if tokens is not None else None
        if bias is not None and bool((bias == 0).all()):
            bias = None

        def self_attention(q, k, v, heads, attend):
            k2, v2, key_bias, kept = attention_pool(k, v, positions, bias, kv_plan, keep, context)
            if kept is not None:
                self.kept[index] = kept
            if key_bias is not None and bool((key_bias == 0).all()):
                key_bias = None
            if hook is None:
                return attend(q, k2, v2, key_bias)
            call = self._attention_call(index, heads, B, prefix, tokens, key_bias)
            return hook(lambda q_, k_, v_: attend(q_, k_, v_, key_bias), q, k2, v2, call)

        return family.run_block(args, run, tokens, self_attention, self._cross_recorder(cross, index, prefix))

    def _attention_call(self, index: int, heads: int, batch: int, prefix: int, tokens, key_bias) -> AttentionCall:
        """What an attention hook (record, fusion) is told about block ``index``'s self-attention:
        one attention row per video of a CFG group, holding all of its (merged) tokens."""
        videos = batch // self.groups

        def query_weights(mask, device) -> torch.Tensor:  # [videos, Nq]
            g = self.grid
            w = mask_grid.latent_token_weights(mask, g.frames, g.latent_frames, g.temporal_scale, g.height,
                                               g.width, device, "blend_mask").reshape(-1)
            w = self._with_prefix(w, prefix, 0.0).to(device)  # a reference image's tokens: not the object
            w = w.view(1, -1, 1).expand(batch, -1, 1)
            if tokens is not None:
                w = tokens.reduce(w.to(torch.float32))
            return w[:videos, :, 0]

        layout = FrameLayout(self.groups, tuple(range(videos)))
        return AttentionCall(("block", index, 0), self.step, heads, layout, (self.grid.height, self.grid.width),
                             None, query_rows=[(p,) for p in range(videos)], key_bias=key_bias, report=self.report,
                             query_weights=query_weights)

    def _cross_recorder(self, record, index: int, prefix: int):
        """``cross_attention(q, k, heads)`` recording block ``index``'s text cross-attention (the
        block's last attention call; earlier ones, CLIP image tokens, are overwritten) for the
        first video of the conditional group, per latent frame; None without a record."""
        if record is None:
            return None
        g = self.grid

        def cross_attention(q, k, heads):
            frames = len(g.frames)
            queries = q[0, prefix:].reshape(frames, g.height * g.width, q.shape[-1])
            record.add(self.step, ("block", index, 0), (g.height, g.width), queries,
                       k[:1].expand(frames, -1, -1), heads)

        return cross_attention


# ---------------------------------------------------------------------------------------------
# The wrappers
# ---------------------------------------------------------------------------------------------

def _block(family, index: int, args: dict, run) -> torch.Tensor:
    """The block patch: the call's token work, or the block as it is."""
    call = host.call_state(family.block_options(args), host.DIT_CALL_KEY)
    if call is None:
        return family.run_block(args, run)
    return call.run_block(family, index, args, run)


def _object_weights(run: _Run | None, mask, grid) -> torch.Tensor | None:
    """``[T*h*w]``: the object weight of the call's video tokens (the pack's mask-to-grid rule
    over each latent frame's video frames), cached for the run."""
    if mask is None:
        return None
    key = (id(mask), grid.frames, grid.height, grid.width, grid.latent_frames)
    if run is not None and key in run.weights:
        return run.weights[key]
    weights = mask_grid.latent_token_weights(mask, grid.frames, grid.latent_frames, grid.temporal_scale,
                                             grid.height, grid.width).reshape(-1)
    if run is not None:
        run.weights[key] = weights
    return weights


def _subset_tokens(plan, grid) -> torch.Tensor:
    """``[T*h*w]`` bool: the plan's subset on the call's frames."""
    return plan.subset[list(grid.frames)].reshape(-1)


def _blend(plan, grid, out: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """A subset step's output: the blend weights' share of the new output, the rest kept."""
    m = plan.weights[list(grid.frames)].to(out)  # [T, 1, H, W]
    m = m.permute(1, 0, 2, 3).unsqueeze(0)[..., : out.shape[-2], : out.shape[-1]]  # [1, 1, T, H, W]
    return m * out + (1.0 - m) * kept.to(out)


def _diffusion_model(executor, *args, **kwargs):
    """DIFFUSION_MODEL wrapper: the call's ``_Call``, and a subset step's blended output."""
    call = host.diffusion_call(args, kwargs)
    options = call.options
    merge = host.call_state(options, host.TOKEN_MERGE_KEY)
    if merge is not None and merge.ratio <= 0:
        merge = None
    steps: TokenSteps | None = host.call_state(options, host.TOKEN_STEPS_KEY)
    hook = host.call_state(options, host.ATTENTION_HOOK_KEY)
    cross = host.call_state(options, host.CROSS_ATTENTION_RECORD_KEY)
    if merge is None and steps is None and hook is None and cross is None:
        return executor(*args, **kwargs)
    network = executor.class_obj
    family = host.network_family(network)
    run: _Run | None = host.call_state(options, host.DIT_RUN_KEY)
    report = host.call_state(options, host.RUN_REPORT_KEY)
    grid = family.token_grid(network, call, run.latent_frames if run is not None else None)
    if isinstance(grid, str):
        if report is not None:
            for node in ([merge.node or TOKEN_MERGE_NODE] if merge else []) + ([steps.node] if steps else []):
                report.warn(node, f"not applied to a call: {grid}")
        if hook is not None or cross is not None:
            raise OCDInputError("model", f"cannot record or fuse its attention in this call: {grid}")
        return executor(*args, **kwargs)
    if merge is not None and report is not None:
        missing = merge.missing_blocks(family.block_count(network))
        if missing:
            report.warn(merge.node or TOKEN_MERGE_NODE, f"dit_blocks {', '.join(missing)}: this model has "
                        f"{family.block_count(network)} blocks (0-{family.block_count(network) - 1})")

    step = host.step_index(options)
    identity = (host.batch_identity(call.x.shape, options), grid.frames)
    subset = keep = context = None
    phase = None
    if steps is not None and run is not None and steps.plan.mode != "ordinary":
        plan = steps.plan
        phase = "joint" if step >= plan.schedule.blend_index else "background"
        kept = run.kept.get(identity)
        if plan.is_subset_step(step) and kept is not None:
            phase = "foreground"
            subset = _subset_tokens(plan, grid)
            context = kept
            if not bool(subset.any()):  # nothing of the object here: the kept output stands
                if report is not None:
                    report.enter_phase(phase)
                    report.ran_tokens(0)
                return kept.output.clone()
        elif step < plan.schedule.blend_index:
            keep = ~_subset_tokens(plan, grid)
    if report is not None and phase is not None:
        report.enter_phase(phase)
    groups = host.cfg_groups(options, call.x.shape[0])
    mask = merge.foreground_mask if merge is not None and merge.protection > 0 else None
    state = _Call(grid, groups, step, report, merge, _object_weights(run, mask, grid), steps, subset, context, keep,
                  hook, cross)
    options[host.DIT_CALL_KEY] = state
    try:
        out = executor(*args, **kwargs)
    finally:
        options.pop(host.DIT_CALL_KEY, None)
    if report is not None:
        report.ran_tokens(state.token_blocks / state.blocks if state.blocks else 0)
    if subset is not None:
        return _blend(steps.plan, grid, out, context.output)
    if keep is not None and run is not None:
        run.kept[identity] = _Kept(out.detach().clone(), state.kept)
        if report is not None:
            report.note(steps.node, kept_for_subset_steps={"batches": len(run.kept),
                                                           "MiB": round(run.kept_bytes() / 2 ** 20, 1)})
    return out


def _sampling_run(executor, *args, **kwargs):
    """OUTER_SAMPLE wrapper: the run's token state, dropped when the run ends."""
    guider = executor.class_obj
    options = host.guider_options(guider)
    if options.get(host.TOKEN_MERGE_KEY) is None and options.get(host.TOKEN_STEPS_KEY) is None:
        return executor(*args, **kwargs)
    latent = host.run_latent(args, kwargs)
    frames = int(latent.shape[2]) if latent is not None and latent.ndim == 5 else None
    options[host.DIT_RUN_KEY] = _Run(frames)
    try:
        return executor(*args, **kwargs)
    finally:
        options.pop(host.DIT_RUN_KEY, None)


def install(model_patcher) -> None:
    """Put the block patches and both wrappers on (a clone of) a video transformer; idempotent.
    The wrappers' keys are added anew, after every other pack's: innermost."""
    import comfy.patcher_extension

    family = host.family_of(model_patcher)
    family.install_block_patch(model_patcher, _block)
    wrappers = comfy.patcher_extension.WrappersMP
    for kind, wrapper in ((wrappers.OUTER_SAMPLE, _sampling_run), (wrappers.DIFFUSION_MODEL, _diffusion_model)):
        model_patcher.remove_wrappers_with_key(kind, _WRAPPER_KEY)
        model_patcher.add_wrapper_with_key(kind, _WRAPPER_KEY, wrapper)
    comfy_report.install(model_patcher)

