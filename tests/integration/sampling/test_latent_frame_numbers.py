"""Latent Frame Numbers (OCD): a window's frames get the noise of their place in the clip, so two
windows that hold the same frame (and the anchors) sample it from the same noise (core KSampler
and the Dual-Rate KSampler, the tiny random UNet: frames are independent batch items there, so
a frame's result depends on its noise alone)."""
from __future__ import annotations

import pytest
import torch

from tests.support import random_models as rm

H = W = 16
CLIP = torch.randn(8, 4, H, W, generator=torch.Generator().manual_seed(3))  # a clip's latent, 8 frames


@pytest.fixture(scope="module")
def tiny(comfy):
    return rm.build_model_patcher(rm.tiny_unet_config(), seed=11)


def window(frames: list[int]) -> dict:
    return {"samples": CLIP[frames].clone()}


def sample(model, latent, sampler):
    import nodes

    pos, neg = rm.random_text_conditioning(1, 64, 0), rm.random_text_conditioning(1, 64, 1)
    if sampler == "core":
        return nodes.KSampler().sample(model, 5, 3, 6.0, "euler", "normal", pos, neg, latent, 0.8)[0]["samples"]
    from ocd.sampling.comfy_sampler import sample_dual_rate
    from ocd.sampling.dual_rate import DualRateSettings

    mask = torch.zeros(latent["samples"].shape[0], H * 8, W * 8)
    mask[:, 32:72, 40:88] = 1.0
    return sample_dual_rate(model, 5, 3, 6.0, "euler", "normal", pos, neg, latent, 0.8, mask,
                            DualRateSettings(2.0, 0.34, 1, "feathered")).latent["samples"]


@pytest.mark.parametrize("sampler", ["core", "dual_rate"])
def test_numbered_windows_sample_their_shared_frames_and_anchor_from_the_same_noise(ocd_nodes, run, tiny, sampler):
    node = ocd_nodes["OCD_LatentFrameNumbers"]
    first = run(node, samples=window([0, 1, 2, 3, 4]), first_frame=0, anchors=0).result[0]  # window 0: frames 0-4
    second = run(node, samples=window([0, 3, 4, 5, 6]), first_frame=3, anchors=1).result[0]  # anchor 0 + frames 3-6
    assert second["batch_index"] == [0, 3, 4, 5, 6]
    a, b = sample(tiny, first, sampler), sample(tiny, second, sampler)
    torch.testing.assert_close(b[0], a[0])  # the anchor: as in the first window
    torch.testing.assert_close(b[1:3], a[3:5])  # frames 3 and 4, held by both windows
    # without the numbers each window draws its noise from its first frame on: the shared frames differ
    plain = sample(tiny, window([0, 3, 4, 5, 6]), sampler)
    assert (plain[1:3] - a[3:5]).abs().mean() > 0.1


def test_refusals_name_the_input(ocd_nodes, run):
    node = ocd_nodes["OCD_LatentFrameNumbers"]
    with pytest.raises(ValueError, match="input 'first_frame'.*anchors are the clip's frames 0-1"):
        run(node, samples=window([0, 1, 2]), first_frame=1, anchors=2)
    with pytest.raises(ValueError, match="input 'anchors'.*only 3 frames"):
        run(node, samples=window([0, 1, 2]), first_frame=5, anchors=4)
    with pytest.raises(ValueError, match="input 'samples'.*video transformer"):
        run(node, samples={"samples": torch.zeros(1, 16, 3, 8, 8)}, first_frame=0, anchors=0)
