"""The inversion pipeline under ComfyUI core's context windows (issue 21): Invert Latents, Edit
From Inversion and the Dual-Rate Edit on a model patched by core's ContextWindowsManual (the
mini SD1.5, frames as the batch, dim 0) and WanContextWindowsManual (the small random Wan 2.1,
latent frames).

The attention record keeps each map with its window's absolute frames, once; the edit fuses
each window's own maps and refuses windows the inversion did not run in; the run report says
how the record splits over the windows."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from ocd.host import self_attention_keys
from tests.support import interface
from tests.support import random_wan as rw

# 6 latent frames of 8 x 8 (64 x 64 pixels); windows of 4 frames overlapping by 2
FRAMES, SIDE = 6, 8
WINDOWS = [(0, 1, 2, 3), (2, 3, 4, 5)]
# core 0.3.75's IndexListContextHandler.set_step compares sample_sigmas with the per-frame
# timestep batch by isclose, which needs steps + 1 == frames when the frames are the batch
STEPS = 5
INVERT, EDIT, DUAL = "Invert Latents (OCD)", "Edit From Inversion (OCD)", "Dual-Rate Edit From Inversion (OCD)"


def context_windows(run, model, schedule="standard_static"):
    from comfy_extras.nodes_context_windows import ContextWindowsManualNode

    return run(ContextWindowsManualNode, model=model, context_length=4, context_overlap=2, context_schedule=schedule,
               context_stride=1, closed_loop=False, fuse_method="pyramid", dim=0).result[0]


def node(ocd_nodes, run, node_id: str, **inputs):
    values = interface.defaults(node_id, ocd_nodes[node_id])
    values.update(inputs)
    return run(ocd_nodes[node_id], **values)


def facts(output, name: str) -> dict:
    report = output.ui["ocd_run"][0]
    return next(s for s in report["nodes"].values() if s["name"] == name)["facts"]


def run_report(output) -> dict:
    return output.ui["ocd_run"][0]


@pytest.fixture(scope="module")
def prompts(mini_sd15):
    _, clip, _ = mini_sd15
    with torch.inference_mode():
        return {name: clip.encode_from_tokens_scheduled(clip.tokenize(text)) for name, text in (
            ("source", "a man riding a bicycle"), ("target", "a robot riding a bicycle"), ("negative", "blurry"))}


@pytest.fixture(scope="module")
def latent():
    return {"samples": torch.randn(FRAMES, 4, SIDE, SIDE, generator=torch.Generator().manual_seed(5)) / 0.18215}


@pytest.fixture(scope="module")
def windowed_inversion(ocd_nodes, run, mini_sd15, prompts, latent):
    """The windowed model and its inversion, recording every step's self-attention (every layer:
    at most 64 queries) and the cross-attention."""
    windowed = context_windows(run, mini_sd15[0])
    with torch.inference_mode():
        out = node(ocd_nodes, run, "OCD_InvertLatents", model=windowed, latent=latent, positive=prompts["source"],
                   steps=STEPS, record_attention=1.0, max_record_tokens=SIDE * SIDE, record_cross_attention=True)
    return windowed, out


def test_the_record_is_kept_once_per_window_and_the_report_says_how_it_splits(ocd_nodes, run, mini_sd15, prompts,
                                                                               latent, windowed_inversion, inference):
    _, out = windowed_inversion
    _, record = out.result
    attention = record.extras["self_attention"]
    # per-frame self-attention: one call per layer and window, each window once, of its 4 frames
    assert len(attention.maps) == STEPS * len(self_attention_keys(mini_sd15[0]))
    assert all(attention.windows[key] == WINDOWS for key in attention.maps)
    assert all(p.shape[0] == 4 for maps in attention.maps.values() for p in maps)
    described = facts(out, INVERT)["attention_record"]
    assert described["windows"] == 2 and described["maps"] == 2 * len(attention.maps)
    assert 0 < described["largest_window_MiB"] < described["MiB"]
    assert described["largest_window_MiB"] == pytest.approx(described["MiB"] / 2, abs=0.011)  # windows of equal size
    assert run_report(out)["warnings"] == []
    # without windows the report has no split to show
    plain = node(ocd_nodes, run, "OCD_InvertLatents", model=mini_sd15[0], latent=latent, positive=prompts["source"],
                 steps=STEPS, record_attention=0.2, max_record_tokens=SIDE * SIDE)
    assert "windows" not in facts(plain, INVERT)["attention_record"]

    # the cross-attention record: each window fills its own frames of the clip's map
    cross = record.extras["cross_attention"]
    assert cross.maps and all(p.shape[0] == FRAMES for p in cross.maps.values())  # not a window's 4
    for p in cross.maps.values():
        torch.testing.assert_close(p.float().sum(-1), torch.ones(p.shape[:2]), atol=3e-3, rtol=0)
    (mask,) = node(ocd_nodes, run, "OCD_CrossAttentionMask", inversion=record, clip=mini_sd15[1],
                   source_prompt="a man riding a bicycle", words="bicycle", threshold=0.5, dilation=0).result
    assert mask.shape == (FRAMES, SIDE * 8, SIDE * 8)


def test_fusing_a_windowed_edits_own_record_gives_that_edit(prompts, windowed_inversion, inference):
    """Each window's attention calls fuse the maps recorded in that window: fusing what a windowed
    edit recorded of its own attention gives that edit again; fusing the inversion's (the
    source prompt's) changes it."""
    from ocd.attention.comfy_patches import set_attention_hook
    from ocd.attention.fusion import AttentionRecord, RecordingHook
    from ocd.inversion import comfy_passes

    windowed, out = windowed_inversion
    inverted, record = out.result
    inverted = inverted["samples"]
    target = prompts["target"]
    own = AttentionRecord(frozenset(range(STEPS)), SIDE * SIDE, torch.float32)
    plain = comfy_passes._run(set_attention_hook(windowed, RecordingHook(own)), inverted, record.generation_sigmas,
                              record.solver, target, None, 1.0, None)
    assert own.ran_in == {step: set(WINDOWS) for step in range(STEPS)}
    again, hook = comfy_passes.edit(windowed, dataclasses.replace(record, extras={"self_attention": own}), inverted,
                                    target, None, 1.0, self_replace=1.0)
    torch.testing.assert_close(again, plain, atol=1e-4, rtol=1e-4)
    # every window's every call found its own map: as many fusions as maps, none missing
    assert len(hook.fused) == sum(len(maps) for maps in own.maps.values()) and not hook.missing
    fused, _ = comfy_passes.edit(windowed, record, inverted, target, None, 1.0, self_replace=1.0)
    assert (fused - plain).abs().max() > 1e-2


