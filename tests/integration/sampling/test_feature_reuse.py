"""OCD_FeatureReuse (Clockwork feature reuse) on ComfyUI's real sampling machinery, with the
tiny random UNet (SD1.5 layout, 2 levels) and an SDXL-layout one (3 levels)."""
from __future__ import annotations

import copy

import pytest
import torch

from ocd import host
from ocd.sampling.comfy_feature_reuse import _RunFeatures, apply_feature_reuse
from ocd.sampling.feature_reuse import FeatureReuseSettings, full_step, reused_steps
from tests.support import random_models as rm

FRAMES, H, W = 2, 16, 16
STEPS = 8


@pytest.fixture(scope="module")
def tiny(comfy):
    return rm.build_model_patcher(rm.tiny_unet_config(), seed=61)


@pytest.fixture(scope="module")
def sdxl_layout(comfy):
    config = dict(rm.tiny_unet_config(), channel_mult=[1, 2, 4], num_res_blocks=[1, 1, 1],
                  transformer_depth=[0, 1, 1], transformer_depth_output=[0, 0, 1, 1, 1, 1],
                  use_linear_in_transformer=True)
    return rm.build_model_patcher(config, seed=62)


def conds():
    return rm.random_text_conditioning(1, 64, 0), rm.random_text_conditioning(1, 64, 1)


def sample(model, sampler="euler", steps=STEPS, frames=FRAMES, callback=None, pos=None, neg=None):
    import comfy.sample

    if pos is None:
        pos, neg = conds()
    latent = torch.zeros(frames, 4, H, W)
    noise = comfy.sample.prepare_noise(latent, 3)
    with torch.inference_mode():
        return comfy.sample.sample(model, noise, steps, 5.0, sampler, "normal", pos, neg, latent, callback=callback,
                                   disable_pbar=True, seed=3)


def reuse(model, **settings):
    return apply_feature_reuse(model, FeatureReuseSettings(**settings))


# ---------------------------------------------------------------- the schedule (pure)

def test_the_schedule_runs_the_first_the_last_and_every_clock_th_step_fully():
    settings = FeatureReuseSettings(clock=3)
    assert reused_steps(10, settings) == [1, 2, 4, 5, 7, 8]
    assert reused_steps(10, FeatureReuseSettings(clock=2, start=0.3, end=0.8)) == [3, 5, 7]
    assert reused_steps(10, FeatureReuseSettings(clock=1)) == []
    assert reused_steps(10, settings, inversion=True) == []  # inversions run fully unless asked
    assert reused_steps(10, FeatureReuseSettings(clock=3, during_inversion=True), inversion=True) == [1, 2, 4, 5, 7, 8]
    assert all(full_step(i, 2, settings) for i in range(2))


@pytest.mark.parametrize("kwargs, name", [(dict(clock=0), "clock"), (dict(recomputed_levels=0), "recomputed_levels"),
                                          (dict(start=-0.1), "start"), (dict(end=float("nan")), "end"),
                                          (dict(start=0.6, end=0.5), "end")])
def test_bad_settings_are_refused_naming_the_input(kwargs, name):
    from ocd.errors import OCDInputError

    with pytest.raises(OCDInputError) as e:
        FeatureReuseSettings(**kwargs).validate()
    assert e.value.input_name == name


# ---------------------------------------------------------------- the cut

def _full_and_recomputed(model, levels, control=None):
    """One model call run fully (the cut's features kept) and then on the recomputed levels
    with those features: the two must agree."""
    network = host.network_of(model)
    family = host.network_family(network)
    points = family.reuse_points(network, levels)
    gen = torch.Generator().manual_seed(levels)
    x = torch.randn(FRAMES, 4, H, W, generator=gen)
    t = torch.full((FRAMES,), 500.0)
    context = torch.randn(FRAMES, 77, 64, generator=gen)
    kept = {}
    handle = family.cached_module(network, points).register_forward_hook(lambda m, i, o: kept.update(h=o))
    with torch.inference_mode():
        full = network(x, t, context=context, control=copy.deepcopy(control), transformer_options={})
        handle.remove()
        call = host.diffusion_call((x, t, context, None, copy.deepcopy(control), {}), {})
        recomputed = family.forward_recomputed(network, points, kept["h"], call)
    return full, recomputed, points


