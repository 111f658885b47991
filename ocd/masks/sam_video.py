"""Segment Anything on video: a mask that follows the object from prompts on one key frame.

Data flow for IMAGE frames ``[F, H, W, 3]`` and prompts on key frame ``k``:

1. every frame's image embedding is computed once (SAM's ViT image encoder, batched where
   memory allows) and kept in a byte-bounded cache on the loaded model, so re-running with
   new clicks, the editor's loop, only runs the light mask decoder;
2. frame ``k`` is predicted from the user's points (label 1 positive, 0 negative) and/or box;
3. propagation, forwards (k+1, k+2, ...) then backwards (k-1, ...): each frame is re-prompted
   from the previous frame's result: the box of its mask, moved by the median optical flow
   inside the mask and padded a little, plus the prompt points carried along the dense
   optical flow (Farneback) between the two frames. A point that leaves the frame is dropped.

Coordinates: prompts are stored in the pixels of the image they were placed on
(``width``/``height`` in the prompt JSON, the editor writes them); they are scaled to the
frames' size here, and SamPredictor maps frame pixels to its 1024-pixel input itself.

``segment_anything`` is imported lazily (inside functions), so the pack loads without it.
The predictor is used through ``PromptPredictor``, a small interface over a real
``SamPredictor``: tests wrap that predictor's methods to count calls.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from .. import checks
from ..errors import OCDInputError
from . import saliency

# Image-encoder width (patch embedding output channels) and depth of each SAM v1 size.
MODEL_TYPES = {768: "vit_b", 1024: "vit_l", 1280: "vit_h"}
ENCODER_DEPTHS = {"vit_b": 12, "vit_l": 24, "vit_h": 32}
# Rough peak memory of one image-encoder pass (fp32, 1024x1024); measured ~3.3 GB for vit_b
# on CPU. Used to choose how many frames go through the encoder at once.
ENCODER_BYTES_PER_FRAME = {"vit_b": 3.5 * 2**30, "vit_l": 4.5 * 2**30, "vit_h": 5.5 * 2**30}
PATCH_EMBED_KEY = "image_encoder.patch_embed.proj.weight"
FLOW_WORKING_SIZE = 256  # optical flow for carrying points is computed at this long side
BOX_PADDING = 0.1  # fraction of the box size added on every side when re-prompting


# ---- checkpoints -------------------------------------------------------------------------

def _strip_prefix(state_dict: dict) -> dict:
    """Some exports wrap the model (``model.``/``module.``); SAM's own keys start at the parts."""
    for prefix in ("module.", "model."):
        if state_dict and all(k.startswith(prefix) for k in state_dict):
            state_dict = {k[len(prefix):]: v for k, v in state_dict.items()}
    return state_dict


