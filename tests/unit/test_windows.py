"""ocd/windows.py: the windows a long clip is edited in, their assembly and seams."""
from __future__ import annotations

import numpy as np
import pytest

from ocd import windows


@pytest.mark.parametrize("frames, window, overlap, anchors", [
    (128, 16, 2, 1), (20, 8, 2, 1), (100, 32, 4, 1), (17, 8, 0, 0), (41, 10, 9, 3), (10, 16, 2, 1), (17, 16, 2, 1),
])
def test_every_frame_is_edited_by_windows_of_one_size_and_the_last_ends_on_the_clip(frames, window, overlap, anchors):
    plan = windows.plan_windows(frames, window, overlap, anchors)
    ws = plan.windows
    covered = set(range(ws[0].anchors)) | {f for w in ws for f in range(w.start, w.end)}
    assert covered == set(range(frames))
    assert ws[-1].end == frames
    if len(ws) == 1:
        assert (ws[0].start, ws[0].count, ws[0].anchors) == (0, frames, 0)
        return
    assert {w.edited for w in ws} == {anchors + window}  # one size: a video VAE's rule holds for all
    assert ws[0].anchors == 0 and all(w.anchors == anchors for w in ws[1:])
    for a, b in zip(ws, ws[1:]):
        assert b.start > a.start and b.start >= anchors  # a window's own frames never hold the anchors
        assert a.end - b.start >= overlap  # at least the overlap asked for (the last may share more)
    assert plan.edited_frames == sum(w.edited for w in ws)


def test_bad_plans_are_refused():
    with pytest.raises(ValueError, match="overlap 8"):
        windows.plan_windows(100, 8, 8, 1)
    with pytest.raises(ValueError, match="window 0"):
        windows.plan_windows(100, 0, 0, 1)


def _edit(plan, truth, noise=None):
    """Each window's 'edit': the true frames, plus a per-window offset when ``noise`` is given."""
    def load(w):
        out = truth[w.start:w.end].astype(np.int16)
        if noise is not None:
            out = out + noise[w.index]
        return np.clip(out, 0, 255).astype(np.uint8)
    return load


def test_assembly_gives_each_frame_once_in_order_and_windows_that_agree_give_the_frames_unchanged():
    plan = windows.plan_windows(45, 8, 3, 1)
    truth = np.random.default_rng(0).integers(0, 256, (45, 4, 5, 3), dtype=np.uint8)
    pieces = list(windows.assemble(plan, _edit(plan, truth)))
    starts = [s for s, _ in pieces]
    assert starts == sorted(starts) and starts[0] == 0
    clip = np.concatenate([p for _, p in pieces])
    assert clip.shape[0] == 45
    np.testing.assert_array_equal(clip, truth)


def test_overlaps_cross_fade_from_the_earlier_window_to_the_later():
    plan = windows.plan_windows(30, 8, 3, 1)
    truth = np.full((30, 2, 2, 3), 100, np.uint8)
    offsets = {w.index: (40 if w.index % 2 else 0) for w in plan.windows}
    clip = np.concatenate([p for _, p in windows.assemble(plan, _edit(plan, truth, offsets))])[:, 0, 0, 0]
    start, end = plan.seams[0]  # window 0 (offset 0) -> window 1 (offset 40)
    assert end - start == 3
    ramp = clip[start:end].astype(int)
    assert np.all(np.diff(ramp) > 0) and 100 < ramp[0] and ramp[-1] < 140  # strictly between, rising
    assert clip[start - 1] == 100 and clip[end] == 140  # before: the earlier window; after: the later


def test_seam_pairs_are_the_pairs_in_and_around_each_cross_fade():
    plan = windows.plan_windows(20, 8, 2, 1)  # windows: 0-8, 7-14, 12-19
    assert plan.seams == [(7, 9), (12, 15)]
    assert windows.seam_pairs(plan) == {6, 7, 8, 11, 12, 13, 14}
    back = windows.plan_windows(45, 8, 3, 1)  # the last window (37-44) moved back over the seam before it
    assert back.windows[-1].start == 37 and back.seams[-1] == (39, 44) and back.seams[-2] == (36, 39)
    hard = windows.plan_windows(17, 8, 0, 1)  # windows 0-8, 9-16, no overlap: the pair across the cut
    assert hard.seams == [(9, 9)] and windows.seam_pairs(hard) == {8}
