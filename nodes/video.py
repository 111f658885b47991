"""Video nodes: load a clip (frames and sound) from ComfyUI's input folder, save frames (and
sound) as a video with the workflow inside.

Thin wrappers over ocd.video.codec; the nodes only translate between ComfyUI (folders,
progress bar, interruption, UI previews, the prompt and workflow) and the library.
"""
from __future__ import annotations

import json
import logging
import os

import folder_paths
from comfy_api.latest import io, ui

from ..ocd import host
from ..ocd.errors import OCDInputError
from ..ocd.paths import check_prefix_inside, resolve_inside
from ..ocd.video import codec
from ._inputs import OCDNode

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".mov", ".avi", ".m4v", ".gif", ".webp")

# VideoHelperSuite's type name: its "Video Info" nodes read this output as it is.
VideoInfo = io.Custom("VHS_VIDEOINFO")


def _input_videos() -> list[str]:
    root = folder_paths.get_input_directory()
    if not os.path.isdir(root):
        return []
    names = []
    for dirpath, _, files in os.walk(root):
        for f in files:
            if f.lower().endswith(VIDEO_EXTENSIONS):
                names.append(os.path.relpath(os.path.join(dirpath, f), root).replace(os.sep, "/"))
    return sorted(names)


def _video_path(video: str | None) -> str:
    root = folder_paths.get_input_directory()
    if not video:  # the frontend sends nothing when the input folder has no video to offer
        raise OCDInputError("video", f"no video chosen: put a video ({', '.join(VIDEO_EXTENSIONS)}) into {root} "
                            "or use the upload button of the node, then refresh the browser")
    return resolve_inside(root, video, input_name="video")


class LoadVideo(OCDNode):
    INPUT_CHECKS = {"video": _video_path}

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="OCD_LoadVideo",
            display_name="Load Video (OCD)",
            category="OCD/video",
            description="Loads a video from ComfyUI's input folder as IMAGE frames sized for the VAE "
            "(multiples of 8), with the frame selection options of VideoHelperSuite.",
            inputs=[
                io.Combo.Input(
                    "video",
                    options=_input_videos(),
                    upload=io.UploadType.video,
                    tooltip="A video (mp4, webm, mkv, mov, avi, animated gif/webp) in ComfyUI's input "
                    "folder. Use the upload button to add one.",
                ),
                io.Int.Input(
                    "frame_load_cap", default=16, min=0, max=100000,
                    tooltip="Load at most this many frames (0 = all). Editing cost grows with the "
                    "frame count.",
                ),
                io.Int.Input(
                    "skip_first_frames", default=0, min=0, max=10000000,
                    tooltip="Frames to skip at the start (counted after force_rate).",
                ),
                io.Int.Input(
                    "select_every_nth", default=1, min=1, max=1000,
                    tooltip="Keep every n-th frame (1 = every frame). The reported frame rate is "
                    "divided by n.",
                ),
                io.Float.Input(
                    "force_rate", default=0.0, min=0.0, max=240.0, step=0.01,
                    tooltip="Resample the clip to this frame rate before selecting (0 = source rate).",
                ),
                io.Int.Input(
                    "width", default=512, min=0, max=codec.MAX_SIDE, step=8,
                    tooltip="Output width in pixels, rounded to a multiple of 8 (0 = follow the "
                    "height and the source aspect ratio; both 0 = source size).",
                ),
                io.Int.Input(
                    "height", default=0, min=0, max=codec.MAX_SIDE, step=8,
                    tooltip="Output height in pixels, rounded to a multiple of 8 (0 = follow the "
                    "width and the source aspect ratio).",
                ),
                io.Combo.Input(
                    "resize_mode", options=list(codec.RESIZE_MODES), default="crop",
                    tooltip="How to reach the output size when the aspect ratio differs: crop "
                    "(fill, cut the overflow), pad (fit, black bars) or stretch.",
                ),
            ],
            outputs=[
                io.Image.Output(display_name="IMAGE", tooltip="The frames, [frames, height, width, 3] in 0..1."),
                io.Int.Output(display_name="frame_count", tooltip="How many frames were loaded."),
                VideoInfo.Output(
                    display_name="video_info",
                    tooltip="Source and loaded fps, frame count, duration and size "
                    "(VideoHelperSuite's VHS_VIDEOINFO keys).",
                ),
                io.Audio.Output(
                    display_name="audio",
                    tooltip="The sound of exactly the loaded frames' time range (skip, cap, every-nth "
                    "and force_rate applied), mono or stereo (5.1 is downmixed). A video without "
                    "sound gives silence of that length.",
                ),
            ],
        )

    @classmethod
    def fingerprint_inputs(cls, video: str | None = None, **kwargs):
        try:
            return os.path.getmtime(_video_path(video))
        except OCDInputError:
            return float("nan")  # never equal: the error is reported again on the next run

    @classmethod
    def execute(cls, video, frame_load_cap, skip_first_frames, select_every_nth, force_rate,
                width, height, resize_mode) -> io.NodeOutput:
        path = _video_path(video)
        info = codec.probe_video(path)
        selection = codec.select_frames(info, frame_load_cap, skip_first_frames, select_every_nth, force_rate)
        size = codec.output_size(info.width, info.height, width, height)
        codec.ensure_fits(len(selection), size[0], size[1], host.free_memory())

        progress = host.Progress(max(selection.source_indices) + 1)

        def on_frame(index: int) -> None:
            progress.set(index + 1)

        frames = codec.decode_frames(path, selection, size, resize_mode, on_frame=on_frame)
        sound = codec.decode_audio(path, selection.start, selection.duration)
        if sound.warning:
            log.warning("Load Video (OCD) %s: %s", video, sound.note)
        summary = (
            f"{len(selection)} frames at {selection.fps:g} fps, {size[0]}x{size[1]}, "
            f"{selection.duration:.2f} s from {selection.start:.2f} s\n"
            f"source: {info.frame_count} frames at {info.fps:g} fps, {info.width}x{info.height}\n"
            f"{sound.note}"
        )
        return io.NodeOutput(
            frames, len(selection), codec.video_info_dict(info, selection, size), sound.as_audio(),
            ui=ui.PreviewText(summary),  # shown on the node by web/ocd_video.js
        )


