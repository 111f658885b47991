"""The run report (ocd/report.py, ocd/comfy_report.py) of the pack's nodes, read as a test reads
it: the sampler nodes' ``ocd_run`` UI output, and the log line when core's sampler runs the
pack's patches. Every number is checked against what the run must have done."""
from __future__ import annotations

import logging

import pytest
import torch

from tests.support import interface
from tests.support import random_models as rm

FRAMES, H, W = 2, 16, 16
STEPS = 4


@pytest.fixture(scope="module")
def model(comfy):
    return rm.build_model_patcher(rm.tiny_unet_config(), seed=21)


def conds():
    return rm.random_text_conditioning(1, 64, 0), rm.random_text_conditioning(1, 64, 1)


def object_mask(frames=FRAMES):
    """Latent rows 4..8, columns 5..10 of 16x16 (in image pixels): 30 of 256 tokens."""
    m = torch.zeros(frames, H * 8, W * 8)
    m[:, 32:72, 40:88] = 1.0
    return m


def defaults(node_cls, node_id):
    return interface.defaults(node_id, node_cls)


def run_report(output) -> dict:
    """The run report a sampler node returned."""
    ui = output.ui
    assert ui and "ocd_run" in ui and "ocd_report" in ui, ui
    return ui["ocd_run"][0]


def section(report: dict, name: str) -> dict:
    found = [s for s in report["nodes"].values() if s["name"] == name]
    assert len(found) == 1, (name, list(report["nodes"]))
    return found[0]


def patched(ocd_nodes, run, base, merge=True, mask=True, pairing="off", record=None, **merge_inputs):
    crossed = run(ocd_nodes["OCD_CrossFrameAttention"], model=base, mode="full", window_size=2).result[0]
    if not merge:
        return crossed, None
    inputs = defaults(ocd_nodes["OCD_TokenMerge"], "OCD_TokenMerge")
    inputs.update(pairing=pairing, **merge_inputs)
    if mask:
        inputs["mask"] = object_mask()
    if record is not None:
        inputs["merge_record"] = record
    return run(ocd_nodes["OCD_TokenMerge"], model=crossed, **inputs).result


def dual_rate(ocd_nodes, run, model, mask, **overrides):
    node = ocd_nodes["OCD_DualRateKSampler"]
    pos, neg = conds()
    values = defaults(node, "OCD_DualRateKSampler")
    values.update(model=model, seed=3, steps=STEPS, positive=pos, negative=neg, mask=mask, crop_padding=1,
                  sampler_name="euler", scheduler="normal",
                  latent_image={"samples": torch.zeros(FRAMES, 4, H, W)})
    values.update(overrides)
    return run(node, **values)


def test_dual_rate_report_counts_phases_crop_merges_and_pools(ocd_nodes, run, model, inference):
    merged, _ = patched(ocd_nodes, run, model)
    out = dual_rate(ocd_nodes, run, merged, object_mask())
    report = run_report(out)
    sampler = section(report, "Dual-Rate KSampler (OCD)")
    plan = sampler["facts"]["dual_rate"]
    assert plan["mode"] == "dual" and plan["latent"] == [H, W]
    crop_h, crop_w = plan["crop"]
    assert crop_h < H and crop_w < W
    phases = report["phases"]
    assert {name: p["evaluations"] for name, p in phases.items()} == plan["predicted_evaluations"]
    assert report["unet_evaluations"] == sum(plan["predicted_evaluations"].values())
    # latent pixels: frames x the phase's latent size per evaluation
    assert phases["foreground"]["latent_pixels"] == phases["foreground"]["evaluations"] * FRAMES * crop_h * crop_w
    assert phases["joint"]["latent_pixels"] == phases["joint"]["evaluations"] * FRAMES * H * W
    # sigma ranges: the branches start at the top, the joint phase ends at the bottom
    assert phases["foreground"]["sigma_max"] == phases["background"]["sigma_max"] > phases["joint"]["sigma_max"]
    assert all(p["seconds"] > 0 for p in phases.values())

    merge = section(report, "Object-Centric Token Merge (OCD)")
    assert merge["facts"]["merge_ratio"] == 0.5 and merge["facts"]["mask"] is True
    # queries of the highest-resolution layers, on the whole frame and on the crop: half of
    # each frame's tokens merged away; with protection 1 and a 14% object no object query of
    # the whole frame is merged (in the crop the object is most of the tokens)
    full_grid = {layer: m for layer, m in merge["merged_layers"].items() if layer.endswith(f" {H}x{W}")}
    crop_grid = {layer: m for layer, m in merge["merged_layers"].items() if layer.endswith(f" {crop_h}x{crop_w}")}
    assert full_grid and crop_grid and len(full_grid) + len(crop_grid) == len(merge["merged_layers"])
    for layer, m in merge["merged_layers"].items():
        assert m["merged_share"] == pytest.approx(0.5, abs=0.01), layer
    for layer, m in full_grid.items():
        assert m["object_unmerged_share"] == 1.0, layer
        assert m["object_tokens_per_set"] == 30 and m["tokens_per_set"] == H * W
    # the key/value pool of all frames merged across frames
    assert merge["pool_layers"] and all(m["merged_share"] == pytest.approx(0.5, abs=0.01)
                                        for m in merge["pool_layers"].values())
    cross = section(report, "Cross-Frame Attention (OCD)")
    assert cross["facts"]["mode"] == "full"
    # every self-attention layer's pool: both frames' keys (full mode), at the layer's size
    assert cross["facts"]["kv_pool_tokens"][f"input.1.0 {H}x{W}"] == FRAMES * H * W
    assert cross["facts"]["kv_pool_tokens"][f"input.1.0 {crop_h}x{crop_w}"] == FRAMES * crop_h * crop_w
    assert report["warnings"] == []
    text = out.ui["ocd_report"][0]
    assert "foreground:" in text and "dual_rate:" in text


