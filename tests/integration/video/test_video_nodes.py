"""OCD_LoadVideo / OCD_SaveVideo run in-process inside ComfyUI."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from ocd.video.codec import psnr
from tests.support.media import correlation_at_best_lag, decode_mono

DEFAULTS = dict(frame_load_cap=16, skip_first_frames=0, select_every_nth=1, force_rate=0.0,
                width=0, height=0, resize_mode="crop")


def load(run, ocd_nodes, video, **kwargs):
    return run(ocd_nodes["OCD_LoadVideo"], video=video, **{**DEFAULTS, **kwargs}).result


def save(run, ocd_nodes, images, **kwargs):
    args = dict(frame_rate=8.0, filename_prefix="OCD/test", format="mp4", crf=19, save_output=True)
    return run(ocd_nodes["OCD_SaveVideo"], images=images, **{**args, **kwargs})


def test_load_video_outputs(run, ocd_nodes, inference):
    images, count, info, audio = load(run, ocd_nodes, "bikes.mp4", frame_load_cap=8, select_every_nth=2, width=256)
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
    first, count, info, _ = load(run, ocd_nodes, "carphone_pristine.mp4", frame_load_cap=24)
    out = save(run, ocd_nodes, first, frame_rate=info["loaded_fps"], filename_prefix="roundtrip/carphone")
    relative = out.result[0]
    saved = Path(comfy.base_directory) / "output" / relative
    assert saved.is_file() and relative.startswith("roundtrip/carphone_")
    # the UI gets a preview entry pointing at the file
    preview = out.ui["images"][0]
    assert (preview["subfolder"], preview["type"]) == ("roundtrip", "output")
    assert preview["filename"] == saved.name
    # load it again through the node (from the input folder, as a user would)
    os.replace(saved, Path(comfy.base_directory) / "input" / "roundtrip.mp4")
    second, count2, info2, _ = load(run, ocd_nodes, "roundtrip.mp4", frame_load_cap=0)
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


# ---- sound, timing, workflow, permissions ----------------------------------------------------

def hidden_run(node_cls, prompt, workflow, **inputs):
    """Run a node as the executor does for a real prompt: with the prompt and the workflow
    (extra_pnginfo) in its hidden inputs."""
    from comfy_api.latest import io

    hidden = {io.Hidden.prompt: prompt, io.Hidden.extra_pnginfo: {"workflow": workflow}}
    return node_cls.PREPARE_CLASS_CLONE(hidden).EXECUTE_NORMALIZED(**inputs)


def test_load_video_audio_is_the_sound_of_the_loaded_frames(run, ocd_nodes, test_videos, inference):
    images, count, info, audio = load(run, ocd_nodes, "bigbuckbunny.mp4", frame_load_cap=15,
                                      skip_first_frames=20, select_every_nth=2, width=160)
    assert count == 15 and info["loaded_fps"] == 12.5
    assert set(audio) == {"waveform", "sample_rate"} and audio["sample_rate"] == 48000
    assert audio["waveform"].shape == (1, 2, round(15 / 12.5 * 48000))  # 1.2 s: as long as the frames
    source, rate = decode_mono(test_videos["bigbuckbunny.mp4"])
    start = round(20 / 25 * rate)  # 20 frames skipped at 25 fps
    lag, corr = correlation_at_best_lag(source[start:start + audio["waveform"].shape[-1]],
                                        audio["waveform"][0].mean(0).numpy(), 480)
    assert lag == 0 and corr > 0.99


def test_a_clip_without_sound_gives_silence_of_its_length(run, ocd_nodes, inference):
    images, count, info, audio = load(run, ocd_nodes, "bikes.mp4", frame_load_cap=10, width=64)
    assert audio["waveform"].shape[-1] == round(10 / 25 * audio["sample_rate"])
    assert audio["waveform"].abs().max() == 0


def test_sound_is_kept_in_sync_through_load_and_save(run, ocd_nodes, comfy, test_videos, inference):
    """The issue's check: the saved sound correlates with the source's segment of the kept
    frames, at the right time, and the mp4 carries the prompt and the workflow."""
    import av
    import json

    images, count, info, audio = load(run, ocd_nodes, "bigbuckbunny.mp4", frame_load_cap=20,
                                      skip_first_frames=12, select_every_nth=3, force_rate=30.0, width=128)
    edited = 1.0 - images  # an edit that keeps the frame count, like any image node in between
    prompt = {"1": {"class_type": "OCD_LoadVideo", "inputs": {"video": "bigbuckbunny.mp4"}}}
    workflow = {"nodes": [{"id": 1, "type": "OCD_LoadVideo"}, {"id": 2, "type": "OCD_SaveVideo"}], "links": []}
    out = hidden_run(ocd_nodes["OCD_SaveVideo"], prompt, workflow, images=edited, frame_rate=8.0,
                     filename_prefix="sync/bunny", format="mp4", crf=23, save_output=True, audio=audio,
                     video_info=info)
    path = Path(comfy.base_directory) / "output" / out.result[0]
    assert "10 fps from video_info" in out.ui["ocd_report"][0]  # 30 fps / 3
    video = codec_probe(path)
    assert video.fps == pytest.approx(10.0) and video.frame_count == 20  # the loaded timing, not 8 fps
    saved, rate = decode_mono(path)
    source, _ = decode_mono(test_videos["bigbuckbunny.mp4"])
    start = round(12 / 30.0 * rate)  # skip counted after force_rate
    segment = source[start:start + round(20 * 3 / 30.0 * rate)]  # 20 frames x 3 steps at 30 fps
    lag, corr = correlation_at_best_lag(segment, saved, 2400)
    assert abs(lag) <= 48 and corr > 0.95, (lag, corr)  # in sync within 1 ms
    assert abs(len(saved) / rate - 2.0) < 0.05
    with av.open(str(path)) as container:
        assert json.loads(container.metadata["prompt"]) == prompt
        assert json.loads(container.metadata["workflow"]) == workflow


def codec_probe(path):
    from ocd.video.codec import probe_video

    return probe_video(str(path))


@pytest.mark.parametrize("fmt", ["gif", "webp"])
def test_image_formats_drop_the_sound_and_say_so(run, ocd_nodes, comfy, inference, fmt, caplog):
    audio = {"waveform": torch.rand(1, 2, 8000) - 0.5, "sample_rate": 8000}
    out = save(run, ocd_nodes, torch.rand(4, 16, 16, 3), format=fmt, save_output=False, audio=audio)
    assert (Path(comfy.base_directory) / "temp" / out.result[0]).is_file()
    assert "cannot carry sound: the audio input was dropped" in out.ui["ocd_report"][0]
    assert any("dropped" in r.getMessage() for r in caplog.records)


def test_saved_files_have_the_permissions_of_comfyuis_own_files(run, ocd_nodes, comfy, inference):
    """Core's SaveImage and Save Video (OCD) side by side: the same mode (0666 less the umask)."""
    import stat

    import nodes as core_nodes

    output = Path(comfy.base_directory) / "output"
    core_nodes.SaveImage().save_images(torch.rand(1, 8, 8, 3), filename_prefix="perm/core")
    (core_file,) = (output / "perm").glob("core_*.png")
    relative = save(run, ocd_nodes, torch.rand(2, 16, 16, 3), filename_prefix="perm/ocd").result[0]
    mode = stat.S_IMODE((output / relative).stat().st_mode)
    assert mode == stat.S_IMODE(core_file.stat().st_mode)
    assert not [p for p in (output / "perm").iterdir() if p.name.startswith(".ocd-partial-")]


def test_video_info_without_a_frame_rate_is_refused(run, ocd_nodes, comfy, inference):
    before = sorted((Path(comfy.base_directory) / "output").rglob("*"))
    with pytest.raises(ValueError, match="input 'video_info'.*loaded_fps"):
        save(run, ocd_nodes, torch.rand(2, 16, 16, 3), video_info={"source_fps": 25.0})
    with pytest.raises(ValueError, match="input 'video_info'.*loaded_fps must be"):
        save(run, ocd_nodes, torch.rand(2, 16, 16, 3), video_info={"loaded_fps": float("nan")})
    assert sorted((Path(comfy.base_directory) / "output").rglob("*")) == before
