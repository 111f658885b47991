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
from dataclasses import dataclass
from typing import Iterator

import torch

from ..errors import OCDInputError


@dataclass(frozen=True)
class ReusePoints:
    """Where a UNet is cut for feature reuse (Clockwork): the highest-resolution ``levels``
    run on every step (input blocks ``0 .. inputs - 1`` and output blocks ``first_output ..``);
    everything between is skipped and the output of output block ``first_output - 1`` (the
    second-highest-resolution decoder stage, upsampled) is taken from the last full step."""

    levels: int
    inputs: int
    first_output: int

    @property
    def cached_block(self) -> int:
        return self.first_output - 1

    def skips(self, layer: tuple) -> bool:
        """Whether the block of ``layer`` ((name, number, ...) as the attention patches key it)
        does not run on a reused step."""
        name, number = layer[0], int(layer[1])
        return name == "middle" or (name == "input" and number >= self.inputs) or \
            (name == "output" and number < self.first_output)


@dataclass
class DiffusionCall:
    """One call of the diffusion model as a DIFFUSION_MODEL wrapper receives it."""

    x: torch.Tensor
    timesteps: torch.Tensor
    context: torch.Tensor | None
    y: torch.Tensor | None
    control: dict | None
    options: dict  # the call's transformer_options
    extra: dict  # other keyword arguments (video models' frame counts)


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

    # ---- feature reuse (ocd/sampling/comfy_feature_reuse.py) --------------------------------

    def reuse_points(self, network, levels: int) -> ReusePoints:
        """Where to cut the network to recompute only its ``levels`` highest-resolution levels."""
        raise NotImplementedError

    def cached_module(self, network, points: ReusePoints) -> torch.nn.Module:
        """The module whose output a full step keeps for the reused steps."""
        raise NotImplementedError

    def forward_recomputed(self, network, points: ReusePoints, cached: torch.Tensor, call: DiffusionCall):
        """The network's output on a reused step: the recomputed levels run, ``cached`` stands
        in for everything between them."""
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

    # UNetModel's blocks per level: input_blocks = [conv_in] + per level its num_res_blocks
    # blocks, then (except at the last level) a downsample; output_blocks = per level, from
    # the lowest resolution, num_res_blocks + 1 blocks (the last of each, except at level 0,
    # upsamples). So the highest L levels are the first 1 + sum(nrb[:L]) + (L - 1) input
    # blocks and the last sum(nrb[:L]) + L output blocks, as many as they consume skips.

    def reuse_points(self, network, levels: int) -> ReusePoints:
        res_blocks = list(network.num_res_blocks)
        if not 1 <= levels < len(res_blocks):
            raise OCDInputError("recomputed_levels", f"is {levels}; this UNet has {len(res_blocks)} levels: "
                                f"recompute 1 to {len(res_blocks) - 1} of them (1 = Clockwork)")
        inputs = 1 + sum(res_blocks[:levels]) + (levels - 1)
        first_output = len(network.output_blocks) - (sum(res_blocks[:levels]) + levels)
        return ReusePoints(levels, inputs, first_output)

    def cached_module(self, network, points: ReusePoints) -> torch.nn.Module:
        # a block runs through forward_timestep_embed, which calls its layers, not the block:
        # the last layer's output is the block's
        return list(network.output_blocks[points.cached_block])[-1]

    def forward_recomputed(self, network, points: ReusePoints, cached: torch.Tensor, call: DiffusionCall):
        """UNetModel._forward (ComfyUI 0.3.75) over the recomputed blocks only: the same
        embedding, patches (emb, input_block, input_block_patch_after_skip, output_block),
        ControlNet residuals of the blocks that run, and block / transformer_index keys as a
        full pass sets them, so every attention patch sees the call it would see there."""
        from comfy.ldm.modules.attention import SpatialTransformer
        from comfy.ldm.modules.diffusionmodules.openaimodel import apply_control, forward_timestep_embed
        from comfy.ldm.modules.diffusionmodules.util import timestep_embedding

        options, x = call.options, call.x
        options["original_shape"] = list(x.shape)
        options["transformer_index"] = 0
        patches = options.get("patches", {})
        frames_kw = {k: call.extra.get(k) for k in ("time_context", "num_video_frames", "image_only_indicator")}
        if frames_kw["num_video_frames"] is None:
            frames_kw["num_video_frames"] = network.default_num_video_frames

        emb = network.time_embed(timestep_embedding(call.timesteps, network.model_channels,
                                                    repeat_only=False).to(x.dtype))
        for p in patches.get("emb_patch", []):
            emb = p(emb, network.model_channels, options)
        if network.num_classes is not None:
            emb = emb + network.label_emb(call.y)

        control = None
        if call.control is not None:
            # a full pass pops 'input' residuals from the end for blocks 0.. (the same ones
            # here) and 'output' residuals from the end for output blocks 0..: keep those the
            # recomputed output blocks would get
            output = list(call.control.get("output", []))
            control = dict(call.control, input=list(call.control.get("input", [])),
                           output=output[:max(0, len(output) - points.first_output)])

        hs, h = [], x
        for number in range(points.inputs):
            options["block"] = ("input", number)
            h = forward_timestep_embed(network.input_blocks[number], h, emb, call.context, options, **frames_kw)
            h = apply_control(h, control, "input")
            for p in patches.get("input_block_patch", []):
                h = p(h, options)
            hs.append(h)
            for p in patches.get("input_block_patch_after_skip", []):
                h = p(h, options)

        # the transformers a full pass would have run before the first recomputed output block
        skipped = [network.input_blocks[i] for i in range(points.inputs, len(network.input_blocks))]
        skipped += [network.middle_block] + [network.output_blocks[i] for i in range(points.first_output)]
        options["transformer_index"] += sum(isinstance(m, SpatialTransformer)
                                            for block in skipped if block is not None for m in block)

        h = cached
        for number in range(points.first_output, len(network.output_blocks)):
            options["block"] = ("output", number)
            hsp = apply_control(hs.pop(), control, "output")
            for p in patches.get("output_block_patch", []):
                h, hsp = p(h, hsp, options)
            h = torch.cat([h, hsp], dim=1)
            output_shape = hs[-1].shape if hs else None
            h = forward_timestep_embed(network.output_blocks[number], h, emb, call.context, options, output_shape,
                                       **frames_kw)
        h = h.type(x.dtype)
        return network.id_predictor(h) if network.predict_codebook_ids else network.out(h)