def test_plain_merging_is_seen_as_merging_object_tokens(ocd_nodes, run, model, inference):
    merged, _ = patched(ocd_nodes, run, model, foreground_protection=0.0)
    report = run_report(dual_rate(ocd_nodes, run, merged, object_mask(), blend_point=1.0))
    merge = section(report, "Object-Centric Token Merge (OCD)")
    shares = [m["object_unmerged_share"] for m in merge["merged_layers"].values()]
    assert shares and min(shares) < 1.0  # without protection the object's queries are merged too


@pytest.mark.parametrize("mask, warning", [
    (torch.ones(1, 64, 64), "not object-centric in this run: the crop covers the whole frame"),
    (torch.zeros(1, 64, 64), "not object-centric in this run: the mask is empty"),
])
def test_a_dual_rate_run_that_is_not_object_centric_says_so(ocd_nodes, run, model, inference, caplog, mask,
                                                            warning):
    with caplog.at_level(logging.WARNING, logger="ocd.report"):
        report = run_report(dual_rate(ocd_nodes, run, model, mask))
    assert any(warning in w for w in report["warnings"]), report["warnings"]
    assert warning in caplog.text


def test_token_merge_without_mask_or_layers_says_what_it_skipped(ocd_nodes, run, model, inference):
    no_mask, _ = patched(ocd_nodes, run, model, mask=False)
    report = run_report(dual_rate(ocd_nodes, run, no_mask, object_mask(), blend_point=1.0))
    assert any("no mask is connected" in w for w in report["warnings"])
    nothing, _ = patched(ocd_nodes, run, model, blocks="middle", max_downsample="1")
    report = run_report(dual_rate(ocd_nodes, run, nothing, object_mask(), blend_point=1.0))
    merge = section(report, "Object-Centric Token Merge (OCD)")
    assert not merge["merged_layers"] and any("merged no layer" in w for w in merge["warnings"])


def test_core_ksampler_runs_the_patches_with_their_own_report(ocd_nodes, run, model, inference, caplog):
    import nodes

    merged, _ = patched(ocd_nodes, run, model)
    pos, neg = conds()
    with caplog.at_level(logging.INFO, logger="ocd.report"):
        nodes.KSampler().sample(merged, 1, 3, 5.0, "euler", "normal", pos, neg,
                                {"samples": torch.zeros(FRAMES, 4, H, W)})
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("OCD run report")]
    assert len(lines) == 1, lines  # one line per sampling run
    assert "sampling 3 evals" in lines[0] and "merged layer(s)" in lines[0]


@pytest.fixture(scope="module")
def inverted(model):
    latent = torch.randn(FRAMES, 4, H, W, generator=torch.Generator().manual_seed(4)) / 0.18215
    return {"samples": latent}, rm.random_text_conditioning(1, 64, 5)


