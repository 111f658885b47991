"""Masks nodes: where the object is in every frame, and tools to clean a mask up.

- OCD_SAMLoader: a Segment Anything checkpoint from ComfyUI's ``sams`` model folder.
- OCD_SAMVideoMask: SAM on a video from clicks on a key frame (web/ocd_sam_editor.js places
  them), propagated both ways.
- OCD_AutoSaliency: no weights needed: motion + spectral-residual saliency.
- OCD_MaskOps: ocd.masks.ops in a fixed order on any pack's MASK.

Thin wrappers over ocd.masks (sam_video, saliency, ops): folders, device, progress, previews.
"""
from __future__ import annotations

import json
import os

import folder_paths
import torch
from comfy_api.latest import io, ui

from ..ocd import host
from ..ocd.errors import OCDInputError
from ..ocd.masks import ops as mask_ops
from ..ocd.masks import saliency, sam_video
from ..ocd.paths import check_file_name
from ._inputs import OCDNode

SAMS_FOLDER = "sams"  # the folder name other SAM packs (Impact Pack, segment_anything nodes) use


def register_sams_folder() -> None:
    """Make ``models/sams`` a ComfyUI model folder unless another pack already did."""
    default = os.path.join(folder_paths.models_dir, SAMS_FOLDER)
    if SAMS_FOLDER not in folder_paths.folder_names_and_paths:
        folder_paths.folder_names_and_paths[SAMS_FOLDER] = ([default], set(folder_paths.supported_pt_extensions))
    elif default not in folder_paths.get_folder_paths(SAMS_FOLDER):
        folder_paths.add_model_folder_path(SAMS_FOLDER, default)


register_sams_folder()

SAMModel = io.Custom("OCD_SAM_MODEL")


def _sams_hint() -> str:
    folders = folder_paths.get_folder_paths(SAMS_FOLDER)
    return (f"put a Segment Anything checkpoint (sam_vit_b_01ec64.pth, sam_vit_l_0b3195.pth or "
            f"sam_vit_h_4b8939.pth) into {folders[0]} and refresh the browser")


def _sam_path(sam_name: str | None) -> str:
    check_file_name(sam_name, "sam_name")  # before the host's file functions see it
    path = folder_paths.get_full_path(SAMS_FOLDER, sam_name) if sam_name else None
    if path is None:  # no name: the frontend sends nothing while models/sams is empty
        raise OCDInputError("sam_name", f"'{sam_name}' was not found; {_sams_hint()}" if sam_name
                            else f"no checkpoint chosen; {_sams_hint()}")
    return path


class SAMLoader(OCDNode):
    INPUT_CHECKS = {"sam_name": _sam_path}

    @classmethod
    def define_schema(cls) -> io.Schema:
        register_sams_folder()  # also here: a folder config reloaded after import keeps it
        return io.Schema(
            node_id="OCD_SAMLoader",
            display_name="SAM Loader (OCD)",
            category="OCD/saliency",
            description="Loads a Segment Anything checkpoint from the models/sams folder; the size "
            "(vit_b, vit_l, vit_h) is detected from its weights.",
            inputs=[
                io.Combo.Input(
                    "sam_name", options=folder_paths.get_filename_list(SAMS_FOLDER),
                    tooltip="A Segment Anything (v1) checkpoint in models/sams, e.g. sam_vit_b_01ec64.pth "
                    "(fastest) or sam_vit_h_4b8939.pth (best). The size is detected from the weights.",
                ),
                io.Combo.Input(
                    "device", options=list(sam_video.DEVICES), default="auto",
                    tooltip="Where SAM runs: auto = ComfyUI's device (the GPU if there is one), cpu, or gpu. "
                    "The image encoder is the expensive part (seconds per frame on a CPU).",
                ),
            ],
            outputs=[SAMModel.Output(display_name="sam_model", tooltip="The loaded SAM, for SAM Video Mask (OCD).")],
        )

    @classmethod
    def execute(cls, sam_name: str, device: str) -> io.NodeOutput:
        path = _sam_path(sam_name)
        state = sam_video.read_checkpoint(path)
        model_type = sam_video.detect_model_type(state)
        sam = sam_video.build_sam(model_type, state)
        run_device = sam_video.run_device(device, host.compute_device())
        return io.NodeOutput(sam_video.SAMVideoModel(sam, model_type, run_device))


def _send_frames_to_editor(unique_id, images: torch.Tensor) -> None:
    """Before a 'no prompt' error: show the frames in the node so the user can click on them."""
    if unique_id is None:
        return
    frames = ui.PreviewImage(images[..., :3]).as_dict()["images"]
    host.send_to_ui("ocd.sam_frames", {"node": str(unique_id), "frames": frames})


