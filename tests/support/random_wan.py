"""Random-weight Wan video models built through ComfyUI's own classes (no downloads).

ComfyUI detects a Wan diffusion model from its weights' shapes (comfy/model_detection.py: a
``head.modulation`` key; ``dim``, ``ffn_dim``, ``num_layers``, ``in_dim``, ``out_dim`` from the
shapes; ``num_heads = dim // 128``; ``text_dim`` is not read and stays 4096). So a Wan of the real
head size 128 and the real FFN ratio at a reduced width and depth is loaded by the ordinary
``UNETLoader`` as Wan 2.1 / VACE / Wan 2.2, and a Wan 2.1 VAE of a small ``dim`` by ``VAELoader``
(comfy/sd.py reads the dim from ``decoder.head.0.gamma``).

- ``WAN21_SMALL``: Wan 2.1 T2V, dim 384 (3 heads of 128), FFN 2240 (1.3B's ratio 8960/1536),
  2 blocks: ~8.7 M parameters, for tests.
- ``WAN21_VACE_SMALL``: the same with one VACE block (``vace_in_dim`` 96, as real VACE files).
- ``WAN22_5B_SMALL``: Wan 2.2 TI2V 5B-style (48 latent channels in and out, 5B's FFN ratio).
- ``WAN21_1_3B_WIDTH(num_layers)``: Wan 2.1 1.3B's real width (1536, 12 heads, FFN 8960) at a
  chosen depth, for benchmarks.

umt5-xxl is far too large to build with random weights here, so the text side is a
deterministic stand-in: ``text_conditioning(text)`` (and the test-only node
``OCDTest_TextConditioning`` of tests/support/test_nodes/ocd_test_nodes, which computes the
same tensor) gives a CONDITIONING ``[1, tokens, 4096]`` seeded by a hash of the text.
"""
from __future__ import annotations

import hashlib
import math
from pathlib import Path

import torch

from .random_models import init_random_, save_safetensors

WAN_HEAD_DIM = 128  # ComfyUI's detection: num_heads = dim // 128
TEXT_DIM = 4096  # umt5-xxl's width; ComfyUI's Wan keeps it whatever the file says
TEXT_STD = 0.15  # umt5-xxl outputs are small: the stand-in's spread

# ComfyUI's detected config of a Wan 2.1 file (model_detection.detect_unet_config), plus
# text_dim (not detected: WanModel's default, 4096).
_WAN21_COMMON = dict(
    image_model="wan2.1",
    model_type="t2v",
    patch_size=(1, 2, 2),
    in_dim=16,
    out_dim=16,
    freq_dim=256,
    text_dim=TEXT_DIM,
    window_size=(-1, -1),
    qk_norm=True,
    cross_attn_norm=True,
    eps=1e-6,
)


def wan21_ffn_dim(dim: int) -> int:
    """Wan 2.1 1.3B's FFN ratio (8960 for 1536 = 35/6), for another width."""
    assert dim * 35 % 6 == 0, dim
    return dim * 35 // 6


def wan_config(dim: int, num_layers: int, ffn_dim: int | None = None, **overrides) -> dict:
    """A Wan 2.1 T2V config of width ``dim`` (a multiple of the head size 128)."""
    assert dim % WAN_HEAD_DIM == 0, f"dim {dim} is not a multiple of Wan's head size {WAN_HEAD_DIM}"
    return dict(_WAN21_COMMON, dim=dim, num_heads=dim // WAN_HEAD_DIM, ffn_dim=ffn_dim or wan21_ffn_dim(dim),
                num_layers=num_layers, **overrides)


