"""ocd.sampling.dual_rate: blend weights, crop box, schedule split, cost, the plan."""
from __future__ import annotations

import pytest
import torch

from ocd.sampling import dual_rate as ocs
from ocd.errors import OCDInputError


def rect_mask(frames, h, w, top, left, bottom, right):
    m = torch.zeros(frames, h, w)
    m[:, top:bottom, left:right] = 1.0
    return m


# ---------------------------------------------------------------- blend weights

def test_hard_weights_threshold_at_half():
    m = torch.tensor([0.0, 0.49, 0.5, 1.0]).view(1, 1, 1, 4)
    assert ocs.blend_weights(m, "hard").flatten().tolist() == [0.0, 0.0, 1.0, 1.0]


def test_feathered_weights_blur_the_edge_and_stay_local():
    m = torch.zeros(1, 1, 16, 16)
    m[..., 6:10, 6:10] = 1.0
    f = ocs.blend_weights(m, "feathered")
    assert torch.all((f >= 0) & (f <= 1))
    assert 0 < f[0, 0, 5, 8] < 1 and 0 < f[0, 0, 8, 6] < 1 and f[0, 0, 8, 8] > f[0, 0, 6, 8]
    # the feather reaches FEATHER_RADIUS pixels beyond the object and not further
    support = torch.nonzero(f[0, 0] > 0)
    assert support[:, 0].min() == 6 - ocs.FEATHER_RADIUS and support[:, 0].max() == 9 + ocs.FEATHER_RADIUS
    assert f[0, 0, 0, 0] == 0 and f[0, 0, 15, 15] == 0


def test_unknown_blend_mode_is_an_error():
    with pytest.raises(OCDInputError, match="blend"):
        ocs.blend_weights(torch.zeros(1, 1, 4, 4), "soft")


# ---------------------------------------------------------------- crop box

def test_crop_box_is_union_over_frames_padded_and_aligned():
    w = torch.zeros(2, 1, 64, 64)
    w[0, :, 20:28, 10:14] = 1  # frame 0
    w[1, :, 30:34, 40:44] = 1  # frame 1: the box spans both
    box = ocs.crop_box(w, padding=1, align=8)
    assert box.top <= 19 and box.bottom >= 35 and box.left <= 9 and box.right >= 45
    assert box.height % 8 == 0 and box.width % 8 == 0
    assert 0 <= box.top and box.bottom <= 64 and 0 <= box.left and box.right <= 64
    # rows 20..33 padded to 19..35 are 16 rows already; columns 10..43 padded to 9..45
    # are 36, grown evenly to 40
    assert (box.top, box.bottom) == (19, 35) and (box.left, box.right) == (7, 47)


def test_crop_box_is_shifted_inside_the_frame():
    w = torch.zeros(1, 1, 64, 64)
    w[..., 0:3, 60:64] = 1
    box = ocs.crop_box(w, padding=2, align=8)
    assert (box.top, box.left, box.bottom, box.right) == (0, 56, 8, 64)


def test_crop_box_covers_frame_when_alignment_cannot_fit():
    w = torch.zeros(1, 1, 12, 12)
    w[..., 2:9, 2:9] = 1
    box = ocs.crop_box(w, padding=1, align=8)  # 9 px -> 16 > 12
    assert box.covers(12, 12)


def test_crop_box_empty_and_negative_padding():
    assert ocs.crop_box(torch.zeros(2, 1, 8, 8), padding=1) is None
    with pytest.raises(OCDInputError, match="crop_padding"):
        ocs.crop_box(torch.ones(1, 1, 8, 8), padding=-1)


def test_crop_and_paste_round_trip():
    box = ocs.CropBox(2, 3, 6, 9)
    x = torch.arange(2 * 4 * 10 * 12, dtype=torch.float32).view(2, 4, 10, 12)
    assert box.crop(x).shape == (2, 4, 4, 6)
    assert torch.equal(box.paste(torch.zeros_like(x), box.crop(x))[..., 2:6, 3:9], x[..., 2:6, 3:9])
    assert box.scaled(8) == ocs.CropBox(16, 24, 48, 72)


def test_blend_is_the_mask_formula():
    g = torch.Generator().manual_seed(0)
    z_bg = torch.randn(2, 4, 16, 16, generator=g)
    box = ocs.CropBox(4, 4, 12, 12)
    z_fg = torch.randn(2, 4, 8, 8, generator=g)
    m = torch.zeros(2, 1, 16, 16)
    m[..., 5:11, 5:11] = torch.rand(2, 1, 6, 6, generator=g)
    z = ocs.blend(z_fg, z_bg, m, box)
    pasted = z_bg.clone()
    pasted[..., 4:12, 4:12] = z_fg
    assert torch.equal(z, m * pasted + (1 - m) * z_bg)
    assert torch.equal(z[..., :4, :], z_bg[..., :4, :])  # outside the mask: the background


