"""Model families: what the pack needs to know about a kind of diffusion model.

The attention patches are keyed by transformer block, the dual-rate crop is aligned to the
model's total downsampling, masks and latents convert at the VAE's scale. All of that
depends on the architecture, so each supported architecture is one ``ModelFamily``
implementation, found by ``family_of``; nothing else in the pack walks a model's modules or
reads its configuration. A new family (a video DiT, say) is one more class in ``FAMILIES``.

Supported now: ``SDUNet``, ComfyUI's ``UNetModel`` (SD1.x, SD2.x, SDXL and fine-tunes of
them), whose self-attention runs in ``BasicTransformerBlock``s inside ``SpatialTransformer``s
of its ``input_blocks``, ``middle_block`` and ``output_blocks``.
"""
from __future__ import annotations

import hashlib
from typing import Iterator

import torch

from ..errors import OCDInputError


class ModelFamily:
    """One architecture. ``name`` is shown to users; the methods take the ModelPatcher."""

    name = "?"
    # image pixels per latent pixel of the family's VAE (SD's KL-f8 and TAESD: 8)
    latent_scale = 8

    def matches(self, diffusion_model: torch.nn.Module) -> bool:
        raise NotImplementedError

    def transformer_blocks(self, diffusion_model: torch.nn.Module) -> Iterator[tuple[tuple, torch.nn.Module]]:
        """((block name, number, transformer index), block) for every transformer block: the
        keys ComfyUI's attention patches use."""
        raise NotImplementedError

    def downsampling(self, model_patcher) -> int:
        """The total downsampling of the latent inside the network (a crop whose sides are
        multiples of it is halved exactly at every level)."""
        raise NotImplementedError


class SDUNet(ModelFamily):
    name = "Stable Diffusion UNet (SD1.x, SD2.x, SDXL)"
    latent_scale = 8

    def matches(self, diffusion_model) -> bool:
        from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

        return isinstance(diffusion_model, UNetModel)

    def transformer_blocks(self, diffusion_model):
        from comfy.ldm.modules.attention import SpatialTransformer

        parts = [("input", list(diffusion_model.input_blocks)), ("middle", [diffusion_model.middle_block]),
                 ("output", list(diffusion_model.output_blocks))]
        for name, blocks in parts:
            for number, block in enumerate(blocks):
                if block is None:
                    continue
                for module in block.modules():
                    if isinstance(module, SpatialTransformer):
                        for index, transformer_block in enumerate(module.transformer_blocks):
                            yield (name, number, index), transformer_block

    def downsampling(self, model_patcher) -> int:
        mult = model_patcher.model.model_config.unet_config.get("channel_mult")
        return 2 ** (len(mult) - 1) if mult else 8


FAMILIES: tuple[ModelFamily, ...] = (SDUNet(),)


def diffusion_model(model_patcher) -> torch.nn.Module:
    """The network that denoises (object patches of other packs applied)."""
    return model_patcher.get_model_object("diffusion_model")


def family_of(model_patcher, input_name: str = "model") -> ModelFamily:
    """The family of a ModelPatcher's diffusion model; refuses models no family supports."""
    network = getattr(getattr(model_patcher, "model", None), "diffusion_model", None)
    if network is None:
        raise OCDInputError(input_name, f"expected a MODEL, got {type(model_patcher).__name__}")
    network = diffusion_model(model_patcher)
    for family in FAMILIES:
        if family.matches(network):
            return family
    supported = "; ".join(f.name for f in FAMILIES)
    raise OCDInputError(input_name, f"is a {type(network).__name__}, which this pack does not support yet "
                        f"(supported: {supported})")


def transformer_blocks(model_patcher) -> list[tuple[tuple, torch.nn.Module]]:
    return list(family_of(model_patcher).transformer_blocks(diffusion_model(model_patcher)))


def self_attention_keys(model_patcher) -> list[tuple[str, int, int]]:
    """(block name, number, transformer index) of every block with self-attention: the keys of
    ``set_model_attn1_replace``."""
    return [key for key, block in transformer_blocks(model_patcher)
            if not getattr(block, "disable_self_attn", False)]


def cross_attention_modules(model_patcher) -> dict[tuple, torch.nn.Module]:
    """(block name, number, transformer index) -> the block's cross-attention module, with
    ``to_q`` / ``to_k`` projections."""
    return {key: block.attn2 for key, block in transformer_blocks(model_patcher)
            if getattr(block, "attn2", None) is not None}


def downsampling(model_patcher) -> int:
    return family_of(model_patcher).downsampling(model_patcher)


def latent_scale(model_patcher) -> int:
    """Image pixels per latent pixel for this model's latents."""
    return family_of(model_patcher).latent_scale


def model_fingerprint(model_patcher) -> str:
    """A cheap identity of a ModelPatcher's base weights (patches and clones share it)."""
    network = model_patcher.model.diffusion_model
    params = list(network.parameters())
    digest = hashlib.sha1(type(model_patcher.model).__name__.encode())
    digest.update(str(sum(p.numel() for p in params)).encode())
    for p in (params[0], params[len(params) // 2], params[-1]):
        digest.update(repr(p.detach().float().flatten()[:64].cpu().tolist()).encode())
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# Latent spaces and noise levels
# ---------------------------------------------------------------------------------------------

def to_model_space(model_patcher, latent: torch.Tensor) -> torch.Tensor:
    """A latent as the user sees it (VAE Encode's output) -> as the network sees it."""
    return model_patcher.get_model_object("latent_format").process_in(latent)


def to_user_space(model_patcher, latent: torch.Tensor) -> torch.Tensor:
    return model_patcher.get_model_object("latent_format").process_out(latent)


def noise_scaling(model_patcher, sigma: float, noise: torch.Tensor, latent_image: torch.Tensor) -> torch.Tensor:
    """What a sampler starts from at ``sigma`` for this noise and (model-space) latent."""
    return model_patcher.get_model_object("model_sampling").noise_scaling(
        torch.tensor(sigma), noise, latent_image, False)


def schedule_sigmas(model_patcher, scheduler: str, steps: int) -> torch.Tensor:
    """The ``steps``-step schedule of ``scheduler`` for this model's noise levels (CPU)."""
    import comfy.samplers

    return comfy.samplers.calculate_sigmas(model_patcher.get_model_object("model_sampling"), scheduler, steps).cpu()


def ksampler_sigmas(model_patcher, steps: int, sampler_name: str, scheduler: str, denoise: float) -> torch.Tensor:
    """The schedule core's KSampler node runs (denoise, samplers that drop the penultimate
    sigma), on the model's load device."""
    import comfy.samplers

    return comfy.samplers.KSampler(model_patcher, steps=steps, device=model_patcher.load_device,
                                   sampler=sampler_name, scheduler=scheduler, denoise=denoise,
                                   model_options=model_patcher.model_options).sigmas
