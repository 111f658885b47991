"""OCD_TokenMerge on a Wan video transformer inside a real ComfyUI (random small Wan 2.1 built
through ComfyUI's loader): the background's tokens merge over the whole clip in the blocks
dit_blocks names, the object's stay whole, the run report counts it per block; it composes
with CFG, core EasyCache (either order) and core's Wan context windows."""
from __future__ import annotations

import pytest
import torch

from ocd import comfy_report
from ocd.report import RunReport
from tests.support import interface
from tests.support import random_wan as rw

FRAMES, SIZE = 9, 128  # 3 latent frames of 16x16: 3 x 8 x 8 = 192 tokens
MERGE = "Object-Centric Token Merge (OCD)"


def object_mask(frames=FRAMES, size=SIZE, first_frame=0):
    """The middle quarter of the frame (64 of the 256 latent pixels: 16 of the 64 tokens per
    latent frame), from video frame ``first_frame`` on."""
    mask = torch.zeros(frames, size, size)
    mask[first_frame:, size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 1.0
    return mask


def conditioning():
    return rw.text_conditioning("a red car on a road"), rw.text_conditioning("")


def merged(ocd_nodes, run, model, **inputs):
    node = ocd_nodes["OCD_TokenMerge"]
    values = interface.defaults("OCD_TokenMerge", node)
    values.update(mask=object_mask())
    values.update(inputs)
    return run(node, model=model, **values).result[0]


def sample(model, steps=3, cfg=1.0, frames=FRAMES, size=SIZE, seed=5, report=None):
    """Core KSampler on an empty Wan latent; ``report`` (a RunReport) is filled when given."""
    import nodes

    if report is not None:
        model = comfy_report.attach(model, report)
    pos, neg = conditioning()
    latent = {"samples": torch.zeros(1, 16, (frames - 1) // 4 + 1, size // 8, size // 8)}
    return nodes.KSampler().sample(model, seed, steps, cfg, "euler", "simple", pos, neg, latent)[0]["samples"]


def merge_section(report: RunReport) -> dict:
    sections = [s for s in report.as_dict()["nodes"].values() if s["name"] == MERGE]
    assert len(sections) == 1, list(report.as_dict()["nodes"])
    return sections[0]


@pytest.mark.parametrize("mode", ["tokens", "keys_values"])
def test_wan_merges_the_background_over_the_clip_and_keeps_the_object(ocd_nodes, run, wan21_small, mode,
                                                                       inference):
    base = sample(wan21_small)
    report = RunReport()
    out = sample(merged(ocd_nodes, run, wan21_small, dit_merge=mode), report=report)
    section = merge_section(report)
    layers = section["merged_layers"]
    assert sorted(layers) == ["block.0 3x8x8", "block.1 3x8x8"]  # every block, the clip's 3 frames
    for stats in layers.values():
        assert stats["calls"] == 3 and stats["tokens_per_set"] == 192
        assert stats["kept_per_set"] == 96  # half of the clip's tokens merged away (merge_ratio 0.5)
        assert stats["object_tokens_per_set"] == 3 * 16 and stats["object_unmerged_share"] == 1.0
    assert section["facts"]["dit_merge"] == mode and section["warnings"] == []
    phases = report.as_dict()["phases"]["sampling"]
    expected_tokens = 96 if mode == "tokens" else 192  # keys_values keeps every token (queries whole)
    assert phases["calls"] == 3 and phases["tokens"] == 3 * expected_tokens
    assert torch.isfinite(out).all() and not torch.allclose(out, base, atol=1e-3)


def test_ratio_zero_is_the_model_and_the_input_model_is_untouched(ocd_nodes, run, wan21_small, inference):
    before = dict(wan21_small.model_options.get("transformer_options", {}))
    base = sample(wan21_small)
    assert torch.equal(sample(merged(ocd_nodes, run, wan21_small, merge_ratio=0.0)), base)
    merged(ocd_nodes, run, wan21_small)
    assert wan21_small.model_options.get("transformer_options", {}) == before


def test_dit_blocks_choose_the_blocks_and_missing_ones_are_named(ocd_nodes, run, wan21_small, inference):
    report = RunReport()
    sample(merged(ocd_nodes, run, wan21_small, dit_blocks="1-5"), steps=1, report=report)
    section = merge_section(report)
    assert list(section["merged_layers"]) == ["block.1 3x8x8"]
    assert any("dit_blocks 1-5" in w and "2 blocks" in w for w in section["warnings"])


def test_cfg_groups_share_one_plan_per_video(ocd_nodes, run, wan21_small, inference):
    report = RunReport()
    out = sample(merged(ocd_nodes, run, wan21_small), cfg=4.0, report=report)
    stats = merge_section(report)["merged_layers"]["block.0 3x8x8"]
    assert stats["calls"] == 3 and stats["kept_per_set"] == 96  # one plan per call for cond and uncond
    assert torch.isfinite(out).all()


def easycache(run, model, threshold=1.0):
    from comfy_extras.nodes_easycache import EasyCacheNode

    return run(EasyCacheNode, model=model, reuse_threshold=threshold, start_percent=0.0, end_percent=1.0,
               verbose=False).result[0]


def test_composes_with_core_easycache_in_either_order(ocd_nodes, run, wan21_small, inference, caplog):
    import logging

    merge_first = easycache(run, merged(ocd_nodes, run, wan21_small))
    cache_first = merged(ocd_nodes, run, easycache(run, wan21_small))
    with caplog.at_level(logging.INFO):
        a = sample(merge_first, steps=8)
    skipped = [r.getMessage() for r in caplog.records if "EasyCache - skipped" in r.getMessage()]
    assert skipped and not skipped[-1].startswith("EasyCache - skipped 0/"), skipped
    b = sample(cache_first, steps=8)
    assert torch.equal(a, b)  # the pack's token work runs inside EasyCache whatever the order
    assert not torch.equal(a, sample(merged(ocd_nodes, run, wan21_small), steps=8))


def wan_windows(run, model, length_frames=9, overlap_frames=4):
    """Core's Wan context windows: 9 and 4 frames are 3 latent frames, 1 of them shared."""
    from comfy_extras.nodes_context_windows import WanContextWindowsManualNode

    return run(WanContextWindowsManualNode, model=model, context_length=length_frames,
               context_overlap=overlap_frames, context_schedule="standard_static", context_stride=1,
               closed_loop=False, fuse_method="pyramid").result[0]


def test_core_wan_context_windows_merge_each_window_at_its_frames(ocd_nodes, run, wan21_small, inference):
    """17 frames = 5 latent frames, windows of 3 latent frames: [0, 1, 2] and [2, 3, 4]. The
    object is only in video frames 13-16 (latent frame 4): only the second window protects it,
    which it can only know from the window's absolute frames."""
    mask = object_mask(frames=17, first_frame=13)
    report = RunReport()
    out = sample(wan_windows(run, merged(ocd_nodes, run, wan21_small, mask=mask)), steps=2, frames=17,
                 report=report)
    stats = merge_section(report)["merged_layers"]["block.0 3x8x8"]
    assert stats["calls"] == 2 * 2  # two windows, two steps
    # 16 object tokens in one of the two windows' three frames: 8 per window on average
    assert stats["object_tokens_per_set"] == 8 and stats["object_unmerged_share"] == 1.0
    assert out.shape == (1, 16, 5, 16, 16) and torch.isfinite(out).all()


def test_cross_frame_attention_refuses_a_video_transformer(ocd_nodes, run, wan21_small):
    with pytest.raises(ValueError) as err:
        run(ocd_nodes["OCD_CrossFrameAttention"], model=wan21_small, mode="full", window_size=2)
    assert "model" in str(err.value) and "Token Merge" in str(err.value)