def read_checkpoint(path: str, input_name: str = "sam_name") -> dict[str, torch.Tensor]:
    """A SAM state dict from ``.pth``/``.pt``/``.bin`` (torch, weights only) or ``.safetensors``."""
    name = os.path.basename(path)
    try:
        if path.lower().endswith(".safetensors"):
            import safetensors.torch

            state = safetensors.torch.load_file(path, device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling errors, truncated files, wrong formats
        raise OCDInputError(input_name, f"'{name}' is not a readable checkpoint ({e.__class__.__name__}: {e})") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise OCDInputError(input_name, f"'{name}' does not hold a state dict")
    return _strip_prefix(state)


def detect_model_type(state_dict: dict, input_name: str = "sam_name") -> str:
    """``vit_b`` / ``vit_l`` / ``vit_h`` from the image encoder's patch-embedding width and
    block count; anything else (SAM 2, HQ-SAM, a diffusion checkpoint...) is refused."""
    weight = state_dict.get(PATCH_EMBED_KEY)
    if weight is None or weight.ndim != 4:
        raise OCDInputError(
            input_name,
            f"not a Segment Anything (v1) checkpoint: it has no '{PATCH_EMBED_KEY}'. Use one of "
            "sam_vit_b_01ec64.pth, sam_vit_l_0b3195.pth, sam_vit_h_4b8939.pth",
        )
    width = int(weight.shape[0])
    model_type = MODEL_TYPES.get(width)
    depth = len({k.split(".")[2] for k in state_dict if k.startswith("image_encoder.blocks.")})
    if model_type is None or depth != ENCODER_DEPTHS[model_type]:
        raise OCDInputError(
            input_name,
            f"unknown Segment Anything size: encoder width {width}, depth {depth} "
            f"(known: {', '.join(f'{t} = width {w}, depth {ENCODER_DEPTHS[t]}' for w, t in MODEL_TYPES.items())})",
        )
    return model_type


def build_sam(model_type: str, state_dict: dict | None = None, input_name: str = "sam_name"):
    """A ``segment_anything`` Sam module of ``model_type``, with ``state_dict`` loaded (strict)."""
    try:
        from segment_anything import sam_model_registry
    except ImportError:
        raise OCDInputError(
            input_name, "the 'segment-anything' package is not installed: pip install segment-anything "
            "(with ComfyUI's python), or use OCD_AutoSaliency, which needs no model",
        ) from None
    sam = sam_model_registry[model_type](checkpoint=None)
    if state_dict is not None:
        state_dict = {k: (v.float() if v.is_floating_point() else v) for k, v in state_dict.items()}
        try:
            sam.load_state_dict(state_dict, strict=True)
        except RuntimeError as e:
            raise OCDInputError(input_name, f"the checkpoint does not match SAM {model_type}: {e}") from None
    return sam.eval()


# ---- embedding cache ---------------------------------------------------------------------

@dataclass
class FrameEmbedding:
    """SamPredictor's per-image state: features ``[1, 256, 64, 64]`` and the two sizes (H, W)."""

    features: torch.Tensor
    input_size: tuple[int, int]
    original_size: tuple[int, int]

    @property
    def nbytes(self) -> int:
        return self.features.numel() * self.features.element_size()


class EmbeddingCache:
    """Least-recently-used frame embeddings, bounded in bytes (kept on the CPU)."""

    def __init__(self, max_bytes: int = 1 << 30):
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, FrameEmbedding] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str) -> FrameEmbedding | None:
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
        return item

    def put(self, key: str, item: FrameEmbedding) -> None:
        if item.nbytes > self.max_bytes or key in self._items:
            return
        self._items[key] = item
        self._bytes += item.nbytes
        while self._bytes > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self._bytes -= old.nbytes

    def clear(self) -> None:
        self._items.clear()
        self._bytes = 0


@dataclass(eq=False)
class SAMVideoModel:
    """What OCD_SAMLoader outputs: the Sam module, its size, where it runs, its cache."""

    sam: torch.nn.Module
    model_type: str
    device: torch.device
    offload_device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    cache: EmbeddingCache = field(default_factory=EmbeddingCache)

    def make_predictor(self):
        from segment_anything import SamPredictor

        return SamPredictor(self.sam)


DEVICES = ("auto", "cpu", "gpu")


def run_device(choice: str, compute_device: torch.device, input_name: str = "device") -> torch.device:
    """Where SAM runs for the loader's ``device`` choice, given the host's compute device."""
    if choice not in DEVICES:
        raise OCDInputError(input_name, f"'{choice}' is not one of {DEVICES}")
    if choice == "cpu":
        return torch.device("cpu")
    if choice == "gpu" and compute_device.type == "cpu":
        raise OCDInputError(input_name, "no GPU is available to ComfyUI; choose auto or cpu")
    return compute_device


def frame_key(frame: np.ndarray) -> str:
    """Cache key of one uint8 ``[H, W, 3]`` frame: its content and size."""
    h = hashlib.blake2b(frame.tobytes(), digest_size=16)
    h.update(repr(frame.shape).encode())
    return h.hexdigest()


# ---- the predictor interface ---------------------------------------------------------------