# ---------------------------------------------------------------- schedule

def sigmas(n):
    return torch.linspace(14.6, 0.0, n + 1)


def test_split_schedule_phases_share_endpoints():
    s = ocs.split_schedule(sigmas(20), background_step_ratio=4, blend_point=0.25)
    assert s.foreground_steps == 15 and s.joint_steps == 5 and s.background_steps == 4
    assert torch.equal(s.foreground, sigmas(20)[:16])
    assert s.background[0] == s.foreground[0] and s.background[-1] == s.foreground[-1] == s.joint[0]
    assert torch.all(s.background[1:] < s.background[:-1])  # strictly decreasing
    assert torch.equal(s.joint, sigmas(20)[15:])
    assert set(s.background_indices) <= set(range(16))


def test_split_schedule_rounds_halves_up():
    s = ocs.split_schedule(sigmas(10), 4, 0.25)  # 2.5 joint steps -> 3; 7 / 4 = 1.75 -> 2
    assert (s.foreground_steps, s.background_steps, s.joint_steps) == (7, 2, 3)
    assert s.background_indices == (0, 4, 7)


def test_split_schedule_phi_one_is_the_foreground_list():
    s = ocs.split_schedule(sigmas(10), 1.0, 0.3)
    assert torch.equal(s.background, s.foreground) and s.blend_index == 7


def test_split_schedule_gamma_one_is_all_joint_and_background_has_at_least_one_step():
    assert ocs.split_schedule(sigmas(10), 4, 1.0).blend_index == 0
    s = ocs.split_schedule(sigmas(4), 100, 0.5)
    assert s.background_steps == 1 and s.background_indices == (0, 2)


@pytest.mark.parametrize("phi,gamma,name", [(0.5, 0.2, "background_step_ratio"), (2, 1.5, "blend_point")])
def test_split_schedule_rejects_bad_parameters(phi, gamma, name):
    with pytest.raises(OCDInputError, match=name):
        ocs.split_schedule(sigmas(10), phi, gamma)


# ---------------------------------------------------------------- cost

def test_evaluations_per_sampler():
    s = sigmas(10)
    assert ocs.evaluations("euler", s) == 10 and ocs.evaluations("uni_pc", s) == 10
    assert ocs.evaluations("heun", s) == 19  # the last step to sigma 0 is an Euler step
    assert ocs.evaluations("heun", s[:5]) == 8
    assert ocs.evaluations("some_new_sampler", s) is None


def test_predicted_cost_counts_token_steps():
    sched = ocs.split_schedule(sigmas(20), 4, 0.25)  # fg 15, bg 4, joint 5
    box = ocs.CropBox(0, 0, 32, 32)
    pred = ocs.predicted_cost(sched, "euler", frames=8, height=64, width=64, box=box)
    assert [p.name for p in pred.phases] == ["foreground", "background", "joint"]
    assert pred.evaluations == 24
    assert pred.latent_pixels == 8 * (15 * 32 * 32 + 4 * 64 * 64 + 5 * 64 * 64)
    assert pred.full.latent_pixels == 8 * 20 * 64 * 64
    assert pred.speedup == pytest.approx(20 / (15 / 4 + 9))
    ordinary = ocs.predicted_cost(sched, "euler", 8, 64, 64, None, mode="ordinary")
    assert ordinary.evaluations == 20 and ordinary.speedup == pytest.approx(1.0)
    empty = ocs.predicted_cost(sched, "euler", 8, 64, 64, None, mode="background_only")
    assert empty.evaluations == 9


# ---------------------------------------------------------------- the plan

def test_plan_decides_mode_crop_schedule_and_cost():
    from ocd.masks import grid

    sigmas = torch.linspace(10.0, 0.0, 9)  # 8 steps
    settings = ocs.DualRateSettings(background_step_ratio=2.0, blend_point=0.25, crop_padding=0, blend="hard")
    obj = rect_mask(2, 128, 128, 32, 40, 64, 72)  # image pixels; latent rows 4..8, columns 5..9
    plan = ocs.plan_dual_rate(sigmas, obj, 2, 16, 16, settings, alignment=2, sampler_name="euler")
    assert plan.mode == "dual" and plan.reason == "foreground crop and background branches"
    assert (plan.box.top, plan.box.bottom, plan.box.left, plan.box.right) == (4, 8, 5, 9)
    assert torch.equal(plan.weights, ocs.blend_weights(grid.coverage(obj, 2, 16, 16)[:, None], "hard"))
    s = plan.schedule
    assert (s.foreground_steps, s.background_steps, s.joint_steps) == (6, 3, 2)
    assert [p.name for p in plan.prediction.phases] == ["foreground", "background", "joint"]
    assert plan.prediction.evaluations == 6 + 3 + 2
    assert plan.prediction.latent_pixels == 2 * (6 * 16 + (3 + 2) * 256)


