"""Model families: what the pack needs to know about a kind of diffusion model.

The attention patches are keyed by transformer block, the dual-rate crop is aligned to the
model's total downsampling, masks and latents convert at the VAE's scale. All of that
depends on the architecture, so each supported architecture is one ``ModelFamily``
implementation, found by ``family_of``; nothing else in the pack walks a model's modules or
reads its configuration. A new family (a video DiT, say) is one more class in ``FAMILIES``.

Supported now:
- ``SDUNet``, ComfyUI's ``UNetModel`` (SD1.x, SD2.x, SDXL and fine-tunes of them), whose
  self-attention runs in ``BasicTransformerBlock``s inside ``SpatialTransformer``s of its
  ``input_blocks``, ``middle_block`` and ``output_blocks``;
- ``WanDiT``, ComfyUI's ``WanModel`` and ``VaceWanModel`` (Wan 2.1 T2V / I2V / Fun / VACE,
  Wan 2.2 A14B experts and 5B TI2V), a video transformer: one token sequence per video, its
  blocks reached through ``patches_replace["dit"]`` and their self-attention through
  ``optimized_attention_override``. A family whose ``is_transformer`` is true offers the
  token methods (``token_grid``, ``install_block_patch``, ``run_block``) instead of the
  UNet's attention patches.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterator

import torch

from ..errors import OCDInputError
from ..shared import SharedAcrossClones


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


@dataclass(frozen=True)
class TokenGrid:
    """How one call of a video transformer lays out its video tokens: ``frames`` token frames
    (their absolute latent frame indices: under context windows a window of the latent), each
    ``height x width`` tokens, frame-major then row-major, after any tokens that are not the
    video's (a reference image's: the block sees how many). The latent has ``latent_frames``
    frames, of ``temporal_scale`` video frames each (the first alone)."""

    frames: tuple[int, ...]
    height: int
    width: int
    latent_frames: int
    temporal_scale: int

    @property
    def video_tokens(self) -> int:
        return len(self.frames) * self.height * self.width


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
    # a transformer over one token sequence per video (a DiT): the token methods below apply
    is_transformer = False
    # video frames per latent frame (a causal video VAE's: the first frame alone); 1: a UNet's
    # latent holds one frame per batch item
    temporal_scale = 1

    def image_scale(self, model_patcher) -> int:
        """Image pixels per latent pixel for this model's latents."""
        return self.latent_scale

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

    # ---- video transformers (is_transformer) -------------------------------------------------

    def block_count(self, network) -> int:
        """How many transformer blocks the token patches can reach."""
        raise NotImplementedError

    def token_grid(self, network, call: DiffusionCall, latent_frames: int | None = None) -> TokenGrid | str:
        """The call's token layout, or why it cannot be read (a sentence)."""
        raise NotImplementedError

    def install_block_patch(self, model_patcher, patch) -> None:
        """Make every block of (a clone's) options run through ``patch(family, index, args,
        run)`` (``run(args)``: the block as it would run without it, another pack's block patch
        included); idempotent."""
        raise NotImplementedError

    def block_tokens(self, args: dict) -> torch.Tensor:
        """The token sequence ``[B, L, C]`` a block patch is given."""
        raise NotImplementedError

    def block_options(self, args: dict) -> dict:
        """The call's options as a block patch is given them."""
        raise NotImplementedError

    def run_block(self, args: dict, run, tokens=None, self_attention=None) -> torch.Tensor:
        """Run a block (``run(args) -> output``, the original block or the patch before ours)
        on ``tokens`` (an ``ocd.tokens.BlockTokens``; None: every token), each row at the
        position and with the modulation of the token it stands for, its self-attention
        computed by ``self_attention(q, k, v, heads, attend)`` when given (``attend(q, k, v,
        bias)``: the host's attention, ``bias`` ``[B, M]`` added to every query's logits).
        Returns the block's output for every token ``[B, L, C]``."""
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