WAN21_SMALL = wan_config(384, 2)  # 3 heads of 128, FFN 2240
WAN21_VACE_SMALL = dict(WAN21_SMALL, model_type="vace", vace_layers=1, vace_in_dim=96)
# Wan 2.2 TI2V 5B: 48 latent channels (its 16x VAE), dim 3072 / FFN 14336: that ratio here
WAN22_5B_SMALL = dict(WAN21_SMALL, in_dim=48, out_dim=48, ffn_dim=384 * 14336 // 3072)


def WAN21_1_3B_WIDTH(num_layers: int) -> dict:  # noqa: N802 (a config "constant" with a depth)
    """Wan 2.1 1.3B's width (dim 1536, 12 heads, FFN 8960) at ``num_layers`` blocks (30 real)."""
    return wan_config(1536, num_layers, ffn_dim=8960)


# --- init ------------------------------------------------------------------------------------
# On top of random_models.init_random_ (weights N(0, 1/fan_in), norm scales 1, biases 0):
MODULATION_STD = 0.02  # the per-block (and head) modulation tables: small static offsets
TIME_PROJECTION_GAIN = 3.0  # timestep -> 6 modulation vectors of std ~0.35: each block then
#                             changes its tokens by ~30 % (a near-identity network otherwise)
TEXT_EMBEDDING_GAIN = 4.0  # the text (std 0.15) embedded to std ~0.35: the ungated
#                            cross-attention moves the output by ~20 % between two prompts
MAX_TIME_FREQUENCY = 0.005  # radians per timestep: the time embedding reads only the slow
#                             sinusoids, so the output varies smoothly along sigma as a trained
#                             model's does (step caches and solvers see a realistic signal)


def _network_class(config: dict):
    from comfy.ldm.wan.model import VaceWanModel, WanModel

    return VaceWanModel if config.get("model_type") == "vace" else WanModel


def build_wan_network(config: dict, seed: int = 0, device="cpu", max_time_frequency: float | None = MAX_TIME_FREQUENCY):
    """``comfy.ldm.wan.model.WanModel`` (or ``VaceWanModel``) of ``config``, float32, every
    parameter initialised from ``seed``."""
    import comfy.ops

    network = _network_class(config)(**config, operations=comfy.ops.disable_weight_init, device=device)
    return init_wan_(network, seed, max_time_frequency)


@torch.no_grad()
def init_wan_(network: torch.nn.Module, seed: int, max_time_frequency: float | None = MAX_TIME_FREQUENCY):
    """Seeded init of a Wan network, in place: ``init_random_``, then Wan's own scales.

    init_random_ gives the ``*embedding*`` weights std 0.02 (right for token tables, not for
    these projections): they get 1/sqrt(fan_in) like every other layer, so the latent patches
    reach the blocks at unit scale. The modulation tables get N(0, 0.02); the time projection
    and the text embedding a gain (see the constants above).
    """
    init_random_(network, seed)
    for name, p in network.named_parameters():
        if p.ndim < 2:
            continue
        fan_in = math.prod(p.shape[1:])
        if "modulation" in name:  # [1, 6, dim] / [1, 2, dim]: init_random_ gave std 1/sqrt(6 dim)
            p.mul_(MODULATION_STD * math.sqrt(fan_in))
        elif "embedding" in name:  # init_random_ gave std 0.02
            p.mul_(1.0 / (0.02 * math.sqrt(fan_in)))
    network.time_projection[1].weight.mul_(TIME_PROJECTION_GAIN)
    network.text_embedding[0].weight.mul_(TEXT_EMBEDDING_GAIN)
    if max_time_frequency is not None:
        first = network.time_embedding[0]  # reads sinusoidal_embedding_1d: [cos | sin]
        half = first.weight.shape[1] // 2
        freqs = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64) / half)
        first.weight[:, torch.cat([freqs, freqs]) > max_time_frequency] = 0.0
    return network


def parameter_count(config: dict) -> int:
    """Parameters of ``config``'s network, counted on the meta device (no memory)."""
    import comfy.ops

    network = _network_class(config)(**config, operations=comfy.ops.disable_weight_init, device="meta")
    return sum(p.numel() for p in network.parameters())


def wan_state_dict(config: dict, seed: int = 0, dtype=torch.float16,
                   max_time_frequency: float | None = MAX_TIME_FREQUENCY) -> dict[str, torch.Tensor]:
    """The state dict of a diffusion-model file (models/diffusion_models: no key prefix) that
    ComfyUI detects as ``config``'s Wan."""
    return file_state(build_wan_network(config, seed, max_time_frequency=max_time_frequency), dtype)


def file_state(module: torch.nn.Module, dtype=torch.float16) -> dict[str, torch.Tensor]:
    """``module``'s state dict as a model file holds it: floating tensors in ``dtype``, contiguous."""
    return {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in module.state_dict().items()}


def write_wan_model(path: Path, config: dict = WAN21_SMALL, seed: int = 0, dtype=torch.float16) -> Path:
    """Write ``config``'s random Wan as a safetensors diffusion-model file (fp16 like the
    repackaged Wan files), under a temporary name first."""
    return save_safetensors(wan_state_dict(config, seed, dtype), path)


def load_wan(path: Path, model_options: dict | None = None):
    """A ``ModelPatcher`` of a Wan file, loaded as ``UNETLoader`` loads it."""
    import comfy.sd

    return comfy.sd.load_diffusion_model(str(path), model_options=model_options or {})


