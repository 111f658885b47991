"""A randomly initialised Segment Anything vit_b, built once per test process, and the
embeddings of a small real clip, computed once (the image encoder is the expensive part:
~15 s per frame on 2 CPU cores, whatever the frame size, since SAM pads to 1024x1024)."""
from __future__ import annotations

import functools
from pathlib import Path

import torch

CLIP_FRAMES = 3
CLIP_SIZE = (48, 112)  # (height, width) of the test clip's frames: small, odd aspect ratio


def random_sam(seed: int = 0):
    """``sam_model_registry["vit_b"](checkpoint=None)`` with a seeded init (eval mode), built
    once per seed and process."""
    return _random_sam(int(seed))


@functools.lru_cache(maxsize=None)
def _random_sam(seed: int):
    from segment_anything import sam_model_registry

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        sam = sam_model_registry["vit_b"](checkpoint=None)
        # the encoder's position embeddings start at zero: give them a seeded value too
        for name, p in sam.named_parameters():
            if "pos_embed" in name or "rel_pos" in name:
                with torch.no_grad():
                    p.normal_(0, 0.02)
    return sam.eval()


def write_sam_checkpoint(path: Path, seed: int = 0) -> Path:
    """The random vit_b's state dict, fp16, as a ``.pth`` (torch.save) under a temp name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in random_sam(seed).state_dict().items()}
    tmp = path.with_suffix(".partial")
    torch.save(state, tmp)
    tmp.replace(path)
    return path


@functools.lru_cache(maxsize=None)
def bikes_clip(path: str) -> torch.Tensor:
    """``CLIP_FRAMES`` consecutive frames of bikes.mp4 at ``CLIP_SIZE``, IMAGE ``[F, H, W, 3]``."""
    from ocd.video import codec

    info = codec.probe_video(path)
    selection = codec.select_frames(info, CLIP_FRAMES, 40, 2, 0.0)
    return codec.decode_frames(path, selection, (CLIP_SIZE[1], CLIP_SIZE[0]), "crop")


class CallCounter:
    """Wraps (does not replace) methods of a real object or forward passes of a real module,
    recording the arguments of every call."""

    def __init__(self):
        self.calls: dict[str, list] = {}
        self._undo = []

    def wrap_method(self, obj, name: str) -> None:
        original = getattr(obj, name)
        calls = self.calls.setdefault(name, [])

        def wrapper(*args, **kwargs):
            calls.append((args, kwargs))
            return original(*args, **kwargs)

        setattr(obj, name, wrapper)
        self._undo.append(lambda: delattr(obj, name) if name in vars(obj) else None)

    def hook_module(self, module: torch.nn.Module, name: str) -> None:
        calls = self.calls.setdefault(name, [])
        handle = module.register_forward_pre_hook(
            lambda mod, args, kwargs: calls.append((args, kwargs)), with_kwargs=True
        )
        self._undo.append(handle.remove)

    def count(self, name: str) -> int:
        return len(self.calls.get(name, []))

    def remove(self) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()


@functools.lru_cache(maxsize=None)
def shared_video_model():
    """One ``SAMVideoModel`` around the random vit_b for the whole test process, so its
    embedding cache (filled by the first test that segments the clip) serves later tests."""
    from ocd.masks.sam_video import SAMVideoModel

    return SAMVideoModel(random_sam(), "vit_b", torch.device("cpu"))


def key_frame_prompts(frame: int = 1, scale: int = 2) -> dict:
    """One object point at frame pixel (40, 20), placed on an image ``scale`` times the frames' size."""
    h, w = CLIP_SIZE
    return {"frame": frame, "width": w * scale, "height": h * scale,
            "points": [[40 * scale, 20 * scale]], "labels": [1], "box": None}


def counted_run(model, clip, prompts, **kwargs):
    """``segment_video`` with a real SamPredictor whose calls are recorded: ``predict`` (with
    the features it held, to tell which frame it ran on), the image encoder's and the prompt
    encoder's forward passes. Returns (masks, counter, features held at each predict)."""
    from ocd.masks import sam_video

    predictor = model.make_predictor()
    counter = CallCounter()
    held = []
    counter.wrap_method(predictor, "predict")
    counted = predictor.predict
    predictor.predict = lambda *a, **k: (held.append(predictor.features.clone()), counted(*a, **k))[1]
    counter.hook_module(model.sam.image_encoder, "image_encoder")
    counter.hook_module(model.sam.prompt_encoder, "prompt_encoder")
    try:
        with torch.inference_mode():
            masks = sam_video.segment_video(model, clip, prompts, predictor=predictor, **kwargs)
    finally:
        counter.remove()
    return masks, counter, held


@functools.lru_cache(maxsize=None)
def cold_segmentation(path: str) -> dict:
    """The clip segmented once per process from a cold cache (the suite's only in-process
    encoder passes, in batches of 2), recorded. Whichever test comes first (unit or
    integration) pays for it; later ones find the embeddings in the shared model's cache."""
    clip = bikes_clip(path)
    model = shared_video_model()
    cached_before = len(model.cache)
    progress = []
    masks, counter, held = counted_run(model, clip, key_frame_prompts(), batch_size=2,
                                       on_progress=lambda done, total: progress.append((done, total)))
    return dict(clip=clip, model=model, masks=masks, counter=counter, held=held, progress=progress,
                cached_before=cached_before)
