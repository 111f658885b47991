"""The pack in graphs built on core's VIDEO type, through the real server, with sound:

- core LoadVideo -> GetVideoComponents -> the pack's nodes (an object-centric edit: saliency
  mask, mask ops, Dual-Rate KSampler on the mini SD1.5) -> core CreateVideo (with the sound
  GetVideoComponents gave) -> core SaveVideo; the same AUDIO also into Save Video (OCD);
- Load Video (OCD) (IMAGE, AUDIO, video_info -> Video Info (OCD) fps) -> core CreateVideo ->
  core SaveVideo.

The saved sound must be the source's segment of the kept frames, in sync; it is compared with
bigbuckbunny.mp4 decoded here by PyAV, not by the pack."""
from __future__ import annotations

import json

import av
import pytest

from tests.e2e.conftest import MINI_CHECKPOINT
from tests.support.media import correlation_at_best_lag, decode_mono
from tests.support.server import execution_error

pytestmark = pytest.mark.e2e
CLIP = "ocd_bunny_sound.mp4"  # 1.2 s of bigbuckbunny from 1.0 s, 160x96, stereo AAC
START, FRAMES, FPS = 1.0, 30, 25.0


@pytest.fixture(scope="module")
def source_segment(server, test_videos):
    """A short clip with sound in the input folder (written once with PyAV through the pack's
    codec), and the mono sound of that segment of the original."""
    from ocd.video import codec

    bunny = str(test_videos["bigbuckbunny.mp4"])
    info = codec.probe_video(bunny)
    selection = codec.select_frames(info, frame_load_cap=FRAMES, skip_first_frames=int(START * FPS))
    frames = codec.to_uint8_frames(codec.decode_frames(bunny, selection, (160, 96)))
    sound = codec.decode_audio(bunny, selection.start, selection.duration)
    data, rate, _ = codec.sound_for_video(sound.as_audio(), selection.duration)
    codec.encode_video(frames, str(server.base / "input" / CLIP), FPS, "mp4", 18, {}, (data, rate))
    whole, rate = decode_mono(bunny)
    return whole[int(START * rate): int((START + FRAMES / FPS) * rate)], rate


def saved_file(server, entry, node_id: str):
    (item,) = entry["outputs"][node_id]["images"]
    return server.base / item["type"] / item["subfolder"] / item["filename"]


def assert_sound_in_sync(path, segment, rate):
    saved, saved_rate = decode_mono(path)
    assert saved_rate == rate
    lag, corr = correlation_at_best_lag(segment, saved, 2400)
    assert abs(lag) <= 48 and corr > 0.9, (path.name, lag, corr)  # the same sound, within 1 ms
    assert abs(len(saved) / rate - FRAMES / FPS) < 0.06, len(saved) / rate


def test_core_video_through_the_pack_keeps_its_sound(server, source_segment):
    segment, rate = source_segment
    prompt = {
        "1": {"class_type": "LoadVideo", "inputs": {"file": CLIP}},
        "2": {"class_type": "GetVideoComponents", "inputs": {"video": ["1", 0]}},
        # the pack's edit on core's frames
        "3": {"class_type": "OCD_AutoSaliency", "inputs": {
            "images": ["2", 0], "motion_weight": 0.7, "motion_source": "flow", "threshold": -1.0,
            "smooth_frames": 3, "working_size": 64}},
        "4": {"class_type": "OCD_MaskOps", "inputs": {
            "mask": ["3", 0], "grow_pixels": 8, "feather_pixels": 0.0, "threshold": -1.0, "invert": False,
            "smooth_frames": 1, "tube_frames": 1, "width": 0, "height": 0, "reference_images": ["2", 0]}},
        "5": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": MINI_CHECKPOINT}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red rabbit", "clip": ["5", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["5", 1]}},
        "8": {"class_type": "VAEEncode", "inputs": {"pixels": ["2", 0], "vae": ["5", 2]}},
        "9": {"class_type": "OCD_DualRateKSampler", "inputs": {
            "model": ["5", 0], "seed": 1, "steps": 2, "cfg": 4.0, "sampler_name": "euler", "scheduler": "normal",
            "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["8", 0], "denoise": 0.6,
            "mask": ["4", 0], "background_step_ratio": 2.0, "blend_point": 0.5, "crop_padding": 1,
            "blend": "feathered"}},
        "10": {"class_type": "VAEDecode", "inputs": {"samples": ["9", 0], "vae": ["5", 2]}},
        # back to core's VIDEO, with the sound core's components gave
        "11": {"class_type": "CreateVideo", "inputs": {"images": ["10", 0], "fps": ["2", 2], "audio": ["2", 1]}},
        "12": {"class_type": "SaveVideo", "inputs": {
            "video": ["11", 0], "filename_prefix": "video/core_graph", "format": "mp4", "codec": "h264"}},
        # and core's AUDIO into the pack's saver
        "13": {"class_type": "OCD_SaveVideo", "inputs": {
            "images": ["10", 0], "frame_rate": ["2", 2], "filename_prefix": "OCD/core_graph", "format": "mp4",
            "crf": 23, "save_output": True, "audio": ["2", 1]}},
    }
    entry = server.run(prompt)
    assert entry["status"]["status_str"] == "success", execution_error(entry)
    for node_id in ("12", "13"):
        path = saved_file(server, entry, node_id)
        with av.open(str(path)) as container:
            video = container.streams.video[0]
            assert (video.codec_context.width, video.codec_context.height) == (160, 96)
            assert sum(1 for _ in container.decode(video)) == FRAMES
        assert_sound_in_sync(path, segment, rate)
    # the frames are the edit's, not the source's
    from ocd.video import codec

    source = codec.decode_frames(str(server.base / "input" / CLIP), codec.select_frames(codec.probe_video(
        str(server.base / "input" / CLIP))), (160, 96))
    saved = saved_file(server, entry, "13")
    edited = codec.decode_frames(str(saved), codec.select_frames(codec.probe_video(str(saved))), (160, 96))
    assert codec.psnr(source, edited) < 25.0
    with av.open(str(saved)) as container:  # the pack's file restores the workflow's prompt
        assert json.loads(container.metadata["prompt"])["9"]["class_type"] == "OCD_DualRateKSampler"


def test_the_packs_load_video_feeds_core_video_with_its_sound(server, source_segment, test_videos):
    segment, rate = source_segment
    prompt = {
        "1": {"class_type": "OCD_LoadVideo", "inputs": {
            "video": "bigbuckbunny.mp4", "frame_load_cap": FRAMES, "skip_first_frames": int(START * FPS),
            "select_every_nth": 1, "force_rate": 0.0, "width": 160, "height": 0, "resize_mode": "crop"}},
        "2": {"class_type": "OCD_VideoInfo", "inputs": {"video_info": ["1", 2], "which": "loaded"}},
        "3": {"class_type": "CreateVideo", "inputs": {"images": ["1", 0], "fps": ["2", 0], "audio": ["1", 3]}},
        "4": {"class_type": "SaveVideo", "inputs": {
            "video": ["3", 0], "filename_prefix": "video/from_ocd", "format": "mp4", "codec": "h264"}},
    }
    entry = server.run(prompt)
    assert entry["status"]["status_str"] == "success", execution_error(entry)
    path = saved_file(server, entry, "4")
    with av.open(str(path)) as container:
        assert container.streams.video[0].average_rate == FPS
    assert_sound_in_sync(path, segment, rate)