def invert(ocd_nodes, run, model, latent, cond, **overrides):
    node = ocd_nodes["OCD_InvertLatents"]
    values = defaults(node, "OCD_InvertLatents")
    values.update(model=model, latent=latent, positive=cond, steps=STEPS)
    values.update(overrides)
    return run(node, **values)


def edit(ocd_nodes, run, model, record, inverted_latent, **overrides):
    node = ocd_nodes["OCD_EditFromInversion"]
    values = defaults(node, "OCD_EditFromInversion")
    pos, neg = conds()
    values.update(model=model, inversion=record, inverted_latent=inverted_latent, positive=pos, negative=neg)
    values.update(overrides)
    return run(node, **values)


def test_inversion_and_edit_report_the_record_and_every_fused_pair(ocd_nodes, run, model, inverted, inference):
    from ocd.host import self_attention_keys

    latent, cond = inverted
    out = invert(ocd_nodes, run, model, latent, cond)
    (inverted_latent, record), report = out.result, run_report(out)
    facts = section(report, "Invert Latents (OCD)")["facts"]
    described = facts["attention_record"]
    attention = record.extras["self_attention"]
    assert described["steps"] == [0, 1, 2]  # round(0.8 x 4)
    assert described["MiB"] == round(attention.nbytes / 2**20, 2) and described["MiB"] > 0
    assert described["dtype"] == "float16" and described["device"] == "cpu"
    assert report["phases"]["inversion"]["evaluations"] == STEPS
    # ascending sigmas: the inversion climbs from the bottom of the schedule
    assert report["phases"]["inversion"]["sigma_min"] < 0.01

    edited = edit(ocd_nodes, run, model, record, inverted_latent)
    report = run_report(edited)
    layers = [".".join(map(str, key)) for key in self_attention_keys(model)]
    expected = sorted([step, layer] for step in (0, 1, 2) for layer in layers)
    assert report["fused_pairs"] == expected
    assert section(report, "Edit From Inversion (OCD)")["facts"]["fused_steps_asked"] == [0, 1, 2]
    assert report["phases"]["edit"]["evaluations"] == STEPS and report["warnings"] == []


def test_an_empty_record_is_refused_and_a_short_one_is_reported(ocd_nodes, run, model, inverted, inference):
    latent, cond = inverted
    inverted_latent, empty = invert(ocd_nodes, run, model, latent, cond, max_record_tokens=1).result
    with pytest.raises(ValueError, match="input 'self_replace'.*record is empty"):
        edit(ocd_nodes, run, model, empty, inverted_latent)
    inverted_latent, short = invert(ocd_nodes, run, model, latent, cond, record_attention=0.5).result
    report = run_report(edit(ocd_nodes, run, model, short, inverted_latent, self_replace=1.0))
    assert {step for step, _ in report["fused_pairs"]} == {0, 1}
    assert any("steps 2..3 use the edit's own attention" in w for w in report["warnings"]), report["warnings"]


def test_fusion_keeps_the_blend_mask_in_merged_layers(ocd_nodes, run, model, inverted, inference):
    """A blend mask covering everything leaves every query its own attention: the fused edit
    is the unfused one, merged layers included (before, their mask was dropped)."""
    latent, cond = inverted
    recording, record = patched(ocd_nodes, run, model, pairing="record")
    replaying, _ = patched(ocd_nodes, run, model, pairing="replay", record=record)
    inverted_latent, inversion = invert(ocd_nodes, run, recording, latent, cond).result
    full = torch.ones(1, H * 8, W * 8)
    masked = edit(ocd_nodes, run, replaying, inversion, inverted_latent, blend_mask=full)
    unfused = edit(ocd_nodes, run, replaying, inversion, inverted_latent, self_replace=0.0).result[0]["samples"]
    report = run_report(masked)
    merged_layers = section(report, "Object-Centric Token Merge (OCD)")["merged_layers"]
    fused_layers = {layer for _, layer in report["fused_pairs"]}
    assert fused_layers & {name.split(" ")[0] for name in merged_layers}  # fusion ran in merged layers
    torch.testing.assert_close(masked.result[0]["samples"], unfused, rtol=1e-3, atol=1e-3)
    plain = edit(ocd_nodes, run, replaying, inversion, inverted_latent).result[0]["samples"]
    assert not torch.allclose(plain, unfused, rtol=1e-3, atol=1e-3)  # without the mask fusion does change it
    assert any("covers every pixel" in w for w in report["warnings"])