class WanDiT(ModelFamily):
    """ComfyUI's ``WanModel`` / ``VaceWanModel`` (comfy/ldm/wan/model.py, 0.3.75).

    - latent ``[B, C, T, H, W]``: 16 channels at 8x (Wan 2.1 VAE) or 48 at 16x (Wan 2.2's);
      4x in time, causally (latent frame 0 is video frame 0)
    - patch (1, 2, 2): ``T x ceil(H/2) x ceil(W/2)`` video tokens, frame-major, after a
      reference image's tokens when the model has ``ref_conv`` and the call a reference latent
    - block ``i`` is ``patches_replace["dit"][("double_block", i)]``, called with
      ``{"img": x [B, L, C], "txt": context, "vec": e0 (modulation: [B, 1 or T, 6, C], or
      [B, 6, C] in VACE), "pe": RoPE frequencies [1, L, 1, d/2, 2, 2], "transformer_options"}``
      and ``{"original_block": f}``; the block calls attention first for its self-attention
      (queries and keys after RoPE), then for the cross-attention (twice with CLIP image
      tokens), each through ``optimized_attention(..., transformer_options=...)``, which calls
      ``transformer_options["optimized_attention_override"](func, *args, **kwargs)`` when set
    - VACE: the VACE blocks run on every token beside the patched blocks (not patched)
    - context windows: ``IndexListContextWindow`` with ``dim == 2`` over latent frames; the
      model encodes the window's positions from 0
    """

    name = "Wan 2.1 / 2.2 video transformer (WanModel, VaceWanModel)"
    latent_scale = 8
    is_transformer = True
    temporal_scale = 4
    patch = (2, 2)

    def matches(self, diffusion_model) -> bool:
        from comfy.ldm.wan.model import VaceWanModel, WanModel

        # the camera, sound, HuMo and Animate variants run other forwards: not claimed
        return type(diffusion_model) in (WanModel, VaceWanModel)

    def image_scale(self, model_patcher) -> int:
        channels = getattr(model_patcher.get_model_object("latent_format"), "latent_channels", 16)
        return 16 if channels == 48 else 8

    def transformer_blocks(self, diffusion_model):
        return iter(())  # no UNet attention patches reach a DiT

    def downsampling(self, model_patcher) -> int:
        return self.patch[0]

    def reuse_points(self, network, levels: int) -> ReusePoints:
        raise OCDInputError("model", "is a Wan video transformer: Clockwork feature reuse cuts a UNet's "
                            "low-resolution levels, which a transformer does not have. For step reuse on Wan "
                            "use core EasyCache or LazyCache (they work with the OCD nodes)")

    # ---- tokens --------------------------------------------------------------------------

    def block_count(self, network) -> int:
        return len(network.blocks)

    def token_grid(self, network, call: DiffusionCall, latent_frames: int | None = None) -> TokenGrid | str:
        x = call.x
        if x.ndim != 5:
            return f"a latent of shape {tuple(x.shape)} is not a video latent [B, C, T, H, W]"
        if call.extra.get("time_dim_concat") is not None:
            return "frames concatenated in time (time_dim_concat) are not laid out as the video's"
        if tuple(network.patch_size) != (1, 2, 2):
            return f"patch size {tuple(network.patch_size)} is not (1, 2, 2)"
        _, _, T, H, W = x.shape
        frames = tuple(range(T))
        window = call.options.get("context_window")
        index = getattr(window, "index_list", None)
        if index is not None and getattr(window, "dim", None) == 2 and len(index) == T:
            frames = tuple(int(i) for i in index)
        total = max(latent_frames or 0, max(frames) + 1)
        return TokenGrid(frames, -(-H // 2), -(-W // 2), total, self.temporal_scale)

    def install_block_patch(self, model_patcher, patch) -> None:
        network = network_of(model_patcher)
        replaced = model_patcher.model_options.get("transformer_options", {}).get("patches_replace", {}).get("dit", {})
        for index in range(self.block_count(network)):
            previous = replaced.get(("double_block", index))
            if isinstance(previous, _BlockPatch) and previous.patch is patch:
                continue
            model_patcher.set_model_patch_replace(_BlockPatch(self, index, patch, previous), "dit", "double_block", index)

    def block_tokens(self, args: dict) -> torch.Tensor:
        return args["img"]

    def block_options(self, args: dict) -> dict:
        return args["transformer_options"]

    def run_block(self, args: dict, run, tokens=None, self_attention=None, cross_attention=None) -> torch.Tensor:
        x = args["img"]
        new = dict(args)
        if tokens is not None:
            rows = tokens.positions(x.shape[0]).to(x.device)  # [B, n]
            new["img"] = reduced = tokens.reduce(x)
            new["pe"] = _rows_of(args["pe"], rows)
            new["vec"] = _modulation_of(args["vec"], x, rows)
        if self_attention is not None or cross_attention is not None:
            new["transformer_options"] = _with_self_attention(args["transformer_options"], self_attention,
                                                              cross_attention)
        out = run(new)["img"]
        return out if tokens is None else tokens.expand(x, reduced, out)


class _BlockPatch(SharedAcrossClones):
    """``patches_replace["dit"][("double_block", index)]``: ComfyUI calls it with the block's
    arguments and ``{"original_block": f}``; another pack's patch that was on the block runs
    inside it, as the block."""

    def __init__(self, family: "WanDiT", index: int, patch, previous):
        self.family, self.index, self.patch, self.previous = family, index, patch, previous

    def __call__(self, args: dict, extra: dict) -> dict:
        original = extra["original_block"]

        def run(block_args: dict) -> dict:
            return self.previous(block_args, extra) if self.previous is not None else original(block_args)

        return {"img": self.patch(self.family, self.index, args, run)}


def _rows_of(table: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``table`` ``[1 or B, L, ...]`` at the tokens ``rows`` ``[B, n]`` -> ``[B, n, ...]``."""
    if table.shape[0] == 1 and bool((rows == rows[:1]).all()):
        return table.index_select(1, rows[0].to(table.device))
    table = table.expand(rows.shape[0], *table.shape[1:])
    index = rows.to(table.device).view(*rows.shape, *([1] * (table.ndim - 2))).expand(-1, -1, *table.shape[2:])
    return torch.gather(table, 1, index)


def _modulation_of(vec: torch.Tensor, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """The blocks' modulation ``e0`` for the tokens ``rows``: unchanged when it is one for all
    tokens ([B, 1, 6, C] or VACE's [B, 6, C]); per token, as the block spreads per-frame
    values over the tokens (``repeat_e``), when it varies (Wan 2.2 5B's per-frame timesteps)."""
    if vec.ndim < 4 or vec.shape[1] == 1:
        return vec
    from comfy.ldm.wan.model import repeat_e

    return _rows_of(repeat_e(vec, x), rows)


def _with_self_attention(options: dict, self_attention=None, cross_attention=None) -> dict:
    """A copy of a block's options whose first attention call (the block's self-attention) is
    computed by ``self_attention(q, k, v, heads, attend)`` (None: as it is), and whose later
    calls (the cross-attention: CLIP image tokens first where the model has them, the text
    last) are shown to ``cross_attention(q, k, heads)``, which changes nothing. Another pack's
    attention override keeps running: for the block's other attention calls, and as ``attend``."""
    previous = options.get("optimized_attention_override")
    pending = [True]

    def call(func, *args, **kwargs):
        return previous(func, *args, **kwargs) if previous is not None else func(*args, **kwargs)

    def override(func, *args, **kwargs):
        q, k, v = args[:3]
        rest = args[3:]
        heads = rest[0] if rest else kwargs["heads"]
        if not pending[0]:
            if cross_attention is not None:
                cross_attention(q, k, heads)
            return call(func, *args, **kwargs)
        pending[0] = False
        if self_attention is None:
            return call(func, *args, **kwargs)

        def attend(q2, k2, v2, bias=None):
            kw = dict(kwargs)
            if bias is not None:
                kw["mask"] = bias.to(q2.dtype).unsqueeze(1)  # [B, 1, M]: every query, every head
            return call(func, q2, k2, v2, *rest, **kw)

        return self_attention(q, k, v, heads, attend)

    return dict(options, optimized_attention_override=override)


FAMILIES: tuple[ModelFamily, ...] = (SDUNet(), WanDiT())


class WorkCounter:
    """While active: the calls of every supported diffusion network and the tokens their
    transformer blocks run (batch x tokens, summed over every block call), by global forward
    pre-hooks; nothing is patched. A step cache that answers a call without the network's
    blocks (EasyCache) shows as a call with no block tokens."""

    def __init__(self):
        self.calls = 0
        self.block_tokens = 0

    def _hook(self, module, args):
        from comfy.ldm.modules.attention import BasicTransformerBlock
        from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
        from comfy.ldm.wan.model import WanAttentionBlock, WanModel

        if isinstance(module, (UNetModel, WanModel)):
            self.calls += 1
        elif isinstance(module, (BasicTransformerBlock, WanAttentionBlock)) and args:
            x = args[0]  # the block's tokens [B, L, C]
            if isinstance(x, torch.Tensor) and x.ndim == 3:
                self.block_tokens += int(x.shape[0]) * int(x.shape[1])

    def __enter__(self) -> "WorkCounter":
        self._handle = torch.nn.modules.module.register_module_forward_pre_hook(self._hook)
        return self

    def __exit__(self, *exc) -> bool:
        self._handle.remove()
        return False


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
    return family_of(model_patcher).image_scale(model_patcher)


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


def noise_reaching(model_patcher, z: torch.Tensor, latent_image: torch.Tensor, sigma: float) -> torch.Tensor:
    """The noise for which a sampler's start ``noise_scaling(sigma, noise, latent_image)`` is
    ``z`` (both user-space latents; noise_scaling is affine in the noise for every model type).

    On SD's noise levels the noise that starts an ODE pass at its latent is zero; on flow
    matching (CONST: ``sigma * noise + (1 - sigma) * latent``) it is the latent itself."""
    original = latent_image
    if torch.count_nonzero(original) > 0:  # core does not shift an empty latent either
        original = to_model_space(model_patcher, original)
    return _noise_to(model_patcher.get_model_object("model_sampling"), torch.tensor(sigma),
                     to_model_space(model_patcher, z), original)


def _noise_to(model_sampling, sigma: torch.Tensor, z: torch.Tensor, latent_image: torch.Tensor) -> torch.Tensor:
    """The noise ``n`` with ``noise_scaling(sigma, n, latent_image) == z`` (model space): the
    scaling is affine in the noise for every model type, so offset and gain tell it."""
    zero = torch.zeros_like(z)
    offset = model_sampling.noise_scaling(sigma, zero, latent_image, False)
    gain = model_sampling.noise_scaling(sigma, torch.ones_like(z), zero, False)
    return (z - offset) / gain


_ODE_SAMPLER = None


def ode_sampler(sampler_function):
    """A ComfyUI SAMPLER running ``sampler_function`` (k-diffusion's contract) that returns the
    state at the last sigma as it is.

    Core's ``KSAMPLER`` starts at ``noise_scaling(sigma_0, noise, latent_image)`` and ends with
    ``inverse_noise_scaling(sigma_last, x)``: with zero noise both are the identity on SD's
    noise levels, but on flow matching the start is ``(1 - sigma_0) * latent`` (nothing at
    sigma 1) and the end ``x / (1 - sigma)``, which an inversion ending at sigma 1 cannot take.
    So with zero noise (an ODE pass; core's Disable Noise) this one starts at the latent itself
    on every model's noise levels, and masked-out regions (a noise mask) stay at it; with other
    noise it starts as core's does (``noise_reaching`` gives the noise that starts at a given
    latent)."""
    global _ODE_SAMPLER
    if _ODE_SAMPLER is None:
        import comfy.samplers

        class ODESampler(comfy.samplers.KSAMPLER):
            def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
                       disable_pbar=False):
                extra_args["denoise_mask"] = denoise_mask
                model_sampling = model_wrap.inner_model.model_sampling
                if not bool(torch.count_nonzero(noise)) and float(sigmas[0]) > 0:
                    # the noise whose scaling keeps the latent where it is at every sigma (zero on
                    # SD's noise levels, the latent itself on flow matching)
                    noise = _noise_to(model_sampling, sigmas[0], latent_image, latent_image)
                model_k = comfy.samplers.KSamplerX0Inpaint(model_wrap, sigmas)
                model_k.latent_image, model_k.noise = latent_image, noise
                x = model_sampling.noise_scaling(sigmas[0], noise, latent_image, False)
                k_callback = None
                if callback is not None:
                    total = len(sigmas) - 1
                    k_callback = lambda d: callback(d["i"], d["denoised"], d["x"], total)  # noqa: E731
                return self.sampler_function(model_k, x, sigmas, extra_args=extra_args, callback=k_callback,
                                             disable=disable_pbar, **self.extra_options)

        _ODE_SAMPLER = ODESampler
    return _ODE_SAMPLER(sampler_function)


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
