"""The random-weight models the rest of the suite and the benchmarks build on."""
from __future__ import annotations

import torch

from tests.support import random_models as rm


def _unet_parameter_count(config: dict) -> int:
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    unet = UNetModel(**dict(config, num_heads=8, num_head_channels=-1),
                     operations=comfy.ops.disable_weight_init, device="meta")
    return sum(p.numel() for p in unet.parameters())


def test_full_sd15_builder_has_the_real_architecture(comfy):
    # SD1.5's UNet has 859.52 M parameters; counted on the meta device (no memory)
    assert _unet_parameter_count(rm.FULL_SD15_UNET) == 859_520_964


def test_tiny_model_is_seeded_and_samples(comfy, inference):
    a = rm.build_model_patcher(rm.tiny_unet_config(), seed=3)
    b = rm.build_model_patcher(rm.tiny_unet_config(), seed=3)
    c = rm.build_model_patcher(rm.tiny_unet_config(), seed=4)
    sa, sb, sc = (m.model.diffusion_model.state_dict() for m in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert 0.5e6 < sum(v.numel() for v in sa.values()) < 2e6
    assert all(torch.isfinite(v).all() for v in sa.values())  # nothing left uninitialised

    latent = {"samples": torch.zeros(2, 4, 16, 16)}
    pos, neg = rm.random_text_conditioning(1, 64, 0), rm.random_text_conditioning(1, 64, 1)
    import nodes

    out1 = nodes.KSampler().sample(a, 7, 3, 5.0, "euler", "normal", pos, neg, latent)[0]["samples"]
    out2 = nodes.KSampler().sample(b, 7, 3, 5.0, "euler", "normal", pos, neg, latent)[0]["samples"]
    assert out1.shape == (2, 4, 16, 16) and torch.isfinite(out1).all()
    assert torch.equal(out1, out2)
