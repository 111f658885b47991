"""OCD on Wan graphs through the real server (the small random Wan 2.1 and its VAE, the test
text node as the text encoder): token merging on a VAE-encoded clip with CFG, the dual-rate
sampler on Wan's empty latent with core EasyCache, and both under core's Wan context windows.
Each node's effect is read from its run report."""
from __future__ import annotations

import pytest

from tests.conftest import WAN21_SMALL_FILE, WAN21_VAE_FILE
from tests.support.server import execution_error

pytestmark = pytest.mark.e2e

MERGE = "Object-Centric Token Merge (OCD)"
DUAL = "Dual-Rate KSampler (OCD)"


def base_graph(frames: int = 9, size: int = 128) -> dict:
    """Model, text, VAE, the clip (bikes.mp4) and its object mask from Auto Saliency."""
    def text(value):
        return {"class_type": "OCDTest_TextConditioning", "inputs": {"text": value, "tokens": 16}}

    return {
        "model": {"class_type": "UNETLoader", "inputs": {"unet_name": WAN21_SMALL_FILE, "weight_dtype": "default"}},
        "pos": text("a red bicycle"),
        "neg": text("blurry"),
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": WAN21_VAE_FILE}},
        "clip": {"class_type": "OCD_LoadVideo", "inputs": {
            "video": "bikes.mp4", "frame_load_cap": frames, "skip_first_frames": 0, "select_every_nth": 1,
            "force_rate": 0.0, "width": size, "height": size, "resize_mode": "crop"}},
        "mask": {"class_type": "OCD_AutoSaliency", "inputs": {
            "images": ["clip", 0], "motion_weight": 0.7, "motion_source": "flow", "threshold": -1.0,
            "smooth_frames": 5, "working_size": 128}},
    }


def merge_node(model, ratio=0.3) -> dict:
    return {"class_type": "OCD_TokenMerge", "inputs": {
        "model": model, "merge_ratio": ratio, "stride_x": 2, "stride_y": 2, "max_downsample": "1",
        "blocks": "input,middle,output", "foreground_protection": 1.0, "seed": 0, "pairing": "off",
        "mask": ["mask", 0], "dit_blocks": "all", "dit_merge": "tokens"}}


def dual_rate_node(model, latent, steps=8, cfg=4.0) -> dict:
    return {"class_type": "OCD_DualRateKSampler", "inputs": {
        "model": model, "seed": 1, "steps": steps, "cfg": cfg, "sampler_name": "euler", "scheduler": "simple",
        "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": latent, "denoise": 1.0, "mask": ["mask", 0],
        "background_step_ratio": 4.0, "blend_point": 0.25, "crop_padding": 0, "blend": "feathered"}}


def decoded(prompt: dict, samples) -> dict:
    prompt["decode"] = {"class_type": "VAEDecode", "inputs": {"samples": samples, "vae": ["vae", 0]}}
    prompt["preview"] = {"class_type": "PreviewImage", "inputs": {"images": ["decode", 0]}}
    return prompt


def node_report(events: list[dict], node_id: str) -> dict:
    found = [e for e in events if e["node"] == node_id]
    assert found, f"no run report reached node {node_id}"
    return found[-1]


def section(run: dict, name: str) -> dict:
    return [s for s in run["nodes"].values() if s["name"] == name][0]