class SaveVideo(OCDNode):
    # the prefix is checked before the run (nothing may be created for a refused prompt)
    INPUT_CHECKS = {"filename_prefix": lambda prefix: check_prefix_inside(folder_paths.get_output_directory(), prefix)}

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="OCD_SaveVideo",
            display_name="Save Video (OCD)",
            category="OCD/video",
            description="Saves IMAGE frames, with their sound, as an h264 mp4 (AAC sound), VP9 webm (Opus "
            "sound), animated webp or gif, and previews it. mp4 and webm carry the prompt and workflow.",
            inputs=[
                io.Image.Input("images", tooltip="The frames to save, in order."),
                io.Float.Input(
                    "frame_rate", default=8.0, min=0.01, max=1000.0, step=0.01,
                    tooltip="Playback rate in frames per second. Ignored when video_info is connected: "
                    "its loaded frame rate is used, so the clip keeps its source timing.",
                ),
                io.String.Input(
                    "filename_prefix", default="OCD/video",
                    tooltip="File name prefix inside ComfyUI's output folder; may contain "
                    "sub-folders and the tokens %year% %month% %day% %hour% %minute% %second% %width% %height%.",
                ),
                io.Combo.Input(
                    "format", options=list(codec.SAVE_FORMATS), default="mp4",
                    tooltip="mp4: h264 (yuv420p, plays everywhere) with AAC sound; webp: animated WebP; "
                    "gif: 256-colour animated GIF (neither image format carries sound); webm: VP9 with "
                    "Opus sound.",
                ),
                io.Int.Input(
                    "crf", default=19, min=0, max=51,
                    tooltip="Quality: lower is better and larger. h264 (mp4) and VP9 (webm) constant "
                    "rate factor (19 is visually near-lossless); for webp 0 = lossless. Ignored for gif.",
                ),
                io.Boolean.Input(
                    "save_output", default=True,
                    tooltip="Save into the output folder; off = a temporary preview that ComfyUI "
                    "deletes on restart.",
                ),
                io.Audio.Input(
                    "audio", optional=True,
                    tooltip="Sound to put in the video (Load Video's audio, or any AUDIO), trimmed or "
                    "padded with silence to the video's length. AAC in mp4, Opus in webm; gif and "
                    "webp cannot carry it (dropped, with a note).",
                ),
                VideoInfo.Input(
                    "video_info", optional=True,
                    tooltip="Load Video's video_info: when connected, its loaded frame rate is used "
                    "instead of frame_rate, so the saved clip plays at the speed it was loaded at.",
                ),
            ],
            outputs=[
                io.String.Output(
                    display_name="filename",
                    tooltip="The saved file, relative to the output (or temp) folder.",
                ),
            ],
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, images, frame_rate, filename_prefix, format, crf, save_output, audio=None,
                video_info=None) -> io.NodeOutput:
        frames = codec.to_uint8_frames(images)
        notes = []
        if video_info is not None:
            frame_rate = codec.loaded_fps(video_info)
            notes.append(f"{frame_rate:g} fps from video_info (the frame_rate widget is not used)")
        duration = len(frames) / frame_rate
        sound = None
        if audio is not None and format not in codec.SOUND_FORMATS:
            notes.append(f"{format} cannot carry sound: the audio input was dropped (save as mp4 or webm to keep it)")
            log.warning("Save Video (OCD): %s", notes[-1])
        elif audio is not None:
            data, rate, note = codec.sound_for_video(audio, duration)
            sound = (data, rate)
            notes.append(note)
        folder = folder_paths.get_output_directory() if save_output else folder_paths.get_temp_directory()
        folder_type = io.FolderType.output if save_output else io.FolderType.temp
        try:
            full_folder, filename, counter, subfolder, _ = folder_paths.get_save_image_path(
                filename_prefix, folder, frames.shape[2], frames.shape[1]
            )
        except Exception as e:  # ComfyUI refuses prefixes that leave the folder
            raise OCDInputError("filename_prefix", f"'{filename_prefix}' is not allowed: {e}") from None
        os.makedirs(full_folder, exist_ok=True)
        file = f"{filename}_{counter:05}_.{format}"  # core's pattern: its counter scan expects it
        metadata = _workflow_metadata(cls.hidden) if format in codec.SOUND_FORMATS else {}
        codec.encode_video(frames, os.path.join(full_folder, file), frame_rate, format, crf, metadata, sound)
        relative = f"{subfolder}/{file}" if subfolder else file
        summary = "\n".join([f"saved {relative}: {len(frames)} frames at {frame_rate:g} fps, {duration:.2f} s",
                             *notes])
        preview = ui.PreviewVideo([ui.SavedResult(file, subfolder, folder_type)]).as_dict()
        # the note shows under the node (web/ocd_report.js shows 'ocd_report' of every OCD node)
        return io.NodeOutput(relative, ui={**preview, "ocd_report": [summary]})


