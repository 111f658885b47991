"""FateZero-style attention fusion: record self-attention during inversion, reuse it to edit.

During inversion with the source prompt, the self-attention probabilities
``P = softmax(Q K^T / sqrt(d))`` of the chosen layers and steps are stored. During editing
with the target prompt, those layers compute ``P_src V_edit`` instead of ``P_edit V_edit``
for the first ``self_replace`` fraction of the steps, so the edited video keeps the source's
structure and motion while the values (appearance) follow the new prompt. With a mask (the
edited object), ``P = m * P_edit + (1 - m) * P_src`` per query token: the object may change
shape, the rest keeps the source's attention.

The hooks plug into the attention seam of ocd/attention/comfy_patches.py
(``hook(attend, q, k, v, call)``, ``call`` an ``AttentionCall``), so they see the same
queries and key/value pools as cross-frame attention and token merging produce: records are
taken at the merged size, and replay of the merge indices (token merging's pairing) makes
editing's tokens line up with the recorded ones. In a layer whose queries are merged, the
blend mask is merged with the queries' plan (each merged query gets the mean weight of the
tokens it holds).

Steps are numbered by ``ocd.host.step_index`` for both passes: editing step m goes from
generation sigma m to m+1, and the inversion step between the same two sigma levels has the
same number m, so each editing step fuses what its mirror inversion step recorded.

Records and hooks are shared across model clones (``ocd.shared``): the sampler that runs a
clone fills the record the node returned.

Context windows (core's Context Windows nodes, AnimateDiff-Evolved's): the model runs once per
window, on a part of the clip. Every map is kept with its window (the window's absolute frames,
None for a call over the whole clip), which the ComfyUI glue hands to each call's hook
(``in_window``); the edit looks up the map of its own window, so a window's attention is never
fused into another's frames, and an edit whose windows the inversion did not run in is refused.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..errors import OCDInputError
from ..masks import grid, ops
from ..shared import SharedAcrossClones


def attention_probabilities(q: torch.Tensor, k: torch.Tensor, heads: int,
                            key_bias: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + key_bias) per head: q [B, Nq, heads*d], k [B, Nk, heads*d],
    key_bias None or [B, 1, Nk] (merged keys' log sizes) -> [B, heads, Nq, Nk]."""
    b, nq, c = q.shape
    d = c // heads
    qh = q.reshape(b, nq, heads, d).transpose(1, 2).float()
    kh = k.reshape(b, k.shape[1], heads, d).transpose(1, 2).float()
    logits = qh @ kh.transpose(-1, -2) / math.sqrt(d)
    if key_bias is not None:
        logits = logits + key_bias.float().unsqueeze(1)
    return torch.softmax(logits, dim=-1)


