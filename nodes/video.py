"""Video nodes: load a clip from ComfyUI's input folder, save frames as a video.

Thin wrappers over ocd.video.codec; the nodes only translate between ComfyUI (folders,
progress bar, interruption, UI previews) and the library.
"""
from __future__ import annotations

import json
import os

import folder_paths
from comfy_api.latest import io, ui

from ..ocd import host
from ..ocd.errors import OCDInputError
from ..ocd.paths import check_prefix_inside, resolve_inside
from ..ocd.video import codec
from ._inputs import OCDNode

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
        summary = (
            f"{len(selection)} frames at {selection.fps:g} fps, {size[0]}x{size[1]} "
            f"(source: {info.frame_count} frames at {info.fps:g} fps, {info.width}x{info.height})"
        )
        return io.NodeOutput(
            frames, len(selection), codec.video_info_dict(info, selection, size),
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
            description="Saves IMAGE frames as an h264 mp4, animated webp or gif and previews it.",
            inputs=[
                io.Image.Input("images", tooltip="The frames to save, in order."),
                io.Float.Input(
                    "frame_rate", default=8.0, min=0.01, max=1000.0, step=0.01,
                    tooltip="Playback rate in frames per second (connect video_info's loaded_fps "
                    "to keep the source timing).",
                ),
                io.String.Input(
                    "filename_prefix", default="OCD/video",
                    tooltip="File name prefix inside ComfyUI's output folder; may contain "
                    "sub-folders and the tokens %year% %month% %day% %hour% %minute% %second% %width% %height%.",
                ),
                io.Combo.Input(
                    "format", options=list(codec.SAVE_FORMATS), default="mp4",
                    tooltip="mp4: h264 (yuv420p, plays everywhere); webp: animated WebP; gif: "
                    "256-colour animated GIF.",
                ),
                io.Int.Input(
                    "crf", default=19, min=0, max=51,
                    tooltip="Quality: lower is better and larger. h264 constant rate factor for "
                    "mp4 (19 is visually near-lossless); for webp 0 = lossless. Ignored for gif.",
                ),
                io.Boolean.Input(
                    "save_output", default=True,
                    tooltip="Save into the output folder; off = a temporary preview that ComfyUI "
                    "deletes on restart.",
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
    def execute(cls, images, frame_rate, filename_prefix, format, crf, save_output) -> io.NodeOutput:
        frames = codec.to_uint8_frames(images)
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
        metadata = {}
        if cls.hidden.prompt is not None:
            metadata["prompt"] = json.dumps(cls.hidden.prompt)
        if cls.hidden.extra_pnginfo is not None:
            for key, value in cls.hidden.extra_pnginfo.items():
                metadata[key] = json.dumps(value)
        codec.encode_video(frames, os.path.join(full_folder, file), frame_rate, format, crf, metadata)
        relative = f"{subfolder}/{file}" if subfolder else file
        return io.NodeOutput(relative, ui=ui.PreviewVideo([ui.SavedResult(file, subfolder, folder_type)]))


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