def test_token_merge_on_an_encoded_clip_with_cfg(server):
    prompt = base_graph()
    prompt["encode"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["clip", 0], "vae": ["vae", 0]}}
    prompt["merge"] = merge_node(["model", 0])
    prompt["sample"] = {"class_type": "KSampler", "inputs": {
        "model": ["merge", 0], "seed": 2, "steps": 3, "cfg": 4.0, "sampler_name": "euler", "scheduler": "simple",
        "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["encode", 0], "denoise": 0.7}}
    entry, events = server.run_listening(decoded(prompt, ["sample", 0]), "ocd.report")
    assert entry["status"]["status_str"] == "success", execution_error(entry)
    report = node_report(events, "merge")
    layers = section(report["run"], MERGE)["merged_layers"]
    assert sorted(layers) == ["block.0 3x8x8", "block.1 3x8x8"]  # 9 frames at 128 px: 3 x 8 x 8 tokens
    for stats in layers.values():  # merge_ratio 0.3: 57 of 192 tokens merged, none of the object's
        assert stats["tokens_per_set"] == 192 and stats["kept_per_set"] == 192 - 57
        assert stats["object_tokens_per_set"] > 0 and stats["object_unmerged_share"] == 1.0
    assert "merged block.0 3x8x8: 192 -> 135 tokens" in report["text"] and "WARNING" not in report["text"]


def test_a_merge_ratio_the_background_cannot_give_is_reported(server):
    prompt = base_graph()
    prompt["latent"] = {"class_type": "EmptyHunyuanLatentVideo",
                        "inputs": {"width": 128, "height": 128, "length": 9, "batch_size": 1}}
    prompt["merge"] = merge_node(["model", 0], ratio=0.7)
    prompt["sample"] = {"class_type": "KSampler", "inputs": {
        "model": ["merge", 0], "seed": 2, "steps": 1, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple",
        "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["latent", 0], "denoise": 1.0}}
    entry, events = server.run_listening(decoded(prompt, ["sample", 0]), "ocd.report")
    assert entry["status"]["status_str"] == "success", execution_error(entry)
    text = node_report(events, "merge")["text"]
    assert "WARNING: merge_ratio 0.7 merges more tokens than the background has to give" in text
    assert len(entry["outputs"]["preview"]["images"]) == 9


def test_dual_rate_on_an_empty_wan_latent_with_easycache(server):
    prompt = base_graph()
    prompt["latent"] = {"class_type": "EmptyHunyuanLatentVideo",
                        "inputs": {"width": 128, "height": 128, "length": 9, "batch_size": 1}}
    prompt["cache"] = {"class_type": "EasyCache", "inputs": {
        "model": ["model", 0], "reuse_threshold": 1.0, "start_percent": 0.0, "end_percent": 1.0, "verbose": False}}
    prompt["sample"] = dual_rate_node(["cache", 0], ["latent", 0], steps=12)
    entry = server.run(decoded(prompt, ["sample", 0]))
    assert entry["status"]["status_str"] == "success", execution_error(entry)
    run = entry["outputs"]["sample"]["ocd_run"][0]
    plan = section(run, DUAL)["facts"]["dual_rate"]
    assert plan["mode"] == "dual" and plan["tokens"] == 192 and 0 < plan["object_tokens"] < 192
    assert plan["object_token_steps"] and plan["full_steps"][0] == 0
    phases = run["phases"]
    fg, bg = phases["foreground"], phases["background"]
    assert fg["tokens"] / fg["calls"] == plan["object_tokens"] and bg["tokens"] / bg["calls"] == 192
    # EasyCache answered some evaluations without the transformer
    assert sum(p["calls"] for p in phases.values()) < sum(p["evaluations"] for p in phases.values())
    assert "EasyCache - skipped" in server.log_tail(400)


def test_both_under_core_wan_context_windows(server):
    prompt = base_graph(frames=17)
    prompt["latent"] = {"class_type": "EmptyHunyuanLatentVideo",
                        "inputs": {"width": 128, "height": 128, "length": 17, "batch_size": 1}}
    prompt["windows"] = {"class_type": "WanContextWindowsManual", "inputs": {
        "model": ["model", 0], "context_length": 9, "context_overlap": 4, "context_schedule": "standard_static",
        "context_stride": 1, "closed_loop": False, "fuse_method": "pyramid"}}
    prompt["merge"] = merge_node(["windows", 0])
    prompt["sample"] = dual_rate_node(["merge", 0], ["latent", 0])
    entry = server.run(decoded(prompt, ["sample", 0]))
    assert entry["status"]["status_str"] == "success", execution_error(entry)
    run = entry["outputs"]["sample"]["ocd_run"][0]
    assert section(run, DUAL)["facts"]["kept_for_subset_steps"]["batches"] == 2  # one per window
    layers = section(run, MERGE)["merged_layers"]
    assert layers["block.0 3x8x8"]["object_unmerged_share"] == 1.0  # windows of 3 latent frames
    assert len(entry["outputs"]["preview"]["images"]) == 17
