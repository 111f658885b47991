"""A long clip edited in windows (pure: no ComfyUI import): which frames each window edits,
what of its output is kept, how two windows' overlap is blended, where the seams are.

``python -m ocd edit`` runs a pipeline's template once per window (ocd/comfy_cli.py), so the
memory of a run is bounded by the window, never by the clip. Every window after the first
edits the clip's first ``anchors`` frames in front of its own: the same source frames at the
same batch position, so with the same seed they get the same noise (or inversion) in every
window, and every frame's cross-frame (or 3D) attention sees them. They are the clip's shared
reference: the object and the background keep the look they have in the first window. Their
edit is computed again in each window (windows are separate runs: nothing is carried between
them but files) and dropped; the first window's edit of them is the one kept.

Consecutive windows overlap by ``overlap`` frames; there the output cross-fades linearly from
the earlier window to the later one. The last window is moved back to end on the clip's last
frame (a full window: every window edits the same number of frames, which a video VAE's
frame rule and the anchors' noise both need), so its overlap with the one before may be longer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np


@dataclass(frozen=True)
class Window:
    index: int
    start: int  # the first clip frame the window loads (its own frames; anchors come in front)
    count: int  # how many clip frames it loads from ``start``
    anchors: int  # the clip's first frames edited in front of them (0 in the first window)

    @property
    def end(self) -> int:
        return self.start + self.count

    @property
    def edited(self) -> int:
        """Frames the window's run edits: anchors and its own."""
        return self.anchors + self.count


@dataclass(frozen=True)
class WindowPlan:
    frames: int  # the clip's frames
    window: int  # a window's own frames (after the first window, whose own frames include the anchors)
    overlap: int
    anchors: int
    windows: tuple[Window, ...]

    @property
    def seams(self) -> list[tuple[int, int]]:
        """The clip frames where two windows cross-fade, [start, end) per seam: from where the
        later window starts (or, for a last window moved back over an earlier seam, where that
        seam ended: those frames are final) to where the earlier one ends."""
        seams, final = [], 0
        for a, b in zip(self.windows, self.windows[1:]):
            seams.append((max(b.start, final), a.end))
            final = a.end
        return seams

    @property
    def edited_frames(self) -> int:
        """Frames edited in all (anchors and overlaps counted each time): the work windowing costs."""
        return sum(w.edited for w in self.windows)


def plan_windows(frames: int, window: int, overlap: int, anchors: int) -> WindowPlan:
    """Windows of ``anchors + window`` edited frames each over a clip of ``frames`` frames.
    A clip that fits one window (``frames <= anchors + window``) is one window: the whole clip."""
    if window < 1:
        raise ValueError(f"window {window}: must be at least 1")
    if not 0 <= overlap < window:
        raise ValueError(f"overlap {overlap}: must be at least 0 and below the window ({window})")
    if anchors < 0:
        raise ValueError(f"anchors {anchors}: must not be negative")
    if frames <= anchors + window:
        return WindowPlan(frames, window, overlap, anchors, (Window(0, 0, frames, 0),))
    windows = [Window(0, 0, anchors + window, 0)]
    while windows[-1].end < frames:
        start = windows[-1].end - overlap
        if start + window >= frames:  # the last one ends on the clip's last frame
            start = frames - window
        windows.append(Window(len(windows), start, window, anchors))
    return WindowPlan(frames, window, overlap, anchors, tuple(windows))


def blend_weights(length: int) -> np.ndarray:
    """The later window's weight on each frame of an overlap of ``length`` frames: a linear
    ramp strictly between 0 and 1 (both windows count on every overlapped frame)."""
    return (np.arange(1, length + 1, dtype=np.float32) / (length + 1))


def assemble(plan: WindowPlan, load: Callable[[Window], np.ndarray]) -> Iterator[tuple[int, np.ndarray]]:
    """The clip's edited frames in order, as (first frame index, uint8 ``[n, H, W, 3]``) pieces,
    from each window's kept output (``load(window)``: its own frames, anchors dropped). Only one
    window's output and the overlap pending from the one before are held at a time."""
    pending_start, pending = 0, None  # the previous window's frames not yet written
    for w in plan.windows:
        frames = load(w)
        if frames.shape[0] != w.count:
            raise ValueError(f"window {w.index}: {frames.shape[0]} frames stored, {w.count} expected")
        if pending is None:
            pending_start, pending = w.start, frames
            continue
        start = max(w.start, pending_start)  # a last window moved back: its first frames are final already
        frames = frames[start - w.start:]
        shared = pending_start + pending.shape[0] - start  # frames both windows edited, not yet written
        head = start - pending_start
        if head > 0:
            yield pending_start, pending[:head]
        weights = blend_weights(shared)[:, None, None, None]
        mixed = (pending[head:].astype(np.float32) * (1 - weights) + frames[:shared].astype(np.float32) * weights)
        yield start, np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
        pending_start, pending = start + shared, frames[shared:]
    if pending is not None and pending.shape[0]:
        yield pending_start, pending


def seam_pairs(plan: WindowPlan) -> set[int]:
    """The consecutive-frame pairs (t, t + 1), by t, that cross a window change: every pair with
    a frame in a cross-fade, and the pair entering it (the metric's "at the boundary" set)."""
    pairs = set()
    for start, end in plan.seams:
        pairs.update(range(max(0, start - 1), min(end, plan.frames - 1)))
    return pairs


def overlap_disagreement(plan: WindowPlan, load: Callable[[Window], np.ndarray]) -> float:
    """Mean |earlier window's edit - later window's edit| (0..1) over the frames both edited:
    what a cross-fade has to hide. Windows that agree (a shared reference) leave no seam."""
    total, count = 0.0, 0
    previous, prev_frames = None, None
    for w in plan.windows:
        frames = load(w)
        if previous is not None:
            first, last = w.start, previous.end
            if last > first:
                a = prev_frames[first - previous.start:last - previous.start].astype(np.float32)
                b = frames[:last - first].astype(np.float32)
                total += float(np.abs(a - b).sum()) / 255
                count += a.size
        previous, prev_frames = w, frames
    return total / count if count else float("nan")


def frame_numbers(count: int, first_frame: int, anchors: int) -> list[int]:
    """The clip frame number of each of a window's ``count`` latent frames: the ``anchors``
    first (the clip's frames 0, 1, ...), then its own from ``first_frame``."""
    if anchors > count:
        raise ValueError(f"anchors {anchors}: the latent has only {count} frames")
    if anchors and first_frame < anchors:
        raise ValueError(f"first_frame {first_frame}: the anchors are the clip's frames 0-{anchors - 1}; the "
                         f"window's own frames start after them")
    return list(range(anchors)) + list(range(first_frame, first_frame + count - anchors))