@pytest.mark.parametrize("levels", [1])
def test_recomputed_levels_with_their_own_features_reproduce_the_full_call(tiny, levels):
    full, recomputed, points = _full_and_recomputed(tiny, levels)
    assert (points.inputs, points.first_output) == (2, 2)  # conv_in + 1 res block; 4 output blocks, 2 at level 0
    torch.testing.assert_close(recomputed, full, rtol=0, atol=0)


@pytest.mark.parametrize("levels", [1, 2])
def test_the_cut_of_an_sdxl_layout_unet_reproduces_the_full_call(sdxl_layout, levels):
    full, recomputed, points = _full_and_recomputed(sdxl_layout, levels)
    assert points.inputs == {1: 2, 2: 4}[levels] and points.first_output == {1: 4, 2: 2}[levels]
    torch.testing.assert_close(recomputed, full, rtol=0, atol=0)


def test_control_residuals_of_the_recomputed_blocks_are_applied(tiny):
    """ControlNet-style residuals ('output': one per input block, 'middle') on a full call and
    on the recomputed levels: the same output, and different from without them."""
    gen = torch.Generator().manual_seed(9)
    network = host.network_of(tiny)
    shapes = []
    handles = [b.register_forward_hook(lambda m, i, o: shapes.append(tuple(o.shape))) for b in
               [list(block)[-1] for block in network.input_blocks]]
    with torch.inference_mode():
        network(torch.zeros(FRAMES, 4, H, W), torch.full((FRAMES,), 500.0), context=torch.zeros(FRAMES, 77, 64),
                transformer_options={})
    for h in handles:
        h.remove()
    control = {"output": [torch.randn(s, generator=gen) for s in shapes], "middle": [torch.randn(shapes[-1], generator=gen)]}
    full, recomputed, _ = _full_and_recomputed(tiny, 1, control)
    torch.testing.assert_close(recomputed, full, rtol=0, atol=0)
    plain, _, _ = _full_and_recomputed(tiny, 1)
    assert not torch.allclose(plain, full)


def test_a_level_count_the_unet_does_not_have_is_refused(tiny, ocd_nodes, run):
    with pytest.raises(ValueError, match="input 'recomputed_levels'.*2 levels"):
        run(ocd_nodes["OCD_FeatureReuse"], model=tiny, clock=2, recomputed_levels=2, start=0.0, end=1.0,
            during_inversion=False)


# ---------------------------------------------------------------- in sampling

@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m"])
def test_clock_one_is_the_unpatched_model_bit_for_bit(tiny, sampler):
    assert torch.equal(sample(reuse(tiny, clock=1), sampler), sample(tiny, sampler))


def _blocks_run_per_step(model, sampler):
    """For each sampling step, how often the first skipped input block and the first
    recomputed output block ran."""
    network = host.network_of(model)
    points = host.network_family(network).reuse_points(network, 1)
    step = {"i": 0}
    runs = {"skipped": {}, "recomputed": {}}

    def counter(name):
        def hook(module, args):
            runs[name][step["i"]] = runs[name].get(step["i"], 0) + 1
        return hook

    handles = [list(network.input_blocks[points.inputs])[0].register_forward_pre_hook(counter("skipped")),
               list(network.output_blocks[points.first_output])[0].register_forward_pre_hook(counter("recomputed"))]
    try:
        out = sample(model, sampler, callback=lambda i, x0, x, n: step.update(i=i + 1))
    finally:
        for h in handles:
            h.remove()
    return runs, out


@pytest.mark.parametrize("sampler", ["euler", "heun"])
def test_the_blocks_that_run_at_each_step_follow_the_schedule(tiny, sampler):
    """The clock ticks once per sampling step, at the sampler's step callback, however many
    times the sampler evaluates the model: heun evaluates twice per step and calls back after
    the first, so each interval between callbacks holds the previous step's correction and
    the step's first evaluation, and both follow the step's decision."""
    settings = dict(clock=3)
    runs, out = _blocks_run_per_step(reuse(tiny, **settings), sampler)
    reused = set(reused_steps(STEPS, FeatureReuseSettings(**settings)))
    assert reused == {1, 2, 4, 5}
    evaluations = {i: 1 for i in range(STEPS)}
    if sampler == "heun":  # the last step goes to sigma 0 with one Euler evaluation
        evaluations.update({i: 2 for i in range(1, STEPS)})
    # the recomputed levels run at every evaluation; the skipped ones only on full steps
    assert runs["recomputed"] == evaluations
    assert runs["skipped"] == {i: n for i, n in evaluations.items() if i not in reused}
    assert torch.isfinite(out).all()