def _workflow_metadata(hidden) -> dict[str, str]:
    """The prompt and the workflow (extra_pnginfo) as JSON text, as core's savers embed them."""
    metadata = {}
    if hidden.prompt is not None:
        metadata["prompt"] = json.dumps(hidden.prompt)
    if hidden.extra_pnginfo is not None:
        for key, value in hidden.extra_pnginfo.items():
            metadata[key] = json.dumps(value)
    return metadata


class VideoInfoNode(OCDNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="OCD_VideoInfo",
            display_name="Video Info (OCD)",
            category="OCD/video",
            description="Splits a video_info into numbers, e.g. to save at the rate the clip was loaded at.",
            inputs=[
                VideoInfo.Input("video_info", tooltip="The video_info output of Load Video (OCD) or VideoHelperSuite."),
                io.Combo.Input(
                    "which", options=["loaded", "source"], default="loaded",
                    tooltip="loaded: the frames as loaded (after selection and resizing); source: the file.",
                ),
            ],
            outputs=[
                io.Float.Output(display_name="fps"),
                io.Int.Output(display_name="frame_count"),
                io.Float.Output(display_name="duration"),
                io.Int.Output(display_name="width"),
                io.Int.Output(display_name="height"),
            ],
        )

    @classmethod
    def execute(cls, video_info: dict, which: str) -> io.NodeOutput:
        keys = ("fps", "frame_count", "duration", "width", "height")
        missing = [f"{which}_{k}" for k in keys if f"{which}_{k}" not in video_info]
        if missing:
            raise OCDInputError("video_info", f"lacks the keys {missing}; connect a Load Video output")
        return io.NodeOutput(*(video_info[f"{which}_{k}"] for k in keys))


NODES = [LoadVideo, SaveVideo, VideoInfoNode]
