"""ocd.video.codec and ocd.paths on real clips and small arrays (no ComfyUI needed)."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from ocd.video import codec
from ocd.errors import OCDInputError
from ocd.paths import resolve_inside


@pytest.fixture(scope="module")
def bikes(test_videos):
    return str(test_videos["bikes.mp4"])


def test_probe_reads_the_container(bikes):
    info = codec.probe_video(bikes)
    assert (info.width, info.height, info.frame_count) == (640, 272, 250)
    assert info.fps == pytest.approx(25.0)
    assert info.duration == pytest.approx(10.0)


def test_select_frames_follows_vhs_order():
    info = codec.VideoInfo(fps=25.0, frame_count=250, width=64, height=64)
    sel = codec.select_frames(info, frame_load_cap=4, skip_first_frames=10, select_every_nth=3)
    assert sel.source_indices == (10, 13, 16, 19)
    assert sel.fps == pytest.approx(25.0 / 3)
    # force_rate resamples the timeline first: 10 fps over a 10 s clip -> 100 frames
    slow = codec.select_frames(info, force_rate=10.0)
    assert len(slow) == 100 and slow.source_indices[:4] == (0, 2, 5, 7) and slow.fps == 10.0
    # faster than the source repeats frames instead of inventing them
    fast = codec.select_frames(info, force_rate=50.0, frame_load_cap=6)
    assert fast.source_indices == (0, 0, 1, 1, 2, 2)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(skip_first_frames=250), "skip_first_frames"),
        (dict(select_every_nth=0), "select_every_nth"),
        (dict(frame_load_cap=-1), "frame_load_cap"),
    ],
)
def test_select_frames_refuses_empty_or_invalid_selection(kwargs, name):
    info = codec.VideoInfo(fps=25.0, frame_count=250, width=64, height=64)
    with pytest.raises(OCDInputError) as err:
        codec.select_frames(info, **kwargs)
    assert err.value.input_name == name


def test_output_size_is_a_multiple_of_8_and_keeps_aspect():
    assert codec.output_size(640, 272, 0, 0) == (640, 272)
    assert codec.output_size(640, 272, 512, 0) == (512, 216)  # 217.6 -> 216
    assert codec.output_size(176, 144, 0, 100) == (120, 104)  # 122.2 -> 120, 100 -> 104
    assert codec.output_size(13, 13, 0, 0) == (16, 16)
    with pytest.raises(OCDInputError, match="width"):
        codec.output_size(640, 272, codec.MAX_SIDE + 8, 0)


def _stripes(h, w):
    frame = np.zeros((h, w, 3), np.uint8)
    frame[:, : w // 2] = 255
    return frame


@pytest.mark.parametrize("mode", codec.RESIZE_MODES)
def test_resize_modes(mode):
    frame = np.full((100, 200, 3), 200, np.uint8)  # 2:1 grey
    out = codec.resize_frame(frame, (64, 64), mode)
    assert out.shape == (64, 64, 3)
    if mode == "pad":  # fit: 64x32 content centred, black bars above and below
        assert out[:16].max() == 0 and out[-16:].max() == 0 and out[32, 32, 0] == 200
    else:  # crop and stretch fill the frame
        assert out.min() == 200


def test_crop_keeps_the_centre():
    frame = np.zeros((100, 300, 3), np.uint8)
    frame[:, 100:200] = 255  # the middle third
    out = codec.resize_frame(frame, (100, 100), "crop")
    assert out.min() == 255


def test_decode_selected_frames_matches_full_decode(bikes):
    info = codec.probe_video(bikes)
    every = codec.decode_frames(bikes, codec.select_frames(info, frame_load_cap=12), (640, 272))
    picked = codec.decode_frames(
        bikes, codec.select_frames(info, frame_load_cap=3, skip_first_frames=2, select_every_nth=4), (640, 272)
    )
    assert every.dtype == torch.float32 and every.shape == (12, 272, 640, 3)
    assert 0.0 <= every.min() and every.max() <= 1.0
    assert torch.equal(picked, every[[2, 6, 10]])


def test_decode_calls_progress_per_source_frame(bikes):
    info = codec.probe_video(bikes)
    seen = []
    codec.decode_frames(bikes, codec.select_frames(info, frame_load_cap=3, select_every_nth=2), (64, 32),
                           on_frame=seen.append)
    assert seen == [0, 1, 2, 3, 4]  # stops after the last selected frame (index 4)


def test_memory_estimate_refuses_before_decoding():
    assert codec.decoded_bytes(10, 64, 32) == 10 * 64 * 32 * 3 * 4
    codec.ensure_fits(10, 64, 32, available_bytes=10 * 64 * 32 * 12)
    with pytest.raises(OCDInputError, match="frame_load_cap.*GiB"):
        codec.ensure_fits(100000, 1920, 1080, available_bytes=8 * 1024**3)


@pytest.mark.parametrize("fmt", codec.SAVE_FORMATS)
def test_round_trip_keeps_count_rate_size_and_quality(bikes, tmp_path, fmt):
    info = codec.probe_video(bikes)
    sel = codec.select_frames(info, frame_load_cap=10, select_every_nth=2)
    first = codec.decode_frames(bikes, sel, (320, 136))
    path = codec.encode_video(codec.to_uint8_frames(first), str(tmp_path / f"clip.{fmt}"), sel.fps, fmt)
    again = codec.probe_video(path)
    assert (again.frame_count, again.width, again.height) == (10, 320, 136)
    assert again.fps == pytest.approx(sel.fps, rel=0.01)
    second = codec.decode_frames(path, codec.select_frames(again), (320, 136))
    assert codec.psnr(first, second) >= 30.0
    assert os.listdir(tmp_path) == [f"clip.{fmt}"]  # no temporary file left beside it


def test_mp4_pads_odd_sizes_to_even(tmp_path):
    frames = np.random.default_rng(0).integers(0, 255, (3, 33, 47, 3), dtype=np.uint8)
    path = codec.encode_video(frames, str(tmp_path / "odd.mp4"), 8.0)
    info = codec.probe_video(path)
    assert (info.width, info.height, info.frame_count) == (48, 34, 3)


def test_failed_encode_leaves_nothing(tmp_path):
    frames = np.zeros((2, 16, 16, 3), np.uint8)
    with pytest.raises(OCDInputError, match="frame_rate"):
        codec.encode_video(frames, str(tmp_path / "x.mp4"), 0.0)
    with pytest.raises(Exception):
        codec.encode_video(frames[:, :, :, :2], str(tmp_path / "x.mp4"), 8.0)  # not RGB: encoder fails
    assert os.listdir(tmp_path) == []


def test_to_uint8_frames_validates_the_batch():
    with pytest.raises(OCDInputError, match="images"):
        codec.to_uint8_frames(torch.zeros(16, 16, 3))
    with pytest.raises(OCDInputError, match="no frames"):
        codec.to_uint8_frames(torch.zeros(0, 16, 16, 3))
    rgba = torch.ones(1, 2, 2, 4)
    assert codec.to_uint8_frames(rgba).shape == (1, 2, 2, 3)


# ---- bad files -------------------------------------------------------------------------

def test_not_a_video(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"definitely not a video " * 100)
    with pytest.raises(OCDInputError, match="not a readable video"):
        codec.probe_video(str(junk))


@pytest.mark.parametrize("keep", [0.5, 0.97])
def test_truncated_mp4_is_refused(bikes, tmp_path, keep):
    data = open(bikes, "rb").read()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(OCDInputError, match="video"):
        info = codec.probe_video(str(cut))
        codec.decode_frames(str(cut), codec.select_frames(info), (64, 32))


def test_truncated_faststart_mp4_is_refused(bikes, tmp_path):
    """With the index at the front the file still opens; the missing frames must be noticed."""
    info = codec.probe_video(bikes)
    frames = codec.decode_frames(bikes, codec.select_frames(info, frame_load_cap=40), (160, 64))
    whole = codec.encode_video(codec.to_uint8_frames(frames), str(tmp_path / "whole.mp4"), 25.0)
    data = open(whole, "rb").read()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    cut_info = codec.probe_video(str(cut))
    assert cut_info.frame_count == 40  # the header still promises every frame
    with pytest.raises(OCDInputError, match="truncated|damaged"):
        codec.decode_frames(str(cut), codec.select_frames(cut_info), (160, 64))


# ---- paths ----------------------------------------------------------------------------

@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "input"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.mp4").write_bytes(b"x")
    (tmp_path / "secret.mp4").write_bytes(b"x")
    return root


def test_resolve_inside_accepts_names_in_the_folder(folder):
    assert resolve_inside(str(folder), "sub/a.mp4") == os.path.realpath(folder / "sub" / "a.mp4")


@pytest.mark.parametrize("name, why", [
    ("../secret.mp4", "'..'"),
    ("sub/../../secret.mp4", "'..'"),
    ("/etc/passwd", "absolute"),
    ("", "no file name"),
    ("missing.mp4", "no file"),
])
def test_resolve_inside_refuses_escapes(folder, name, why):
    with pytest.raises(OCDInputError, match=why):
        resolve_inside(str(folder), name, input_name="video")


def test_resolve_inside_refuses_symlinks_out(folder):
    (folder / "link.mp4").symlink_to(folder.parent / "secret.mp4")
    with pytest.raises(OCDInputError, match="outside"):
        resolve_inside(str(folder), "link.mp4")