def _direct_calls(model, run, calls):
    """Calls of the patched diffusion model inside a hand-made sampling run: ``calls`` is a
    list of (step, x, cond_or_uncond, extra transformer options); returns the outputs."""
    import comfy.patcher_extension

    outs = []
    base = dict(model.model_options["transformer_options"])
    base[host.FEATURE_CACHE_KEY] = run
    # what the sampler does before a run (comfy.sampler_helpers.prepare_model_patcher): the
    # model's keyed wrappers into the call's options
    base["wrappers"] = comfy.patcher_extension.copy_nested_dicts(model.wrappers)
    network = model.model
    for step, x, groups, extra in calls:
        run.step = step
        options = dict(base, cond_or_uncond=groups, **extra)
        t = torch.full((x.shape[0],), 2.0)
        context = torch.randn(x.shape[0], 77, 64, generator=torch.Generator().manual_seed(len(groups)))
        with torch.inference_mode():
            outs.append(network.apply_model(x, t, c_crossattn=context, transformer_options=options))
    return outs


def _alone(model, calls):
    """The same calls, each identity in a run of its own (the reference: nothing shared)."""
    return [_direct_calls(model, _RunFeatures(4, False), [full, reused])[1] for full, reused in calls]


def test_features_are_kept_apart_per_cfg_group_crop_and_context_window(tiny):
    """Within one run, calls that differ in CFG group, latent size (the dual-rate crop) or
    context-window frames each reuse their own features: interleaved in one run they give what
    each gives alone. (One shared store would hand each the last call's features.)"""
    import comfy.context_windows as cw

    model = reuse(tiny, clock=2)
    gen = torch.Generator().manual_seed(4)
    frame, crop = torch.randn(FRAMES, 4, H, W, generator=gen), torch.randn(FRAMES, 4, 8, 8, generator=gen)
    window = {"context_window": cw.IndexListContextWindow([4, 5])}
    identities = [(frame, [0], {}), (frame, [1], {}), (crop, [0], {}), (frame, [0], window)]
    pairs = [((0, x, g, e), (1, x * 0.9, g, e)) for x, g, e in identities]
    interleaved = _direct_calls(model, _RunFeatures(4, False), [full for full, _ in pairs] + [r for _, r in pairs])
    for mine, alone in zip(interleaved[len(pairs):], _alone(model, pairs)):
        torch.testing.assert_close(mine, alone, rtol=0, atol=0)
    # and reuse did happen: a reused call differs from a full one
    full_again = _direct_calls(model, _RunFeatures(4, False), [(0, frame * 0.9, [0], {})])[0]
    assert not torch.allclose(interleaved[len(pairs)], full_again)


def test_an_interrupted_run_leaves_nothing_for_the_next(tiny):
    import comfy.model_management

    model = reuse(tiny, clock=2)
    reference = sample(model)

    def stop(i, x0, x, n):
        if i == 2:
            comfy.model_management.interrupt_current_processing(True)
            comfy.model_management.throw_exception_if_processing_interrupted()

    try:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            sample(model, callback=stop)
    finally:
        comfy.model_management.interrupt_current_processing(False)
    assert host.state_of(model, host.FEATURE_CACHE_KEY) is None
    assert torch.equal(sample(model), reference)


def test_the_input_model_is_unchanged(tiny, ocd_nodes, run):
    options, wrappers = copy.deepcopy(tiny.model_options), copy.deepcopy(tiny.wrappers)
    before = sample(tiny)
    patched = run(ocd_nodes["OCD_FeatureReuse"], model=tiny, clock=2, recomputed_levels=1, start=0.0, end=1.0,
                  during_inversion=False).result[0]
    assert not torch.equal(sample(patched), before)
    assert tiny.model_options == options and tiny.wrappers == wrappers
    assert torch.equal(sample(tiny), before)


