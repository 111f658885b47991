"""OCD_LoadVideo / OCD_SaveVideo run in-process inside ComfyUI."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from ocd.video.codec import psnr

DEFAULTS = dict(frame_load_cap=16, skip_first_frames=0, select_every_nth=1, force_rate=0.0,
                width=0, height=0, resize_mode="crop")


def load(run, ocd_nodes, video, **kwargs):
    return run(ocd_nodes["OCD_LoadVideo"], video=video, **{**DEFAULTS, **kwargs}).result


def save(run, ocd_nodes, images, **kwargs):
    args = dict(frame_rate=8.0, filename_prefix="OCD/test", format="mp4", crf=19, save_output=True)
    return run(ocd_nodes["OCD_SaveVideo"], images=images, **{**args, **kwargs})


def test_load_video_outputs(run, ocd_nodes, inference):
    images, count, info = load(run, ocd_nodes, "bikes.mp4", frame_load_cap=8, select_every_nth=2, width=256)
    assert images.shape == (8, 112, 256, 3) and images.dtype == torch.float32
    assert count == 8
    assert info == {
        "source_fps": 25.0, "source_frame_count": 250, "source_duration": 10.0,
        "source_width": 640, "source_height": 272,
        "loaded_fps": 12.5, "loaded_frame_count": 8, "loaded_duration": 8 / 12.5,
        "loaded_width": 256, "loaded_height": 112,
    }


def test_load_save_load_round_trip(run, ocd_nodes, comfy, inference):
    """The issue's acceptance check: frame count, fps and size kept, PSNR >= 30 dB."""
    first, count, info = load(run, ocd_nodes, "carphone_pristine.mp4", frame_load_cap=24)
    out = save(run, ocd_nodes, first, frame_rate=info["loaded_fps"], filename_prefix="roundtrip/carphone")
    relative = out.result[0]
    saved = Path(comfy.base_directory) / "output" / relative
    assert saved.is_file() and relative.startswith("roundtrip/carphone_")
    # the UI gets a preview entry pointing at the file
    preview = out.ui.as_dict()["images"][0]
    assert (preview["subfolder"], preview["type"]) == ("roundtrip", "output")
    assert preview["filename"] == saved.name
    # load it again through the node (from the input folder, as a user would)
    os.replace(saved, Path(comfy.base_directory) / "input" / "roundtrip.mp4")
    second, count2, info2 = load(run, ocd_nodes, "roundtrip.mp4", frame_load_cap=0)
    assert count2 == count == 24
    assert second.shape == first.shape == (24, 144, 176, 3)
    assert info2["source_fps"] == pytest.approx(info["loaded_fps"], rel=1e-3)
    assert psnr(first, second) >= 30.0


@pytest.mark.parametrize("fmt", ["webp", "gif"])
def test_save_animated_images(run, ocd_nodes, comfy, inference, fmt):
    frames = torch.rand(4, 32, 48, 3)
    relative = save(run, ocd_nodes, frames, format=fmt, save_output=False).result[0]
    assert (Path(comfy.base_directory) / "temp" / relative).is_file()


def test_load_reports_progress_and_can_be_interrupted(run, ocd_nodes, inference):
    import comfy.model_management
    import comfy.utils

    calls = []
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: calls.append((value, total)))
    try:
        load(run, ocd_nodes, "bikes.mp4", frame_load_cap=5, width=64)
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
    assert calls[-1] == (5, 5) and len(calls) == 5

    comfy.model_management.interrupt_current_processing(True)
    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            load(run, ocd_nodes, "bikes.mp4", frame_load_cap=5, width=64)
    finally:
        comfy.model_management.interrupt_current_processing(False)


# ---- bad input --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bad_inputs(comfy, tmp_path_factory):
    """A broken file, a truncated real mp4 and a symlink out of the input folder."""
    input_dir = Path(comfy.base_directory) / "input"
    (input_dir / "notavideo.mp4").write_bytes(b"this is text, not a video\n" * 50)
    data = (input_dir / "bikes.mp4").read_bytes()
    (input_dir / "truncated.mp4").write_bytes(data[: len(data) // 2])
    outside = tmp_path_factory.mktemp("outside") / "private.mp4"
    outside.write_bytes(data)
    link = input_dir / "escape.mp4"
    if not link.exists():
        link.symlink_to(outside)
    return input_dir


@pytest.mark.parametrize("video, message", [
    ("missing.mp4", "no file 'missing.mp4'"),
    ("../../x.mp4", "'..' is not allowed"),
    ("/etc/hostname", "absolute path"),
    ("escape.mp4", "outside the folder"),
])
def test_bad_names_are_refused_at_validation(ocd_nodes, bad_inputs, video, message):
    result = ocd_nodes["OCD_LoadVideo"].validate_inputs(video=video)
    assert isinstance(result, str) and "'video'" in result and message in result


@pytest.mark.parametrize("video, kwargs, name, message", [
    ("notavideo.mp4", {}, "video", "not a readable video"),
    ("truncated.mp4", {}, "video", "not a readable video"),
    ("bikes.mp4", dict(skip_first_frames=1000), "skip_first_frames", "leaves no frames"),
    ("escape.mp4", {}, "video", "outside the folder"),
])
def test_bad_files_fail_with_a_named_input(run, ocd_nodes, bad_inputs, inference, video, kwargs, name, message):
    from ocd.errors import OCDInputError as LibraryError

    with pytest.raises(ValueError) as err:
        load(run, ocd_nodes, video, **kwargs)
    assert f"input '{name}'" in str(err.value) and message in str(err.value)
    assert type(err.value).__name__ == LibraryError.__name__


def test_absurd_sizes_are_refused_before_decoding(run, ocd_nodes, inference, monkeypatch):
    import comfy.model_management

    # pretend the machine has 64 MiB free: 250 frames at 4096x4096 cannot fit
    monkeypatch.setattr(comfy.model_management, "get_free_memory", lambda *a, **k: 64 * 1024**2)
    with pytest.raises(ValueError, match="input 'frame_load_cap'.*GiB"):
        load(run, ocd_nodes, "bikes.mp4", frame_load_cap=0, width=4096, height=4096)


def test_save_refuses_prefix_outside_output(run, ocd_nodes, comfy, inference):
    before = set(os.listdir(Path(comfy.base_directory)))
    with pytest.raises(ValueError, match="input 'filename_prefix'"):
        save(run, ocd_nodes, torch.rand(2, 16, 16, 3), filename_prefix="../../escaped")
    assert set(os.listdir(Path(comfy.base_directory))) == before
