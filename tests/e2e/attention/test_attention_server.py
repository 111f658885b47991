"""Cross-frame attention and token merging through a real ComfyUI server (mini SD1.5)."""
from __future__ import annotations

import pytest

from tests.e2e.conftest import MINI_CHECKPOINT
from tests.support.server import execution_error

pytestmark = pytest.mark.e2e


def test_server_lists_the_attention_nodes(object_info):
    merge = object_info["OCD_TokenMerge"]
    assert merge["category"] == "OCD/attention"
    assert merge["output"] == ["MODEL", "OCD_MERGE_RECORD"]
    assert "merge_record" in merge["input"]["optional"] and "mask" in merge["input"]["optional"]
    # added after the first release: optional, at the end, in the order they came, with defaults
    # that keep the behaviour workflows were saved with (fewer widget values still load)
    assert merge["input_order"]["optional"][-3:] == ["protect_object_keys", "dit_blocks", "dit_merge"]
    assert merge["input"]["optional"]["protect_object_keys"][1]["default"] is False
    assert merge["input"]["optional"]["dit_blocks"][1]["default"] == "all"
    assert merge["input"]["optional"]["dit_merge"][1]["options"] == ["tokens", "keys_values"]
    assert object_info["OCD_CrossFrameAttention"]["input"]["required"]["mode"][1]["options"] == [
        "first", "sparse_causal", "window", "full"]


def _prompt(replay_record: bool = True) -> dict:
    merge = dict(merge_ratio=0.5, stride_x=2, stride_y=2, max_downsample="2", blocks="input,middle,output",
                 foreground_protection=1.0, seed=3)
    sampler = dict(seed=1, steps=2, cfg=5.0, sampler_name="euler", scheduler="normal")
    prompt = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": MINI_CHECKPOINT}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red car", "clip": ["ckpt", 1]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["ckpt", 1]}},
        "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 3}},
        "mask": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 32, "height": 32}},
        "cross": {"class_type": "OCD_CrossFrameAttention", "inputs": {"model": ["ckpt", 0], "mode": "full",
                                                                      "window_size": 2}},
        "record": {"class_type": "OCD_TokenMerge", "inputs": dict(merge, model=["cross", 0], pairing="record",
                                                                  mask=["mask", 0])},
        "invert": {"class_type": "KSampler", "inputs": dict(sampler, model=["record", 0], positive=["pos", 0],
                                                            negative=["neg", 0], latent_image=["latent", 0],
                                                            denoise=1.0)},
        "replay": {"class_type": "OCD_TokenMerge", "inputs": dict(merge, model=["cross", 0], pairing="replay")},
        "edit": {"class_type": "KSampler", "inputs": dict(sampler, model=["replay", 0], positive=["pos", 0],
                                                          negative=["neg", 0], latent_image=["invert", 0],
                                                          denoise=0.5)},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["edit", 0], "vae": ["ckpt", 2]}},
        "preview": {"class_type": "PreviewImage", "inputs": {"images": ["decode", 0]}},
    }
    if replay_record:
        prompt["replay"]["inputs"]["merge_record"] = ["record", 1]
    return prompt


def test_record_then_replay_workflow_runs(server):
    entry = server.run(_prompt())
    assert entry["status"]["status_str"] == "success", execution_error(entry)
    images = entry["outputs"]["preview"]["images"]
    assert len(images) == 3  # three frames edited


def test_replay_without_a_record_is_a_node_error(server):
    entry = server.run(_prompt(replay_record=False))
    error = execution_error(entry)
    assert entry["status"]["status_str"] == "error" and error is not None
    assert error["node_type"] == "OCD_TokenMerge" and "input 'merge_record'" in error["exception_message"]
    # and the server keeps serving
    assert server.run(_prompt())["status"]["status_str"] == "success"