class SAMVideoMask(OCDNode):
    INPUT_CHECKS = {"prompts": sam_video.read_prompts}  # the JSON's form; its content needs the frames

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="OCD_SAMVideoMask",
            display_name="SAM Video Mask (OCD)",
            category="OCD/saliency",
            description="Segments the object you click on in a key frame and follows it through the "
            "video in both directions. Click on the frame shown in the node: left = object, right = "
            "background, drag = box.",
            inputs=[
                SAMModel.Input("sam_model", tooltip="From SAM Loader (OCD)."),
                io.Image.Input("images", tooltip="The video frames, [frames, height, width, 3]."),
                io.String.Input(
                    "prompts", default=json.dumps(sam_video.EMPTY_PROMPTS), multiline=False,
                    tooltip="Set by clicking on the frame in the node. JSON: frame (key frame index), "
                    "width/height (size of the image clicked on), points [[x,y],...], labels (1 = object, "
                    "0 = background), box [x0,y0,x1,y1] or null.",
                ),
            ],
            outputs=[
                io.Mask.Output(display_name="mask", tooltip="The object's mask, [frames, height, width], 0 or 1."),
            ],
            hidden=[io.Hidden.unique_id],
            # an output node: queueing shows the frames/overlay in the editor even while the
            # mask is not wired anywhere yet (the click -> queue -> look loop)
            is_output_node=True,
        )

    @classmethod
    def execute(cls, sam_model, images, prompts) -> io.NodeOutput:
        if not hasattr(sam_model, "sam") or not hasattr(sam_model, "cache"):
            raise OCDInputError("sam_model", "connect the output of SAM Loader (OCD)")
        if isinstance(images, torch.Tensor) and images.ndim == 4 and images.shape[0] > 0:
            try:
                sam_video.parse_prompts(prompts, images.shape[0], images.shape[1], images.shape[2])
            except OCDInputError as e:
                if "no prompt" in str(e):
                    _send_frames_to_editor(cls.hidden.unique_id, images)
                raise
        device = sam_model.device
        batch = 1 if device.type == "cpu" else sam_video.encoder_batch_size(
            sam_model.model_type, host.free_memory(device), len(images))
        progress = host.Progress(2 * max(1, len(images)))

        def on_progress(done: int, total: int) -> None:
            progress.set(done, total)

        sam_model.sam.to(device)
        try:
            masks = sam_video.segment_video(sam_model, images, prompts, batch_size=batch, on_progress=on_progress)
        finally:
            sam_model.sam.to(sam_model.offload_device)
        return io.NodeOutput(masks, ui=_mask_previews(images, masks))


def _mask_previews(images: torch.Tensor, masks: torch.Tensor) -> dict:
    """UI payload for web/ocd_sam_editor.js: ``ocd_overlays`` = every frame with the mask tinted
    red, ``ocd_frames`` = the frames as they are (the editor clicks on these). Not under the
    usual ``images`` key: the frontend would stack every frame below the editor."""
    overlays = ui.PreviewImage(sam_video.overlay(images, masks)).as_dict()["images"]
    frames = ui.PreviewImage(images[..., :3]).as_dict()["images"]
    return {"ocd_overlays": overlays, "ocd_frames": frames}


class AutoSaliency(OCDNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="OCD_AutoSaliency",
            display_name="Auto Saliency Mask (OCD)",
            category="OCD/saliency",
            description="A foreground mask without any model: what moves relative to the scene (optical "
            "flow, camera pan removed) and what stands out (spectral residual), thresholded and "
            "smoothed over time. The default when no SAM checkpoint is at hand.",
            inputs=[
                io.Image.Input("images", tooltip="The video frames, [frames, height, width, 3]."),
                io.Float.Input(
                    "motion_weight", default=0.7, min=0.0, max=1.0, step=0.05,
                    tooltip="Share of motion saliency in the mix (the rest is static spectral-residual "
                    "saliency). 1 = motion only; a single frame always uses static saliency only.",
                ),
                io.Combo.Input(
                    "motion_source", options=list(saliency.MOTION_SOURCES), default="flow",
                    tooltip="flow: optical flow relative to the frame's median flow (works with a panning "
                    "camera); background: difference from the clip's per-pixel median (static camera); "
                    "flow+background: the larger of both.",
                ),
                io.Float.Input(
                    "threshold", default=-1.0, min=-1.0, max=1.0, step=0.01,
                    tooltip="Saliency level above which a pixel is foreground; negative = Otsu's "
                    "threshold, chosen once for the whole clip.",
                ),
                io.Int.Input(
                    "smooth_frames", default=5, min=1, max=63,
                    tooltip="Temporal smoothing window in frames (saliency averaged, then a majority "
                    "vote over the mask); 1 = none. Larger = steadier, slower to follow fast motion.",
                ),
                io.Int.Input(
                    "working_size", default=256, min=64, max=1024, step=16,
                    tooltip="Long side in pixels at which saliency is computed; the mask is resized back. "
                    "Saliency is coarse: larger costs time and mostly adds noise.",
                ),
            ],
            outputs=[
                io.Mask.Output(display_name="mask", tooltip="Foreground mask, [frames, height, width], 0 or 1."),
                io.Mask.Output(display_name="saliency", tooltip="The soft saliency map before thresholding, 0..1."),
            ],
        )

    @classmethod
    def execute(cls, images, motion_weight, motion_source, threshold, smooth_frames, working_size) -> io.NodeOutput:
        frames = images.shape[0] if isinstance(images, torch.Tensor) and images.ndim == 4 else 1
        progress = host.Progress(max(1, frames))

        def on_frame(index: int) -> None:
            progress.set(index + 1)

        mask, soft = saliency.auto_saliency(
            images, motion_weight=motion_weight, motion_source=motion_source, threshold=threshold,
            smooth_frames=smooth_frames, working_size=working_size, on_frame=on_frame,
        )
        return io.NodeOutput(mask, soft, ui=ui.PreviewImage(sam_video.overlay(images, mask)))


