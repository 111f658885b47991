"""ocd.video.codec's sound, metadata and file permissions on real clips (no ComfyUI needed):
the time range of a frame selection, the sound of that range (bigbuckbunny.mp4 has a 48 kHz
5.1 AAC track, bikes.mp4 none), sound and workflow written into mp4/webm and read back."""
from __future__ import annotations

import json
import math
import os
import stat

import av
import numpy as np
import pytest
import torch

from ocd.errors import OCDInputError
from ocd.video import codec
from tests.support.media import correlation_at_best_lag as best_lag
from tests.support.media import decode_mono


@pytest.fixture(scope="module")
def bunny(test_videos):
    return str(test_videos["bigbuckbunny.mp4"])


@pytest.fixture(scope="module")
def bikes(test_videos):
    return str(test_videos["bikes.mp4"])


# ---- the time range of a selection ---------------------------------------------------------

@pytest.mark.parametrize("kwargs, start, duration", [
    (dict(), 0.0, 10.0),
    (dict(skip_first_frames=50, frame_load_cap=25), 2.0, 1.0),
    (dict(skip_first_frames=10, select_every_nth=3, frame_load_cap=4), 0.4, 4 * 3 / 25),  # 4 frames at 25/3 fps
    (dict(force_rate=10.0, skip_first_frames=5, frame_load_cap=10), 0.5, 1.0),  # skip counted at 10 fps
    (dict(force_rate=50.0, skip_first_frames=50, frame_load_cap=6, select_every_nth=2), 1.0, 6 * 2 / 50),
])
def test_a_selection_knows_the_time_range_it_covers(kwargs, start, duration):
    info = codec.VideoInfo(fps=25.0, frame_count=250, width=64, height=64)
    selection = codec.select_frames(info, **kwargs)
    assert selection.start == pytest.approx(start)
    assert selection.duration == pytest.approx(duration)
    assert selection.duration == pytest.approx(len(selection) / selection.fps)  # the loaded clip's length


# ---- decoding ----------------------------------------------------------------------------

def test_the_sound_of_a_range_is_that_part_of_the_track(bunny):
    whole, rate = decode_mono(bunny)  # 5.1 downmixed by FFmpeg, as the codec does (to stereo)
    for start in (0.3, 2.5):  # 2.5 s: decoding starts after a seek
        sound = codec.decode_audio(bunny, start, 1.2)
        assert sound.sample_rate == rate == 48000 and not sound.warning
        assert sound.waveform.shape == (1, 2, int(1.2 * rate)) and sound.waveform.dtype == torch.float32
        assert "downmixed from 5.1" in sound.note
        mono = sound.waveform[0].mean(0).numpy()
        reference = whole[int(start * rate): int(start * rate) + len(mono)]
        lag, corr = best_lag(reference, mono, 480)
        assert lag == 0 and corr > 0.99, (start, lag, corr)


def test_seeking_gives_the_same_samples_as_decoding_from_the_start(bunny):
    from_start = codec.decode_audio(bunny, 0.0, 4.0).waveform
    after_seek = codec.decode_audio(bunny, 3.0, 1.0).waveform  # > 2 x the seek margin: seeks
    assert torch.equal(after_seek, from_start[..., 3 * 48000: 4 * 48000])


def test_no_sound_track_gives_silence_of_the_selection(bikes):
    sound = codec.decode_audio(bikes, 2.0, 1.5)
    assert not sound.warning and "no sound track" in sound.note
    assert sound.waveform.shape == (1, 2, round(1.5 * codec.SILENT_SAMPLE_RATE))
    assert sound.waveform.abs().max() == 0
    audio = sound.as_audio()
    assert set(audio) == {"waveform", "sample_rate"} and audio["sample_rate"] == codec.SILENT_SAMPLE_RATE


def test_a_track_shorter_than_the_range_is_padded_and_says_so(bunny):
    sound = codec.decode_audio(bunny, 5.0, 1.0)  # the track ends at 5.312 s
    assert sound.warning and "padded with silence" in sound.note
    assert sound.waveform.shape[-1] == 48000
    tail = sound.waveform[..., int(0.32 * 48000):]
    assert tail.abs().max() == 0 and sound.waveform[..., : int(0.3 * 48000)].abs().max() > 0


# ---- fitting AUDIO to a video ----------------------------------------------------------------

def test_audio_is_trimmed_or_padded_to_the_video():
    wave = torch.linspace(-1, 1, 1000).reshape(1, 1, 1000)
    data, rate, note = codec.sound_for_video({"waveform": wave, "sample_rate": 1000}, 0.5)
    assert data.shape == (1, 500) and rate == 1000 and "trimmed by 0.50 s" in note
    assert np.array_equal(data[0], wave[0, 0, :500].numpy())
    data, _, note = codec.sound_for_video({"waveform": wave, "sample_rate": 1000}, 1.5)
    assert data.shape == (1, 1500) and "padded with 0.50 s" in note and not data[0, 1000:].any()


