"""OCD_DualRateKSampler on a Wan video transformer inside a real ComfyUI (random small Wan 2.1):
one sampling pass whose branch steps run only the object's tokens except on the background's
steps; KSampler's schedule and noise; every core sampler and scheduler; CFG; core EasyCache in
either order; core's Wan context windows; OCD_FeatureReuse refuses a transformer."""
from __future__ import annotations

import pytest
import torch

from tests.support import interface
from tests.support import random_wan as rw

FRAMES, SIZE = 9, 128  # 3 latent frames of 16 x 16 latent pixels: 3 x 8 x 8 tokens
NODE = "Dual-Rate KSampler (OCD)"


def object_mask(frames=FRAMES, size=SIZE, first_frame=0):
    mask = torch.zeros(frames, size, size)
    mask[first_frame:, size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 1.0
    return mask


def latent(frames=FRAMES, size=SIZE):
    return {"samples": torch.zeros(1, 16, (frames - 1) // 4 + 1, size // 8, size // 8)}


def dual_rate(ocd_nodes, run, model, mask=None, **overrides):
    node = ocd_nodes["OCD_DualRateKSampler"]
    values = interface.defaults("OCD_DualRateKSampler", node)
    values.update(model=model, seed=3, steps=8, cfg=1.0, sampler_name="euler", scheduler="simple",
                  positive=rw.text_conditioning("a red car"), negative=rw.text_conditioning(""),
                  latent_image=latent(), mask=object_mask() if mask is None else mask, crop_padding=0)
    values.update(overrides)
    out = run(node, **values)
    return out.result[0]["samples"], out.ui["ocd_run"][0]


def ksampler(model, steps=8, cfg=1.0, sampler="euler", scheduler="simple", lat=None):
    import nodes

    return nodes.KSampler().sample(model, 3, steps, cfg, sampler, scheduler, rw.text_conditioning("a red car"),
                                   rw.text_conditioning(""), lat or latent())[0]["samples"]


def facts(report):
    return report["nodes"][[k for k, s in report["nodes"].items() if s["name"] == NODE][0]]["facts"]


def test_the_object_runs_every_step_and_the_background_only_its_steps(ocd_nodes, run, wan21_small, inference):
    out, report = dual_rate(ocd_nodes, run, wan21_small)
    plan = facts(report)["dual_rate"]
    # 8 steps, blend_point 0.25: 6 branch steps, the background takes 6 / 4 -> 2 of them (0, 3), then 2 joint
    assert plan["mode"] == "dual" and plan["full_steps"] == [0, 3, 6, 7]
    assert plan["object_token_steps"] == [1, 2, 4, 5]
    # the object's 4 x 4 latent-pixel blocks per frame grown by the feathered edge: 6 x 6 of 8 x 8 tokens
    assert plan["tokens"] == 192 and plan["object_tokens"] == 3 * 36
    phases = report["phases"]
    assert {name: p["evaluations"] for name, p in phases.items()} == {"background": 2, "foreground": 4, "joint": 2}
    assert phases["foreground"]["tokens"] == 4 * 108 and phases["background"]["tokens"] == 2 * 192
    assert facts(report)["kept_for_subset_steps"]["batches"] == 1
    assert report["warnings"] == []
    base = ksampler(wan21_small)
    assert torch.isfinite(out).all() and not torch.allclose(out, base, atol=1e-3)


def test_blend_point_one_is_ksampler_bit_for_bit(ocd_nodes, run, wan21_small, inference):
    out, report = dual_rate(ocd_nodes, run, wan21_small, blend_point=1.0)
    assert torch.equal(out, ksampler(wan21_small))
    assert facts(report)["dual_rate"]["mode"] == "ordinary"


def test_an_empty_mask_moves_the_background_by_its_own_fewer_steps(ocd_nodes, run, wan21_small, inference):
    """With Euler on a flow-matching model, keeping the last full step's prediction on the other
    steps is one Euler step from each background step to the next: the same as sampling with the
    background's sigmas, then the joint ones."""
    import comfy.sample
    import comfy.samplers

    out, report = dual_rate(ocd_nodes, run, wan21_small, mask=torch.zeros(1, SIZE, SIZE))
    plan = facts(report)["dual_rate"]
    assert plan["mode"] == "background_only" and plan["object_token_steps"] == [1, 2, 4, 5]
    sampler = comfy.samplers.KSampler(wan21_small, steps=8, device="cpu", sampler="euler", scheduler="simple")
    sigmas = sampler.sigmas
    background = sigmas[[0, 3, 6, 7, 8]]
    lat = latent()["samples"]
    noise = comfy.sample.prepare_noise(lat, 3)
    expected = comfy.sample.sample_custom(wan21_small, noise, 1.0, comfy.samplers.sampler_object("euler"), background,
                                          rw.text_conditioning("a red car"), rw.text_conditioning(""), lat, seed=3)
    assert torch.allclose(out, expected, atol=1e-4, rtol=1e-4)
    assert report["phases"]["foreground"]["tokens"] == 0  # no token ran on the background's skipped steps


@pytest.mark.parametrize("sampler, scheduler", [("euler", "simple"), ("dpmpp_2m", "beta"), ("heun", "normal"),
                                                ("uni_pc", "sgm_uniform"), ("res_multistep", "simple"),
                                                ("euler_ancestral", "simple")])
def test_every_core_sampler_and_scheduler(ocd_nodes, run, wan21_small, sampler, scheduler, inference):
    out, report = dual_rate(ocd_nodes, run, wan21_small, sampler_name=sampler, scheduler=scheduler, steps=5)
    plan = facts(report)["dual_rate"]
    assert plan["mode"] == "dual" and plan["object_token_steps"]
    assert report["phases"]["foreground"]["calls"] > 0 and torch.isfinite(out).all()


def test_cfg_keeps_cond_and_uncond_apart(ocd_nodes, run, wan21_small, inference):
    out, report = dual_rate(ocd_nodes, run, wan21_small, cfg=5.0)
    assert facts(report)["kept_for_subset_steps"]["batches"] == 1  # cond and uncond in one batch
    assert report["phases"]["foreground"]["evaluations"] == 4 and torch.isfinite(out).all()
    assert not torch.allclose(out, dual_rate(ocd_nodes, run, wan21_small, cfg=1.0)[0], atol=1e-3)


def easycache(run, model, threshold=1.0):
    from comfy_extras.nodes_easycache import EasyCacheNode

    return run(EasyCacheNode, model=model, reuse_threshold=threshold, start_percent=0.0, end_percent=1.0,
               verbose=False).result[0]


def test_easycache_sees_the_blended_output_in_either_order(ocd_nodes, run, wan21_small, inference, caplog):
    """EasyCache applied before or after the pack's patches: the sampler's wrapper runs innermost,
    so EasyCache caches what the step returns (the blended output), never a subset step's raw one."""
    import logging

    from comfy_extras.nodes_easycache import EasyCacheNode  # noqa: F401 (core node present)

    cached = easycache(run, wan21_small)
    with caplog.at_level(logging.INFO):
        a, report = dual_rate(ocd_nodes, run, cached, steps=12)
    skipped = [r.getMessage() for r in caplog.records if "EasyCache - skipped" in r.getMessage()]
    assert skipped and not skipped[-1].startswith("EasyCache - skipped 0/"), skipped
    # a model patched by the pack before EasyCache: the sampler adds its wrapper anew, last
    patched = ocd_nodes["OCD_TokenMerge"]
    merged_first = run(patched, model=wan21_small, merge_ratio=0.0, stride_x=2, stride_y=2, max_downsample="1",
                       blocks="input,middle,output", foreground_protection=1.0, seed=0, pairing="off").result[0]
    b, _ = dual_rate(ocd_nodes, run, easycache(run, merged_first), steps=12)
    assert torch.equal(a, b)
    assert not torch.equal(a, dual_rate(ocd_nodes, run, wan21_small, steps=12)[0])  # EasyCache did skip


def wan_windows(run, model):
    from comfy_extras.nodes_context_windows import WanContextWindowsManualNode

    return run(WanContextWindowsManualNode, model=model, context_length=9, context_overlap=4,
               context_schedule="standard_static", context_stride=1, closed_loop=False,
               fuse_method="pyramid").result[0]


def test_core_wan_context_windows_keep_each_windows_own_steps(ocd_nodes, run, wan21_small, inference):
    out, report = dual_rate(ocd_nodes, run, wan_windows(run, wan21_small), latent_image=latent(17),
                            mask=object_mask(17, first_frame=13))
    f = facts(report)
    assert f["kept_for_subset_steps"]["batches"] == 2  # windows [0, 1, 2] and [2, 3, 4]
    # the object is in latent frame 4 only: the first window has no object token and keeps its
    # last full output on the object's steps; the second runs its object's tokens
    fg = report["phases"]["foreground"]
    assert fg["calls"] == 2 * 4 and fg["tokens"] == 4 * 36
    assert out.shape == (1, 16, 5, 16, 16) and torch.isfinite(out).all()


def test_feature_reuse_refuses_a_video_transformer_and_points_to_easycache(ocd_nodes, run, wan21_small):
    with pytest.raises(ValueError) as err:
        run(ocd_nodes["OCD_FeatureReuse"], model=wan21_small, clock=3, recomputed_levels=1, start=0.0, end=1.0,
            during_inversion=False)
    assert "model" in str(err.value) and "EasyCache" in str(err.value)


def test_lazycache_composes(ocd_nodes, run, wan21_small, inference, caplog):
    import logging

    from comfy_extras.nodes_easycache import LazyCacheNode

    lazy = run(LazyCacheNode, model=wan21_small, reuse_threshold=1.0, start_percent=0.0, end_percent=1.0,
               verbose=False).result[0]
    with caplog.at_level(logging.INFO):
        out, report = dual_rate(ocd_nodes, run, lazy, steps=12)
    skipped = [r.getMessage() for r in caplog.records if "LazyCache - skipped" in r.getMessage()]
    assert skipped and not skipped[-1].startswith("LazyCache - skipped 0/"), skipped
    assert torch.isfinite(out).all() and facts(report)["dual_rate"]["mode"] == "dual"
    # LazyCache answers the skipped evaluations before the transformer runs
    assert 0 < sum(p["calls"] for p in report["phases"].values()) < 12


@pytest.fixture(scope="module")
def wan22_5b_small(tmp_path_factory, comfy):
    path = rw.write_wan_model(tmp_path_factory.mktemp("wan22") / "wan22-5b-small.safetensors", rw.WAN22_5B_SMALL, 1)
    return rw.load_wan(path)


def test_wan22_5b_per_frame_timesteps(ocd_nodes, run, wan22_5b_small, inference):
    """Wan 2.2 TI2V 5B: 48 latent channels, and a noise mask that keeps the first frame makes its
    timesteps (so its blocks' modulation) differ per latent frame."""
    from ocd import host

    assert host.latent_scale(wan22_5b_small) == 16
    noise_mask = torch.ones(1, 1, 3, 16, 16)
    noise_mask[:, :, 0] = 0.0  # the first frame is given (image to video)
    lat = {"samples": torch.randn(1, 48, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 0.5,
           "noise_mask": noise_mask}
    merge = ocd_nodes["OCD_TokenMerge"]
    merged = run(merge, model=wan22_5b_small, merge_ratio=0.5, stride_x=2, stride_y=2, max_downsample="1",
                 blocks="input,middle,output", foreground_protection=1.0, seed=0, pairing="off",
                 mask=object_mask()).result[0]
    out, report = dual_rate(ocd_nodes, run, merged, latent_image=lat, steps=6)
    assert facts(report)["dual_rate"]["mode"] == "dual" and torch.isfinite(out).all()
    assert torch.allclose(out[:, :, 0], lat["samples"][:, :, 0], atol=1e-5)  # the given frame stays
    merged_layers = [s for s in report["nodes"].values() if s["name"] == "Object-Centric Token Merge (OCD)"][0]
    assert merged_layers["merged_layers"]["block.0 3x8x8"]["object_unmerged_share"] == 1.0


@pytest.fixture(scope="module")
def wan21_vace_small(tmp_path_factory, comfy):
    path = rw.write_wan_model(tmp_path_factory.mktemp("vace") / "wan21-vace-small.safetensors",
                              rw.WAN21_VACE_SMALL, 2)
    return rw.load_wan(path)


def test_vace_with_a_control_video_and_mask(ocd_nodes, run, wan21_vace_small, wan21_vae_file, inference):
    from comfy_extras.nodes_wan import WanVaceToVideo

    vae = rw.load_wan21_vae(wan21_vae_file)
    control = torch.rand(FRAMES, SIZE, SIZE, 3, generator=torch.Generator().manual_seed(1))
    pos, neg, lat, trim = run(WanVaceToVideo, positive=rw.text_conditioning("a red car"),
                              negative=rw.text_conditioning(""), vae=vae, width=SIZE, height=SIZE, length=FRAMES,
                              batch_size=1, strength=1.0, control_video=control,
                              control_masks=object_mask()).result
    out, report = dual_rate(ocd_nodes, run, wan21_vace_small, positive=pos, negative=neg, latent_image=lat, cfg=3.0)
    assert trim == 0 and facts(report)["dual_rate"]["mode"] == "dual"
    assert report["phases"]["foreground"]["tokens"] == 4 * 108 and torch.isfinite(out).all()
