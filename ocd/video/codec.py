"""Video in and out: probing, frame selection, resizing to a latent-friendly size, the sound
of the selected time range, encoding with sound and metadata.

Decoding and encoding use PyAV (shipped with ComfyUI), resizing uses OpenCV. Frames travel
as ComfyUI IMAGE tensors: float32 ``[F, H, W, 3]`` in 0..1; sound as core's AUDIO layout,
float32 ``[1, channels, samples]`` with its sample rate.
"""
from __future__ import annotations

import logging
import math
import os
import secrets
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Sequence

import cv2
import numpy as np
import torch

from .. import checks
from ..errors import OCDInputError

log = logging.getLogger(__name__)

RESIZE_MODES = ("crop", "pad", "stretch")
SAVE_FORMATS = ("mp4", "webp", "gif", "webm")  # new formats go last: saved workflows store the option
SOUND_FORMATS = ("mp4", "webm")  # the formats that carry sound (AAC in mp4, Opus in webm)
SIZE_MULTIPLE = 8  # latents are 1/8 of the image size in SD-type VAEs
MAX_SIDE = 8192


@dataclass(frozen=True)
class VideoInfo:
    fps: float
    frame_count: int
    width: int
    height: int

    @property
    def duration(self) -> float:
        return self.frame_count / self.fps if self.fps > 0 else 0.0


@dataclass(frozen=True)
class FrameSelection:
    """Which source frames to load, the frame rate they play at once loaded, and the time range
    of the source they cover (``start`` seconds from the first frame, ``duration`` seconds):
    the sound that goes with them."""

    source_indices: tuple[int, ...]
    fps: float
    start: float = 0.0

    def __len__(self) -> int:
        return len(self.source_indices)

    @property
    def duration(self) -> float:
        # each loaded frame stands for select_every_nth steps of the (resampled) timeline,
        # so n frames at fps = rate / nth span n * nth / rate seconds of the source
        return len(self.source_indices) / self.fps


def _open(path: str, input_name: str):
    import av

    try:
        container = av.open(path)
    except (av.error.FFmpegError, OSError) as e:
        raise OCDInputError(
            input_name, f"'{os.path.basename(path)}' is not a readable video ({e.__class__.__name__}: {e})"
        ) from None
    if not container.streams.video:
        container.close()
        raise OCDInputError(input_name, f"'{os.path.basename(path)}' has no video stream")
    return container


ANIMATED_IMAGE_EXTENSIONS = (".gif", ".webp")


def _is_animated_image(path: str) -> bool:
    # FFmpeg cannot demux animated WebP; Pillow reads both formats frame by frame.
    return path.lower().endswith(ANIMATED_IMAGE_EXTENSIONS)


def _open_image(path: str, input_name: str):
    from PIL import Image, UnidentifiedImageError

    try:
        return Image.open(path)
    except (UnidentifiedImageError, OSError) as e:
        raise OCDInputError(input_name, f"'{os.path.basename(path)}' is not a readable image ({e})") from None


def _probe_animated_image(path: str, input_name: str) -> VideoInfo:
    with _open_image(path, input_name) as image:
        count = getattr(image, "n_frames", 1)
        image.load()  # WebP fills in the frame duration only once a frame is loaded
        duration_ms = image.info.get("duration") or 100
        return VideoInfo(fps=1000.0 / duration_ms, frame_count=count, width=image.width, height=image.height)


def _iter_animated_image(path: str, input_name: str):
    from PIL import ImageSequence

    with _open_image(path, input_name) as image:
        for frame in ImageSequence.Iterator(image):
            yield np.array(frame.convert("RGB"))


def probe_video(path: str, input_name: str = "video") -> VideoInfo:
    """Frame rate, frame count and size of the first video stream, without decoding."""
    if _is_animated_image(path):
        return _probe_animated_image(path, input_name)
    container = _open(path, input_name)
    try:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        count = stream.frames
        if not count:  # some containers do not store it: count packets (no decoding)
            count = sum(1 for p in container.demux(stream) if p.size > 0)
        width, height = stream.codec_context.width, stream.codec_context.height
    except Exception as e:  # corrupt headers surface here as FFmpeg errors
        raise OCDInputError(input_name, f"'{os.path.basename(path)}' could not be read ({e})") from None
    finally:
        container.close()
    if fps <= 0 or count <= 0 or width <= 0 or height <= 0:
        raise OCDInputError(
            input_name,
            f"'{os.path.basename(path)}' reports {count} frames at {fps} fps, {width}x{height}: not a usable video",
        )
    return VideoInfo(fps=fps, frame_count=int(count), width=int(width), height=int(height))


