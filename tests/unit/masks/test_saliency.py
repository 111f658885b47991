"""ocd.masks.saliency (no-model saliency) and ocd.masks.sam_video (Segment Anything on video).

SAM runs for real: a randomly initialised vit_b (tests/support/random_sam.py), built once
per run; the clip's three frame embeddings are computed once (the expensive part) in the
``first_run`` fixture, which also counts the encoder and predictor calls; later tests reuse
the embeddings through the model's cache and count again.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ocd.masks import saliency, sam_video
from ocd.errors import OCDInputError
from tests.support.random_sam import CLIP_FRAMES, CLIP_SIZE, cold_segmentation, counted_run, key_frame_prompts


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    union = ((a > 0.5) | (b > 0.5)).sum().item()
    return ((a > 0.5) & (b > 0.5)).sum().item() / union if union else 1.0


# ---- spectral residual, flow, Otsu ---------------------------------------------------------

def test_own_spectral_residual_finds_the_odd_one_out():
    # a regular grid of dots with one bigger blob: the blob is the "unexpected" part
    img = np.zeros((96, 128), np.float32)
    img[4::12, 4::12] = 1.0
    img[60:70, 90:100] = 1.0
    sal = saliency.spectral_residual(img)
    assert sal.shape == img.shape and sal.dtype == np.float32 and sal.max() == pytest.approx(1.0)
    y, x = np.unravel_index(np.argmax(sal), sal.shape)
    assert 52 <= y <= 78 and 82 <= x <= 108
    assert sal[60:70, 90:100].mean() > 3 * sal.mean()


def test_flow_magnitude_ignores_a_camera_pan_and_sees_a_moving_object():
    rng = np.random.default_rng(0)
    texture = rng.random((80, 120)).astype(np.float32)
    import cv2

    texture = cv2.GaussianBlur(texture, (0, 0), 2)
    texture = (texture - texture.min()) / (texture.max() - texture.min())
    panned = np.roll(texture, 3, axis=1)  # the whole scene moves: a pan
    assert np.median(saliency.flow_magnitude(texture, panned)) < 0.3
    moved = texture.copy()
    moved[30:50, 50:70] = texture[30:50, 46:66]  # a patch moves right by 4 px
    mag = saliency.flow_magnitude(texture, moved)
    assert mag[34:46, 54:66].mean() > 2.0 > mag[:, :30].mean() + 1.5


def test_otsu_splits_two_modes():
    values = np.concatenate([np.full(100, 0.2), np.full(50, 0.8)])
    assert 0.2 <= saliency.otsu_level(values) < 0.8


def test_auto_saliency_on_the_bikes_clip(test_videos):
    from ocd.video import codec

    path = str(test_videos["bikes.mp4"])
    info = codec.probe_video(path)
    frames = codec.decode_frames(path, codec.select_frames(info, 12, 0, 1, 0.0), (256, 112))
    mask, soft = saliency.auto_saliency(frames)
    assert mask.shape == soft.shape == (12, 112, 256) and mask.dtype == torch.float32
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    coverage = mask.mean(dim=(1, 2))
    assert (coverage > 0.01).all() and (coverage < 0.9).all(), coverage  # non-empty, not the whole frame
    mean_iou = np.mean([iou(mask[i], mask[i + 1]) for i in range(11)])
    assert mean_iou >= 0.7, mean_iou
    # without smoothing the mask is less stable: the smoothing is doing something
    raw, _ = saliency.auto_saliency(frames, smooth_frames=1)
    assert np.mean([iou(raw[i], raw[i + 1]) for i in range(11)]) < mean_iou


def test_auto_saliency_single_frame_and_bad_inputs():
    one = torch.zeros(1, 32, 48, 3)
    one[0, 10:20, 20:30] = 1.0
    mask, _ = saliency.auto_saliency(one, smooth_frames=1, cleanup_pixels=0)
    assert mask.shape == (1, 32, 48) and 0 < mask.mean() < 0.5
    # spectral residual lights up the square (its outline above all), not the flat background
    near = torch.zeros(32, 48, dtype=torch.bool)
    near[6:24, 16:34] = True
    assert mask[0][near].mean() > 4 * mask[0][~near].mean()
    with pytest.raises(OCDInputError, match="input 'images'.*empty"):
        saliency.auto_saliency(torch.zeros(0, 32, 32, 3))
    with pytest.raises(OCDInputError, match="input 'motion_weight'"):
        saliency.auto_saliency(one, motion_weight=2.0)
    with pytest.raises(OCDInputError, match="input 'motion_source'"):
        saliency.auto_saliency(torch.zeros(2, 32, 32, 3), motion_source="magic")


# ---- SAM: checkpoints, prompts ------------------------------------------------------------

def fake_state(width: int, depth: int) -> dict:
    state = {sam_video.PATCH_EMBED_KEY: torch.zeros(width, 3, 16, 16)}
    state.update({f"image_encoder.blocks.{i}.norm1.weight": torch.zeros(1) for i in range(depth)})
    return state


@pytest.mark.parametrize("width,depth,kind", [(768, 12, "vit_b"), (1024, 24, "vit_l"), (1280, 32, "vit_h")])
def test_model_type_from_shapes(width, depth, kind):
    assert sam_video.detect_model_type(fake_state(width, depth)) == kind


def test_model_type_refuses_other_checkpoints():
    with pytest.raises(OCDInputError, match="input 'sam_name'.*not a Segment Anything"):
        sam_video.detect_model_type({"model.diffusion_model.x": torch.zeros(1)})
    with pytest.raises(OCDInputError, match="unknown Segment Anything size"):
        sam_video.detect_model_type(fake_state(768, 24))


def test_model_type_of_the_real_vit_b_layout():
    from tests.support.random_sam import random_sam

    assert sam_video.detect_model_type(random_sam().state_dict()) == "vit_b"


def test_prompts_are_scaled_from_the_clicked_image_to_the_frames():
    p = sam_video.parse_prompts(json.dumps({
        "frame": 2, "width": 200, "height": 100, "points": [[50, 20], [199, 99]], "labels": [1, 0],
        "box": [180, 90, 20, 10],  # corners in any order
    }), frame_count=3, height=50, width=400)
    assert p.frame == 2
    assert p.points.tolist() == [[100.0, 10.0], [398.0, 49.5]]
    assert p.labels.tolist() == [1, 0]
    assert p.box.tolist() == [40.0, 5.0, 360.0, 45.0]


@pytest.mark.parametrize("prompts,message", [
    ({"points": [[10, 5]], "width": 8, "height": 8}, "point \\(10, 5\\) is outside"),
    ({"points": [[-1, 5]]}, "outside"),
    ({"points": []}, "no prompt"),
    ("", "no prompt"),
    ({"points": [[1, 1]], "frame": 3}, "key frame 3 is outside the video \\(0..2\\)"),
    ({"points": [[1, 1]], "labels": [1, 0]}, "1 points but 2 labels"),
    ({"box": [100, 100, 120, 120]}, "box .* lies outside"),
    ("{not json", "not valid JSON"),
])
def test_bad_prompts_are_refused_naming_the_input(prompts, message):
    text = prompts if isinstance(prompts, str) else json.dumps(prompts)
    with pytest.raises(OCDInputError, match=f"input 'prompts'.*{message}"):
        sam_video.parse_prompts(text, frame_count=3, height=40, width=60)


def test_points_are_carried_by_flow_and_boxes_follow_the_mask():
    flow = np.zeros((10, 20, 2), np.float32)
    flow[..., 0] = 1.5  # everything moves 1.5 working pixels right
    # frames twice the working size: the move is 3 frame pixels
    pts, labels = sam_video._carry(np.array([[4.0, 4.0], [39.0, 2.0]]), np.array([1, 0]), flow, 0.5, 20, 40)
    assert pts.tolist() == [[7.0, 4.0]] and labels.tolist() == [1]  # the second one left the frame
    mask = np.zeros((20, 40), bool)
    mask[5:15, 10:20] = True
    box = sam_video._next_box(mask, flow, 0.5, 20, 40)
    assert box.tolist() == pytest.approx([10 + 3 - 1, 5 - 1, 20 + 3 + 1, 15 + 1])  # shifted and padded 10%
    assert sam_video._next_box(np.zeros((20, 40), bool), flow, 0.5, 20, 40) is None


def test_embedding_cache_is_bounded_in_bytes():
    cache = sam_video.EmbeddingCache(max_bytes=3 * 4 * 16)
    for i in range(4):
        cache.put(str(i), sam_video.FrameEmbedding(torch.zeros(1, 16), (1, 1), (1, 1)))
    assert len(cache) == 3 and cache.get("0") is None and cache.get("3") is not None


def test_encoder_batch_size_follows_free_memory():
    assert sam_video.encoder_batch_size("vit_b", 0, 10) == 1
    assert sam_video.encoder_batch_size("vit_b", 8 * 2**30, 10) == 2
    assert sam_video.encoder_batch_size("vit_b", 1 << 40, 3) == 3


# ---- SAM on a real clip with the random vit_b -----------------------------------------------

def frame_order(calls, model, clip):
    """Which frame each recorded predict call ran on (by the features the predictor held)."""
    frames = (clip * 255).round().to(torch.uint8).numpy()
    cached = [model.cache.get(sam_video.frame_key(f)).features for f in frames]
    return [next(i for i, c in enumerate(cached) if torch.equal(c, feats)) for feats in calls]


@pytest.fixture(scope="module")
def first_run(test_videos):
    """The clip segmented from a cold cache (3 encoder passes: the expensive part of the suite)."""
    run = cold_segmentation(str(test_videos["bikes.mp4"]))
    assert run["cached_before"] == 0
    return run["clip"], run["model"], run["masks"], run["counter"], run["held"], run["progress"]


def test_propagation_embeds_each_frame_once_and_predicts_once_per_frame(first_run):
    clip, model, masks, counter, held, progress = first_run
    encoder_batches = [args[0].shape[0] for args, _ in counter.calls["image_encoder"]]
    assert encoder_batches == [2, 1]  # batched, every frame exactly once
    assert counter.count("predict") == CLIP_FRAMES
    # key frame first, then forwards, then backwards
    assert frame_order(held, model, clip) == [1, 2, 0]
    assert progress[-1] == (2 * CLIP_FRAMES, 2 * CLIP_FRAMES)
    assert masks.shape == (CLIP_FRAMES, *CLIP_SIZE) and masks.dtype == torch.float32
    assert set(masks.unique().tolist()) <= {0.0, 1.0}


def test_key_frame_prompt_reaches_the_predictor_in_its_coordinates(first_run):
    _, _, _, counter, _, _ = first_run
    h, w = CLIP_SIZE
    # the clicked image was twice the frames' size: frame pixels (40, 20)
    args, kwargs = counter.calls["predict"][0]
    assert kwargs["point_coords"].tolist() == [[40.0, 20.0]] and kwargs["point_labels"].tolist() == [1]
    assert kwargs["box"] is None and kwargs["multimask_output"] is True  # one click: SAM picks among 3
    # inside SAM: the long side is resized to 1024 (ResizeLongestSide), so x * 1024 / w
    points, labels = counter.calls["prompt_encoder"][0][1]["points"]
    new_h = int(h * 1024 / w + 0.5)
    assert points[0, 0].tolist() == pytest.approx([40 * 1024 / w, 20 * new_h / h], rel=1e-5)
    # later frames are re-prompted with the carried point and the previous mask's box
    for args, kwargs in counter.calls["predict"][1:]:
        assert kwargs["multimask_output"] is False
        assert kwargs["point_coords"] is not None or kwargs["box"] is not None


def test_rerun_with_new_prompts_reuses_the_embeddings(first_run):
    clip, model, _, _, _, _ = first_run
    h, w = CLIP_SIZE
    prompts = {"frame": 0, "width": w // 2, "height": h // 2, "points": [], "box": [5, 2, 30, 20]}
    masks, counter, held = counted_run(model, clip, prompts)
    assert counter.count("image_encoder") == 0  # nothing re-encoded
    assert frame_order(held, model, clip) == [0, 1, 2]  # forwards only from frame 0
    box = counter.calls["predict"][0][1]["box"]
    assert box.tolist() == [10.0, 4.0, 60.0, 40.0]  # half-size image: doubled
    sam_box = counter.calls["prompt_encoder"][0][1]["boxes"]
    assert sam_box.reshape(-1).tolist() == pytest.approx([10 * 1024 / w, 4 * 1024 / w, 60 * 1024 / w, 40 * 1024 / w], rel=1e-2)
    assert masks.shape == (CLIP_FRAMES, h, w)


def test_segment_video_bad_inputs(first_run):
    _, model, _, _, _, _ = first_run
    with pytest.raises(OCDInputError, match="input 'images'.*empty"):
        sam_video.segment_video(model, torch.zeros(0, 8, 8, 3), key_frame_prompts())
    with pytest.raises(OCDInputError, match="input 'images'"):
        sam_video.segment_video(model, torch.zeros(8, 8, 3), key_frame_prompts())
    with pytest.raises(OCDInputError, match="input 'prompts'.*no prompt"):
        sam_video.segment_video(model, torch.zeros(2, 8, 8, 3), {"points": []})