def attend_with(probabilities: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """probabilities [B, heads, Nq, Nk] applied to v [B, Nk, heads*d] -> [B, Nq, heads*d]."""
    b, nk, c = v.shape
    vh = v.reshape(b, nk, heads, c // heads).transpose(1, 2)
    out = probabilities.to(vh.dtype) @ vh
    return out.transpose(1, 2).reshape(b, probabilities.shape[2], c)


Window = tuple[int, ...] | None  # a context window's absolute frames; None: the whole clip


@dataclass(eq=False)
class AttentionRecord(SharedAcrossClones):
    """Self-attention probabilities from an inversion pass.

    ``maps[(step, layer)]`` is the list of probability tensors of that layer's attention calls
    at that generation step, in call order (cross-frame attention may attend in several
    calls; under context windows, each window in turn), each ``[frames-or-pools, heads, Nq,
    Nk]`` of the conditional group only. ``windows[(step, layer)][i]`` is the context window
    ``maps[(step, layer)][i]`` was taken in; ``ran_in[step]`` every window the recorded step
    ran in, recorded layers or not.
    """

    steps: frozenset[int]
    max_tokens: int
    dtype: torch.dtype = torch.float16
    device: str | torch.device | None = None  # None: where the attention was computed
    maps: dict[tuple, list[torch.Tensor]] = field(default_factory=dict)
    windows: dict[tuple, list[Window]] = field(default_factory=dict)
    ran_in: dict[int, set[Window]] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for ts in self.maps.values() for t in ts)

    def keys_recorded(self) -> set[tuple]:
        return set(self.maps)

    def add(self, step: int, layer: tuple, window: Window, p: torch.Tensor) -> None:
        """Keep ``p``, the next attention call of ``layer`` at ``step`` in ``window``."""
        self.maps.setdefault((step, layer), []).append(p)
        self.windows.setdefault((step, layer), []).append(window)

    def map_of(self, step: int, layer: tuple, window: Window, index: int) -> torch.Tensor | None:
        """The map of the ``index``-th attention call of ``layer`` at ``step`` in ``window``."""
        maps, windows = self.maps.get((step, layer), []), self.windows.get((step, layer), [])
        mine = [p for p, w in zip(maps, windows) if w == window]
        return mine[index] if index < len(mine) else None

    def bytes_by_window(self) -> dict[Window, int]:
        """The record's memory per context window (one entry, None, without windows)."""
        sizes: dict[Window, int] = {}
        for key, maps in self.maps.items():
            for p, window in zip(maps, self.windows[key]):
                sizes[window] = sizes.get(window, 0) + p.numel() * p.element_size()
        return sizes


def predicted_record_bytes(layer_calls: list[tuple[int, int, int, int]], steps: int, dtype=torch.float16) -> int:
    """Memory of a record: ``layer_calls`` lists (batch, heads, Nq, Nk) of every recorded
    attention call of one UNet evaluation; ``steps`` is the number of recorded steps."""
    per_step = sum(b * h * nq * nk for b, h, nq, nk in layer_calls)
    return per_step * steps * torch.empty((), dtype=dtype).element_size()


def _group_batch(call, batch: int) -> tuple[int, int]:
    """(CFG groups, attention rows per group) of an attention call's batch."""
    return call.layout.groups, batch // call.layout.groups


class InWindow(SharedAcrossClones):
    """A hook or record as one model call sees it: its calls (and a record's ``add``) are told
    the call's context window. Put in that call's options by the ComfyUI glue; every other
    attribute is the target's."""

    __slots__ = ("target", "window")

    def __init__(self, target, window: Window):
        self.target = target
        self.window = window

    def __call__(self, *args, **kwargs):
        return self.target(*args, window=self.window, **kwargs)

    def add(self, *args, **kwargs):
        return self.target.add(*args, window=self.window, **kwargs)

    def __getattr__(self, name):
        return getattr(self.target, name)


class RecordingHook(SharedAcrossClones):
    """Attention hook for the inversion pass: records P of the chosen steps and layers."""

    def __init__(self, record: AttentionRecord):
        self.record = record

    def in_window(self, window: Window) -> InWindow:
        return InWindow(self, window)

    def __call__(self, attend, q, k, v, call, window: Window = None):
        step = call.step  # already the editing step this inversion step mirrors
        heads = call.heads
        if step not in self.record.steps:
            return attend(q, k, v)
        self.record.ran_in.setdefault(step, set()).add(window)
        if q.shape[1] > self.record.max_tokens:
            return attend(q, k, v)
        p = attention_probabilities(q, k, heads, call.key_bias)
        groups, per_group = _group_batch(call, q.shape[0])
        stored = p[:per_group]  # the conditional group: the one the edit replays
        device = self.record.device if self.record.device is not None else stored.device
        self.record.add(step, call.layer, window, stored.to(device=device, dtype=self.record.dtype))
        return attend_with(p, v, heads).to(v.dtype)


def _frames_text(window: Window) -> str:
    if window is None:
        return "the whole clip"
    if list(window) == list(range(window[0], window[0] + len(window))):
        return f"frames {window[0]}-{window[-1]}"
    return f"frames {', '.join(map(str, window))}"


class FusionHook(SharedAcrossClones):
    """Attention hook for the editing pass: replaces (or mask-blends) P with the recorded one."""

    def __init__(self, record: AttentionRecord, replace_steps: frozenset[int], mask: torch.Tensor | None = None,
                 node=None):
        self.record = record
        self.replace_steps = replace_steps
        self.mask = mask  # [F, H, W] in 0..1 (latent or any resolution), None = replace
        self.node = node  # the graph node that asked for the fusion (ocd.report.NodeRef), for the report
        self._call_index: dict[tuple, int] = {}  # (step, layer, window) -> attention calls so far
        self.fused: list[tuple] = []  # (step, layer) pairs fused so far, for inspection
        self.missing: set[tuple] = set()  # (step, layer, window, call) asked for but not in the record

    def in_window(self, window: Window) -> InWindow:
        return InWindow(self, window)

    def _check_window(self, step: int, window: Window) -> None:
        """Refuse a context window the inversion did not run in at this step: its frames have no
        recorded attention, and another window's would put the wrong frames' structure there."""
        ran_in = self.record.ran_in.get(step)
        if not ran_in or window in ran_in:
            return
        recorded = "; ".join(sorted(_frames_text(w) for w in ran_in))
        raise OCDInputError(
            "inversion", f"its attention record of step {step} was taken in context windows of {recorded}, but "
            f"this edit attends in {_frames_text(window)}: edit with the inversion's context windows (connect "
            "the same Context Windows node settings to both, with a schedule whose windows stay the same from "
            "step to step: standard_static or batched; the uniform schedules move them step by step)")

    def _query_mask(self, call, tokens: int, per_group: int, device) -> torch.Tensor:
        """The blend mask's object weight of every query, ``[per_group, 1, Nq, 1]``.

        Each attention row holds the queries of the frames ``call.query_rows`` names (one
        frame, or every frame under full cross-frame attention); merged queries get the mean
        weight of the tokens they hold (the queries' merge plan applied to the weights). A
        model that lays its queries out otherwise gives ``call.query_weights``."""
        layer = call.layer
        if call.query_weights is not None:
            m = call.query_weights(self.mask, device)
        else:
            m = self._frame_query_weights(call, device)
        if m.shape != (per_group, tokens):
            raise OCDInputError("blend_mask", f"gives {tuple(m.shape)} query weights in layer {layer}, but the "
                                f"layer attends with {per_group} x {tokens} queries: were the queries merged by "
                                "another patch (e.g. core's TomePatchModel)? Merge with Object-Centric Token "
                                "Merge (OCD), or leave blend_mask unconnected")
        return m[:, None, :, None]

    def _frame_query_weights(self, call, device) -> torch.Tensor:
        layer = call.layer
        if call.grid is None:
            raise OCDInputError("blend_mask", f"cannot be placed on the queries of layer {layer}: its token "
                                "grid is unknown")
        h, w = call.grid
        per_frame = grid.token_weights(self.mask, call.layout.frames, h, w, device)  # [F, h*w]
        plan = call.query_plan
        if plan is not None:
            per_frame = plan.merge(per_frame.unsqueeze(-1)).squeeze(-1)  # [F, merged size]
        rows = call.query_rows or [(p,) for p in range(call.layout.count)]
        return torch.stack([torch.cat([per_frame[p] for p in row]) for row in rows])

    def __call__(self, attend, q, k, v, call, window: Window = None):
        step, layer = call.step, call.layer
        key = (step, layer)
        index = self._call_index.get((step, layer, window), 0)
        self._call_index[(step, layer, window)] = index + 1
        if step not in self.replace_steps:
            return attend(q, k, v)
        self._check_window(step, window)
        recorded = self.record.map_of(step, layer, window, index)
        if recorded is None:
            if (step, layer, window, index) not in self.missing and any(layer == lay for _, lay in self.record.maps):
                # a recorded layer without a map for this step or call: the edit's own attention is used
                self.missing.add((step, layer, window, index))
                if call.report is not None and self.node is not None:
                    call.report.warn(self.node, "the inversion recorded no attention for some fused steps "
                                     f"(first: step {step}, layer {layer}): those use the edit's own attention; "
                                     "record at least as many steps (record_attention) as you fuse (self_replace)")
            return attend(q, k, v)
        heads = call.heads
        groups, per_group = _group_batch(call, q.shape[0])
        if recorded.shape[0] != per_group or recorded.shape[2:] != (q.shape[1], k.shape[1]):
            raise OCDInputError(
                "inversion",
                f"its attention record for layer {layer} has shape {tuple(recorded.shape)}, but this "
                f"edit attends with {per_group} x {q.shape[1]} queries x {k.shape[1]} keys: edit with the "
                "same frames, size and attention/token-merge settings as the inversion (token merging "
                "must replay the inversion's merge record)",
            )
        source = recorded.to(device=q.device, dtype=torch.float32)
        source = source.repeat(groups, 1, 1, 1)
        if self.mask is not None:
            mask = self._query_mask(call, q.shape[1], per_group, q.device)
            edited = attention_probabilities(q, k, heads, call.key_bias)
            source = mask.repeat(groups, 1, 1, 1) * edited + (1 - mask.repeat(groups, 1, 1, 1)) * source
        self.fused.append(key)
        if call.report is not None:
            call.report.fusion_applied(step, layer)
        return attend_with(source, v, heads).to(v.dtype)


def recorded_steps(total_steps: int, fraction: float) -> frozenset[int]:
    """The generation indices of the first ``fraction`` of an N-step edit (FateZero: 0.8)."""
    if not 0.0 <= fraction <= 1.0:
        raise OCDInputError("self_replace", f"must be in 0..1, got {fraction}")
    return frozenset(range(int(round(fraction * total_steps))))


# ---------------------------------------------------------------------------------------------
# Cross-attention: where each prompt token looks, for a mask of the edited words
# ---------------------------------------------------------------------------------------------

@dataclass(eq=False)
class CrossAttentionRecord(SharedAcrossClones):
    """Head-averaged cross-attention of the inversion pass.

    ``maps[(step, layer)]`` is ``[frames, h*w, text_tokens]`` (conditional group, float16) and
    ``grids[layer]`` the layer's token grid ``(h, w)``. Filled by the cross-attention recorder
    of ocd/attention/comfy_patches.py (an attn2 patch), which recomputes q and k with the
    block's own projections. Under context windows each window fills its own frames of the
    clip's map; a frame in several windows gets their mean.
    """

    max_tokens: int
    maps: dict[tuple, torch.Tensor] = field(default_factory=dict)
    grids: dict[tuple, tuple[int, int]] = field(default_factory=dict)
    # video frames per map frame: 1 (a UNet's frames), or a causal video VAE's latent frames
    # (the first frame alone, then ``temporal_scale`` each)
    temporal_scale: int = 1
    # (step, layer) -> [frames]: how many context windows filled each frame of the map
    windows_per_frame: dict[tuple, torch.Tensor] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.maps.values())

    def wants(self, tokens: int) -> bool:
        return tokens <= self.max_tokens

    def in_window(self, window: Window) -> InWindow:
        return InWindow(self, window)

    def add(self, step: int, layer: tuple, token_grid: tuple[int, int], q: torch.Tensor, k: torch.Tensor,
            heads: int, window: Window = None) -> None:
        """Record one layer's cross-attention: q [F, h*w, C] of the conditional group, k [F, T, C];
        ``window``: the F frames' absolute indices under context windows (None: the whole clip)."""
        p = attention_probabilities(q, k, heads).mean(1).to(torch.float16)  # [F, h*w, T]
        self.grids[layer] = (int(token_grid[0]), int(token_grid[1]))
        key = (step, layer)
        if window is None or len(window) != p.shape[0]:
            self.maps[key] = p
            self.windows_per_frame.pop(key, None)
            return
        old, count = self.maps.get(key), self.windows_per_frame.get(key)
        frames = max(max(window) + 1, 0 if old is None or count is None else old.shape[0])
        full = p.new_zeros((frames,) + p.shape[1:])
        counts = torch.zeros(frames)
        if old is not None and count is not None:
            full[: old.shape[0]], counts[: count.shape[0]] = old, count
        rows = list(window)
        n = counts[rows].view(-1, 1, 1)
        full[rows] = ((full[rows].float() * n + p.float()) / (n + 1)).to(full.dtype)
        counts[rows] += 1
        self.maps[key], self.windows_per_frame[key] = full, counts