def select_frames(
    info: VideoInfo,
    frame_load_cap: int = 0,
    skip_first_frames: int = 0,
    select_every_nth: int = 1,
    force_rate: float = 0.0,
) -> FrameSelection:
    """Plan which frames to load, in VideoHelperSuite's order of operations.

    1. ``force_rate`` > 0 resamples the timeline to that rate (each output frame takes the
       source frame shown at its time); 0 keeps the source rate.
    2. ``skip_first_frames`` drops frames from the start of that timeline.
    3. ``select_every_nth`` keeps every n-th remaining frame (the clip plays n times faster
       unless the frame rate is lowered, so the reported fps is divided by n).
    4. ``frame_load_cap`` > 0 keeps at most that many.
    """
    if select_every_nth < 1:
        raise OCDInputError("select_every_nth", f"must be at least 1, got {select_every_nth}")
    if skip_first_frames < 0 or frame_load_cap < 0 or force_rate < 0:
        bad = "skip_first_frames" if skip_first_frames < 0 else "frame_load_cap" if frame_load_cap < 0 else "force_rate"
        raise OCDInputError(bad, "must not be negative")
    if force_rate > 0:
        n_out = int(math.floor(info.duration * force_rate + 1e-9))
        timeline = [min(info.frame_count - 1, int(math.floor(k * info.fps / force_rate + 1e-6))) for k in range(n_out)]
        rate = force_rate
    else:
        timeline = list(range(info.frame_count))
        rate = info.fps
    picked = timeline[skip_first_frames::select_every_nth]
    if frame_load_cap > 0:
        picked = picked[:frame_load_cap]
    if not picked:
        raise OCDInputError(
            "skip_first_frames",
            f"the selection leaves no frames: the video has {len(timeline)} frames at {rate:g} fps, "
            f"skip_first_frames={skip_first_frames}, select_every_nth={select_every_nth}",
        )
    return FrameSelection(source_indices=tuple(picked), fps=rate / select_every_nth, start=skip_first_frames / rate)


def follow_aspect(src_width: int, src_height: int, width: float = 0, height: float = 0) -> tuple[float, float]:
    """A size where a side of 0 follows the source's aspect ratio (both 0: the source size)."""
    if width == 0 and height == 0:
        return src_width, src_height
    if width == 0:
        return src_width * height / src_height, height
    if height == 0:
        return width, src_height * width / src_width
    return width, height


def output_size(src_width: int, src_height: int, width: int = 0, height: int = 0) -> tuple[int, int]:
    """The loaded size: ``width``/``height`` (0 = follow the source aspect), multiples of 8."""
    for name, value in (("width", width), ("height", height)):
        if value < 0 or value > MAX_SIDE:
            raise OCDInputError(name, f"must be 0 (keep the source size) or 8..{MAX_SIDE}, got {value}")
    width, height = follow_aspect(src_width, src_height, width, height)

    def snap(v: float) -> int:
        return max(SIZE_MULTIPLE, int(math.floor(v / SIZE_MULTIPLE + 0.5)) * SIZE_MULTIPLE)  # half up

    return snap(width), snap(height)


def resize_frame(frame: np.ndarray, size: tuple[int, int], mode: str) -> np.ndarray:
    """Resize one ``[H, W, 3]`` uint8 frame to ``size`` = (width, height).

    crop: scale to cover, cut the overflow evenly; pad: scale to fit, pad with black;
    stretch: scale each axis independently.
    """
    if mode not in RESIZE_MODES:
        raise OCDInputError("resize_mode", f"must be one of {RESIZE_MODES}, got '{mode}'")
    w, h = size
    sh, sw = frame.shape[:2]
    if (sw, sh) == (w, h):
        return frame
    if mode == "stretch":
        return _resize(frame, w, h)
    scale = max(w / sw, h / sh) if mode == "crop" else min(w / sw, h / sh)
    rw, rh = max(1, round(sw * scale)), max(1, round(sh * scale))
    resized = _resize(frame, rw, rh)
    if mode == "crop":
        x0, y0 = (rw - w) // 2, (rh - h) // 2
        return resized[y0 : y0 + h, x0 : x0 + w]
    out = np.zeros((h, w, 3), dtype=frame.dtype)
    x0, y0 = (w - rw) // 2, (h - rh) // 2
    out[y0 : y0 + rh, x0 : x0 + rw] = resized
    return out


