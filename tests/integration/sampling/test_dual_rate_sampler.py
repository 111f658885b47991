"""OCD_DualRateKSampler on ComfyUI's real sampling machinery with the tiny random UNet.

Instrumentation uses ComfyUI's own extension points on clones of the model (keyed
wrappers), torch forward hooks on a real (random) ControlNet, and the sampler's hooks
(ocd.sampling.comfy_sampler.DualRateHooks) for the latents at the blend point.
"""
from __future__ import annotations

import logging

import pytest
import torch

from ocd.sampling.comfy_sampler import DualRateHooks
from tests.support import random_models as rm

FRAMES, H, W = 2, 16, 16  # latent size; the tiny UNet downsamples once (crop alignment 2)
STEPS = 6


@pytest.fixture(scope="module")
def tiny(comfy):
    return rm.build_model_patcher(rm.tiny_unet_config(), seed=11)


@pytest.fixture(scope="module")
def conds():
    return rm.random_text_conditioning(1, 64, 0), rm.random_text_conditioning(1, 64, 1)


@pytest.fixture(scope="module")
def node(ocd_nodes):
    return ocd_nodes["OCD_DualRateKSampler"]


def partial_mask(frames=FRAMES):
    """A rectangle in image pixels (8 x latent): latent rows 4..9, columns 5..10."""
    m = torch.zeros(frames, H * 8, W * 8)
    m[:, 32:72, 40:88] = 1.0
    return m


def latent(frames=FRAMES, seed=None):
    if seed is None:
        return {"samples": torch.zeros(frames, 4, H, W)}
    return {"samples": torch.randn(frames, 4, H, W, generator=torch.Generator().manual_seed(seed))}


def ksampler(model, sampler="euler", scheduler="normal", lat=None, denoise=1.0, seed=5):
    import nodes

    pos, neg = rm.random_text_conditioning(1, 64, 0), rm.random_text_conditioning(1, 64, 1)
    lat = lat or latent()
    return nodes.KSampler().sample(model, seed, STEPS, 6.0, sampler, scheduler, pos, neg, lat, denoise)[0]["samples"]


def dual(model, mask, phi, gamma, sampler="euler", scheduler="normal", lat=None, pos=None, neg=None,
         hooks=None, blend="feathered", padding=1, denoise=1.0, seed=5, steps=STEPS):
    from ocd.sampling.comfy_sampler import sample_dual_rate
    from ocd.sampling.dual_rate import DualRateSettings

    if pos is None:
        pos, neg = rm.random_text_conditioning(1, 64, 0), rm.random_text_conditioning(1, 64, 1)
    return sample_dual_rate(model, seed, steps, 6.0, sampler, scheduler, pos, neg, lat or latent(), denoise,
                            mask, DualRateSettings(phi, gamma, padding, blend), hooks)


class Spy(DualRateHooks):
    """Keeps what the run shows at the blend point in ``seen``; calls ``on_step`` after each step."""

    def __init__(self, seen=None, on_step=None):
        self.seen = {} if seen is None else seen
        self.on_step = on_step

    def blended(self, z_fg, z_bg, weights, z):
        self.seen.update(z_fg=z_fg, z_bg=z_bg, m=weights, z=z)

    def stepped(self, phase, step, sigma, x):
        if self.on_step is not None:
            self.on_step(phase, step, sigma, x)


def counting_clone(model):
    """A clone whose diffusion-model calls are recorded: (x shape, transformer_options)."""
    import comfy.patcher_extension

    calls = []

    def wrapper(executor, x, *args, **kwargs):
        options = kwargs.get("transformer_options", args[4] if len(args) > 4 else {})
        window = options.get("context_window")
        calls.append((tuple(x.shape), None if window is None else tuple(window.index_list)))
        return executor(x, *args, **kwargs)

    clone = model.clone()
    clone.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "test_count", wrapper)
    return clone, calls


# ---------------------------------------------------------------- equality with core

@pytest.mark.parametrize("sampler,scheduler", [("euler", "normal"), ("dpmpp_2m", "karras"),
                                               ("ddim", "ddim_uniform"), ("uni_pc", "simple")])
