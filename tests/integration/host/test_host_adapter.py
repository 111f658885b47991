"""The host adapter (ocd/host/) on ComfyUI's own classes: model families (an SDXL-layout UNet
works with no other change; an unsupported model is refused by name), and the one mechanism
for state shared across model clones (ocd/shared.py)."""
from __future__ import annotations

import copy
import types

import pytest
import torch

from ocd import host
from tests.support import interface
from tests.support import random_models as rm

FRAMES, LATENT = 2, 16


def sdxl_layout_config() -> dict:
    """SDXL's UNet layout, scaled down: three levels, no attention at the highest resolution,
    linear projections in the transformers (SD1.5 has four levels, attention at the top)."""
    return dict(rm.tiny_unet_config(), channel_mult=[1, 2, 4], num_res_blocks=[1, 1, 1],
                transformer_depth=[0, 1, 1], transformer_depth_output=[0, 0, 1, 1, 1, 1],
                use_linear_in_transformer=True)


@pytest.fixture(scope="module")
def sdxl_layout(comfy):
    return rm.build_model_patcher(sdxl_layout_config(), seed=3)


@pytest.fixture(scope="module")
def sd15_layout(comfy):
    return rm.build_model_patcher(rm.tiny_unet_config(), seed=0)


def conds():
    return rm.random_text_conditioning(1, 64, 0), rm.random_text_conditioning(1, 64, 1)


def sample(model, steps=2, frames=FRAMES):
    import nodes

    pos, neg = conds()
    latent = {"samples": torch.zeros(frames, 4, LATENT, LATENT)}
    with torch.inference_mode():
        return nodes.KSampler().sample(model, 7, steps, 5.0, "euler", "normal", pos, neg, latent)[0]["samples"]


def defaults(node_cls, node_id: str) -> dict:
    """The node's widget defaults, as a new node in the UI has them."""
    return interface.defaults(node_id, node_cls)


# ---------------------------------------------------------------- model families

def test_an_sdxl_layout_unet_is_the_sd_unet_family(sdxl_layout, sd15_layout):
    assert host.family_of(sdxl_layout).name == host.family_of(sd15_layout).name == host.SDUNet.name
    assert host.downsampling(sdxl_layout) == 4 and host.downsampling(sd15_layout) == 2
    assert host.latent_scale(sdxl_layout) == 8
    keys = host.self_attention_keys(sdxl_layout)
    # no transformer at the highest resolution (input block 1, output blocks 4 and 5 of 6)
    assert keys and all(key[:2] not in {("input", 1), ("output", 4), ("output", 5)} for key in keys)
    assert set(host.cross_attention_modules(sdxl_layout)) == set(keys)


def test_the_pack_patches_and_samples_an_sdxl_layout_unet(sdxl_layout, ocd_nodes, run, inference):
    reference = sample(sdxl_layout)
    crossed = run(ocd_nodes["OCD_CrossFrameAttention"], model=sdxl_layout, mode="full", window_size=2).result[0]
    inputs = defaults(ocd_nodes["OCD_TokenMerge"], "OCD_TokenMerge")
    inputs.update(pairing="record", max_downsample="2")  # the first level with attention is at 1/2
    merged, record = run(ocd_nodes["OCD_TokenMerge"], model=crossed, **inputs).result
    out = sample(merged)
    assert torch.isfinite(out).all() and not torch.equal(out, reference)
    assert {layer[:2] for _step, layer, _frames in record.plans} == {("input", 3), ("output", 2), ("output", 3)}

    mask = torch.zeros(FRAMES, LATENT * 8, LATENT * 8)
    mask[:, 32:64, 40:72] = 1.0
    sampler = ocd_nodes["OCD_DualRateKSampler"]
    pos, neg = conds()
    values = defaults(sampler, "OCD_DualRateKSampler")
    values.update(model=sdxl_layout, seed=5, steps=4, positive=pos, negative=neg, mask=mask, crop_padding=0,
                  latent_image={"samples": torch.zeros(FRAMES, 4, LATENT, LATENT)}, sampler_name="euler",
                  scheduler="normal")
    from ocd.sampling.comfy_sampler import sample_dual_rate
    from ocd.sampling.dual_rate import DualRateSettings

    result = sample_dual_rate(sdxl_layout, 5, 4, 5.0, "euler", "normal", pos, neg, values["latent_image"], 1.0,
                              mask, DualRateSettings(crop_padding=0))
    assert result.mode == "dual" and result.box.height % 4 == 0 and result.box.width % 4 == 0
    assert run(sampler, **values).result[0]["samples"].shape == (FRAMES, 4, LATENT, LATENT)