def _resize(frame: np.ndarray, w: int, h: int) -> np.ndarray:
    shrinking = w * h < frame.shape[0] * frame.shape[1]
    return cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def decoded_bytes(frame_count: int, width: int, height: int) -> int:
    """Memory of the decoded IMAGE tensor (float32 RGB)."""
    return frame_count * width * height * 3 * 4


def ensure_fits(frame_count: int, width: int, height: int, available_bytes: int) -> None:
    """Refuse, before decoding, a load whose frames would not fit in ``available_bytes``."""
    needed = decoded_bytes(frame_count, width, height)
    if needed > available_bytes:
        gib = 1024**3
        raise OCDInputError(
            "frame_load_cap",
            f"{frame_count} frames at {width}x{height} need {needed / gib:.1f} GiB as float32, "
            f"but only {available_bytes / gib:.1f} GiB of memory is available: lower frame_load_cap, "
            "raise select_every_nth or choose a smaller width/height",
        )


def decode_frames(
    path: str,
    selection: FrameSelection,
    size: tuple[int, int],
    resize_mode: str = "crop",
    on_frame: Callable[[int], None] | None = None,
    input_name: str = "video",
) -> torch.Tensor:
    """Decode the selected frames into a float32 ``[F, H, W, 3]`` tensor in 0..1.

    ``on_frame(i)`` is called after each decoded source frame (progress, interruption).
    A stream that ends before the last selected frame is refused as truncated.
    """
    import av

    w, h = size
    wanted = selection.source_indices
    out = torch.empty((len(wanted), h, w, 3), dtype=torch.float32)
    # a source frame can be wanted several times when force_rate exceeds the source rate
    slots: dict[int, list[int]] = {}
    for slot, index in enumerate(wanted):
        slots.setdefault(index, []).append(slot)
    last = max(wanted)
    filled = 0
    try:
        for index, rgb in enumerate(_iter_rgb_frames(path, input_name)):
            if index in slots:
                tensor = torch.from_numpy(resize_frame(rgb, size, resize_mode)).to(torch.float32).div_(255.0)
                for slot in slots[index]:
                    out[slot] = tensor
                    filled += 1
            if on_frame is not None:
                on_frame(index)
            if index >= last:
                break
    except (av.error.FFmpegError, OSError) as e:
        raise OCDInputError(
            input_name, f"'{os.path.basename(path)}' is damaged: decoding failed ({e})"
        ) from None
    if filled < len(wanted):
        raise OCDInputError(
            input_name,
            f"'{os.path.basename(path)}' is truncated: it declares enough frames for the selection "
            f"but the stream ended after {filled} of {len(wanted)} selected frames",
        )
    return out


def _iter_rgb_frames(path: str, input_name: str):
    """Every frame of the file in display order, as ``[H, W, 3]`` uint8 RGB."""
    if _is_animated_image(path):
        yield from _iter_animated_image(path, input_name)
        return
    container = _open(path, input_name)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            yield frame.to_ndarray(format="rgb24")
    finally:
        container.close()