def test_all_joint_equals_core_ksampler_bit_for_bit(tiny, node, run, inference, sampler, scheduler):
    pos, neg = rm.random_text_conditioning(1, 64, 0), rm.random_text_conditioning(1, 64, 1)
    out = run(node, model=tiny, seed=5, steps=STEPS, cfg=6.0, sampler_name=sampler, scheduler=scheduler,
              positive=pos, negative=neg, latent_image=latent(), denoise=1.0, mask=partial_mask(),
              background_step_ratio=1.0, blend_point=1.0, crop_padding=1, blend="feathered").result[0]
    ref = ksampler(tiny, sampler, scheduler)
    assert torch.equal(out["samples"], ref)


@pytest.mark.parametrize("sampler,scheduler", [("euler", "normal"), ("dpmpp_2m", "karras")])
def test_background_branch_at_blend_point_equals_core(tiny, inference, sampler, scheduler):
    import comfy.sample
    import nodes

    seen = {}
    result = dual(tiny, partial_mask(), 1.0, 0.5, sampler, scheduler, hooks=Spy(seen))
    k = result.schedule.blend_index
    assert result.mode == "dual" and k == STEPS // 2

    pos, neg = rm.random_text_conditioning(1, 64, 0), rm.random_text_conditioning(1, 64, 1)
    # core KSamplerAdvanced stopping at step k: the same run, bit for bit
    ref = nodes.KSamplerAdvanced().sample(tiny, "enable", 5, STEPS, 6.0, sampler, scheduler, pos, neg, latent(),
                                          0, k, "enable")[0]["samples"]
    assert torch.equal(seen["z_bg"], ref)
    # core KSampler's full run, observed at step k through its callback (model space)
    states = {}
    noise = comfy.sample.prepare_noise(latent()["samples"], 5)
    comfy.sample.sample(tiny, noise, STEPS, 6.0, sampler, scheduler, pos, neg, latent()["samples"],
                        callback=lambda i, x0, x, n: states.setdefault(i, x.clone()), disable_pbar=True, seed=5)
    core_k = tiny.get_model_object("latent_format").process_out(states[k])
    assert torch.allclose(seen["z_bg"], core_k, atol=1e-6, rtol=0)


def test_full_mask_and_covering_crop_are_ordinary_sampling(tiny, inference):
    ref = ksampler(tiny)
    full = dual(tiny, torch.ones(1, 64, 64), 4.0, 0.25)
    assert full.mode == "ordinary" and torch.equal(full.latent["samples"], ref)
    big = torch.zeros(1, 64, 64)
    big[:, 4:60, 4:60] = 1  # padded and aligned, the crop reaches every border
    covering = dual(tiny, big, 4.0, 0.25, padding=2)
    assert covering.mode == "ordinary" and torch.equal(covering.latent["samples"], ref)


# ---------------------------------------------------------------- cost

@pytest.mark.parametrize("sampler", ["euler", "heun"])
def test_unet_calls_and_latent_pixels_match_the_prediction(tiny, inference, sampler):
    model, calls = counting_clone(tiny)
    result = dual(model, partial_mask(), 2.0, 0.34, sampler)
    pred = result.prediction
    assert result.mode == "dual"
    s = result.schedule
    assert (s.foreground_steps, s.background_steps, s.joint_steps) == (4, 2, 2)
    assert result.evaluations == pred.evaluations == {"euler": 8, "heun": 8 * 2 - 1}[sampler]
    assert result.phase_evaluations == {p.name: p.evaluations for p in pred.phases}
    # CFG runs the UNet on cond and uncond (batched or not): twice the predicted pixels
    processed = sum(shape[0] * shape[2] * shape[3] for shape, _ in calls)
    assert processed == 2 * pred.latent_pixels
    box = result.box
    crop_calls = [c for c in calls if c[0][2:] == (box.height, box.width)]
    fg = next(p for p in pred.phases if p.name == "foreground")
    assert sum(shape[0] for shape, _ in crop_calls) == 2 * FRAMES * fg.evaluations
    assert box.area < H * W
    if sampler == "euler":
        assert pred.latent_pixels == FRAMES * (4 * box.area + (2 + 2) * H * W)


def test_empty_mask_runs_background_schedule_and_logs(tiny, inference, caplog):
    model, calls = counting_clone(tiny)
    with caplog.at_level(logging.WARNING, logger="ocd.sampling"):
        result = dual(model, torch.zeros(FRAMES, 64, 64), 3.0, 0.5)
    assert result.mode == "background_only"
    assert "mask is empty" in caplog.text
    assert result.evaluations == result.schedule.background_steps + result.schedule.joint_steps == 1 + 3
    assert all(shape[2:] == (H, W) for shape, _ in calls)


