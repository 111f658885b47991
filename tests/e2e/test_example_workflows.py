"""Every workflow in example_workflows/ runs through the real server (shrunk to test size, with
random weights: the mini SD1.5 checkpoint, a random ControlNet of its architecture, a random
SAM) and does what it is for, read from the saved video and the run reports of its OCD
nodes (``ocd_run`` in /history; the ``ocd.report`` messages when core's sampler runs)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from ocd import templates
from tests.conftest import WAN21_SMALL_FILE, WAN21_VACE_SMALL_FILE, WAN21_VAE_FILE, WAN22_5B_SMALL_FILE, WAN22_VAE_FILE
from tests.e2e.conftest import MINI_CHECKPOINT, MINI_CONTROLNET, RANDOM_SAM
from tests.support.media import correlation_at_best_lag, decode_mono
from tests.support.server import execution_error
from tests.support.workflow import ui_to_api

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((REPO_ROOT / "example_workflows").glob("*.json"))
pytestmark = pytest.mark.e2e

# Test-size settings, by input name, applied to whatever node has that input.
SHRINK = {"ckpt_name": MINI_CHECKPOINT, "control_net_name": MINI_CONTROLNET, "sam_name": RANDOM_SAM,
          "frame_load_cap": 2, "steps": 2, "width": 64, "height": 0}
# Frame widths where the workflow's point needs more latent pixels than 64 px give: the
# dual-rate crop must be smaller than the frame (the mini checkpoint's UNet aligns to 2).
WIDTH = {"ocd_inversion_ocd_sd15": 256, "ocd_inversion_ocd_sam_sd15": 128, "ocd_control_ocd_sd15": 256}
# Wan templates: the small random Wan and its VAE; 4k+1 frames (5: two latent frames), 256 px
# (16 x 7 tokens a frame, so the object's tokens are fewer than the frame's), 8 steps (the
# dual-rate plan has object-token steps), EasyCache allowed to skip from the start
WAN_SHRINK = {"unet_name": WAN21_SMALL_FILE, "vae_name": WAN21_VAE_FILE, "frame_load_cap": 5, "steps": 8,
              "reuse_threshold": 1.0, "start_percent": 0.0}
WAN_WIDTH = 256
WAN_FILES = {"wan2.1_t2v_1.3B_fp16.safetensors": WAN21_SMALL_FILE, "wan2.1_vace_1.3B_fp16.safetensors": WAN21_VACE_SMALL_FILE,
             "wan2.2_ti2v_5B_fp16.safetensors": WAN22_5B_SMALL_FILE, "wan_2.1_vae.safetensors": WAN21_VAE_FILE,
             "wan2.2_vae.safetensors": WAN22_VAE_FILE}


def is_wan(stem: str) -> bool:
    return "_wan_" in stem


def shrink(prompt: dict, width: int, wan: bool = False) -> dict:
    settings = dict(SHRINK, width=width, **(WAN_SHRINK if wan else {}))
    for node in prompt.values():  # each Wan file a template names -> its random stand-in
        for name in ("unet_name", "vae_name"):
            if node["inputs"].get(name) in WAN_FILES:
                node["inputs"][name] = WAN_FILES[node["inputs"][name]]
                settings.pop(name, None)
    for node in prompt.values():
        for name, value in settings.items():
            if name in node["inputs"] and not isinstance(node["inputs"][name], list):
                if name in ("width", "height") and node["class_type"] != "OCD_LoadVideo":
                    continue
                node["inputs"][name] = value
    if wan:  # the test-only text node stands in for umt5-xxl (too large to build randomly here)
        templates.stand_in_text_encoder(prompt, "OCDTest_TextConditioning")
    return prompt


def test_the_example_workflows_are_generated_from_the_script():
    from scripts.make_example_workflows import WORKFLOWS as SPECS

    assert {p.stem for p in WORKFLOWS} == set(SPECS)
    for path in WORKFLOWS:
        assert json.loads(path.read_text()) == SPECS[path.stem], f"{path.name}: run scripts/make_example_workflows.py"


def test_every_template_is_a_readable_graph():
    """A Note saying what it does, what to change first and what it costs; stage groups; the
    nodes a user edits first titled."""
    for path in WORKFLOWS:
        wf = json.loads(path.read_text())
        notes = [n for n in wf["nodes"] if n["type"] == "Note"]
        assert len(notes) == 1 and "Change first" in notes[0]["widgets_values"][0], path.name
        assert "Cost" in notes[0]["widgets_values"][0], path.name
        assert len(wf["groups"]) >= 2, path.name
        titles = {n.get("title") for n in wf["nodes"]}
        if any(n["type"] == "CLIPTextEncode" for n in wf["nodes"]):
            assert "Target prompt" in titles, path.name
        if any(n["type"] in ("OCD_AutoSaliency", "OCD_SAMVideoMask", "OCD_CrossAttentionMask") for n in wf["nodes"]):
            assert any(t and t.startswith("Object mask") for t in titles), path.name


# ---------------------------------------------------------------- reading the results

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


def check_saved_video(server, entry, frames: int, width: int) -> Path:
    """One video saved, with the loaded frames at the loaded width and rate, and a sound track
    as long as the video (the source's sound: bikes.mp4 has none, so its silence)."""
    from ocd.video.codec import probe_video

    (video,) = saved_videos(server, entry)
    info = probe_video(str(video))
    assert (info.frame_count, info.width) == (frames, width)
    assert info.fps == pytest.approx(25.0)  # the loaded rate, through video_info (the widget says 8)
    sound, rate = decode_mono(video)
    assert abs(len(sound) / rate - frames / 25.0) < 0.03, (len(sound), rate)
    return video


# ---------------------------------------------------------------- what each template is for

def check_fusion(prompt: dict, edit: dict, edit_type: str) -> dict:
    """The edit fuses every recorded layer at every step self_replace asks for (2 test steps x
    0.8 -> steps 0 and 1), with the object's mask as blend mask."""
    facts = part(edit, node_of(prompt, edit_type))["facts"]
    asked = facts.get("fused_steps_asked")
    assert asked == [0, 1], facts
    assert len(edit["fused_pairs"]) == len(asked) * facts["fused_layers_recorded"]
    return facts


def check_vanilla_fatezero(prompt: dict, runs: dict, events: list) -> None:
    invert, edit = runs["OCD_InvertLatents"], runs["OCD_EditFromInversion"]
    record = part(invert, node_of(prompt, "OCD_InvertLatents"))["facts"]
    assert record["solver"] == "ddim" and record["attention_record"]["dtype"] == "float32"
    assert record["attention_record"]["device"] == "cpu" and record["attention_record"]["maps"] > 0
    cross = part(invert, node_of(prompt, "OCD_CrossFrameAttention"))["facts"]
    assert cross["mode"] == "sparse_causal"
    assert not any(s["name"].startswith("Object-Centric Token Merge") for s in invert["nodes"].values())
    assert check_fusion(prompt, edit, "OCD_EditFromInversion")["blend_mask"] is True


def check_optimized_fatezero(prompt: dict, runs: dict, events: list) -> None:
    invert, edit = runs["OCD_InvertLatents"], runs["OCD_EditFromInversion"]
    facts = part(invert, node_of(prompt, "OCD_InvertLatents"))["facts"]
    assert facts["solver"] == "dpmpp_2m" and facts["attention_record"]["dtype"] == "float16"
    for pairing, report in (("record", invert), ("replay", edit)):
        merge = part(report, node_of(prompt, "OCD_TokenMerge", pairing=pairing))
        assert merge["facts"]["pairing"] == pairing and merge["facts"]["mask"] is False
        assert merge["merged_layers"], pairing
        for layer, m in merge["merged_layers"].items():
            assert m["merged_share"] == pytest.approx(merge["facts"]["merge_ratio"], abs=0.01), layer
    # the edit's merged attention lines up with the merged record: every asked pair is fused
    assert check_fusion(prompt, edit, "OCD_EditFromInversion")["blend_mask"] is True


def promised_unmerged_share(m: dict, ratio: float) -> float:
    """What full protection promises of a frame's object queries: none is merged while a
    background source remains (at most a quarter of the tokens are destinations); a merged
    object source also takes its (object) destination with it."""
    tokens, objects = m["tokens_per_set"], m["object_tokens_per_set"]
    background_sources = tokens - objects - tokens / 4
    forced = max(0.0, int(tokens * ratio) - background_sources)
    return max(0.0, 1.0 - 2 * forced / objects)


def check_object_centric_merging(merge: dict) -> None:
    ratio = merge["facts"]["merge_ratio"]
    assert merge["facts"]["mask"] is True and merge["facts"]["foreground_protection"] == 1.0
    assert merge["merged_layers"], "no layer was merged"
    for layer, m in merge["merged_layers"].items():
        assert m["merged_share"] == pytest.approx(ratio, abs=0.01), layer
        assert m["object_tokens_per_set"] > 0, f"{layer}: no object tokens (is the mask connected?)"
        assert m["object_unmerged_share"] >= promised_unmerged_share(m, ratio) - 1e-9, (layer, m)


def check_dual_rate(sampler: dict, report: dict, extra_phases: dict) -> None:
    plan = sampler["facts"]["dual_rate"]
    assert plan["mode"] == "dual", sampler["warnings"]
    assert plan["crop"][0] * plan["crop"][1] < plan["latent"][0] * plan["latent"][1]
    phases = {name: p["evaluations"] for name, p in report["phases"].items()}
    assert phases == dict(plan["predicted_evaluations"], **extra_phases)


def check_ocd_inversion(prompt: dict, runs: dict, events: list) -> None:
    """Object-centric merging (the saliency mask connected) recorded in the inversion and
    replayed in the dual-rate edit, which runs a crop of the object."""
    invert, edit = runs["OCD_InvertLatents"], runs["OCD_DualRateEditFromInversion"]
    recording = part(invert, node_of(prompt, "OCD_TokenMerge", pairing="record"))
    part(invert, node_of(prompt, "OCD_CrossFrameAttention"))
    check_object_centric_merging(recording)
    assert recording["warnings"] == []
    replaying = part(edit, node_of(prompt, "OCD_TokenMerge", pairing="replay"))
    assert replaying["merged_layers"] and replaying["facts"]["mask"] is True
    sampler = part(edit, node_of(prompt, "OCD_DualRateEditFromInversion"))
    check_dual_rate(sampler, edit, {"foreground_start": 2})  # the crop is inverted first
    # fusion in the whole-frame phases only: steps the background and joint phases take
    asked = set(sampler["facts"]["fused_steps_asked"])
    assert {step for step, _ in edit["fused_pairs"]} <= asked and edit["fused_pairs"]


def check_ocd_inversion_sam(prompt: dict, runs: dict, events: list) -> None:
    """The SAM variant: the mask comes from the SAM node and reaches every node that takes one."""
    invert, edit = runs["OCD_InvertLatents"], runs["OCD_DualRateEditFromInversion"]
    for pairing, report in (("record", invert), ("replay", edit)):
        assert part(report, node_of(prompt, "OCD_TokenMerge", pairing=pairing))["facts"]["mask"] is True
    sam = node_of(prompt, "OCD_SAMVideoMask")
    assert all(prompt[i]["inputs"]["mask"] == [sam, 0] for i in prompt
               if prompt[i]["class_type"] in ("OCD_TokenMerge", "OCD_DualRateEditFromInversion"))
    assert "dual_rate" in part(edit, node_of(prompt, "OCD_DualRateEditFromInversion"))["facts"]


def check_vanilla_controlvideo(prompt: dict, runs: dict, events: list) -> None:
    """Core's KSampler with a ControlNet and fully cross-frame attention: the patch's report
    reaches its node by message (no pack sampler in the graph)."""
    assert runs == {}
    cross = node_of(prompt, "OCD_CrossFrameAttention")
    texts = [e["text"] for e in events if e.get("node") == cross]
    assert texts, f"no run report message for the Cross-Frame Attention node: {events}"
    assert "mode: full" in texts[-1] and "controlnet: yes" in texts[-1]
    # the key/value pool of the highest-resolution layers holds both frames' tokens (full mode)
    pools = [line for line in texts[-1].splitlines() if line.startswith("kv_pool_tokens")]
    assert pools and "input.1.0 3x8 48" in pools[0], texts[-1]


def check_ocd_controlvideo(prompt: dict, runs: dict, events: list) -> None:
    """The ControlNet-guided dual-rate sampler with object-centric merging of the cross-frame pool."""
    report = runs["OCD_DualRateKSampler"]
    assert report["controlnet"] is True
    merge = part(report, node_of(prompt, "OCD_TokenMerge"))
    check_object_centric_merging(merge)
    assert merge["pool_layers"], "the cross-frame key/value pool was not merged"
    assert part(report, node_of(prompt, "OCD_CrossFrameAttention"))["facts"]["mode"] == "full"
    check_dual_rate(part(report, node_of(prompt, "OCD_DualRateKSampler")), report, {})


def check_no_pack_sampler(prompt: dict, runs: dict, events: list) -> None:
    assert runs == {}


def model_chain(prompt: dict, node_id: str) -> list[str]:
    """The class types a node's MODEL input passes through, from the node back to the loader."""
    chain, value = [], prompt[node_id]["inputs"]["model"]
    while isinstance(value, list):
        chain.append(prompt[value[0]]["class_type"])
        value = prompt[value[0]]["inputs"].get("model")
    return chain


def check_wan_vanilla(prompt: dict, runs: dict, events: list) -> None:
    """Core's KSampler on the Wan model with Wan 2.1's shift, no patch of the pack's or EasyCache."""
    assert runs == {}
    assert model_chain(prompt, node_of(prompt, "KSampler")) == ["ModelSamplingSD3", "UNETLoader"]


def check_wan_easycache(prompt: dict, runs: dict, events: list) -> None:
    assert runs == {}
    assert model_chain(prompt, node_of(prompt, "KSampler")) == ["EasyCache", "ModelSamplingSD3", "UNETLoader"]


def check_wan_ocd(prompt: dict, runs: dict, events: list, easycache: bool = False, tokens: str = "2x7x16") -> None:
    """Object merging over the clip (the saliency mask connected) and the dual-rate sampler's
    object-token steps, on the Wan transformer; with EasyCache, steps EasyCache answered."""
    report = runs["OCD_DualRateKSampler"]
    merge = part(report, node_of(prompt, "OCD_TokenMerge"))
    check_object_centric_merging(merge)
    # 5 frames at 256x112: 2 latent frames of 7 x 16 tokens (Wan 2.1's 8x VAE)
    assert merge["facts"]["dit_merge"] == "tokens" and list(merge["merged_layers"]) == [
        f"block.0 {tokens}", f"block.1 {tokens}"]
    plan = part(report, node_of(prompt, "OCD_DualRateKSampler"))["facts"]["dual_rate"]
    assert plan["mode"] == "dual" and plan["object_token_steps"] and plan["object_tokens"] < plan["tokens"]
    phases = report["phases"]
    assert phases["foreground"]["tokens"] < phases["foreground"]["calls"] * plan["tokens"]
    calls = sum(p["calls"] for p in phases.values())
    evaluations = sum(p["evaluations"] for p in phases.values())
    assert (calls < evaluations) if easycache else (calls == evaluations), (calls, evaluations)
    assert ("EasyCache" in model_chain(prompt, node_of(prompt, "OCD_DualRateKSampler"))) == easycache


def check_wan_ocd_easycache(prompt: dict, runs: dict, events: list) -> None:
    check_wan_ocd(prompt, runs, events, easycache=True)


def check_wan22_ocd(prompt: dict, runs: dict, events: list) -> None:
    """The Wan 2.1 OCD check on the 5B: its 16x VAE gives 2 latent frames of 4 x 8 tokens at 256x112."""
    check_wan_ocd(prompt, runs, events, tokens="2x4x8")
    plan = part(runs["OCD_DualRateKSampler"], node_of(prompt, "OCD_DualRateKSampler"))["facts"]["dual_rate"]
    assert plan["latent"] == [2, 7, 16] and plan["tokens"] == 2 * 4 * 8


def check_wan_inversion_vanilla(prompt: dict, runs: dict, events: list) -> None:
    """The baseline: inversion up Wan's flow, then Edit From Inversion along the same schedule on
    the shifted model, every token on every step; no patch of the pack's."""
    invert, edit = runs["OCD_InvertLatents"], runs["OCD_EditFromInversion"]
    assert invert["phases"]["inversion"]["evaluations"] == WAN_SHRINK["steps"]
    assert edit["phases"]["edit"]["evaluations"] == WAN_SHRINK["steps"]
    for node in ("OCD_InvertLatents", "OCD_EditFromInversion"):
        assert model_chain(prompt, node_of(prompt, node)) == ["ModelSamplingSD3", "UNETLoader"]


def check_wan_inversion(prompt: dict, runs: dict, events: list) -> None:
    """Inversion up Wan's flow (no attention record: self_replace 0), then the dual-rate edit's
    object-token steps from the inverted latent; the background merged in both passes."""
    invert, edit = runs["OCD_InvertLatents"], runs["OCD_DualRateEditFromInversion"]
    inverting = part(invert, node_of(prompt, "OCD_InvertLatents"))
    assert inverting["facts"]["solver"] == "dpmpp_2m" and inverting["facts"]["inversion_depth"] == 0.8
    assert invert["phases"]["inversion"]["evaluations"] == WAN_SHRINK["steps"]
    merge_node = node_of(prompt, "OCD_TokenMerge")
    for report in (invert, edit):
        check_object_centric_merging(part(report, merge_node))
    sampler = part(edit, node_of(prompt, "OCD_DualRateEditFromInversion"))
    plan = sampler["facts"]["dual_rate"]
    assert plan["mode"] == "dual" and plan["object_token_steps"] and plan["object_tokens"] < plan["tokens"]
    assert edit["phases"]["foreground"]["tokens"] < edit["phases"]["foreground"]["calls"] * plan["tokens"]
    assert sampler["warnings"] == []


def check_wan_vace(prompt: dict, runs: dict, events: list) -> None:
    """VACE repaints the object (the saliency mask as its control mask, the clip as its control
    video; size and length from the clip); the dual-rate sampler's object-token steps and the
    object merge run on the VACE model."""
    vace = prompt[node_of(prompt, "WanVaceToVideo")]["inputs"]
    mask = node_of(prompt, "OCD_AutoSaliency")
    assert vace["control_masks"] == [mask, 0] and vace["control_video"] == [node_of(prompt, "OCD_LoadVideo"), 0]
    assert isinstance(vace["length"], list) and isinstance(vace["width"], list)
    report = runs["OCD_DualRateKSampler"]
    check_object_centric_merging(part(report, node_of(prompt, "OCD_TokenMerge")))
    plan = part(report, node_of(prompt, "OCD_DualRateKSampler"))["facts"]["dual_rate"]
    assert plan["mode"] == "dual" and plan["object_token_steps"] and plan["object_tokens"] < plan["tokens"]
    assert plan["latent"] == [2, 14, 32]  # 5 frames at 256x112, VACE's latent of the clip's size
    assert report["phases"]["foreground"]["tokens"] < report["phases"]["foreground"]["calls"] * plan["tokens"]


CHECKS = {
    "ocd_load_save_video": check_no_pack_sampler,
    "ocd_video_img2img_sd15": check_no_pack_sampler,
    "ocd_inversion_vanilla_fatezero_sd15": check_vanilla_fatezero,
    "ocd_inversion_optimized_fatezero_sd15": check_optimized_fatezero,
    "ocd_inversion_ocd_sd15": check_ocd_inversion,
    "ocd_inversion_ocd_sam_sd15": check_ocd_inversion_sam,
    "ocd_control_vanilla_controlvideo_sd15": check_vanilla_controlvideo,
    "ocd_control_ocd_sd15": check_ocd_controlvideo,
    "ocd_wan_v2v_vanilla_wan21": check_wan_vanilla,
    "ocd_wan_v2v_easycache_wan21": check_wan_easycache,
    "ocd_wan_v2v_ocd_wan21": check_wan_ocd,
    "ocd_wan_v2v_ocd_easycache_wan21": check_wan_ocd_easycache,
    "ocd_wan_inversion_vanilla_wan21": check_wan_inversion_vanilla,
    "ocd_wan_inversion_ocd_wan21": check_wan_inversion,
    "ocd_wan_vace_ocd_wan21": check_wan_vace,
    "ocd_wan_v2v_ocd_wan22_5b": check_wan22_ocd,
}


def run_template(server, object_info, stem: str, breakage=None):
    width = WAN_WIDTH if is_wan(stem) else WIDTH.get(stem, SHRINK["width"])
    prompt = shrink(ui_to_api(json.loads((REPO_ROOT / "example_workflows" / f"{stem}.json").read_text()),
                              object_info), width, is_wan(stem))
    if breakage is not None:
        breakage(prompt)
    entry, events = server.run_listening(prompt, "ocd.report")
    assert entry["status"]["status_str"] == "success", execution_error(entry)
    return prompt, entry, events, width


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_example_workflow_does_what_it_is_for(server, object_info, path):
    prompt, entry, events, width = run_template(server, object_info, path.stem)
    frames = WAN_SHRINK["frame_load_cap"] if is_wan(path.stem) else SHRINK["frame_load_cap"]
    check_saved_video(server, entry, frames, width)
    CHECKS[path.stem](prompt, reports(prompt, entry), events)


def test_the_ocd_template_keeps_the_source_sound_in_sync(server, object_info, test_videos):
    """The flagship edit on a clip with sound: the saved edit carries the sound of exactly the
    loaded frames (3.0 s to 3.32 s of bigbuckbunny.mp4), at the right time."""
    stem, skip, frames = "ocd_inversion_ocd_sd15", 75, 8

    def bunny(prompt: dict) -> None:
        prompt[node_of(prompt, "OCD_LoadVideo")]["inputs"].update(
            video="bigbuckbunny.mp4", skip_first_frames=skip, frame_load_cap=frames)

    prompt, entry, events, width = run_template(server, object_info, stem, bunny)
    video = check_saved_video(server, entry, frames, width)
    saved, rate = decode_mono(video)
    source, source_rate = decode_mono(test_videos["bigbuckbunny.mp4"])
    assert rate == source_rate
    segment = source[round(skip / 25 * rate):round((skip + frames) / 25 * rate)]
    lag, corr = correlation_at_best_lag(segment, saved, 480)
    assert abs(lag) <= 48 and corr > 0.9, (lag, corr)  # in sync within 1 ms


# ---------------------------------------------------------------- the checks see a broken template

def _disconnect_masks(prompt: dict) -> None:
    for node in prompt.values():
        if node["class_type"] == "OCD_TokenMerge":
            node["inputs"].pop("mask", None)


def _remove(class_type: str):
    """Every input fed by a ``class_type`` node is fed by that node's own model input instead."""
    def edit(prompt: dict) -> None:
        removed = {i: n for i, n in prompt.items() if n["class_type"] == class_type}
        for node in prompt.values():
            for name, value in node["inputs"].items():
                if isinstance(value, list) and value[0] in removed and value[1] == 0:
                    node["inputs"][name] = removed[value[0]]["inputs"]["model"]
        for i in removed:
            del prompt[i]
    return edit


def _no_fusion(prompt: dict) -> None:
    for node in prompt.values():
        if node["class_type"] == "OCD_EditFromInversion":
            node["inputs"]["self_replace"] = 0.0


def _no_controlnet(prompt: dict) -> None:
    for node in prompt.values():
        for name in ("positive", "negative"):
            value = node["inputs"].get(name)
            if isinstance(value, list) and prompt[value[0]]["class_type"] == "ControlNetApplyAdvanced":
                node["inputs"][name] = prompt[value[0]]["inputs"][name]


@pytest.mark.parametrize("stem, breakage", [
    ("ocd_inversion_ocd_sd15", _disconnect_masks),
    ("ocd_inversion_ocd_sd15", _remove("OCD_TokenMerge")),
    ("ocd_inversion_vanilla_fatezero_sd15", _no_fusion),
    ("ocd_control_vanilla_controlvideo_sd15", _no_controlnet),
    ("ocd_control_ocd_sd15", _remove("OCD_CrossFrameAttention")),
    ("ocd_wan_v2v_ocd_wan21", _remove("OCD_TokenMerge")),
    ("ocd_wan_v2v_ocd_wan21", _disconnect_masks),
    ("ocd_wan_v2v_ocd_easycache_wan21", _remove("EasyCache")),
    ("ocd_wan_inversion_ocd_wan21", _disconnect_masks),
    ("ocd_wan_vace_ocd_wan21", _remove("OCD_TokenMerge")),
], ids=["mask disconnected", "token merging removed", "fusion off", "controlnet removed", "cross-frame removed",
        "wan: object merge removed", "wan: mask disconnected", "wan: easycache removed",
        "wan inversion: mask disconnected", "wan vace: object merge removed"])
def test_the_checks_fail_when_the_workflow_loses_its_point(server, object_info, stem, breakage):
    """Each template check above rejects the template with its feature taken out."""
    prompt, entry, events, _ = run_template(server, object_info, stem, breakage)
    with pytest.raises((AssertionError, KeyError)):
        CHECKS[stem](prompt, reports(prompt, entry), events)