def to_uint8_frames(images: torch.Tensor, input_name: str = "images") -> np.ndarray:
    """IMAGE ``[F, H, W, C]`` float 0..1 -> ``[F, H, W, 3]`` uint8 (alpha dropped)."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise OCDInputError(input_name, f"expected an IMAGE batch [frames, height, width, 3], got {shape}")
    if images.shape[0] == 0:
        raise OCDInputError(input_name, "no frames to save")
    frames = images[..., :3] if images.shape[-1] != 1 else images.expand(*images.shape[:3], 3)
    return (frames.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu().numpy())


# ---- sound ------------------------------------------------------------------------------

SILENT_SAMPLE_RATE = 44100
# Layouts by channel count (FFmpeg's defaults). Sound is delivered and written as mono or
# stereo: core's CreateVideo/SaveVideo and most audio nodes handle only those, so a 5.1 track
# is downmixed by FFmpeg's resampler (its standard matrix) rather than passed on.
CHANNEL_LAYOUTS = {1: "mono", 2: "stereo", 3: "3.0", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}
SHORT_GAP_S = 0.05
SEEK_MARGIN_S = 0.5  # decode from this long before the range: the first frames after a seek are unreliable


@dataclass(frozen=True)
class Sound:
    """A sound track in core's AUDIO layout, and what became of it (shown on the node).

    ``warning``: something was not as asked (the track ended early, could not be decoded):
    the caller says so in the log; a source without any sound track is not a warning.
    """

    waveform: torch.Tensor  # float32 [1, channels, samples]
    sample_rate: int
    note: str
    warning: bool = False

    def as_audio(self) -> dict:
        return {"waveform": self.waveform, "sample_rate": self.sample_rate}


def silence(duration: float, sample_rate: int = SILENT_SAMPLE_RATE, channels: int = 2,
            note: str = "no sound track: silent AUDIO", warning: bool = False) -> Sound:
    samples = max(0, int(round(duration * sample_rate)))
    return Sound(torch.zeros((1, channels, samples), dtype=torch.float32), sample_rate, note, warning)


def decode_audio(path: str, start: float, duration: float, input_name: str = "video", tile: bool = False) -> Sound:
    """The sound of ``[start, start + duration)`` seconds of the video's timeline (0 = its first
    frame), resampled to mono/stereo at the track's own rate. A file without a sound track
    gives silence of that duration; a track shorter than the range is padded with silence.
    ``tile``: the range ends at the sample of ``start + duration`` (not ``duration``'s sample
    count), so consecutive ranges tile the track sample for sample (a clip written in pieces)."""
    if _is_animated_image(path):
        return silence(duration, note="animated image, no sound track: silent AUDIO")
    import av

    container = _open(path, input_name)
    try:
        if not container.streams.audio:
            return silence(duration)
        stream = container.streams.audio[0]
        rate = int(stream.codec_context.sample_rate or 0)
        channels = stream.codec_context.channels or 0
        if rate <= 0 or channels <= 0:
            return silence(duration, note=f"the sound track declares {rate} Hz, {channels} channels: "
                           "it cannot be decoded; silent AUDIO instead", warning=True)
        layout = "mono" if channels == 1 else "stereo"
        # frame 0 of the video is time 0 of the selection; the sound's timestamps share the
        # container's clock, so an audio track starting later or earlier stays in sync
        video = container.streams.video[0]
        origin = float(video.start_time * video.time_base) if video.start_time is not None else 0.0
        first = int(round((origin + start) * rate))
        count = max(0, int(round((origin + start + duration) * rate)) - first if tile else int(round(duration * rate)))
        out = np.zeros((1 if channels == 1 else 2, count), np.float32)
        source = stream.codec_context.layout.name if stream.codec_context.layout else f"{channels} channels"
        covered = _decode_sound_range(container, stream, rate, layout, first, count, out)
    except (av.error.FFmpegError, OSError) as e:
        return silence(duration, note=f"the sound track could not be decoded ({e}); silent AUDIO instead",
                       warning=True)
    finally:
        container.close()
    note = f"sound: {rate} Hz {layout}" + (f" (downmixed from {source})" if channels > 2 else "")
    missing = count - covered
    if missing > 0:
        note += f"; the track does not cover {missing / rate:.2f} s of the selection: padded with silence"
    # a few milliseconds short at the end is how tracks are cut (encoder frames), not news
    return Sound(torch.from_numpy(out).unsqueeze(0), rate, note, warning=missing > SHORT_GAP_S * rate)


def has_sound(path: str, input_name: str = "video") -> bool:
    """Whether the file has a sound track."""
    if _is_animated_image(path):
        return False
    container = _open(path, input_name)
    try:
        return bool(container.streams.audio)
    finally:
        container.close()


def _decode_sound_range(container, stream, rate: int, layout: str, first: int, count: int,
                        out: np.ndarray) -> int:
    """Fill ``out`` (channels x count) with samples ``first .. first + count`` of ``stream``;
    returns how many were found."""
    import av

    start_s = first / rate
    if start_s > 2 * SEEK_MARGIN_S:  # long files: no need to decode everything before the range
        container.seek(int((start_s - SEEK_MARGIN_S) / stream.time_base), stream=stream, backward=True)
    resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
    covered, position = 0, None
    end = first + count
    for frame in container.decode(stream):
        for part in resampler.resample(frame):
            # place by timestamp (decoding after a seek starts anywhere before the range)
            position = int(round(part.time * rate)) if part.pts is not None else (position or 0)
            data = part.to_ndarray()
            lo, hi = max(position, first), min(position + part.samples, end)
            if hi > lo:
                out[:, lo - first:hi - first] = data[:, lo - position:hi - position]
                covered += hi - lo
            position += part.samples
        if position is not None and position >= end:
            break
    return covered


def sound_for_video(audio: dict, duration: float, input_name: str = "audio") -> tuple[np.ndarray, int, str]:
    """Core's AUDIO -> float32 ``[channels, samples]`` of exactly ``duration`` seconds (trimmed
    or padded with silence), its sample rate, and what was done."""
    checks.audio(input_name, audio)
    waveform, rate = audio["waveform"], int(audio["sample_rate"])
    if waveform.shape[0] != 1:
        raise OCDInputError(input_name, f"holds {waveform.shape[0]} sound clips (batch); a video carries one: "
                            "pick one clip before saving")
    if waveform.shape[1] not in CHANNEL_LAYOUTS:
        raise OCDInputError(input_name, f"has {waveform.shape[1]} channels; at most {max(CHANNEL_LAYOUTS)} "
                            "can be written")
    data = waveform[0].detach().to(torch.float32).cpu().numpy()
    if not np.isfinite(data).all():
        raise OCDInputError(input_name, "has NaN or infinite samples")
    wanted = int(round(duration * rate))
    have = data.shape[1]
    note = f"sound: {rate} Hz, {waveform.shape[1]} channel(s)"
    if have > wanted:
        data = data[:, :wanted]
        note += f", trimmed by {(have - wanted) / rate:.2f} s to the video's {duration:.2f} s"
    elif have < wanted:
        data = np.pad(data, ((0, 0), (0, wanted - have)))
        note += f", padded with {(wanted - have) / rate:.2f} s of silence to the video's {duration:.2f} s"
    return np.ascontiguousarray(data), rate, note


# ---- encoding ---------------------------------------------------------------------------

def encode_video(
    frames: np.ndarray,
    path: str,
    fps: float,
    fmt: str = "mp4",
    crf: int = 19,
    metadata: dict[str, str] | None = None,
    sound: tuple[np.ndarray, int] | None = None,
) -> str:
    """Write ``[F, H, W, 3]`` uint8 frames to ``path``: h264 mp4 (AAC sound), VP9 webm (Opus
    sound), animated webp or gif (no sound). ``sound`` = (float32 ``[channels, samples]``,
    sample rate), e.g. from ``sound_for_video``; ``metadata`` (mp4, webm) e.g. the workflow.

    Written to a temporary file beside ``path`` and renamed when complete, so a failed or
    interrupted save leaves nothing half-written under the final name. The file is created
    with the usual permissions (0666 less the umask, like every file ComfyUI writes).
    """
    if fmt not in SAVE_FORMATS:
        raise OCDInputError("format", f"must be one of {SAVE_FORMATS}, got '{fmt}'")
    if not (0 < fps <= 1000):
        raise OCDInputError("frame_rate", f"must be in (0, 1000], got {fps}")
    if not (0 <= crf <= 51):
        raise OCDInputError("crf", f"must be in 0..51, got {crf}")
    if sound is not None and fmt not in SOUND_FORMATS:
        raise OCDInputError("audio", f"{fmt} cannot carry sound; use one of {SOUND_FORMATS}")
    tmp = _new_partial_file(os.path.dirname(os.path.abspath(path)), "." + fmt)
    try:
        if fmt in SOUND_FORMATS:
            _write_av(frames, tmp, fps, fmt, crf, metadata or {}, sound)
        else:
            _write_animated_image(frames, tmp, fps, fmt, crf)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def _new_partial_file(folder: str, suffix: str) -> str:
    """A new, empty file with a unique hidden name in ``folder``. Not mkstemp: its 0600 would
    stay on the renamed file; open() with 0666 lets the umask decide, as for ComfyUI's files."""
    while True:
        path = os.path.join(folder, f".ocd-partial-{secrets.token_hex(6)}{suffix}")
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return path
        except FileExistsError:
            continue


