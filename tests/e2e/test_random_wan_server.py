"""The random Wan 2.1 files and the test-only text node in the session's real ComfyUI server: a
whole text-to-video graph of core nodes (UNETLoader, ModelSamplingSD3, KSampler,
EmptyHunyuanLatentVideo, VAELoader, VAEDecode, PreviewImage) runs on them."""
from __future__ import annotations

import pytest

from tests.conftest import WAN21_SMALL_FILE, WAN21_VAE_FILE
from tests.support.server import execution_error

pytestmark = pytest.mark.e2e

FRAMES, SIZE = 9, 64


def wan_prompt(seed: int = 0) -> dict:
    def text(value):
        return {"class_type": "OCDTest_TextConditioning", "inputs": {"text": value, "tokens": 16}}

    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": WAN21_SMALL_FILE, "weight_dtype": "default"}},
        "2": {"class_type": "ModelSamplingSD3", "inputs": {"model": ["1", 0], "shift": 8.0}},
        "3": text("a red ball rolls across the grass"),
        "4": text("blurry, static"),
        "5": {"class_type": "EmptyHunyuanLatentVideo",
              "inputs": {"width": SIZE, "height": SIZE, "length": FRAMES, "batch_size": 1}},
        "6": {"class_type": "KSampler",
              "inputs": {"model": ["2", 0], "positive": ["3", 0], "negative": ["4", 0], "latent_image": ["5", 0],
                         "seed": seed, "steps": 3, "cfg": 3.0, "sampler_name": "euler", "scheduler": "simple",
                         "denoise": 1.0}},
        "7": {"class_type": "VAELoader", "inputs": {"vae_name": WAN21_VAE_FILE}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["7", 0]}},
        "9": {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}},
    }


def test_server_lists_the_test_node_and_the_wan_files(object_info):
    info = object_info["OCDTest_TextConditioning"]
    assert info["display_name"] == "Test Text Conditioning (OCD tests)"
    assert info["output"] == ["CONDITIONING"] and info["input"]["optional"]["tokens"][1]["default"] == 16
    assert WAN21_SMALL_FILE in object_info["UNETLoader"]["input"]["required"]["unet_name"][0]
    assert WAN21_VAE_FILE in object_info["VAELoader"]["input"]["required"]["vae_name"][0]


def test_a_wan_text_to_video_graph_runs(server):
    entry = server.run(wan_prompt(seed=1))
    assert entry["status"]["status_str"] == "success", execution_error(entry)
    images = entry["outputs"]["9"]["images"]
    assert len(images) == FRAMES
    assert all((server.base / "temp" / i["subfolder"] / i["filename"]).is_file() for i in images)
