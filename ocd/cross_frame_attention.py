"""Cross-frame self-attention: which frames are in the batch, and whose keys/values each uses.

An image UNet sees a video as a batch of frames. Self-attention whose keys/values come from
other frames (Tune-A-Video, FateZero, ControlVideo) makes the frames agree with each other.
This module is plain PyTorch: the attention itself is passed in (``attend``), so the ComfyUI
glue (ocd/attention_patch.py) can hand it ComfyUI's optimized attention.

Frame bookkeeping. ComfyUI batches ``len(cond_or_uncond)`` groups (cond, uncond, ...) of the
same F frames. Under AnimateDiff-Evolved's context windows ``ad_params["sub_idxs"]`` and under
core's context windows ``transformer_options["context_window"].index_list`` give the absolute
video frame of each of the F frames; otherwise they are 0..F-1.

Modes (each frame's key/value frames, by absolute index; only frames present in the batch):
- ``first``: the first frame and itself;
- ``sparse_causal``: the first frame and the previous frame (Tune-A-Video, FateZero; a frame
  does not attend to itself, the first frame attends to itself);
- ``window``: every frame within ``window`` frames of it, itself included;
- ``full``: every frame (ControlVideo's fully cross-frame attention).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from .errors import OCDInputError

CROSS_FRAME_MODES = ("first", "sparse_causal", "window", "full")


@dataclass(frozen=True)
class FrameLayout:
    """A batch of ``groups * len(frames)`` items: group-major, then frames in batch order;
    ``frames`` holds each frame's absolute index in the video."""

    groups: int
    frames: tuple[int, ...]

    @property
    def count(self) -> int:
        return len(self.frames)


def frame_layout(batch: int, transformer_options: dict) -> FrameLayout:
    """The frames of a batch of ``batch`` items from ComfyUI's ``transformer_options``."""
    groups = len(transformer_options.get("cond_or_uncond") or [0])
    if groups < 1 or batch % groups:
        groups = 1
    count = batch // groups
    frames = None
    ad_params = transformer_options.get("ad_params")
    window = transformer_options.get("context_window")
    if isinstance(ad_params, dict) and ad_params.get("sub_idxs") is not None:
        frames = ad_params["sub_idxs"]
    elif window is not None and getattr(window, "index_list", None) is not None:
        frames = window.index_list
    if frames is None or len(frames) != count:
        # No window, or one that does not describe this batch (e.g. a stale entry): the batch
        # is the whole clip.
        frames = range(count)
    return FrameLayout(groups, tuple(int(f) for f in frames))


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
     - attend(q [B, Nq, C], k [B, M, C], v [B, M, C], key_bias) -> [B, Nq, C]; key_bias is
       None or ``[B, 1, M]``, added to the attention logits of every query
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
        out = attend(q.reshape(G, Fn * Nq, C), k_pool[:, 0], v_pool[:, 0], bias)  # bias [G, 1, M]
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
        o = attend(q_part, k_pool.reshape(G * n, -1, C), v_pool.reshape(G * n, -1, Cv), bias)
        if out is None:
            out = o.new_empty(G, Fn, Nq, o.shape[-1])
        out[:, members] = o.view(G, n, Nq, -1)
    return out.reshape(G * Fn, Nq, -1)
