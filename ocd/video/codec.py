"""Video in and out: probing, frame selection, resizing to a latent-friendly size, encoding.

Decoding and encoding use PyAV (shipped with ComfyUI), resizing uses OpenCV. Frames travel
as ComfyUI IMAGE tensors: float32 ``[F, H, W, 3]`` in 0..1.
"""
from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Sequence

import cv2
import numpy as np
import torch

from ..errors import OCDInputError

RESIZE_MODES = ("crop", "pad", "stretch")
SAVE_FORMATS = ("mp4", "webp", "gif")
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
    """Which source frames to load, and the frame rate they play at once loaded."""

    source_indices: tuple[int, ...]
    fps: float

    def __len__(self) -> int:
        return len(self.source_indices)


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
    return FrameSelection(source_indices=tuple(picked), fps=rate / select_every_nth)


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


def encode_video(
    frames: np.ndarray,
    path: str,
    fps: float,
    fmt: str = "mp4",
    crf: int = 19,
    metadata: dict[str, str] | None = None,
) -> str:
    """Write ``[F, H, W, 3]`` uint8 frames to ``path`` (h264 mp4, animated webp or gif).

    Written to a temporary file beside ``path`` and renamed when complete, so a failed or
    interrupted save leaves nothing half-written under the final name.
    """
    if fmt not in SAVE_FORMATS:
        raise OCDInputError("format", f"must be one of {SAVE_FORMATS}, got '{fmt}'")
    if not (0 < fps <= 1000):
        raise OCDInputError("frame_rate", f"must be in (0, 1000], got {fps}")
    if not (0 <= crf <= 51):
        raise OCDInputError("crf", f"must be in 0..51, got {crf}")
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".ocd-partial-", suffix="." + fmt, dir=folder)
    os.close(fd)
    try:
        if fmt == "mp4":
            _write_mp4(frames, tmp, fps, crf, metadata or {})
        else:
            _write_animated_image(frames, tmp, fps, fmt, crf)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def _write_mp4(frames: np.ndarray, path: str, fps: float, crf: int, metadata: dict[str, str]) -> None:
    import av

    # yuv420p (the pixel format every player accepts) needs even sides: repeat the last
    # row/column rather than cropping content away.
    f, h, w, _ = frames.shape
    pad_h, pad_w = h % 2, w % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    with av.open(path, mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
        for key, value in metadata.items():
            container.metadata[key] = value
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = w + pad_w, h + pad_h
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "medium"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        container.mux(stream.encode())


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
