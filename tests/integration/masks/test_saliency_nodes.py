"""Saliency and mask nodes run in-process inside ComfyUI (the pack loaded as ComfyUI loads it).

The SAM loader reads a random vit_b checkpoint written once per run into the in-process
ComfyUI's models/sams; OCD_SAMVideoMask runs on the shared random model, whose embedding
cache is filled once per process by tests.support.random_sam.cold_segmentation (the unit
tests use the same run), so the node runs only SAM's mask decoder here.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.support.random_sam import (
    CLIP_FRAMES, CLIP_SIZE, bikes_clip, cold_segmentation, shared_video_model, write_sam_checkpoint,
)

SAM_FILE = "ocd-test-random-vit-b.pth"


@pytest.fixture(scope="module")
def sams_dir(comfy):
    return Path(comfy.base_directory) / "models" / "sams"


@pytest.fixture(scope="module")
def sam_checkpoint(sams_dir):
    return write_sam_checkpoint(sams_dir / SAM_FILE, seed=0)


def test_nodes_are_registered_with_tooltips(ocd_nodes):
    for node_id in ("OCD_SAMLoader", "OCD_SAMVideoMask", "OCD_AutoSaliency", "OCD_MaskOps"):
        schema = ocd_nodes[node_id].GET_SCHEMA()
        assert schema.category.startswith("OCD/") and schema.description
        assert all(i.tooltip for i in schema.inputs), node_id


def test_sams_folder_is_registered(ocd_nodes, sams_dir):
    import folder_paths

    assert str(sams_dir) in folder_paths.get_folder_paths("sams")


def test_loader_detects_vit_b_and_loads_the_weights(run, ocd_nodes, sam_checkpoint, inference):
    from tests.support.random_sam import random_sam

    loader = ocd_nodes["OCD_SAMLoader"]
    assert SAM_FILE in loader.GET_SCHEMA().inputs[0].options  # listed from models/sams
    (model,) = run(loader, sam_name=SAM_FILE, device="cpu").result
    assert model.model_type == "vit_b" and model.device == torch.device("cpu")
    reference = random_sam().state_dict()
    loaded = model.sam.state_dict()
    assert loaded.keys() == reference.keys()
    key = "image_encoder.blocks.3.attn.qkv.weight"
    assert torch.equal(loaded[key], reference[key].half().float())  # fp16 file, fp32 model


def test_loader_missing_or_wrong_files_say_where_to_put_one(run, ocd_nodes, sams_dir, comfy):
    loader = ocd_nodes["OCD_SAMLoader"]
    message = loader.VALIDATE_INPUTS(sam_name="nope.pth") if hasattr(loader, "VALIDATE_INPUTS") else None
    message = message or loader.validate_inputs(sam_name="nope.pth")
    assert "input 'sam_name'" in message and str(sams_dir) in message
    with pytest.raises(Exception, match=f"input 'sam_name'.*{sams_dir}"):
        run(loader, sam_name="nope.pth", device="cpu")
    (sams_dir / "text.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(Exception, match="input 'sam_name'.*'text.pth' is not a readable checkpoint"):
        run(loader, sam_name="text.pth", device="cpu")
    torch.save({"model.diffusion_model.x": torch.zeros(1)}, sams_dir / "sd.pth")
    with pytest.raises(Exception, match="input 'sam_name'.*not a Segment Anything"):
        run(loader, sam_name="sd.pth", device="cpu")


def test_sam_video_mask_node(run, ocd_nodes, test_videos, comfy, inference):
    cold_segmentation(str(test_videos["bikes.mp4"]))  # the clip's embeddings, once per process
    clip = bikes_clip(str(test_videos["bikes.mp4"]))
    h, w = CLIP_SIZE
    prompts = json.dumps({"frame": 1, "width": w, "height": h, "points": [[40, 20], [100, 40]], "labels": [1, 0],
                          "box": None})
    import comfy.utils as comfy_utils  # (not `comfy`: that name is the fixture here)

    calls = []
    comfy_utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: calls.append((value, total)))
    try:
        out = run(ocd_nodes["OCD_SAMVideoMask"], sam_model=shared_video_model(), images=clip, prompts=prompts)
    finally:
        comfy_utils.set_progress_bar_global_hook(None)
    assert calls[-1] == (2 * CLIP_FRAMES, 2 * CLIP_FRAMES)  # embeddings, then one step per predicted frame
    (mask,) = out.result
    assert mask.shape == (CLIP_FRAMES, h, w) and mask.dtype == torch.float32
    ui = out.ui
    assert len(ui["ocd_overlays"]) == CLIP_FRAMES and len(ui["ocd_frames"]) == CLIP_FRAMES
    from PIL import Image

    first = ui["ocd_overlays"][1]
    overlay = Image.open(Path(comfy.base_directory) / "temp" / first["subfolder"] / first["filename"])
    assert overlay.size == (w, h)
    # the preview is the frame tinted where the mask is
    pixels = torch.from_numpy(np.array(overlay.convert("RGB"))).float() / 255
    frame = clip[1]
    inside = mask[1] > 0.5
    if inside.any():
        assert (pixels[inside][:, 0] - frame[inside][:, 0]).mean() > 0.1  # redder
    assert torch.allclose(pixels[~inside], frame[~inside], atol=2 / 255)


def test_sam_video_mask_without_prompt_is_a_clear_error(run, ocd_nodes, test_videos):
    clip = bikes_clip(str(test_videos["bikes.mp4"]))
    with pytest.raises(Exception, match="input 'prompts'.*no prompt: click on the object"):
        run(ocd_nodes["OCD_SAMVideoMask"], sam_model=shared_video_model(), images=clip,
            prompts=json.dumps({"frame": 0, "points": [], "box": None}))
    with pytest.raises(Exception, match="input 'sam_model'"):
        run(ocd_nodes["OCD_SAMVideoMask"], sam_model="not a model", images=clip, prompts="{}")


def test_auto_saliency_node(run, ocd_nodes, inference):
    run_load = run(ocd_nodes["OCD_LoadVideo"], video="bikes.mp4", frame_load_cap=8, skip_first_frames=0,
                   select_every_nth=1, force_rate=0.0, width=128, height=0, resize_mode="crop")
    frames = run_load.result[0]
    out = run(ocd_nodes["OCD_AutoSaliency"], images=frames, motion_weight=0.7, motion_source="flow",
              threshold=-1.0, smooth_frames=3, working_size=128)
    mask, soft = out.result
    assert mask.shape == soft.shape == frames.shape[:3]
    assert 0.0 < mask.mean() < 0.9 and 0.0 <= soft.min() and soft.max() <= 1.0
    assert len(out.ui.as_dict()["images"]) == frames.shape[0]


def test_mask_ops_node_normalises_resizes_and_checks_frames(run, ocd_nodes, inference):
    node = ocd_nodes["OCD_MaskOps"]
    base = dict(grow_pixels=0, feather_pixels=0.0, threshold=-1.0, invert=False, smooth_frames=1, tube_frames=1,
                width=0, height=0)
    mask = torch.zeros(2, 1, 16, 16)  # [F,1,H,W] as some SAM packs return
    mask[:, 0, 4:8, 4:8] = 1
    (out,) = run(node, mask=mask, **{**base, "grow_pixels": 1}).result
    assert out.shape == (2, 16, 16) and out[0].sum() == 16 + 4 * 4  # 4x4 square grown by a plus
    latent = {"samples": torch.zeros(2, 4, 4, 4)}
    (small,) = run(node, mask=mask, reference_latent=latent, **base).result
    assert small.shape == (2, 4, 4) and small[0, 1, 1] == 1.0 and small[0, 0, 0] == 0.0
    images = torch.zeros(4, 32, 32, 3)
    (one,) = run(node, mask=mask[:1, 0], reference_images=images, **base).result
    assert one.shape == (4, 32, 32)  # a single mask is repeated for every frame
    (half,) = run(node, mask=mask, **{**base, "width": 8}).result
    assert half.shape == (2, 8, 8)  # one side given: aspect kept
    with pytest.raises(Exception, match="input 'mask'.*2 frames but the video has 4"):
        run(node, mask=mask, reference_images=images, **base)
    with pytest.raises(Exception, match="input 'mask'"):
        run(node, mask=torch.zeros(2, 3, 4, 4, 4), **base)
