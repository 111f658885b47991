"""Cross-frame self-attention: which frames are in the batch, and whose keys/values each uses.

An image UNet sees a video as a batch of frames. Self-attention whose keys/values come from
other frames (Tune-A-Video, FateZero, ControlVideo) makes the frames agree with each other.
This module is plain PyTorch: the attention itself is passed in (``attend``), so the ComfyUI
glue (ocd/attention/comfy_patches.py) can hand it ComfyUI's optimized attention.

Frame bookkeeping (``FrameLayout``, read from a model call by ``ocd.host.frame_layout``): a
batch holds G CFG groups (cond, uncond, ...) of the same F frames, group-major; each frame
has an absolute index in the video, which differs from its batch position under context
windows (core's or AnimateDiff-Evolved's).

Modes (each frame's key/value frames, by absolute index; only frames present in the batch):
- ``first``: the first frame and itself;
- ``sparse_causal``: the first frame and the previous frame (Tune-A-Video, FateZero; a frame
  does not attend to itself, the first frame attends to itself);
- ``window``: every frame within ``window`` frames of it, itself included;
- ``full``: every frame (ControlVideo's fully cross-frame attention).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from ..errors import OCDInputError
from ..shared import SharedAcrossClones

CROSS_FRAME_MODES = ("first", "sparse_causal", "window", "full")


@dataclass(frozen=True, eq=False)
class CrossFrameSettings(SharedAcrossClones):
    """OCD_CrossFrameAttention's settings (immutable; model clones share them). ``node``: the
    graph node they came from (its part of the run report), an ``ocd.report.NodeRef``."""

    mode: str = "full"
    window: int = 2
    node: object = None

    def summary(self) -> dict:
        """The settings as the run report shows them."""
        facts = {"feature": "cross_frame", "mode": self.mode}
        if self.mode == "window":
            facts["window_size"] = self.window
        return facts

    def validate(self) -> "CrossFrameSettings":
        if self.mode not in CROSS_FRAME_MODES:
            raise OCDInputError("mode", f"'{self.mode}' is not one of {CROSS_FRAME_MODES}")
        if self.window < 0:
            raise OCDInputError("window_size", f"{self.window} is negative")
        return self


@dataclass(frozen=True)
class FrameLayout:
    """A batch of ``groups * len(frames)`` items: group-major, then frames in batch order;
    ``frames`` holds each frame's absolute index in the video. ``unread`` says what could not
    be read from the host (and how the batch was taken instead), None when all was read."""

    groups: int
    frames: tuple[int, ...]
    unread: str | None = field(default=None, compare=False)

    @property
    def count(self) -> int:
        return len(self.frames)


@dataclass
class AttentionCall:
    """What an attention hook is told about the self-attention it is asked to compute
    (``hook(attend, q, k, v, call)``, see ocd/attention/comfy_patches.py)."""

    layer: tuple  # (block name, number, transformer index)
    step: int  # in the full schedule; an inversion step as the editing step it mirrors
    heads: int
    layout: FrameLayout
    grid: tuple[int, int] | None  # (h, w) of the layer's token grid, None when unknown
    refs: list[tuple[int, ...]] | None  # reference frames per frame (None: per-frame attention)
    # per attention row of one CFG group, the batch positions whose queries it holds, in order
    query_rows: list[tuple[int, ...]] = field(default_factory=list)
    query_plan: "object | None" = None  # MergePlan of the queries (per frame), None when not merged
    pool_plans: list = field(default_factory=list)  # MergePlans of the key/value pools so far
    key_bias: torch.Tensor | None = None  # [B, 1, Nk] added to the logits (merged keys' log sizes)
    report: "object | None" = None  # the run's ocd.report.RunReport, None outside a reported run
    # the object weight of every query [rows, Nq] from a mask (mask, device) where the model does
    # not attend frame by frame (a video transformer's rows hold whole clips); None: per frame
    query_weights: "Callable | None" = None


def reference_frames(frames: Sequence[int], mode: str, window: int = 1) -> list[tuple[int, ...]]:
    """For each frame (batch position), the batch positions whose keys/values it attends to."""
    if mode not in CROSS_FRAME_MODES:
        raise OCDInputError("mode", f"'{mode}' is not one of {CROSS_FRAME_MODES}")
    positions = range(len(frames))
    first = min(positions, key=lambda p: frames[p])
    refs = []
    for p in positions:
        if mode == "full":
            refs.append(tuple(positions))
        elif mode == "first":
            refs.append((first,) if p == first else (first, p))
        elif mode == "sparse_causal":
            earlier = [q for q in positions if frames[q] < frames[p]]
            previous = max(earlier, key=lambda q: frames[q]) if earlier else p
            refs.append(tuple(dict.fromkeys((first, previous))))
        else:  # window
            refs.append(tuple(q for q in positions if abs(frames[q] - frames[p]) <= window))
    return refs


# reduce_pool(k_pool, v_pool, pools) -> (k_pool, v_pool, key_bias or None)
PoolReducer = Callable[[torch.Tensor, torch.Tensor, list], tuple[torch.Tensor, torch.Tensor, "torch.Tensor | None"]]


def cross_frame_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    layout: FrameLayout,
    refs: list[tuple[int, ...]],
    attend: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    reduce_pool: PoolReducer | None = None,
) -> torch.Tensor:
    """Self-attention of each frame over the keys/values of its reference frames.

    Args:
     - q [G*F, Nq, C], k and v [G*F, Nk, C] (Nq may differ from Nk, e.g. merged queries)
     - layout: G groups of F frames; refs: ``reference_frames`` of the F frames
     - attend(q [B, Nq, C], k [B, M, C], v [B, M, C], key_bias, rows=...) -> [B, Nq, C];
       key_bias is None or ``[B, 1, M]``, added to the attention logits of every query;
       ``rows`` lists, for the B // G attention rows of one group, the batch positions whose
       queries each row holds (in order), so a hook can tell which frames it attends for
     - reduce_pool(k_pool, v_pool, pools) -> (k, v, key_bias): optional reduction (token
       merging) of the key/value pools ``[G, n, P*Nk, C]`` (``pools`` lists each pool's batch
       positions); key_bias ``[G, n, M]`` or None, e.g. the log of each merged key's size
    Returns [G*F, Nq, C].
    """
    G, Fn = layout.groups, layout.count
    _, Nq, C = q.shape
    Nk, Cv = k.shape[1], v.shape[2]
    q = q.view(G, Fn, Nq, C)
    k = k.view(G, Fn, Nk, C)
    v = v.view(G, Fn, Nk, Cv)

    if all(r == refs[0] for r in refs) and len(refs[0]) > 1:
        # One pool shared by every frame (e.g. full): one attention over all the group's
        # queries, no copy of the pool per frame.
        pool = list(refs[0])
        if pool == list(range(Fn)):  # all frames in batch order: a view, no copy
            k_pool, v_pool = k.reshape(G, 1, Fn * Nk, C), v.reshape(G, 1, Fn * Nk, Cv)
        else:
            k_pool, v_pool = k[:, pool].reshape(G, 1, -1, C), v[:, pool].reshape(G, 1, -1, Cv)
        bias = None
        if reduce_pool is not None:
            k_pool, v_pool, bias = reduce_pool(k_pool, v_pool, [tuple(pool)])
        out = attend(q.reshape(G, Fn * Nq, C), k_pool[:, 0], v_pool[:, 0], bias,  # bias [G, 1, M]
                     rows=[tuple(range(Fn))])
        return out.reshape(G * Fn, Nq, -1)

    out = None
    by_size: dict[int, list[int]] = {}
    for p, r in enumerate(refs):
        by_size.setdefault(len(r), []).append(p)
    for size, members in by_size.items():
        index = torch.tensor([refs[p] for p in members], device=k.device)  # [n, P]
        n = len(members)
        k_pool = k[:, index].reshape(G, n, size * Nk, C)
        v_pool = v[:, index].reshape(G, n, size * Nk, Cv)
        bias = None
        if reduce_pool is not None:
            k_pool, v_pool, bias = reduce_pool(k_pool, v_pool, [refs[p] for p in members])
        q_part = q[:, members].reshape(G * n, Nq, C)
        if bias is not None:
            bias = bias.reshape(G * n, 1, -1)
        o = attend(q_part, k_pool.reshape(G * n, -1, C), v_pool.reshape(G * n, -1, Cv), bias,
                   rows=[(p,) for p in members])
        if out is None:
            out = o.new_empty(G, Fn, Nq, o.shape[-1])
        out[:, members] = o.view(G, n, Nq, -1)
    return out.reshape(G * Fn, Nq, -1)