class PromptPredictor:
    """The small interface the propagation needs from a real ``SamPredictor``.

    ``embed`` runs SamPredictor's own preprocessing (``transform.apply_image``,
    ``model.preprocess``) and the image encoder on a batch of frames; ``predict`` installs one
    frame's embedding as the predictor's current image and calls ``SamPredictor.predict``.
    """

    def __init__(self, predictor):
        self.predictor = predictor

    @torch.no_grad()
    def embed(self, frames: Sequence[np.ndarray]) -> list[FrameEmbedding]:
        p = self.predictor
        device = p.model.device
        batch, sizes = [], []
        for frame in frames:
            resized = p.transform.apply_image(frame)
            t = torch.as_tensor(resized, device=device).permute(2, 0, 1).contiguous()[None]
            sizes.append((tuple(t.shape[-2:]), tuple(frame.shape[:2])))
            batch.append(p.model.preprocess(t))  # normalise and pad to the encoder's square
        features = p.model.image_encoder(torch.cat(batch, dim=0))
        return [
            FrameEmbedding(features[i:i + 1].to("cpu"), input_size, original_size)
            for i, (input_size, original_size) in enumerate(sizes)
        ]

    def predict(self, embedding: FrameEmbedding, points: np.ndarray | None, labels: np.ndarray | None,
                box: np.ndarray | None, multimask: bool) -> tuple[np.ndarray, float]:
        """Best mask ``[H, W]`` bool (frame size) and its predicted IoU."""
        p = self.predictor
        p.reset_image()
        p.features = embedding.features.to(p.model.device)
        p.input_size = embedding.input_size
        p.original_size = embedding.original_size
        p.is_image_set = True
        masks, scores, _ = p.predict(
            point_coords=points if points is not None and len(points) else None,
            point_labels=labels if points is not None and len(points) else None,
            box=box,
            multimask_output=multimask,
        )
        best = int(np.argmax(scores))
        return masks[best].astype(bool), float(scores[best])


# ---- prompts -------------------------------------------------------------------------------

@dataclass
class Prompts:
    """Prompts in frame pixels: ``points`` ``[N, 2]`` (x, y), ``labels`` ``[N]`` (1/0),
    ``box`` ``[4]`` (x0, y0, x1, y1) or None, on frame ``frame``."""

    frame: int
    points: np.ndarray
    labels: np.ndarray
    box: np.ndarray | None


EMPTY_PROMPTS = {"frame": 0, "width": 0, "height": 0, "points": [], "labels": [], "box": None}


PROMPTS_FORM = ('{"frame": 0, "width": 0, "height": 0, "points": [[x, y], ...], "labels": [1, 0, ...], '
                '"box": [x0, y0, x1, y1] or null}')


def read_prompts(prompts: str | dict, input_name: str = "prompts") -> dict:
    """The prompt JSON of OCD_SAMVideoMask, its form checked without the frames: an object whose
    fields have the right types (``PROMPTS_FORM``). Empty prompts pass (the editor's first run);
    what needs the frames (key frame in range, points inside) is ``parse_prompts``' part."""
    data = checks.json_object(input_name, prompts, PROMPTS_FORM)
    checks.field(input_name, data, "frame", PROMPTS_FORM, kind="int", default=0, minimum=0)
    for key in ("width", "height"):
        if data.get(key) is not None:
            checks.field(input_name, data, key, PROMPTS_FORM, kind="number", minimum=0)
    points = checks.field(input_name, data, "points", PROMPTS_FORM, kind="null|list") or []
    if not all(isinstance(p, list) and len(p) == 2 and all(_is_number(v) for v in p) for p in points):
        raise OCDInputError(input_name, f"field 'points' must be a list of [x, y] number pairs, got "
                            f"{json.dumps(points)[:60]}; expected the form {PROMPTS_FORM}")
    labels = checks.field(input_name, data, "labels", PROMPTS_FORM, kind="null|list")
    if labels is not None and not all(v in (0, 1) and not isinstance(v, bool) for v in labels):
        raise OCDInputError(input_name, f"field 'labels' must list 1 (object) or 0 (background) per point, got "
                            f"{json.dumps(labels)[:60]}; expected the form {PROMPTS_FORM}")
    box = checks.field(input_name, data, "box", PROMPTS_FORM, kind="null|list")
    if box is not None and not (len(box) == 4 and all(_is_number(v) for v in box)):
        raise OCDInputError(input_name, f"field 'box' must be [x0, y0, x1, y1] or null, got "
                            f"{json.dumps(box)[:60]}; expected the form {PROMPTS_FORM}")
    return data


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)