FAMILIES: tuple[ModelFamily, ...] = (SDUNet(),)


def network_of(model_patcher) -> torch.nn.Module:
    """The network that denoises (object patches of other packs applied)."""
    return model_patcher.get_model_object("diffusion_model")


def family_of(model_patcher, input_name: str = "model") -> ModelFamily:
    """The family of a ModelPatcher's diffusion model; refuses models no family supports."""
    network = getattr(getattr(model_patcher, "model", None), "diffusion_model", None)
    if network is None:
        raise OCDInputError(input_name, f"expected a MODEL, got {type(model_patcher).__name__}")
    network = network_of(model_patcher)
    for family in FAMILIES:
        if family.matches(network):
            return family
    supported = "; ".join(f.name for f in FAMILIES)
    raise OCDInputError(input_name, f"is a {type(network).__name__}, which this pack does not support yet "
                        f"(supported: {supported})")


def transformer_blocks(model_patcher) -> list[tuple[tuple, torch.nn.Module]]:
    return list(family_of(model_patcher).transformer_blocks(network_of(model_patcher)))


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


def diffusion_call(args: tuple, kwargs: dict) -> DiffusionCall:
    """A DIFFUSION_MODEL wrapper's arguments: ``(x, timesteps, context, y, control,
    transformer_options, **kwargs)`` (comfy/ldm/modules/diffusionmodules/openaimodel.py)."""
    names = ("x", "timesteps", "context", "y", "control", "transformer_options")
    values = dict(zip(names, args))
    extra = dict(kwargs)
    for name in names:
        if name not in values:
            values[name] = extra.pop(name, None)
    return DiffusionCall(values["x"], values["timesteps"], values["context"], values["y"], values["control"],
                         values["transformer_options"] if values["transformer_options"] is not None else {}, extra)


def network_family(network) -> ModelFamily:
    """The family of a diffusion network (what a DIFFUSION_MODEL wrapper runs)."""
    for family in FAMILIES:
        if family.matches(network):
            return family
    raise OCDInputError("model", f"is a {type(network).__name__}, which this pack does not support yet")


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
