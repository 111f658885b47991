"""The Wan family of the host adapter (ocd/host/models.py ``WanDiT``) on ComfyUI's own WanModel
with random weights: a block run on a token selection, at the selection's own positions and
modulation, equals the block on every token where it must (bit for bit when nothing is left
out, to float precision where the left-out tokens' keys/values stand in)."""
from __future__ import annotations

import pytest
import torch

from ocd import host
from ocd.attention.token_merge import MergePlan
from ocd.tokens import MergedTokens, TokenSubset, attention_pool

T, H, W = 3, 4, 6  # token grid: 72 tokens


def block_args(network, batch=2, per_frame_timesteps=False, seed=0):
    """What WanModel.forward_orig hands block i: tokens, text, modulation, RoPE frequencies."""
    from comfy.ldm.wan.model import sinusoidal_embedding_1d

    g = torch.Generator().manual_seed(seed)
    latent = torch.randn(batch, 16, T, 2 * H, 2 * W, generator=g)
    x = network.patch_embedding(latent.float()).flatten(2).transpose(1, 2)
    t = torch.rand(batch, T, generator=g) * 1000 if per_frame_timesteps else torch.full((batch,), 700.0)
    e = network.time_embedding(sinusoidal_embedding_1d(network.freq_dim, t.flatten()))
    e0 = network.time_projection(e.reshape(batch, -1, e.shape[-1])).unflatten(2, (6, network.dim))
    context = network.text_embedding(torch.randn(batch, 8, 4096, generator=g) * 0.1)
    freqs = network.rope_encode(T, 2 * H, 2 * W, device=x.device, dtype=x.dtype)
    return {"img": x, "txt": context, "vec": e0, "pe": freqs, "transformer_options": {}}


def original_of(network, index=0):
    block = network.blocks[index]

    def run(args):
        return {"img": block(args["img"], context=args["txt"], e=args["vec"], freqs=args["pe"], context_img_len=None,
                             transformer_options=args["transformer_options"])}
    return run


@pytest.fixture(scope="module")
def network(wan21_small):
    return wan21_small.model.diffusion_model


@pytest.fixture(scope="module")
def family(wan21_small):
    return host.family_of(wan21_small)


def test_wan_is_a_transformer_family_with_its_blocks_and_scales(wan21_small, family, network):
    assert isinstance(family, host.WanDiT) and family.is_transformer
    assert family.block_count(network) == len(network.blocks)
    assert host.latent_scale(wan21_small) == 8 and family.temporal_scale == 4 and family.patch == (2, 2)


@pytest.mark.parametrize("per_frame", [False, True], ids=["one_timestep", "per_frame_timesteps"])
def test_a_selection_of_every_token_is_the_block_bit_for_bit(network, family, per_frame, inference):
    args = block_args(network, per_frame_timesteps=per_frame)
    run = original_of(network)
    expected = run(args)["img"]
    L = args["img"].shape[1]

    def passthrough(q, k, v, heads, attend):
        k2, v2, bias, _ = attention_pool(k, v, torch.arange(L).expand(2, L))
        return attend(q, k2, v2, bias)

    identity = MergePlan.identity(2, L)
    for tokens in (MergedTokens(identity), TokenSubset(torch.arange(L)), None):
        out = family.run_block(args, run, tokens, passthrough)
        assert torch.equal(out, expected), type(tokens).__name__


@pytest.mark.parametrize("per_frame", [False, True], ids=["one_timestep", "per_frame_timesteps"])
def test_a_subset_with_the_others_keys_values_is_the_full_block_on_its_tokens(network, family, per_frame,
                                                                            inference):
    """The subset runs at its tokens' positions (RoPE) and modulation; the kept keys/values of
    the other tokens complete its self-attention: its outputs are the full block's."""
    args = block_args(network, per_frame_timesteps=per_frame, seed=1)
    run = original_of(network)
    L = args["img"].shape[1]
    inside = torch.zeros(L, dtype=torch.bool)
    inside[torch.tensor([3, 4, 10, 30, 31, 50, 71])] = True
    kept = {}

    def full(q, k, v, heads, attend):
        k2, v2, bias, kept["keys"] = attention_pool(k, v, torch.arange(L).expand(2, L), keep=~inside)
        return attend(q, k2, v2, bias)

    expected = family.run_block(args, run, None, full)
    assert torch.equal(expected, run(args)["img"])  # keeping keys changes nothing
    subset = TokenSubset(torch.nonzero(inside).flatten())

    def with_context(q, k, v, heads, attend):
        k2, v2, bias, _ = attention_pool(k, v, subset.positions(2), context=kept["keys"])
        return attend(q, k2, v2, bias)

    out = family.run_block(args, run, subset, with_context)
    assert torch.allclose(out[:, inside], expected[:, inside], atol=1e-4, rtol=1e-4)
    assert torch.equal(out[:, ~inside], args["img"][:, ~inside])  # the others keep their value
    # without the context the subset's attention sees only itself: the outputs differ
    alone = family.run_block(args, run, subset, None)
    assert not torch.allclose(alone[:, inside], expected[:, inside], atol=1e-3)


def test_another_packs_block_patch_runs_inside_ours(wan21_small, family, network, inference):
    """A block patch that was there before the pack's runs as the block (composition)."""
    seen = []

    def other(args, extra):
        seen.append(args["img"].shape[1])
        return extra["original_block"](args)

    model = wan21_small.clone()
    model.set_model_patch_replace(other, "dit", "double_block", 0)

    def ours(fam, index, args, run):
        return fam.run_block(args, run, TokenSubset(torch.arange(5)) if index == 0 else None)

    family.install_block_patch(model, ours)
    replaced = model.model_options["transformer_options"]["patches_replace"]["dit"]
    assert len(replaced) == family.block_count(network)
    args = block_args(network)
    out = replaced[("double_block", 0)](args, {"original_block": original_of(network)})
    assert seen == [5] and out["img"].shape == args["img"].shape
    family.install_block_patch(model, ours)  # idempotent
    assert model.model_options["transformer_options"]["patches_replace"]["dit"][("double_block", 0)] is \
        replaced[("double_block", 0)]
    assert "dit" not in wan21_small.model_options.get("transformer_options", {}).get("patches_replace", {})