def parse_prompts(prompts: str | dict, frame_count: int, height: int, width: int,
                  input_name: str = "prompts") -> Prompts:
    """The prompt JSON of OCD_SAMVideoMask -> ``Prompts`` in the frames' pixels.

    JSON: ``{"frame": k, "width": w, "height": h, "points": [[x, y], ...], "labels": [1, 0, ...],
    "box": [x0, y0, x1, y1] | null}``; ``width``/``height`` are the size of the image the
    prompts were placed on (0 or absent = the frames' size); labels default to 1 (positive).
    """
    data = read_prompts(prompts, input_name)
    frame = data.get("frame", 0)
    if not 0 <= frame < frame_count:
        raise OCDInputError(input_name, f"key frame {frame!r} is outside the video (0..{frame_count - 1})")
    ref_w = float(data.get("width") or width)
    ref_h = float(data.get("height") or height)
    if ref_w <= 0 or ref_h <= 0:
        raise OCDInputError(input_name, f"width/height of the prompted image must be positive, got {ref_w}x{ref_h}")
    sx, sy = width / ref_w, height / ref_h

    # the fields' types were checked by read_prompts
    points = np.asarray(data.get("points") or [], dtype=np.float64).reshape(-1, 2)
    labels = data.get("labels")
    labels = np.ones(len(points), dtype=np.int64) if labels is None else np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(labels) != len(points):
        raise OCDInputError(input_name, f"{len(points)} points but {len(labels)} labels; give one label (1 or 0) per point")
    for x, y in points:
        if not (0 <= x <= ref_w and 0 <= y <= ref_h):
            raise OCDInputError(
                input_name, f"point ({x:g}, {y:g}) is outside the {ref_w:g}x{ref_h:g} frame it was placed on",
            )
    points = points * np.array([sx, sy])

    box = data.get("box")
    if box is not None:
        box = np.asarray(box, dtype=np.float64)
        x0, y0, x1, y1 = min(box[0], box[2]), min(box[1], box[3]), max(box[0], box[2]), max(box[1], box[3])
        if x1 <= 0 or y1 <= 0 or x0 >= ref_w or y0 >= ref_h:
            raise OCDInputError(input_name, f"box {box.tolist()} lies outside the {ref_w:g}x{ref_h:g} frame")
        if x1 - x0 < 1 or y1 - y0 < 1:
            raise OCDInputError(input_name, f"box {box.tolist()} is empty; drag a box at least a pixel wide")
        box = np.array([max(x0, 0) * sx, max(y0, 0) * sy, min(x1, ref_w) * sx, min(y1, ref_h) * sy])
    if len(points) == 0 and box is None:
        raise OCDInputError(
            input_name, "no prompt: click on the object in the key frame shown in the node (left click = "
            "object, right click = background, drag = box), or type points/box into the JSON",
        )
    return Prompts(frame, points, labels, box)


# ---- propagation -----------------------------------------------------------------------------

