"""The pipelines ``python -m ocd edit`` and ``bench`` run, as data (pure; no ComfyUI import).

A pipeline is a set of templates (example_workflows/, one per preset), the model files they
load (which loader node and input takes each, the folder a ComfyUI install keeps it in, the
command-line flag that gives it) and the rule its frame counts follow. The headless
commands read everything from here: a new pipeline is one more entry, not a new branch.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelFile:
    """A model file a pipeline's templates load."""

    key: str  # the name the commands use ("checkpoint")
    flag: str  # the command-line flag that gives it ("--checkpoint")
    loader: str  # the loader node in the templates ("CheckpointLoaderSimple")
    input: str  # the loader's input that names the file ("ckpt_name")
    folder: str  # where a ComfyUI install keeps it ("models/checkpoints")
    what: str  # what it is, for messages ("an SD1.5 checkpoint")


@dataclass(frozen=True)
class Pipeline:
    name: str
    presets: dict[str, str]  # preset -> template (example_workflows/<name>.json)
    models: tuple[ModelFile, ...]
    default_preset: str
    # video frames a latent can hold: every count ("any"), or 4k+1 (a causal video VAE: the
    # first frame alone, then `temporal_scale` per latent frame)
    temporal_scale: int = 1
    default_frames: int = 8
    default_size: int = 512  # frame width for edit
    bench_size: int = 256  # frame width for bench (CPU-sized by default)
    # a long clip is edited in windows of this many frames (after the anchors), overlapping by
    # ``default_overlap`` (ocd/windows.py); one window's frames are what a run holds in memory
    default_window: int = 16
    default_overlap: int = 2
    # the random models ``--random-weights`` builds: "sd15" (mini or full SD1.5) or "wan"
    random_models: str = "sd15"

    @property
    def baseline(self) -> str:
        return next(iter(self.presets))

    def frames_ok(self, frames: int) -> bool:
        return self.temporal_scale == 1 or (frames - 1) % self.temporal_scale == 0

    def fitted_frames(self, frames: int, fit: str) -> int:
        """The frame count a latent holds nearest ``frames``: fewer ("cut") or more ("pad")."""
        if self.frames_ok(frames):
            return frames
        scale = self.temporal_scale
        below = (frames - 1) // scale * scale + 1
        return below if fit == "cut" else below + scale


CHECKPOINT = ModelFile("checkpoint", "--checkpoint", "CheckpointLoaderSimple", "ckpt_name", "models/checkpoints",
                       "an SD1.5 checkpoint")
CONTROLNET = ModelFile("controlnet", "--controlnet", "ControlNetLoader", "control_net_name", "models/controlnet",
                       "an SD1.5 canny ControlNet, e.g. control_v11p_sd15_canny.pth")
WAN_MODEL = ModelFile("diffusion_model", "--diffusion-model", "UNETLoader", "unet_name", "models/diffusion_models",
                      "a Wan 2.1 T2V diffusion model, e.g. wan2.1_t2v_1.3B_fp16.safetensors")
WAN_VAE = ModelFile("vae", "--vae", "VAELoader", "vae_name", "models/vae", "the Wan 2.1 VAE, wan_2.1_vae.safetensors")
WAN_TEXT_ENCODER = ModelFile("text_encoder", "--text-encoder", "CLIPLoader", "clip_name", "models/text_encoders",
                             "umt5-xxl, e.g. umt5_xxl_fp8_e4m3fn_scaled.safetensors")

PIPELINES = {
    "inversion": Pipeline("inversion", {"vanilla": "ocd_inversion_vanilla_fatezero_sd15",
                                        "optimized": "ocd_inversion_optimized_fatezero_sd15",
                                        "ocd": "ocd_inversion_ocd_sd15"}, (CHECKPOINT,), "ocd"),
    "control": Pipeline("control", {"vanilla": "ocd_control_vanilla_controlvideo_sd15",
                                    "ocd": "ocd_control_ocd_sd15"}, (CHECKPOINT, CONTROLNET), "ocd"),
    "wan": Pipeline("wan", {"vanilla": "ocd_wan_v2v_vanilla_wan21", "easycache": "ocd_wan_v2v_easycache_wan21",
                            "ocd": "ocd_wan_v2v_ocd_wan21", "ocd+easycache": "ocd_wan_v2v_ocd_easycache_wan21"},
                    (WAN_MODEL, WAN_VAE, WAN_TEXT_ENCODER), "ocd", temporal_scale=4, default_frames=33,
                    default_size=832, bench_size=416, random_models="wan", default_window=32, default_overlap=4),
    "wan_inversion": Pipeline("wan_inversion", {"vanilla": "ocd_wan_inversion_vanilla_wan21",
                                                "ocd": "ocd_wan_inversion_ocd_wan21"},
                              (WAN_MODEL, WAN_VAE, WAN_TEXT_ENCODER), "ocd", temporal_scale=4, default_frames=33,
                              default_size=832, bench_size=416, random_models="wan", default_window=32,
                              default_overlap=4),
}
PRESETS = sorted({preset for p in PIPELINES.values() for preset in p.presets})
