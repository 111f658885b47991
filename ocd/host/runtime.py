"""The running host: progress bars, interruption, devices and memory, the lists core's
samplers and schedulers offer, messages to the browser, prompt tokens.

Nodes and library code ask here instead of importing ComfyUI modules themselves.
"""
from __future__ import annotations

from typing import Callable

import torch


class Progress:
    """A progress bar of ``total`` units on the running node; every update is also an
    interruption point (the user pressed Cancel)."""

    def __init__(self, total: int):
        import comfy.utils

        self.total = max(1, int(total))
        self._bar = comfy.utils.ProgressBar(self.total)

    def set(self, done: int, total: int | None = None, preview=None) -> None:
        check_interrupted()
        if total is not None and total != self.total:
            self.total = max(1, int(total))
            self._bar.total = self.total
        self._bar.update_absolute(done, self.total, preview)


def check_interrupted() -> None:
    """Raise ComfyUI's interruption exception if the user cancelled the run."""
    import comfy.model_management

    comfy.model_management.throw_exception_if_processing_interrupted()


def sampler_progress(model_patcher, steps: int) -> Callable:
    """Core's sampler callback: progress bar with latent previews, for ``steps`` steps."""
    import latent_preview

    return latent_preview.prepare_callback(model_patcher, steps)


def compute_device() -> torch.device:
    """Where ComfyUI runs models (the GPU when there is one)."""
    import comfy.model_management

    return comfy.model_management.get_torch_device()


def free_memory(device: torch.device | None = None) -> int:
    """Bytes free on ``device`` (default: the CPU's RAM) as ComfyUI counts them."""
    import comfy.model_management

    return int(comfy.model_management.get_free_memory(device or torch.device("cpu")))


def intermediate_device() -> torch.device:
    """Where ComfyUI keeps outputs between nodes."""
    import comfy.model_management

    return comfy.model_management.intermediate_device()


def sampler_names() -> list[str]:
    import comfy.samplers

    return list(comfy.samplers.KSampler.SAMPLERS)


def scheduler_names() -> list[str]:
    import comfy.samplers

    return list(comfy.samplers.SCHEDULER_NAMES)


def send_to_ui(event: str, payload: dict) -> None:
    """Send a message to the browser (nothing when no server runs, e.g. in tests)."""
    try:
        from server import PromptServer
    except ImportError:
        return
    if getattr(PromptServer, "instance", None) is not None:
        PromptServer.instance.send_sync(event, payload)


def prompt_token_ids(clip, text: str) -> list[int]:
    """A prompt's token ids as the text encoder sees them (its 77-token chunks concatenated).
    ComfyUI's tokenizers return ``{encoder name: [[(id, weight, ...), ...], ...]}``; SD1.x
    has one encoder ("l"), SDXL two whose tokens line up, so the first one is used."""
    tokens = clip.tokenize(text)
    chunks = next(iter(tokens.values()))
    return [int(t[0]) for chunk in chunks for t in chunk]
