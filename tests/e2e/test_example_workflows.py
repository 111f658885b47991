"""Every workflow in example_workflows/ runs through the real server (shrunk to test size) and
does what it is for, read from the saved video and the run reports of its OCD nodes
(``ocd_run`` in /history)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.conftest import MINI_CHECKPOINT
from tests.support.server import execution_error
from tests.support.workflow import ui_to_api

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((REPO_ROOT / "example_workflows").glob("*.json"))
pytestmark = pytest.mark.e2e

# Test-size settings, by input name, applied to whatever node has that input.
SHRINK = {"ckpt_name": MINI_CHECKPOINT, "frame_load_cap": 2, "steps": 2, "width": 64, "height": 0}
# Frame widths where the workflow's point needs more latent pixels than 64 px give: the
# dual-rate crop must be smaller than the frame (the mini checkpoint's UNet aligns to 2).
WIDTH = {"ocd_object_centric_edit_sd15": 256}


def shrink(prompt: dict, width: int) -> dict:
    for node in prompt.values():
        for name, value in dict(SHRINK, width=width).items():
            if name in node["inputs"] and not isinstance(node["inputs"][name], list):
                if name in ("width", "height") and node["class_type"] != "OCD_LoadVideo":
                    continue
                node["inputs"][name] = value
    return prompt


def test_the_example_workflows_are_generated_from_the_script():
    from scripts.make_example_workflows import WORKFLOWS as SPECS

    assert {p.stem for p in WORKFLOWS} == set(SPECS)
    for path in WORKFLOWS:
        assert json.loads(path.read_text()) == SPECS[path.stem], f"{path.name}: run scripts/make_example_workflows.py"


def reports(prompt: dict, entry: dict) -> dict:
    """class_type -> the run report of that OCD sampler node (one node of each in a template)."""
    found = {}
    for node_id, output in entry["outputs"].items():
        if "ocd_run" in output:
            found[prompt[node_id]["class_type"]] = output["ocd_run"][0]
    return found


def part(report: dict, node_id: str) -> dict:
    """The part of a run report that belongs to graph node ``node_id``."""
    found = [s for s in report["nodes"].values() if s["node_id"] == node_id]
    assert found, f"node {node_id} is not in the run report: {sorted(report['nodes'])}"
    return found[0]


def saved_videos(server, entry) -> list[Path]:
    items = [item for out in entry["outputs"].values() for item in out.get("images", [])
             if item["filename"].endswith((".mp4", ".webp", ".gif"))]
    return [server.base / item["type"] / item["subfolder"] / item["filename"] for item in items]


def node_of(prompt: dict, class_type: str, **inputs) -> str:
    ids = [i for i, n in prompt.items() if n["class_type"] == class_type
           and all(n["inputs"].get(k) == v for k, v in inputs.items())]
    assert len(ids) == 1, (class_type, inputs, ids)
    return ids[0]


def check_saved_video(server, entry, frames: int, width: int) -> None:
    """One video saved, with the loaded frames at the loaded width."""
    from ocd.video.codec import probe_video

    (video,) = saved_videos(server, entry)
    info = probe_video(str(video))
    assert (info.frame_count, info.width) == (frames, width)


def check_inversion_edit(prompt: dict, runs: dict) -> None:
    """The inversion records attention and the edit fuses every recorded layer at the steps
    self_replace asks for, with the cross-attention mask as blend mask."""
    invert, edit = runs["OCD_InvertLatents"], runs["OCD_EditFromInversion"]
    record = part(invert, node_of(prompt, "OCD_InvertLatents"))["facts"]["attention_record"]
    assert record["maps"] > 0 and record["layers"] > 0
    facts = part(edit, node_of(prompt, "OCD_EditFromInversion"))["facts"]
    assert facts.get("blend_mask") is True, facts
    asked = facts.get("fused_steps_asked")
    assert asked == [0, 1]  # round(0.8 x 2 steps)
    assert len(edit["fused_pairs"]) == len(asked) * facts["fused_layers_recorded"]
    assert {step for step, _ in edit["fused_pairs"]} == set(asked)


def promised_unmerged_share(m: dict, ratio: float) -> float:
    """What full protection promises of a frame's object queries: none is merged while a
    background source remains (at most a quarter of the tokens are destinations); a merged
    object source also takes its (object) destination with it."""
    tokens, objects = m["tokens_per_set"], m["object_tokens_per_set"]
    background_sources = tokens - objects - tokens / 4
    forced = max(0.0, int(tokens * ratio) - background_sources)
    return max(0.0, 1.0 - 2 * forced / objects)


def check_object_centric_edit(prompt: dict, runs: dict) -> None:
    """Object-centric merging (the saliency mask connected) recorded in the inversion and
    replayed in the dual-rate edit, which runs a crop of the object."""
    invert, edit = runs["OCD_InvertLatents"], runs["OCD_DualRateEditFromInversion"]
    recording = part(invert, node_of(prompt, "OCD_TokenMerge", pairing="record"))
    part(invert, node_of(prompt, "OCD_CrossFrameAttention"))
    ratio = recording["facts"]["merge_ratio"]
    assert recording["facts"]["mask"] is True and recording["facts"]["foreground_protection"] == 1.0
    assert recording["merged_layers"], "the inversion merged no layer"
    for layer, m in recording["merged_layers"].items():
        assert m["merged_share"] == pytest.approx(ratio, abs=0.01), layer
        assert m["object_tokens_per_set"] > 0, f"{layer}: no object tokens (is the mask connected?)"
        assert m["object_unmerged_share"] >= promised_unmerged_share(m, ratio) - 1e-9, (layer, m)
    assert recording["warnings"] == []

    replaying = part(edit, node_of(prompt, "OCD_TokenMerge", pairing="replay"))
    assert replaying["merged_layers"] and replaying["facts"]["mask"] is True
    sampler = part(edit, node_of(prompt, "OCD_DualRateEditFromInversion"))
    plan = sampler["facts"]["dual_rate"]
    assert plan["mode"] == "dual", sampler["warnings"]
    assert plan["crop"][0] * plan["crop"][1] < plan["latent"][0] * plan["latent"][1]
    phases = {name: p["evaluations"] for name, p in edit["phases"].items()}
    assert phases == dict(plan["predicted_evaluations"], foreground_start=2)  # the crop inverted first
    # fusion in the whole-frame phases only: steps the background and joint phases take
    asked = set(sampler["facts"]["fused_steps_asked"])
    assert {step for step, _ in edit["fused_pairs"]} <= asked and edit["fused_pairs"]


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_example_workflow_does_what_it_is_for(server, object_info, path):
    width = WIDTH.get(path.stem, SHRINK["width"])
    prompt = shrink(ui_to_api(json.loads(path.read_text()), object_info), width)
    entry = server.run(prompt)
    assert entry["status"]["status_str"] == "success", execution_error(entry)
    check_saved_video(server, entry, SHRINK["frame_load_cap"], width)
    runs = reports(prompt, entry)
    if path.stem == "ocd_inversion_edit_sd15":
        check_inversion_edit(prompt, runs)
    elif path.stem == "ocd_object_centric_edit_sd15":
        check_object_centric_edit(prompt, runs)
    else:
        assert runs == {}  # no OCD sampler in these


def _broken(prompt: dict, edit) -> dict:
    broken = json.loads(json.dumps(prompt))
    edit(broken)
    return broken


def _disconnect_masks(prompt: dict) -> None:
    for node in prompt.values():
        if node["class_type"] == "OCD_TokenMerge":
            node["inputs"].pop("mask", None)


def _remove_token_merging(prompt: dict) -> None:
    """Every input fed by a Token Merge node is fed by that node's own model input instead."""
    merges = {i: n for i, n in prompt.items() if n["class_type"] == "OCD_TokenMerge"}
    for node in prompt.values():
        for name, value in node["inputs"].items():
            if isinstance(value, list) and value[0] in merges and value[1] == 0:
                node["inputs"][name] = merges[value[0]]["inputs"]["model"]
    for i in merges:
        del prompt[i]


def _no_fusion(prompt: dict) -> None:
    for node in prompt.values():
        if node["class_type"] == "OCD_EditFromInversion":
            node["inputs"]["self_replace"] = 0.0


@pytest.mark.parametrize("stem, breakage", [
    ("ocd_object_centric_edit_sd15", _disconnect_masks),
    ("ocd_object_centric_edit_sd15", _remove_token_merging),
    ("ocd_inversion_edit_sd15", _no_fusion),
], ids=["mask disconnected", "token merging removed", "fusion off"])
def test_the_checks_fail_when_the_workflow_loses_its_point(server, object_info, stem, breakage):
    """Each template check above rejects the template with its feature taken out."""
    path = REPO_ROOT / "example_workflows" / f"{stem}.json"
    width = WIDTH.get(stem, SHRINK["width"])
    prompt = _broken(shrink(ui_to_api(json.loads(path.read_text()), object_info), width), breakage)
    entry = server.run(prompt)
    assert entry["status"]["status_str"] == "success", execution_error(entry)
    check = check_object_centric_edit if stem == "ocd_object_centric_edit_sd15" else check_inversion_edit
    with pytest.raises(AssertionError):
        check(prompt, reports(prompt, entry))