def word_token_positions(prompt_tokens: list[int], word_tokens: list[int]) -> list[int]:
    """Positions of every occurrence of ``word_tokens`` as a run inside ``prompt_tokens``."""
    n = len(word_tokens)
    positions = []
    for i in range(len(prompt_tokens) - n + 1):
        if n and prompt_tokens[i:i + n] == word_tokens:
            positions.extend(range(i, i + n))
    return positions


def cross_attention_mask(
    record: CrossAttentionRecord,
    token_positions: list[int],
    size: tuple[int, int],
    threshold: float = 0.3,
    dilation: int = 0,
) -> torch.Tensor:
    """A per-frame mask ``[F, H, W]`` (0/1) of where the given prompt tokens are attended (a
    video transformer's: per video frame, from its latent frames).

    FateZero's recipe: sum the tokens' attention, average over heads (done when recording),
    layers and steps at a common resolution, normalise each frame to 0..1, threshold; then
    optionally grow by ``dilation`` pixels of ``size`` (``ocd.masks.ops.grow``, a disk).
    """
    if not record.maps:  # recording was on (the record exists): its token limit left out every layer
        raise OCDInputError("inversion", f"its cross-attention record is empty: no layer attends with at most "
                            f"max_record_tokens = {record.max_tokens} queries, so none was recorded; raise "
                            "max_record_tokens on Invert Latents (OCD) to at least the query count of the model's "
                            "smallest attention layer (its token grid, e.g. 8x8 = 64 for SD1.5 at 512x512; on a "
                            "video transformer every token of the clip) and run it again")
    if not token_positions:
        raise OCDInputError("words", "none of the words occur in the prompt (check spelling: the words "
                            "must appear in the source prompt as written)")
    h, w = size
    total = None
    for (step, layer), p in record.maps.items():
        if max(token_positions) >= p.shape[-1]:
            raise OCDInputError("words", f"token position {max(token_positions)} is beyond the prompt's "
                                f"{p.shape[-1]} tokens")
        gh, gw = record.grids[layer]
        heat = p[..., token_positions].float().sum(-1).reshape(-1, 1, gh, gw)
        heat = torch.nn.functional.interpolate(heat, size=(h, w), mode="bilinear", align_corners=False)
        total = heat if total is None else total + heat
    total = total[:, 0]
    lo = total.flatten(1).min(1).values[:, None, None]
    hi = total.flatten(1).max(1).values[:, None, None]
    normalised = (total - lo) / (hi - lo).clamp_min(1e-8)
    mask = (normalised >= threshold).float()
    if record.temporal_scale > 1:  # latent frames -> the video frames each holds
        s = record.temporal_scale
        mask = mask[[0] + [1 + (f - 1) // s for f in range(1, (mask.shape[0] - 1) * s + 1)]]
    return ops.grow(mask, dilation) if dilation > 0 else mask