def test_mask_frame_count_mismatch_is_an_error(tiny, node, run, inference, conds):
    # the pack's OCDInputError (loaded as ComfyUI loads the pack) is a ValueError
    with pytest.raises(ValueError, match="mask.*3 frames") as e:
        run(node, model=tiny, seed=0, steps=2, cfg=1.0, sampler_name="euler", scheduler="normal",
            positive=conds[0], negative=conds[1], latent_image=latent(4), denoise=1.0,
            mask=torch.zeros(3, 64, 64), background_step_ratio=2.0, blend_point=0.25, crop_padding=1,
            blend="hard")
    assert type(e.value).__name__ == "OCDInputError" and e.value.input_name == "mask"


# ---------------------------------------------------------------- blend

@pytest.mark.parametrize("blend", ["hard", "feathered"])
def test_blend_is_exactly_the_mask_formula(tiny, inference, blend):
    from ocd.masks import grid
    from ocd.sampling import dual_rate as ocs

    seen, joint_start = {}, {}

    def on_step(phase, step, sigma, x):
        if phase == "joint":
            joint_start.setdefault("x", x.clone())

    mask = partial_mask()
    result = dual(tiny, mask, 2.0, 0.34, blend=blend, hooks=Spy(seen, on_step))
    box = result.box
    m = ocs.blend_weights(grid.coverage(mask, FRAMES, H, W)[:, None], blend)
    assert torch.equal(seen["m"], m)
    pasted = seen["z_bg"].clone()
    pasted[..., box.top:box.bottom, box.left:box.right] = seen["z_fg"]
    assert torch.equal(seen["z"], m * pasted + (1 - m) * seen["z_bg"])
    assert torch.equal(seen["z"][m.expand_as(seen["z"]) == 0], seen["z_bg"][m.expand_as(seen["z"]) == 0])
    if blend == "hard":
        assert torch.equal(seen["z"][..., 5, 6], seen["z_fg"][..., 5 - box.top, 6 - box.left])
    # the joint phase starts from the blended latent (model space)
    expected = tiny.get_model_object("latent_format").process_in(seen["z"])
    assert torch.allclose(joint_start["x"], expected, atol=1e-6)


# ---------------------------------------------------------------- ControlNet

def test_controlnet_foreground_branch_sees_the_cropped_hint(tiny, inference):
    import comfy.utils
    import nodes

    control = rm.controlnet(rm.tiny_unet_config(), seed=21)
    # a hint at twice the image size: ControlNet resizes it, the crop must follow
    image = torch.rand(FRAMES, H * 16, W * 16, 3, generator=torch.Generator().manual_seed(3))
    pos, neg = rm.random_text_conditioning(1, 64, 0), rm.random_text_conditioning(1, 64, 1)
    pos, neg = nodes.ControlNetApplyAdvanced().apply_controlnet(pos, neg, control, image, 0.9, 0.0, 1.0)
    user_control = pos[0][1]["control"]
    user_hint = user_control.cond_hint_original.clone()

    hints = []
    hook = control.control_model.register_forward_pre_hook(
        lambda module, args, kwargs: hints.append((tuple(kwargs["x"].shape), kwargs["hint"].clone())),
        with_kwargs=True)
    try:
        result = dual(tiny, partial_mask(), 2.0, 0.34, pos=pos, neg=neg)
    finally:
        hook.remove()
    box = result.box
    full_hint = comfy.utils.common_upscale(image.movedim(-1, 1), W * 8, H * 8, "nearest-exact", "center")
    crop_hint = box.scaled(8).crop(full_hint)
    fg = [h for shape, h in hints if shape[2:] == (box.height, box.width)]
    bg = [h for shape, h in hints if shape[2:] == (H, W)]
    assert len(fg) == result.phase_evaluations["foreground"] and fg  # cond+uncond batched per call
    assert len(bg) == result.phase_evaluations["background"] + result.phase_evaluations["joint"]
    for h in fg:
        assert h.shape[-2:] == (box.height * 8, box.width * 8)
        assert torch.equal(h[:FRAMES], crop_hint)
    for h in bg:
        assert torch.equal(h[:FRAMES], full_hint)
    # the user's conditioning is untouched
    assert pos[0][1]["control"] is user_control
    assert torch.equal(user_control.cond_hint_original, user_hint)
    assert user_control.previous_controlnet is None


# ---------------------------------------------------------------- context windows, noise mask, denoise

