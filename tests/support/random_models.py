"""Random-weight diffusion models built through ComfyUI's own classes (no downloads).

Three sizes (../shared/guide/host.md):
- ``tiny_unet_config``: ~1 M parameters, for unit/integration tests (a few ms per call).
- ``MINI_SD15_UNET``: the five settings ComfyUI uses to detect SD1.5, with two levels and
  one res block each; ``write_mini_sd15_checkpoint`` writes a checkpoint that
  CheckpointLoaderSimple loads as SD1.5 (UNet + CLIP-L + TAESD-format VAE).
- ``FULL_SD15_UNET``: the real SD1.5 UNet architecture (859.5 M parameters), for benchmarks.

ComfyUI creates layers with uninitialised memory (``torch.empty``), so every parameter is
initialised here, from a seeded generator: weights ~ N(0, 1/fan_in), norms at 1, biases 0.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

# SD1.5's detected UNet config, the parts that differ per size are filled in below.
_SD15_COMMON = dict(
    image_size=32,
    in_channels=4,
    out_channels=4,
    use_spatial_transformer=True,
    legacy=False,
    adm_in_channels=None,
    use_linear_in_transformer=False,
    use_temporal_resblock=False,
    use_temporal_attention=False,
    use_checkpoint=False,
)

FULL_SD15_UNET = dict(
    _SD15_COMMON,
    model_channels=320,
    context_dim=768,
    num_res_blocks=[2, 2, 2, 2],
    channel_mult=[1, 2, 4, 4],
    transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0],
    transformer_depth_middle=1,
    transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
)

MINI_SD15_UNET = dict(
    _SD15_COMMON,
    model_channels=320,
    context_dim=768,
    num_res_blocks=[1, 1],
    channel_mult=[1, 2],
    transformer_depth=[1, 1],
    transformer_depth_middle=1,
    transformer_depth_output=[1, 1, 1, 1],
)


def tiny_unet_config(context_dim: int = 64) -> dict:
    """A ~1 M parameter UNet with SD1.5's layout: 2 levels, attention at both, a middle block."""
    return dict(
        _SD15_COMMON,
        model_channels=32,
        context_dim=context_dim,
        num_res_blocks=[1, 1],
        channel_mult=[1, 2],
        transformer_depth=[1, 1],
        transformer_depth_middle=1,
        transformer_depth_output=[1, 1, 1, 1],
        num_heads=2,
        num_head_channels=-1,
    )