# codec, container options, video encoder options (crf: quality, lower = better) per format
_AV_FORMATS = {
    # use_metadata_tags: without it the mp4 muxer drops tags it does not know (prompt, workflow)
    "mp4": ("libx264", "aac", {"movflags": "use_metadata_tags+faststart"},
            lambda crf: {"crf": str(crf), "preset": "medium"}),
    # constant quality: crf with a zero bitrate target; 'good' at cpu-used 4 is libvpx's usual
    # speed/quality balance (the default 'best' is minutes per second of video)
    "webm": ("libvpx-vp9", "libopus", {},
             lambda crf: {"crf": str(crf), "b": "0", "deadline": "good", "cpu-used": "4", "row-mt": "1"}),
}
_SOUND_RATES = {"mp4": None, "webm": 48000}  # Opus encodes 48 kHz (PyAV resamples); AAC keeps the rate


def _write_av(frames: np.ndarray, path: str, fps: float, fmt: str, crf: int, metadata: dict[str, str],
              sound: tuple[np.ndarray, int] | None) -> None:
    _, h, w, _ = frames.shape
    with _AVWriter(path, fps, (w, h), fmt, crf, metadata, sound[1] if sound is not None else None,
                   sound[0].shape[0] if sound is not None else 0) as writer:
        writer.write(frames, sound[0] if sound is not None else None)