def mask_box(mask: np.ndarray) -> np.ndarray | None:
    """Bounding box (x0, y0, x1, y1) of a ``[H, W]`` bool mask in pixel edges, or None if empty."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float64)


def _carry(points: np.ndarray, labels: np.ndarray, flow: np.ndarray, scale: float, height: int, width: int):
    """Move frame-pixel points along a working-size flow ``[h, w, 2]``; drop those leaving the frame."""
    if len(points) == 0:
        return points, labels
    fh, fw = flow.shape[:2]
    xi = np.clip((points[:, 0] * scale).astype(int), 0, fw - 1)
    yi = np.clip((points[:, 1] * scale).astype(int), 0, fh - 1)
    moved = points + flow[yi, xi] / scale
    inside = (moved[:, 0] >= 0) & (moved[:, 0] < width) & (moved[:, 1] >= 0) & (moved[:, 1] < height)
    return moved[inside], labels[inside]


def _next_box(mask: np.ndarray, flow: np.ndarray, scale: float, height: int, width: int) -> np.ndarray | None:
    box = mask_box(mask)
    if box is None:
        return None
    fh, fw = flow.shape[:2]
    small = mask[(np.arange(fh) / scale).astype(int).clip(0, height - 1)][:, (np.arange(fw) / scale).astype(int).clip(0, width - 1)]
    shift = np.median(flow[small], axis=0) / scale if small.any() else np.zeros(2)
    pad_x, pad_y = BOX_PADDING * (box[2] - box[0]), BOX_PADDING * (box[3] - box[1])
    box = box + np.array([shift[0] - pad_x, shift[1] - pad_y, shift[0] + pad_x, shift[1] + pad_y])
    return np.clip(box, 0, [width, height, width, height])


def encoder_batch_size(model_type: str, free_bytes: int, frames: int) -> int:
    """How many frames fit through the image encoder at once (at least 1, at most 8)."""
    per_frame = ENCODER_BYTES_PER_FRAME.get(model_type, ENCODER_BYTES_PER_FRAME["vit_h"])
    return int(max(1, min(8, frames, free_bytes // per_frame)))


def embed_frames(model: SAMVideoModel, predictor: PromptPredictor, frames: np.ndarray, batch_size: int = 1,
                 on_frame: Callable[[int], None] | None = None) -> list[FrameEmbedding]:
    """One embedding per uint8 frame ``[F, H, W, 3]``, from the cache or the encoder (batched)."""
    keys = [frame_key(f) for f in frames]
    out: list[FrameEmbedding | None] = [model.cache.get(k) for k in keys]
    missing = [i for i, e in enumerate(out) if e is None]
    done = len(frames) - len(missing)
    for start in range(0, len(missing), max(1, batch_size)):
        chunk = missing[start:start + batch_size]
        for i, emb in zip(chunk, predictor.embed([frames[i] for i in chunk])):
            out[i] = emb
            model.cache.put(keys[i], emb)
        done += len(chunk)
        if on_frame is not None:
            on_frame(done)
    if on_frame is not None and not missing:
        on_frame(done)
    return out  # type: ignore[return-value]


def segment_video(
    model: SAMVideoModel,
    images: torch.Tensor,
    prompts: str | dict,
    *,
    predictor=None,
    batch_size: int = 1,
    on_progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """IMAGE ``[F, H, W, 3]`` (0..1) + prompts -> MASK ``[F, H, W]`` float32 (0/1).

    ``predictor``: a ``SamPredictor`` for ``model.sam`` (one is made when None).
    ``on_progress(done, total)`` is called after each embedded batch and each predicted frame;
    ``total`` is ``2 * F``.
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[-1] not in (3, 4):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise OCDInputError("images", f"expected IMAGE frames [frames, height, width, 3], got {shape}")
    f, h, w, _ = images.shape
    if f == 0 or h == 0 or w == 0:
        raise OCDInputError("images", f"the video is empty (shape {tuple(images.shape)})")
    p = parse_prompts(prompts, f, h, w)
    frames = (images[..., :3].clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    wrapped = PromptPredictor(predictor if predictor is not None else model.make_predictor())
    total = 2 * f
    report = (lambda done: on_progress(done, total)) if on_progress is not None else None
    embeddings = embed_frames(model, wrapped, frames, batch_size, report)

    scale = min(1.0, FLOW_WORKING_SIZE / max(h, w))
    gray = saliency.working_gray_frames(images, FLOW_WORKING_SIZE)
    masks = np.zeros((f, h, w), dtype=bool)
    # SAM's advice: one click is ambiguous (part/whole), let it choose among three masks.
    single_click = p.box is None and len(p.points) == 1
    masks[p.frame], _ = wrapped.predict(embeddings[p.frame], p.points, p.labels, p.box, multimask=single_click)
    done = f + 1
    if report is not None:
        report(done)
    for step in (1, -1):
        points, labels, prev = p.points, p.labels, p.frame
        for t in range(p.frame + step, f if step > 0 else -1, step):
            flow = saliency.dense_flow(gray[prev], gray[t])
            points, labels = _carry(points, labels, flow, scale, h, w)
            box = _next_box(masks[prev], flow, scale, h, w)
            if box is not None or len(points):
                masks[t], _ = wrapped.predict(embeddings[t], points, labels, box, multimask=False)
            prev = t
            done += 1
            if report is not None:
                report(done)
    return torch.from_numpy(masks).to(torch.float32)


def overlay(images: torch.Tensor, masks: torch.Tensor, color=(1.0, 0.2, 0.2), alpha: float = 0.5) -> torch.Tensor:
    """IMAGE ``[F, H, W, 3]`` with the MASK ``[F, H, W]`` tinted in ``color`` (for previews)."""
    tint = torch.tensor(color, dtype=images.dtype).view(1, 1, 1, 3)
    a = (masks[..., None] * alpha).to(images.dtype)
    return (images[..., :3] * (1 - a) + tint * a).clamp(0, 1)
