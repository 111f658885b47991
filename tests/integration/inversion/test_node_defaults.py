"""The whole inversion edit with every node's default values (the cases the clone bug hid in:
nothing was recorded with the defaults, so nothing was fused, and nothing said so): Cross-Frame
Attention, Token Merge (record, then replay), Invert Latents, Edit From Inversion and the
Dual-Rate Edit, each with the widget values a new node has in the UI."""
from __future__ import annotations

import pytest
import torch

from tests.support import interface
from tests.support import random_models as rm

FRAMES, SIDE = 2, 32  # latent; 256x256 frames


@pytest.fixture(scope="module")
def model(comfy):
    return rm.build_model_patcher(rm.tiny_unet_config(), seed=51)


def defaults(ocd_nodes, node_id: str, **inputs) -> dict:
    values = interface.defaults(node_id, ocd_nodes[node_id])
    values.update(inputs)
    return values


def run_report(output) -> dict:
    return output.ui["ocd_run"][0]


def test_the_inversion_edit_with_every_default_records_merges_and_fuses(ocd_nodes, run, model, inference):
    mask = torch.zeros(1, SIDE * 8, SIDE * 8)
    mask[:, 64:160, 80:176] = 1.0  # 14% of the frame
    source, target, negative = (rm.random_text_conditioning(1, 64, s) for s in (1, 2, 3))
    latent = {"samples": torch.randn(FRAMES, 4, SIDE, SIDE, generator=torch.Generator().manual_seed(5)) / 0.18215}

    crossed = run(ocd_nodes["OCD_CrossFrameAttention"],
                  **defaults(ocd_nodes, "OCD_CrossFrameAttention", model=model)).result[0]
    recording, record = run(ocd_nodes["OCD_TokenMerge"], **defaults(
        ocd_nodes, "OCD_TokenMerge", model=crossed, mask=mask, pairing="record")).result
    inverted = run(ocd_nodes["OCD_InvertLatents"], **defaults(
        ocd_nodes, "OCD_InvertLatents", model=recording, latent=latent, positive=source, steps=5))
    inverted_latent, inversion = inverted.result
    report = run_report(inverted)
    assert report["warnings"] == []
    assert report["nodes"]  # the inversion saw both patches
    merge = next(s for s in report["nodes"].values() if s["name"] == "Object-Centric Token Merge (OCD)")
    assert merge["merged_layers"] and all(m["object_unmerged_share"] == 1.0 for m in merge["merged_layers"].values())
    attention = inversion.extras["self_attention"]
    assert attention.maps and {step for step, _ in attention.maps} == {0, 1, 2, 3}  # round(0.8 x 5)
    plans = dict(record.plans)
    assert plans

    replaying, same = run(ocd_nodes["OCD_TokenMerge"], **defaults(
        ocd_nodes, "OCD_TokenMerge", model=crossed, mask=mask, pairing="replay", merge_record=record)).result
    assert same is record
    common = dict(model=replaying, inversion=inversion, inverted_latent=inverted_latent, positive=target,
                  negative=negative)
    edited = run(ocd_nodes["OCD_EditFromInversion"], **defaults(ocd_nodes, "OCD_EditFromInversion", **common))
    report = run_report(edited)
    assert report["warnings"] == []
    assert {step for step, _ in report["fused_pairs"]} == {0, 1, 2, 3}
    unfused = run(ocd_nodes["OCD_EditFromInversion"], **defaults(ocd_nodes, "OCD_EditFromInversion",
                                                                self_replace=0.0, **common)).result[0]
    assert not torch.equal(edited.result[0]["samples"], unfused["samples"])  # the fusion changed the edit

    dual = run(ocd_nodes["OCD_DualRateEditFromInversion"], **defaults(
        ocd_nodes, "OCD_DualRateEditFromInversion", mask=mask, **common))
    report = run_report(dual)
    assert report["warnings"] == []
    facts = next(s for s in report["nodes"].values() if s["name"] == "Dual-Rate Edit From Inversion (OCD)")["facts"]
    assert facts["dual_rate"]["mode"] == "dual" and "foreground_start" in report["phases"]
    assert report["fused_pairs"]
    # replay changed nothing in the record; the edits merged with it
    assert record.plans.keys() == plans.keys() and all(record.plans[k] is plans[k] for k in plans)