@pytest.mark.parametrize("mask, sigmas, gamma, mode, reason", [
    (torch.zeros(1, 64, 64), 9, 0.25, "background_only", "the mask is empty"),
    (torch.ones(1, 64, 64), 9, 0.25, "ordinary", "the crop covers the whole frame"),
    (rect_mask(1, 64, 64, 8, 8, 24, 24), 9, 1.0, "ordinary", "blend_point leaves no branch steps"),
    (rect_mask(1, 64, 64, 8, 8, 24, 24), 1, 0.25, "ordinary", "nothing to denoise"),
])
def test_plan_falls_back_with_a_reason(mask, sigmas, gamma, mode, reason):
    settings = ocs.DualRateSettings(background_step_ratio=4.0, blend_point=gamma, crop_padding=0, blend="hard")
    plan = ocs.plan_dual_rate(torch.linspace(10.0, 0.0, sigmas), mask, 1, 8, 8, settings, alignment=2)
    assert plan.mode == mode and reason in plan.reason
    if mode == "ordinary":
        assert [p.name for p in plan.prediction.phases] == ["full"]


def test_plan_refuses_bad_settings_naming_the_input():
    sigmas = torch.linspace(10.0, 0.0, 9)
    mask = rect_mask(1, 64, 64, 8, 8, 24, 24)
    for settings, name in [(ocs.DualRateSettings(background_step_ratio=0.5), "background_step_ratio"),
                           (ocs.DualRateSettings(blend_point=1.5), "blend_point"),
                           (ocs.DualRateSettings(crop_padding=-1), "crop_padding"),
                           (ocs.DualRateSettings(blend="soft"), "blend")]:
        with pytest.raises(OCDInputError) as e:
            ocs.plan_dual_rate(sigmas, mask, 1, 8, 8, settings, alignment=2)
        assert e.value.input_name == name
    with pytest.raises(OCDInputError, match="mask"):
        ocs.plan_dual_rate(sigmas, torch.zeros(3, 64, 64), 2, 8, 8, ocs.DualRateSettings(), alignment=2)


# ---------------------------------------------------------------- the plan in token form (video transformers)

def test_token_subset_covers_the_weights_and_grows_by_the_margin():
    w = torch.zeros(2, 1, 8, 12)
    w[0, 0, 2:4, 4:6] = 1.0  # latent pixels 2..3 x 4..5: token (1, 2) of a 2x2 patch
    subset = ocs.token_subset(w, (2, 2), 0)
    assert subset.shape == (2, 4, 6) and subset.sum().item() == 1 and subset[0, 1, 2]
    assert not subset[1].any()  # frame 1 holds no object: no token of it runs
    grown = ocs.token_subset(w, (2, 2), 2)  # 2 latent px = one token on each side
    assert grown[0].sum().item() == 9 and grown[0, 0:3, 1:4].all()
    with pytest.raises(OCDInputError):
        ocs.token_subset(w, (2, 2), -1)


def test_token_plan_runs_every_token_on_the_backgrounds_steps_and_the_joint_ones():
    sigmas = torch.linspace(1, 0, 21)
    cover = torch.zeros(3, 16, 16)
    cover[:, 4:8, 4:8] = 1.0
    plan = ocs.plan_token_steps(sigmas, cover, ocs.DualRateSettings(4.0, 0.25, 0, "hard"), (2, 2))
    s = plan.schedule
    assert plan.mode == "dual" and s.blend_index == 15
    assert sorted(plan.full_steps) == [0, 4, 8, 11] + list(range(15, 20))  # background's steps, then joint
    assert plan.subset_steps == [i for i in range(15) if i not in (0, 4, 8, 11)]
    assert plan.subset_tokens == 3 * 4 and plan.tokens == 3 * 64
    # token-steps: 9 full steps of 192 tokens and 11 of 12, against 20 of 192
    assert plan.predicted_speedup == pytest.approx(20 * 192 / (9 * 192 + 11 * 12))
    assert plan.evaluations == 20 and plan.subset_evaluations == 11


@pytest.mark.parametrize("region, blend_point, mode", [
    ((0, 0, 0, 0), 0.25, "background_only"),
    ((0, 0, 16, 16), 0.25, "ordinary"),
    ((4, 4, 8, 8), 1.0, "ordinary"),
])
def test_token_plan_modes(region, blend_point, mode):
    cover = torch.zeros(1, 16, 16)
    top, left, bottom, right = region
    cover[:, top:bottom, left:right] = 1.0
    plan = ocs.plan_token_steps(torch.linspace(1, 0, 9), cover, ocs.DualRateSettings(4.0, blend_point, 0), (2, 2))
    assert plan.mode == mode
    if mode == "ordinary":
        assert plan.subset_steps == [] and sorted(plan.full_steps) == list(range(8))