def test_a_model_no_family_supports_is_refused_by_name(ocd_nodes, run):
    network = torch.nn.Linear(4, 4)
    other = types.SimpleNamespace(model=types.SimpleNamespace(diffusion_model=network),
                                  get_model_object=lambda name: network)
    with pytest.raises(ValueError, match="input 'model'.*Linear.*supported: Stable Diffusion UNet"):
        run(ocd_nodes["OCD_CrossFrameAttention"], model=other, mode="full", window_size=2)
    inputs = defaults(ocd_nodes["OCD_TokenMerge"], "OCD_TokenMerge")
    with pytest.raises(ValueError, match="input 'model'"):
        run(ocd_nodes["OCD_TokenMerge"], model=other, **inputs)


# ---------------------------------------------------------------- state shared across clones

def copies_of(model):
    """Every way ComfyUI and other packs copy a patched model's options before it runs."""
    import comfy.model_patcher
    import comfy.patcher_extension
    from comfy_extras.nodes_tomesd import TomePatchModel

    clones = [model.clone(), model.clone().clone(), TomePatchModel.execute(model, 0.3).result[0]]
    options = [c.model_options for c in clones]
    options += [copy.deepcopy(model.model_options), copy.copy(model.model_options),
                comfy.model_patcher.create_model_options_clone(model.model_options),
                comfy.patcher_extension.copy_nested_dicts(model.model_options)]
    return clones, [o["transformer_options"] for o in options]


def test_settings_stores_and_hooks_are_the_nodes_in_every_copy(sd15_layout, ocd_nodes, run, inference):
    from ocd.attention.comfy_patches import set_attention_hook

    crossed = run(ocd_nodes["OCD_CrossFrameAttention"], model=sd15_layout, mode="full", window_size=2).result[0]
    inputs = defaults(ocd_nodes["OCD_TokenMerge"], "OCD_TokenMerge")
    inputs.update(pairing="record")
    merged, record = run(ocd_nodes["OCD_TokenMerge"], model=crossed, **inputs).result
    settings = host.state_of(merged, host.TOKEN_MERGE_KEY)
    cross = host.state_of(merged, host.CROSS_FRAME_KEY)
    hook = lambda attend, q, k, v, call: attend(q, k, v)  # noqa: E731
    hooked = set_attention_hook(merged, hook)

    clones, option_copies = copies_of(hooked)
    for options in option_copies:
        assert options[host.TOKEN_MERGE_KEY] is settings and options[host.TOKEN_MERGE_KEY].store is record
        assert options[host.CROSS_FRAME_KEY] is cross
        assert options[host.ATTENTION_HOOK_KEY] is hook
    # a sampler running a copy of a copy records into the record the node returned
    assert len(record) == 0
    sample(clones[1])
    assert len(record) > 0


def test_inversion_with_the_nodes_defaults_records_and_fuses(sd15_layout, ocd_nodes, run, inference):
    """The regression of the clone bug: with the defaults (record_attention 0.8 and
    record_cross_attention on) the cross-attention recorder's clone once deep-copied the
    self-attention hook, so its record stayed empty and the edit fused nothing."""
    latent = {"samples": torch.randn(FRAMES, 4, 8, 8, generator=torch.Generator().manual_seed(2)) / 0.18215}
    source, target = rm.random_text_conditioning(1, 64, 3), rm.random_text_conditioning(1, 64, 4)
    invert = ocd_nodes["OCD_InvertLatents"]
    inputs = defaults(invert, "OCD_InvertLatents")
    assert inputs["record_attention"] > 0 and inputs["record_cross_attention"] is True
    inputs.update(model=sd15_layout, latent=latent, positive=source, steps=4)
    inverted, record = run(invert, **inputs).result
    from ocd.inversion.record import CROSS_ATTENTION, SELF_ATTENTION

    attention = record.extras[SELF_ATTENTION]
    assert attention.maps, "the self-attention record is empty"
    assert {step for step, _ in attention.maps} == {0, 1, 2}  # round(0.8 x 4) = 3 steps
    assert record.extras[CROSS_ATTENTION].maps

    edit = ocd_nodes["OCD_EditFromInversion"]
    values = defaults(edit, "OCD_EditFromInversion")
    assert values["self_replace"] > 0
    values.update(model=sd15_layout, inversion=record, inverted_latent=inverted, positive=target,
                  negative=source)
    fused = run(edit, **values).result[0]["samples"]
    plain = run(edit, **dict(values, self_replace=0.0)).result[0]["samples"]
    assert not torch.equal(fused, plain)