class _AVWriter:
    """An mp4/webm file written piece by piece: ``write(frames, sound)`` any number of times,
    the sound of those frames (float32 ``[channels, samples]``) interleaved frame by frame;
    the streams are finished on leaving the ``with`` block."""

    def __init__(self, path: str, fps: float, size: tuple[int, int], fmt: str, crf: int, metadata: dict[str, str],
                 sound_rate: int | None = None, sound_channels: int = 0):
        import av

        video_codec, audio_codec, container_options, video_options = _AV_FORMATS[fmt]
        w, h = size
        # yuv420p (the pixel format every player accepts) needs even sides: repeat the last
        # row/column rather than cropping content away.
        self.pad_h, self.pad_w = h % 2, w % 2
        self.rate = Fraction(fps).limit_denominator(1001)
        self.container = av.open(path, mode="w", format=fmt, options=container_options)
        for key, value in metadata.items():
            self.container.metadata[key] = value
        self.stream = self.container.add_stream(video_codec, rate=self.rate)
        self.stream.width, self.stream.height = w + self.pad_w, h + self.pad_h
        self.stream.pix_fmt = "yuv420p"
        self.stream.options = video_options(crf)
        self.audio = (_SoundWriter(self.container, audio_codec, _SOUND_RATES[fmt], sound_channels, sound_rate)
                      if sound_rate else None)
        self.frames = 0

    def write(self, frames: np.ndarray, sound: np.ndarray | None = None) -> None:
        import av

        if sound is not None:
            self.audio.append(sound)
        if self.pad_h or self.pad_w:
            frames = np.pad(frames, ((0, 0), (0, self.pad_h), (0, self.pad_w), (0, 0)), mode="edge")
        for frame in frames:
            for packet in self.stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                self.container.mux(packet)
            self.frames += 1
            if self.audio is not None:  # interleaved: the sound up to the end of this frame
                self.audio.write_until(self.frames / float(self.rate))

    def __enter__(self):
        return self

    def __exit__(self, kind, error, trace):
        try:
            if kind is None:
                self.container.mux(self.stream.encode())
                if self.audio is not None:
                    self.audio.finish()
        finally:
            self.container.close()
        return False


class _SoundWriter:
    """Encodes float32 ``[channels, samples]`` pieces into an audio stream of ``container``."""

    def __init__(self, container, codec: str, stream_rate: int | None, channels: int, rate: int):
        self.container, self.rate = container, int(rate)
        self.data = np.zeros((channels, 0), np.float32)  # appended, not yet written
        self.layout = CHANNEL_LAYOUTS[channels]
        self.stream = container.add_stream(codec, rate=stream_rate or self.rate)
        # mono stays mono; more than two channels are downmixed by PyAV's resampler on encode
        self.stream.layout = "mono" if channels == 1 else "stereo"
        self.done = 0  # samples written

    def append(self, data: np.ndarray) -> None:
        self.data = np.concatenate([self.data, np.asarray(data, np.float32)], axis=1)

    def write_until(self, seconds: float) -> None:
        import av

        end = min(self.done + self.data.shape[1], int(round(seconds * self.rate)))
        if end <= self.done:
            return
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(self.data[:, :end - self.done]), format="fltp",
                                           layout=self.layout)
        frame.sample_rate = self.rate
        frame.pts = self.done
        frame.time_base = Fraction(1, self.rate)
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.data = self.data[:, end - self.done:]
        self.done = end

    def finish(self) -> None:
        self.write_until((self.done + self.data.shape[1]) / self.rate)
        for packet in self.stream.encode(None):
            self.container.mux(packet)