# ---------------------------------------------------------------- with the pack

def test_it_composes_with_cross_frame_attention_token_merging_and_the_dual_rate_sampler(tiny, ocd_nodes, run,
                                                                                     inference):
    crossed = run(ocd_nodes["OCD_CrossFrameAttention"], model=tiny, mode="full", window_size=2).result[0]
    merged, record = run(ocd_nodes["OCD_TokenMerge"], model=crossed, merge_ratio=0.5, stride_x=2, stride_y=2,
                         max_downsample="1", blocks="input,middle,output", foreground_protection=1.0, seed=0,
                         pairing="record").result
    reused = run(ocd_nodes["OCD_FeatureReuse"], model=merged, clock=2, recomputed_levels=1, start=0.0, end=1.0,
                 during_inversion=False).result[0]
    mask = torch.zeros(FRAMES, H * 8, W * 8)
    mask[:, 32:72, 40:88] = 1.0
    pos, neg = conds()
    out = run(ocd_nodes["OCD_DualRateKSampler"], model=reused, seed=1, steps=STEPS, cfg=5.0, sampler_name="euler",
              scheduler="normal", positive=pos, negative=neg, latent_image={"samples": torch.zeros(FRAMES, 4, H, W)},
              denoise=1.0, mask=mask, background_step_ratio=2.0, blend_point=0.25, crop_padding=1, blend="feathered")
    report = out.ui["ocd_run"][0]
    facts = next(s for s in report["nodes"].values() if s["name"] == "Feature Reuse (OCD)")["facts"]
    assert facts["reused_evaluations"] > 0 and facts["full_evaluations"] > 0
    assert facts["reused_evaluations"] + facts["full_evaluations"] == report["unet_evaluations"]
    assert torch.isfinite(out.result[0]["samples"]).all()
    # merging ran in the recomputed (highest-resolution) levels at every step: one plan per
    # step and frame of each merged layer, reused steps included
    layers = {key[1] for key in record.plans} if record.plans else set()
    assert len(record) == 0 or layers  # the record pairing is off here; merges were counted instead
    merge = next(s for s in report["nodes"].values() if s["name"] == "Object-Centric Token Merge (OCD)")
    assert any(name.startswith("output.3.0") for name in merge["merged_layers"])


def test_fusion_fuses_the_layers_that_run_and_counts_the_skipped(tiny, ocd_nodes, run, inference):
    latent = {"samples": torch.randn(FRAMES, 4, H, W, generator=torch.Generator().manual_seed(5)) / 0.18215}
    source, target = rm.random_text_conditioning(1, 64, 7), rm.random_text_conditioning(1, 64, 8)
    inverted, record = run(ocd_nodes["OCD_InvertLatents"], model=tiny, latent=latent, positive=source,
                           solver="dpmpp_2m", steps=6, scheduler="normal", cfg=1.0, inversion_depth=1.0,
                           record_attention=1.0, max_record_tokens=1024, record_cross_attention=False,
                           offload_record=False).result
    reused = reuse(tiny, clock=2)
    out = run(ocd_nodes["OCD_EditFromInversion"], model=reused, inversion=record, inverted_latent=inverted,
              positive=target, negative=source, cfg=1.0, self_replace=1.0)
    report = out.ui["ocd_run"][0]
    facts = next(s for s in report["nodes"].values() if s["name"] == "Feature Reuse (OCD)")["facts"]
    layers = set(host.self_attention_keys(tiny))
    points = host.network_family(host.network_of(tiny)).reuse_points(host.network_of(tiny), 1)
    skipped_layers = {layer for layer in layers if points.skips(layer)}
    reused_steps_ = facts["reused_steps"]
    assert reused_steps_ == [1, 3]
    fused = {(step, tuple(layer.split("."))) for step, layer in report["fused_pairs"]}
    assert len(fused) == 6 * len(layers) - len(reused_steps_) * len(skipped_layers)
    assert facts["fused_pairs_skipped"] == len(reused_steps_) * len(skipped_layers)
    assert report["warnings"] == []