def test_an_edit_in_windows_the_inversion_did_not_run_in_is_refused_by_name(ocd_nodes, run, mini_sd15, prompts,
                                                                             latent, windowed_inversion, inference):
    model = mini_sd15[0]
    _, out = windowed_inversion
    inverted, record = out.result
    edit = dict(inversion=record, inverted_latent=inverted, positive=prompts["target"], negative=prompts["negative"],
                self_replace=1.0)
    with pytest.raises(ValueError, match=r"input 'inversion': its attention record of step \d was taken in context "
                       r"windows of frames 0-3; frames 2-5, but this edit attends in the whole clip"):
        node(ocd_nodes, run, "OCD_EditFromInversion", model=model, **edit)
    # the uniform schedules move their windows from step to step: an editing step's windows are
    # not those its mirror inversion step ran in (another window's maps would fit the shapes)
    uniform = context_windows(run, model, "standard_uniform")
    inverted, record = node(ocd_nodes, run, "OCD_InvertLatents", model=uniform, latent=latent,
                            positive=prompts["source"], steps=STEPS, record_attention=1.0,
                            max_record_tokens=SIDE * SIDE // 4).result
    with pytest.raises(ValueError, match=r"input 'inversion'.*context windows.*standard_static or batched"):
        node(ocd_nodes, run, "OCD_EditFromInversion", model=uniform, **dict(edit, inversion=record,
                                                                              inverted_latent=inverted))


def test_the_example_inversion_pipeline_runs_under_context_windows(ocd_nodes, run, mini_sd15, prompts, latent,
                                                                    inference):
    """example_workflows/ocd_inversion_ocd_sd15.json's chain (sparse-causal cross-frame attention,
    token merging recorded by the inversion and replayed by the edits, fusion, the dual-rate
    edit) on a windowed model: every fused call finds its window's map, nothing warns."""
    mask = torch.zeros(1, SIDE * 8, SIDE * 8)
    mask[:, 24:40, 24:40] = 1.0
    crossed = node(ocd_nodes, run, "OCD_CrossFrameAttention", model=context_windows(run, mini_sd15[0]),
                   mode="sparse_causal", window_size=2).result[0]
    recording, merges = node(ocd_nodes, run, "OCD_TokenMerge", model=crossed, mask=mask, pairing="record").result
    out = node(ocd_nodes, run, "OCD_InvertLatents", model=recording, latent=latent, positive=prompts["source"],
               steps=STEPS, max_record_tokens=SIDE * SIDE)
    inverted, record = out.result
    assert run_report(out)["warnings"] == []
    attention = record.extras["self_attention"]
    # sparse-causal attention attends in two calls per window (pools of one and two frames)
    assert all(attention.windows[key] == [WINDOWS[0]] * 2 + [WINDOWS[1]] * 2 for key in attention.maps)
    assert facts(out, INVERT)["attention_record"]["windows"] == 2
    assert {k[2] for k in merges.plans if isinstance(k[2], int)} == set(range(FRAMES))

    replaying, _ = node(ocd_nodes, run, "OCD_TokenMerge", model=crossed, mask=mask, pairing="replay",
                        merge_record=merges).result
    common = dict(model=replaying, inversion=record, inverted_latent=inverted, positive=prompts["target"],
                  negative=prompts["negative"])
    edited = node(ocd_nodes, run, "OCD_EditFromInversion", **common)
    assert run_report(edited)["warnings"] == []
    assert {step for step, _ in run_report(edited)["fused_pairs"]} == {0, 1, 2, 3}  # round(0.8 x 5)
    unfused = node(ocd_nodes, run, "OCD_EditFromInversion", **dict(common, self_replace=0.0)).result[0]
    assert not torch.equal(edited.result[0]["samples"], unfused["samples"])

    # the dual-rate edit with a crop samples its branches over parts of the schedule, which core
    # 0.3.75's context windows cannot step through over a UNet's frames: refused by name, before
    # any work (without a crop it is one pass over the whole schedule, which runs)
    with pytest.raises(ValueError, match=r"input 'model': runs under core's context windows.*parts of the "
                       r"schedule: use Edit From Inversion \(OCD\) with the mask as its blend_mask"):
        node(ocd_nodes, run, "OCD_DualRateEditFromInversion", mask=mask, crop_padding=0, **common)
    whole = node(ocd_nodes, run, "OCD_DualRateEditFromInversion", mask=torch.ones(1, SIDE * 8, SIDE * 8), **common)
    assert facts(whole, DUAL)["dual_rate"]["mode"] == "ordinary" and run_report(whole)["fused_pairs"]
    assert whole.result[0]["samples"].shape == (FRAMES, 4, SIDE, SIDE)
    # and so is a schedule of another length than the frames' (for any sampler, OCD's or core's)
    with pytest.raises(ValueError, match=r"input 'steps': 3 steps with the model under core's context windows over "
                       r"its 6 frames: .*set steps to 5"):
        node(ocd_nodes, run, "OCD_InvertLatents", model=recording, latent=latent, positive=prompts["source"], steps=3)


# ---------------------------------------------------------------------------------------------
# Wan: latent frames (dim 2)
# ---------------------------------------------------------------------------------------------

WAN_FRAMES, WAN_SIZE = 17, 64  # 5 latent frames of 4 x 4 tokens; windows of 3 latent frames overlapping by 1
WAN_WINDOWS = [(0, 1, 2), (2, 3, 4)]
WAN_WINDOW_TOKENS = 3 * 16


@pytest.fixture(scope="module")
def wan(wan21_small):
    from comfy_extras.nodes_model_advanced import ModelSamplingSD3

    return ModelSamplingSD3().patch(wan21_small, 1.0)[0]  # shift 1, as in test_wan_inversion.py


def wan_windows(run, model):
    from comfy_extras.nodes_context_windows import WanContextWindowsManualNode

    return run(WanContextWindowsManualNode, model=model, context_length=9, context_overlap=4,
               context_schedule="standard_static", context_stride=1, closed_loop=False,
               fuse_method="pyramid").result[0]


def test_wan_inversion_and_edit_under_wan_context_windows(ocd_nodes, run, wan, inference):
    from ocd.attention.comfy_patches import set_attention_hook
    from ocd.attention.fusion import AttentionRecord, RecordingHook
    from ocd.inversion import comfy_passes

    source = torch.randn(1, 16, 5, WAN_SIZE // 8, WAN_SIZE // 8, generator=torch.Generator().manual_seed(5))
    windowed = wan_windows(run, wan)
    invert = dict(latent={"samples": source}, positive=rw.text_conditioning("a red car"), solver="dpmpp_2m", steps=8,
                  scheduler="simple", cfg=1.0)
    edit = dict(positive=rw.text_conditioning("a red car"), negative=rw.text_conditioning(""), cfg=1.0,
                self_replace=0.0)
    out = node(ocd_nodes, run, "OCD_InvertLatents", model=windowed, record_attention=1.0,
               max_record_tokens=WAN_WINDOW_TOKENS, record_cross_attention=True, **invert)
    inverted, record = out.result
    attention = record.extras["self_attention"]
    assert len(attention.maps) == 8 * 2 and all(attention.windows[key] == WAN_WINDOWS for key in attention.maps)
    assert all(p.shape == (1, 3, WAN_WINDOW_TOKENS, WAN_WINDOW_TOKENS) for ps in attention.maps.values() for p in ps)
    described = facts(out, INVERT)["attention_record"]
    assert described["windows"] == 2 and 0 < described["largest_window_MiB"] < described["MiB"]
    # the cross-attention record covers the clip's 5 latent frames, a mask its 17 video frames
    cross = record.extras["cross_attention"]
    assert all(p.shape == (5, 16, 16) for p in cross.maps.values())

    # windowed inversion, windowed edit with the source prompt: the source again, as without windows
    back = node(ocd_nodes, run, "OCD_EditFromInversion", model=windowed, inversion=record, inverted_latent=inverted,
                **edit).result[0]["samples"]
    plain_inverted, plain_record = node(ocd_nodes, run, "OCD_InvertLatents", model=wan, record_attention=0.0,
                                        **invert).result
    plain_back = node(ocd_nodes, run, "OCD_EditFromInversion", model=wan, inversion=plain_record,
                      inverted_latent=plain_inverted, **edit).result[0]["samples"]
    error = lambda x: float((x - source).pow(2).mean().sqrt() / source.std())  # noqa: E731
    assert back.shape == source.shape and error(back) < 0.25 and error(plain_back) < 0.25, (error(back),
                                                                                            error(plain_back))
    assert not torch.allclose(inverted["samples"], plain_inverted["samples"], atol=1e-3)  # the windows acted

    # fusion: each window fuses its own maps (a windowed edit's own record gives that edit again)
    target = rw.text_conditioning("a blue bird")
    own = AttentionRecord(frozenset(range(8)), WAN_WINDOW_TOKENS, torch.float32)
    plain = comfy_passes._run(set_attention_hook(windowed, RecordingHook(own)), inverted["samples"],
                              record.generation_sigmas, "dpmpp_2m", target, None, 1.0, None)
    again, hook = comfy_passes.edit(windowed, dataclasses.replace(record, extras={"self_attention": own}),
                                    inverted["samples"], target, None, 1.0, self_replace=1.0)
    torch.testing.assert_close(again, plain, atol=1e-4, rtol=1e-4)
    assert len(hook.fused) == 8 * 2 * 2 and not hook.missing
    fused = node(ocd_nodes, run, "OCD_EditFromInversion", model=windowed, inversion=record, inverted_latent=inverted,
                 **dict(edit, positive=target, self_replace=1.0))
    assert run_report(fused)["warnings"] == [] and (fused.result[0]["samples"] - plain).abs().max() > 1e-2
    # and the dual-rate edit's full steps fuse them too
    mask = torch.zeros(WAN_FRAMES, WAN_SIZE, WAN_SIZE)
    mask[:, 16:32, 16:32] = 1.0
    dual = node(ocd_nodes, run, "OCD_DualRateEditFromInversion", model=windowed, inversion=record,
                inverted_latent=inverted, mask=mask, crop_padding=0, **dict(edit, positive=target, self_replace=1.0))
    assert run_report(dual)["fused_pairs"] and dual.result[0]["samples"].shape == source.shape
    assert torch.isfinite(dual.result[0]["samples"]).all()