class StreamWriter:
    """An mp4/webm written piece by piece (a long clip that is never whole in memory), to a
    hidden partial file beside ``path``, renamed to ``path`` when the ``with`` block ends
    without error and removed otherwise: the file appears complete or not at all.
    ``sound_rate``/``sound_channels``: the sound each ``write`` brings (none when 0)."""

    def __init__(self, path: str, fps: float, size: tuple[int, int], fmt: str = "mp4", crf: int = 19,
                 metadata: dict[str, str] | None = None, sound_rate: int = 0, sound_channels: int = 0):
        if fmt not in SOUND_FORMATS:
            raise OCDInputError("format", f"a clip written piece by piece is one of {SOUND_FORMATS}, got '{fmt}'")
        if not (0 < fps <= 1000):
            raise OCDInputError("frame_rate", f"must be in (0, 1000], got {fps}")
        self.path, self.args = path, (fps, size, fmt, crf, metadata or {}, sound_rate, sound_channels)

    def __enter__(self):
        self.tmp = _new_partial_file(os.path.dirname(os.path.abspath(self.path)), "." + self.args[2])
        try:
            self.writer = _AVWriter(self.tmp, *self.args)
        except BaseException:
            os.remove(self.tmp)
            raise
        return self.writer

    def __exit__(self, kind, error, trace):
        try:
            self.writer.__exit__(kind, error, trace)
            if kind is None:
                os.replace(self.tmp, self.path)
        finally:
            if os.path.exists(self.tmp):
                os.remove(self.tmp)
        return False


def _write_animated_image(frames: np.ndarray, path: str, fps: float, fmt: str, crf: int) -> None:
    from PIL import Image

    images = [Image.fromarray(frame) for frame in frames]
    duration_ms = 1000.0 / fps
    options: dict = dict(save_all=True, append_images=images[1:], duration=duration_ms, loop=0)
    if fmt == "webp":
        # crf 0 is lossless like x264's; otherwise map 1..51 onto webp quality 100..0
        options.update(lossless=crf == 0, quality=100 if crf == 0 else max(0, 100 - 2 * crf), method=4)
    images[0].save(path, format=fmt.upper(), **options)


def psnr(a: torch.Tensor, b: torch.Tensor, peak: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB between two tensors of the same shape."""
    mse = torch.mean((a.double() - b.double()) ** 2).item()
    return float("inf") if mse == 0 else 10.0 * math.log10(peak**2 / mse)


def loaded_fps(video_info: dict, input_name: str = "video_info") -> float:
    """The frame rate a ``video_info`` says the frames were loaded at (VideoHelperSuite's key)."""
    checks.mapping(input_name, video_info)
    if "loaded_fps" not in video_info:
        raise OCDInputError(input_name, f"has no 'loaded_fps' (keys: {sorted(video_info)[:10]}); connect the "
                            "video_info output of Load Video (OCD) or VideoHelperSuite")
    fps = video_info["loaded_fps"]
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not (math.isfinite(fps) and 0 < fps <= 1000):
        raise OCDInputError(input_name, f"loaded_fps must be a frame rate in (0, 1000], got {fps!r}")
    return float(fps)


def video_info_dict(info: VideoInfo, selection: FrameSelection, size: Sequence[int]) -> dict:
    """The video-info dict with VideoHelperSuite's keys, so its VideoInfo nodes can read it."""
    n = len(selection)
    return {
        "source_fps": info.fps,
        "source_frame_count": info.frame_count,
        "source_duration": info.duration,
        "source_width": info.width,
        "source_height": info.height,
        "loaded_fps": selection.fps,
        "loaded_frame_count": n,
        "loaded_duration": n / selection.fps,
        "loaded_width": int(size[0]),
        "loaded_height": int(size[1]),
    }