# --- VAE -------------------------------------------------------------------------------------
WAN21_VAE_DIM = 16  # the real Wan 2.1 VAE has 96 (126.9 M parameters); 16: 3.6 M
# comfy/sd.py VAE.__init__'s Wan 2.1 branch: everything but ``dim`` is fixed
WAN21_VAE_CONFIG = dict(z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                        temperal_downsample=[False, True, True], dropout=0.0)


def wan21_vae_network(seed: int = 0, dim: int = WAN21_VAE_DIM):
    """``comfy.ldm.wan.vae.WanVAE`` as VAELoader builds it for a Wan 2.1 VAE of width ``dim``,
    seeded (its RMS norms' ``gamma`` at 1: init_random_ would draw them as weights)."""
    import comfy.ldm.wan.vae

    return _seeded_vae(comfy.ldm.wan.vae.WanVAE(dim=dim, **WAN21_VAE_CONFIG), seed)


@torch.no_grad()
def _seeded_vae(vae: torch.nn.Module, seed: int) -> torch.nn.Module:
    """A Wan VAE seeded in place: ``init_random_``, then its RMS norms' ``gamma`` at 1
    (init_random_ would draw them as weights)."""
    init_random_(vae, seed)
    for name, p in vae.named_parameters():
        if name.endswith(".gamma"):
            p.fill_(1.0)
    return vae.eval()


def wan21_vae_state_dict(seed: int = 0, dim: int = WAN21_VAE_DIM, dtype=torch.float16) -> dict[str, torch.Tensor]:
    """A VAE file's state dict (no prefix): ``decoder.middle.0.residual.0.gamma`` makes ComfyUI
    take it for Wan, no ``decoder.upsamples.0.upsamples.0.*`` for Wan 2.1 (not 2.2), and
    ``decoder.head.0.gamma`` gives ``dim``."""
    return file_state(wan21_vae_network(seed, dim), dtype)


def write_wan21_vae(path: Path, seed: int = 0, dim: int = WAN21_VAE_DIM) -> Path:
    """Write a random Wan 2.1 VAE that VAELoader loads (fp16 safetensors, atomically)."""
    return save_safetensors(wan21_vae_state_dict(seed, dim), path)


def load_wan21_vae(path: Path):
    """``comfy.sd.VAE`` of a VAE file, as VAELoader loads it."""
    import comfy.sd
    import comfy.utils

    return comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(path)))


# comfy/sd.py VAE.__init__'s Wan 2.2 branch (48 latent channels at 16x): every size is fixed
# (dim 160, decoder 256: 705 M parameters, 1.4 GB in fp16), so the random one is full size
WAN22_VAE_CONFIG = dict(dim=160, z_dim=48, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                        temperal_downsample=[False, True, True], dropout=0.0)


def wan22_vae_state_dict(seed: int = 0, dtype=torch.float16) -> dict[str, torch.Tensor]:
    """A Wan 2.2 VAE file's state dict: ``decoder.upsamples.0.upsamples.0.residual.2.weight``
    makes ComfyUI take it for Wan 2.2's. Its RMS norms' ``gamma`` at 1."""
    import comfy.ldm.wan.vae2_2

    return file_state(_seeded_vae(comfy.ldm.wan.vae2_2.WanVAE(**WAN22_VAE_CONFIG), seed), dtype)


def write_wan22_vae(path: Path, seed: int = 0) -> Path:
    """Write a random Wan 2.2 VAE that VAELoader loads (fp16 safetensors, atomically)."""
    return save_safetensors(wan22_vae_state_dict(seed), path)


# --- text ------------------------------------------------------------------------------------
def text_seed(text: str, seed: int | None = None) -> int:
    """A stable 63-bit seed from the text (sha256; Python's hash() is salted per process)."""
    key = text if seed is None else f"{int(seed)}\x00{text}"
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "little") & ((1 << 63) - 1)


def text_embedding(text: str, tokens: int = 16, seed: int | None = None) -> torch.Tensor:
    """A [1, tokens, 4096] float32 stand-in for umt5-xxl's output: N(0, 0.15^2), a function of
    the text (and ``seed``). The test node OCDTest_TextConditioning computes the same tensor
    (with ``seed`` None)."""
    gen = torch.Generator().manual_seed(text_seed(text, seed))
    return torch.randn((1, int(tokens), TEXT_DIM), generator=gen, dtype=torch.float32) * TEXT_STD


def text_conditioning(text: str, tokens: int = 16, seed: int | None = None):
    """A ComfyUI CONDITIONING ``[[tensor [1, tokens, 4096], {}]]`` derived from the text."""
    return [[text_embedding(text, tokens, seed), {}]]