def test_core_context_windows_keep_absolute_frame_indices(tiny, inference):
    import nodes
    from comfy_extras.nodes_context_windows import ContextWindowsManualNode

    frames = 4
    windowed = ContextWindowsManualNode.execute(tiny, context_length=2, context_overlap=1,
                                                context_schedule="standard_static", context_stride=1,
                                                closed_loop=False, fuse_method="pyramid", dim=0).result[0]
    model, calls = counting_clone(windowed)
    seen = {}
    result = dual(model, partial_mask(frames), 1.0, 0.5, lat=latent(frames), hooks=Spy(seen))
    box = result.box
    fg_windows = {w for shape, w in calls if shape[2:] == (box.height, box.width)}
    bg_windows = {w for shape, w in calls if shape[2:] == (H, W)}
    assert fg_windows == bg_windows and None not in fg_windows
    assert set().union(*fg_windows) == set(range(frames))
    pos, neg = rm.random_text_conditioning(1, 64, 0), rm.random_text_conditioning(1, 64, 1)
    ref = nodes.KSamplerAdvanced().sample(windowed, "enable", 5, STEPS, 6.0, "euler", "normal", pos, neg,
                                          latent(frames), 0, result.schedule.blend_index, "enable")[0]["samples"]
    assert torch.equal(seen["z_bg"], ref)


def test_noise_mask_and_denoise_keep_the_unmasked_latent(tiny, inference):
    lat = latent(seed=9)
    keep = torch.zeros(FRAMES, H * 8, W * 8)
    keep[:, :, : W * 4] = 1.0  # only the left half may change
    lat["noise_mask"] = keep
    result = dual(tiny, partial_mask(), 2.0, 0.34, lat=lat, denoise=0.6)
    out = result.latent["samples"]
    assert result.mode == "dual" and result.evaluations == result.prediction.evaluations
    assert result.schedule.steps == STEPS
    assert torch.allclose(out[..., W // 2:], lat["samples"][..., W // 2:], atol=1e-5)
    assert not torch.allclose(out[..., : W // 2], lat["samples"][..., : W // 2], atol=1e-2)
    assert "noise_mask" in result.latent


def test_a_start_latent_without_added_noise_matches_core(tiny, inference):
    import comfy.samplers
    import nodes

    from ocd.sampling.comfy_sampler import DualRateStart, run_dual_rate
    from ocd.sampling.dual_rate import DualRateSettings

    start = latent(seed=4)["samples"] * 14.0
    sigmas = comfy.samplers.KSampler(tiny, STEPS, "cpu", "euler", "normal", 1.0).sigmas
    pos, neg = rm.random_text_conditioning(1, 64, 0), rm.random_text_conditioning(1, 64, 1)
    # the start's sigmas are the schedule: no steps/scheduler are involved
    result = run_dual_rate(tiny, DualRateStart(start, torch.zeros_like(start), sigmas,
                                               comfy.samplers.sampler_object("euler"), "euler", 5),
                           6.0, pos, neg, partial_mask(), DualRateSettings(1.0, 1.0, 1, "feathered"))
    assert result.schedule.steps == STEPS
    ref = nodes.KSamplerAdvanced().sample(tiny, "disable", 5, STEPS, 6.0, "euler", "normal", pos, neg,
                                          {"samples": start}, 0, 10000, "disable")[0]["samples"]
    assert torch.equal(result.latent["samples"], ref)


# ---------------------------------------------------------------- progress and interruption

def test_progress_counts_evaluations_and_interrupt_stops_between_them(tiny, inference):
    import comfy.model_management
    import comfy.utils

    updates = []
    previous = comfy.utils.PROGRESS_BAR_HOOK
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: updates.append((value, total)))
    try:
        result = dual(tiny, partial_mask(), 2.0, 0.34)
        assert updates == [(i, result.evaluations) for i in range(1, result.evaluations + 1)]

        def interrupt(phase, step, sigma, x):
            if phase == "foreground" and step == 1:
                comfy.model_management.interrupt_current_processing(True)

        updates.clear()
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            dual(tiny, partial_mask(), 2.0, 0.34, hooks=Spy(on_step=interrupt))
        # background (2) + foreground steps 0 and 1, then stopped before the next evaluation
        assert updates[-1][0] == 2 + 2
    finally:
        comfy.utils.set_progress_bar_global_hook(previous)
        comfy.model_management.interrupt_current_processing(False)