class MaskOps(OCDNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="OCD_MaskOps",
            display_name="Mask Ops (OCD)",
            category="OCD/saliency",
            description="Cleans up a video mask from any pack ([H,W], [F,H,W] or [F,1,H,W]). Applied in "
            "this order: resize -> temporal smoothing -> threshold -> grow/shrink -> tube -> invert -> "
            "feather. Pixel amounts are in output pixels.",
            inputs=[
                io.Mask.Input("mask", tooltip="The mask: [H,W], [F,H,W] or [F,1,H,W], 0..1 (1 = object)."),
                io.Int.Input(
                    "grow_pixels", default=0, min=-512, max=512,
                    tooltip="Grow the mask by this many pixels (negative = shrink). A margin around the "
                    "object keeps its edge inside the edited region.",
                ),
                io.Float.Input(
                    "feather_pixels", default=0.0, min=0.0, max=256.0, step=0.5,
                    tooltip="Soften the edge over about twice this many pixels (Gaussian); 0 = hard edge.",
                ),
                io.Float.Input(
                    "threshold", default=-1.0, min=-1.0, max=1.0, step=0.01,
                    tooltip="Make the mask binary: 1 where it exceeds this level; negative = keep soft values.",
                ),
                io.Boolean.Input("invert", default=False, tooltip="Swap object and background."),
                io.Int.Input(
                    "smooth_frames", default=1, min=1, max=63,
                    tooltip="Average over a centred window of this many frames (1 = off): steadies a "
                    "flickering mask (threshold afterwards to keep it binary).",
                ),
                io.Int.Input(
                    "tube_frames", default=1, min=0, max=1000,
                    tooltip="Union over a centred window of this many frames (1 = off, 0 = all frames): a "
                    "crop or foreground branch then sees the object in every frame of the window.",
                ),
                io.Int.Input(
                    "width", default=0, min=0, max=8192,
                    tooltip="Resize to this width (0 = keep, or follow the reference).",
                ),
                io.Int.Input(
                    "height", default=0, min=0, max=8192,
                    tooltip="Resize to this height (0 = keep, or follow the reference).",
                ),
                io.Image.Input(
                    "reference_images", optional=True,
                    tooltip="Resize to these frames' size, and check the mask has one frame per image "
                    "(a single-frame mask is repeated).",
                ),
                io.Latent.Input(
                    "reference_latent", optional=True,
                    tooltip="Resize to this latent's size (latent pixels, 1/8 of the image), and check "
                    "the frame count. For masks used in latent space.",
                ),
            ],
            outputs=[io.Mask.Output(display_name="mask", tooltip="The processed mask, [frames, height, width], 0..1.")],
        )

    @classmethod
    def execute(cls, mask, grow_pixels, feather_pixels, threshold, invert, smooth_frames, tube_frames,
                width, height, reference_images=None, reference_latent=None) -> io.NodeOutput:
        m = mask_ops.normalize_mask(mask, "mask")
        samples = None
        if reference_latent is not None:
            samples = reference_latent.get("samples", reference_latent) if isinstance(reference_latent, dict) \
                else reference_latent
        frames, reference_hw = mask_ops.reference_shape(reference_images, samples)
        if frames is not None:
            m = mask_ops.match_frames(m, frames, "mask")
        size = mask_ops.target_size(tuple(m.shape[1:]), width, height, reference_hw)
        out = mask_ops.apply_ops(
            m, size=size, smooth_frames=smooth_frames, threshold_level=threshold, grow_pixels=grow_pixels,
            tube_frames=tube_frames, invert_mask=invert, feather_pixels=feather_pixels,
        )
        return io.NodeOutput(out)


NODES = [SAMLoader, SAMVideoMask, AutoSaliency, MaskOps]