@torch.no_grad()
def init_random_(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Seeded init of every parameter and floating buffer of ``module``, in place."""
    gen = torch.Generator().manual_seed(seed)
    for name, p in module.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if p.ndim >= 2:
            fan_in = math.prod(p.shape[1:])
            std = 0.02 if "embedding" in name else 1.0 / math.sqrt(fan_in)
            p.copy_(torch.randn(p.shape, generator=gen) * std)
        elif leaf == "weight":  # norm scales
            p.fill_(1.0)
        else:  # biases, scalars such as logit_scale
            p.zero_()
    return module


def _sd15_model_config(unet_config: dict):
    import comfy.supported_models

    config = comfy.supported_models.SD15(unet_config)
    # SD15 forces 8 heads; the tiny model asks for its own head count.
    for key in ("num_heads", "num_head_channels"):
        if key in unet_config:
            config.unet_config[key] = unet_config[key]
    return config


def build_model_patcher(unet_config: dict, seed: int = 0, dtype=torch.float32):
    """A ComfyUI ``ModelPatcher`` around an SD1.5-type ``BaseModel`` with random weights."""
    import comfy.model_management as mm
    import comfy.model_patcher

    model_config = _sd15_model_config(unet_config)
    model_config.set_inference_dtype(dtype, None)
    model = model_config.get_model({}, device=torch.device("cpu"))
    init_random_(model.diffusion_model, seed)
    model.diffusion_model.to(dtype)
    return comfy.model_patcher.ModelPatcher(
        model, load_device=mm.get_torch_device(), offload_device=mm.unet_offload_device()
    )


def random_text_conditioning(batch: int, context_dim: int, seed: int, tokens: int = 77):
    """A ComfyUI CONDITIONING list with a random text embedding (no CLIP needed)."""
    gen = torch.Generator().manual_seed(seed)
    return [[torch.randn(batch, tokens, context_dim, generator=gen), {}]]


def mini_sd15_state_dict(seed: int = 0, dtype=torch.float16, unet_config: dict | None = None) -> dict[str, torch.Tensor]:
    """State dict of a checkpoint CheckpointLoaderSimple detects as SD1.5 (the mini UNet, or
    ``unet_config``'s, e.g. FULL_SD15_UNET)."""
    import comfy.ops
    import comfy.sd1_clip
    import comfy.taesd.taesd
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    unet_kwargs = dict(unet_config or MINI_SD15_UNET, num_heads=8, num_head_channels=-1)
    unet = UNetModel(**unet_kwargs, operations=comfy.ops.disable_weight_init, device="cpu")
    clip = comfy.sd1_clip.SDClipModel(device="cpu", dtype=torch.float32)
    vae = comfy.taesd.taesd.TAESD(latent_channels=4)
    state = {}
    for prefix, module, offset in (
        ("model.diffusion_model.", unet, 0),
        ("cond_stage_model.", clip, 1),
        ("first_stage_model.", vae, 2),
    ):
        init_random_(module, seed * 10 + offset)
        for key, value in module.state_dict().items():
            if value.is_floating_point():
                value = value.to(dtype)
            state[prefix + key] = value.contiguous()
    # TAESD's latent scale/shift are scalar parameters: identity, not the zero init above.
    state["first_stage_model.vae_scale"] = torch.tensor(1.0, dtype=dtype)
    state["first_stage_model.vae_shift"] = torch.tensor(0.0, dtype=dtype)
    return state


def write_mini_sd15_checkpoint(path: Path, seed: int = 0, unet_config: dict | None = None) -> Path:
    """Write the mini SD1.5 checkpoint as safetensors (once per test run; ~450 MiB), or one
    with ``unet_config``'s UNet (FULL_SD15_UNET: the real architecture, ~2 GiB)."""
    return save_safetensors(mini_sd15_state_dict(seed, unet_config=unet_config), path)


def save_safetensors(state: dict, path: Path) -> Path:
    """Write ``state`` as safetensors under a temporary name, then rename: a file that exists
    is complete."""
    import safetensors.torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    safetensors.torch.save_file(state, str(tmp))
    tmp.replace(path)
    return path


@torch.no_grad()
def smooth_time_dependence_(model_patcher, max_frequency: float = 0.005):
    """Make a random UNet's output vary slowly with the noise level, in place.

    A random network reads all of the sinusoidal timestep embedding, including components
    that oscillate once every few timesteps, so its probability-flow ODE is rough in sigma
    and solvers reach their asymptotic order only at thousands of steps. A trained model is
    smooth in time; zeroing the weights that read frequencies above ``max_frequency``
    (radians per timestep) gives a random model that is too, so solver orders can be
    measured at affordable step counts.
    """
    unet = model_patcher.model.diffusion_model
    first = unet.time_embed[0]
    half = first.weight.shape[1] // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    fast = torch.cat([freqs, freqs]) > max_frequency  # [cos | sin] halves
    first.weight[:, fast] = 0.0
    return model_patcher


def controlnet_network(unet_config: dict, seed: int = 0, num_heads: int | None = None):
    """A random-weight ``comfy.cldm.cldm.ControlNet`` with the layout of ``unet_config``
    (a canny-style ControlNet: a 3-channel hint), built through ComfyUI's class."""
    import comfy.cldm.cldm
    import comfy.ops

    config = dict(unet_config)
    for key in ("in_channels", "out_channels", "transformer_depth_output", "use_temporal_resblock",
                "use_temporal_attention", "use_checkpoint"):
        config.pop(key, None)
    if num_heads is not None:
        config.update(num_heads=num_heads, num_head_channels=-1)
    net = comfy.cldm.cldm.ControlNet(in_channels=4, hint_channels=3, **config,
                                     operations=comfy.ops.disable_weight_init, device="cpu")
    return init_random_(net, seed)


def controlnet(unet_config: dict, seed: int = 0):
    """The same network as a ComfyUI CONTROL_NET object, ready for ControlNetApplyAdvanced."""
    import comfy.controlnet
    import comfy.model_management as mm

    return comfy.controlnet.ControlNet(controlnet_network(unet_config, seed), load_device=mm.get_torch_device(),
                                       manual_cast_dtype=None)


def write_mini_sd15_controlnet(path: Path, seed: int = 0, unet_config: dict | None = None) -> Path:
    """A ControlNet file for the mini SD1.5 checkpoint's UNet (or ``unet_config``'s), in the
    original ControlNet format (``control_model.*`` keys) that core's ControlNetLoader detects."""
    net = controlnet_network(unet_config or MINI_SD15_UNET, seed, num_heads=8)
    state = {f"control_model.{k}": v.to(torch.float16).contiguous() for k, v in net.state_dict().items()
             if v.is_floating_point()}
    return save_safetensors(state, path)
