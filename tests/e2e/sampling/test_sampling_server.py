"""OCD_DualRateKSampler through a real ComfyUI server with the mini SD1.5 checkpoint."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.e2e.conftest import MINI_CHECKPOINT
from tests.support.server import execution_error

pytestmark = pytest.mark.e2e

SIZE = 128  # pixels; 16x16 latent, 2 frames


def prompt(sampler: dict, mask_frames: int = 1, prefix: str = "ocd_dual") -> dict:
    """Checkpoint -> text -> empty latent (2 frames) -> a square mask -> sampler -> decode -> save."""
    sampler_inputs = dict(model=["1", 0], positive=["2", 0], negative=["3", 0], latent_image=["4", 0],
                          seed=3, steps=4, cfg=5.0, sampler_name="euler", scheduler="normal", denoise=1.0)
    sampler_inputs.update(sampler.get("inputs", {}))
    p = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": MINI_CHECKPOINT}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "a red car"}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "blurry"}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": SIZE, "height": SIZE, "batch_size": 2}},
        "5": {"class_type": "SolidMask", "inputs": {"value": 0.0, "width": SIZE, "height": SIZE}},
        "6": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 40, "height": 32}},
        "7": {"class_type": "MaskComposite",
              "inputs": {"destination": ["5", 0], "source": ["6", 0], "x": 48, "y": 40, "operation": "add"}},
        "9": {"class_type": sampler["class_type"], "inputs": sampler_inputs},
        "10": {"class_type": "VAEDecode", "inputs": {"samples": ["9", 0], "vae": ["1", 2]}},
        "11": {"class_type": "SaveImage", "inputs": {"images": ["10", 0], "filename_prefix": prefix}},
    }
    if sampler["class_type"] == "OCD_DualRateKSampler":
        mask = ["7", 0]
        if mask_frames > 1:
            p["8"] = {"class_type": "RepeatImageBatch", "inputs": {"image": ["12", 0], "amount": mask_frames}}
            p["12"] = {"class_type": "MaskToImage", "inputs": {"mask": ["7", 0]}}
            p["13"] = {"class_type": "ImageToMask", "inputs": {"image": ["8", 0], "channel": "red"}}
            mask = ["13", 0]
        sampler_inputs["mask"] = mask
    return p


def dual(**overrides) -> dict:
    inputs = dict(background_step_ratio=2.0, blend_point=0.25, crop_padding=1, blend="feathered")
    inputs.update(overrides)
    return {"class_type": "OCD_DualRateKSampler", "inputs": inputs}


def saved_images(server, entry) -> list[np.ndarray]:
    (out,) = [o for o in entry["outputs"].values() if "images" in o]
    return [np.asarray(Image.open(server.base / "output" / i["subfolder"] / i["filename"])) for i in out["images"]]


def test_node_is_listed_with_ksampler_inputs(object_info):
    info = object_info["OCD_DualRateKSampler"]
    assert info["category"] == "OCD/sampling"
    required = info["input"]["required"]
    for name in ("model", "seed", "steps", "cfg", "sampler_name", "scheduler", "positive", "negative",
                 "latent_image", "denoise", "mask", "background_step_ratio", "blend_point",
                 "crop_padding", "blend"):
        assert name in required
    assert {"euler", "dpmpp_2m", "ddim", "uni_pc"} <= set(required["sampler_name"][1]["options"])
    assert required["blend"][1]["options"] == ["feathered", "hard"]


def test_dual_rate_sampler_runs_and_all_joint_matches_ksampler(server):
    entry = server.run(prompt(dual(), prefix="ocd_dual"))
    assert entry["status"]["status_str"] == "success", execution_error(entry)
    images = saved_images(server, entry)
    assert len(images) == 2 and images[0].shape == (SIZE, SIZE, 3)

    joint = server.run(prompt(dual(background_step_ratio=1.0, blend_point=1.0), prefix="ocd_joint"))
    core = server.run(prompt({"class_type": "KSampler"}, prefix="ocd_core"))
    assert joint["status"]["status_str"] == "success", execution_error(joint)
    assert core["status"]["status_str"] == "success", execution_error(core)
    for a, b in zip(saved_images(server, joint), saved_images(server, core)):
        assert np.array_equal(a, b)
    # the dual-rate run differs from plain sampling (it did take the two-branch path)
    assert any(not np.array_equal(a, b) for a, b in zip(images, saved_images(server, core)))


def test_mask_frame_mismatch_is_reported_and_server_keeps_serving(server):
    entry = server.run(prompt(dual(), mask_frames=3, prefix="ocd_bad"))
    assert entry["status"]["status_str"] == "error"
    error = execution_error(entry)
    assert error["node_type"] == "OCD_DualRateKSampler"
    assert "mask" in error["exception_message"] and "3 frames" in error["exception_message"]
    again = server.run(prompt(dual(), prefix="ocd_after"))
    assert again["status"]["status_str"] == "success", execution_error(again)