@pytest.mark.parametrize("audio, message", [
    ({"waveform": torch.zeros(2, 1, 10), "sample_rate": 100}, "2 sound clips"),
    ({"waveform": torch.full((1, 1, 10), float("nan")), "sample_rate": 100}, "NaN"),
    ({"waveform": torch.zeros(1, 10), "sample_rate": 100}, "must be an AUDIO"),
    ({"waveform": torch.zeros(1, 1, 10), "sample_rate": 0}, "sample_rate"),
    ({"waveform": torch.zeros(1, 1, 10)}, "sample_rate"),
    ("not audio", "must be an AUDIO"),
])
def test_bad_audio_is_refused_by_name(audio, message):
    with pytest.raises(OCDInputError, match=f"input 'audio'.*{message}"):
        codec.sound_for_video(audio, 1.0)


# ---- encoding ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def clip_with_sound(bunny):
    info = codec.probe_video(bunny)
    selection = codec.select_frames(info, frame_load_cap=20, skip_first_frames=30, select_every_nth=2)
    frames = codec.to_uint8_frames(codec.decode_frames(bunny, selection, (160, 88)))
    sound = codec.decode_audio(bunny, selection.start, selection.duration)
    return selection, frames, sound


@pytest.mark.parametrize("fmt, audio_codec", [("mp4", "aac"), ("webm", "opus")])
def test_saved_sound_is_the_source_segment_in_sync(bunny, clip_with_sound, tmp_path, fmt, audio_codec):
    selection, frames, sound = clip_with_sound
    data, rate, _ = codec.sound_for_video(sound.as_audio(), len(frames) / selection.fps)
    path = codec.encode_video(frames, str(tmp_path / f"clip.{fmt}"), selection.fps, fmt, 30,
                              {"prompt": "{}"}, (data, rate))
    with av.open(path) as container:
        assert container.streams.audio[0].codec_context.name == audio_codec
    assert codec.probe_video(path).frame_count == 20
    saved, saved_rate = decode_mono(path)
    source, source_rate = decode_mono(bunny)
    assert saved_rate == source_rate == 48000  # Opus is always 48 kHz; so is this source
    first = int(round(selection.start * source_rate))
    segment = source[first: first + int(round(selection.duration * source_rate))]
    lag, corr = best_lag(segment, saved, 2400)  # up to 50 ms either way
    assert abs(lag) <= 48 and corr > 0.95, (lag, corr)  # within 1 ms, the same sound
    wrong = source[first + 12000: first + 12000 + len(segment)]  # a quarter second later
    assert best_lag(wrong, saved, 240)[1] < 0.5
    assert abs(len(saved) / saved_rate - selection.duration) < 0.05  # as long as the video


def test_mp4_and_webm_carry_the_prompt_and_workflow(tmp_path):
    frames = np.random.default_rng(0).integers(0, 255, (3, 32, 32, 3), dtype=np.uint8)
    workflow = {"nodes": [{"id": 1, "type": "OCD_LoadVideo"}], "links": []}
    metadata = {"prompt": json.dumps({"1": {"class_type": "OCD_LoadVideo"}}), "workflow": json.dumps(workflow)}
    for fmt in ("mp4", "webm"):
        path = codec.encode_video(frames, str(tmp_path / f"m.{fmt}"), 8.0, fmt, 30, metadata)
        with av.open(path) as container:
            tags = {k.lower(): v for k, v in container.metadata.items()}  # Matroska upper-cases tag names
        assert json.loads(tags["workflow"]) == workflow, fmt
        assert json.loads(tags["prompt"]) == {"1": {"class_type": "OCD_LoadVideo"}}, fmt


def test_image_formats_refuse_sound(tmp_path):
    frames = np.zeros((2, 16, 16, 3), np.uint8)
    for fmt in ("gif", "webp"):
        with pytest.raises(OCDInputError, match="input 'audio'.*cannot carry sound"):
            codec.encode_video(frames, str(tmp_path / f"x.{fmt}"), 8.0, fmt, sound=(np.zeros((1, 10), np.float32), 8))
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_files_get_the_usual_permissions(tmp_path, umask):
    """0666 less the umask, as open() gives every file ComfyUI writes (mkstemp gave 0600)."""
    frames = np.zeros((2, 16, 16, 3), np.uint8)
    old = os.umask(umask)
    try:
        for fmt in codec.SAVE_FORMATS:
            path = codec.encode_video(frames, str(tmp_path / f"p.{fmt}"), 8.0, fmt)
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask, fmt
    finally:
        os.umask(old)


def test_a_5_1_audio_is_written_as_stereo_of_the_right_length(tmp_path):
    """Core's Get Video Components passes 5.1 on as 6 channels; the file gets stereo (PyAV's
    downmix), as long as the video, the front-left sound on the left."""
    rate = 48000
    wave = torch.zeros(1, 6, rate)
    wave[0, 0] = torch.sin(torch.arange(rate) / rate * 2 * math.pi * 440) * 0.5
    data, rate, _ = codec.sound_for_video({"waveform": wave, "sample_rate": rate}, 1.0)
    path = codec.encode_video(np.zeros((25, 16, 16, 3), np.uint8), str(tmp_path / "six.mp4"), 25.0, "mp4",
                              sound=(data, rate))
    with av.open(path) as container:
        stream = container.streams.audio[0]
        assert stream.layout.name == "stereo"
        samples = np.concatenate([f.to_ndarray() for f in container.decode(stream)], 1)
    assert abs(samples.shape[1] / rate - 1.0) < 0.03
    assert np.abs(samples[0]).max() > 0.3 and np.abs(samples[1]).max() < 0.01
