"""The pack's templates (example_workflows/*.json, ComfyUI's UI format) as API-format prompts
(pure: no ComfyUI import). The headless command (``python -m ocd``) and the tests run the
templates themselves through this conversion, so they can never drift apart.

The frontend stores widget values positionally (``widgets_values``); ``/object_info`` (or
the node classes) says which inputs are widgets and in what order. The conversion follows
the frontend's rules:
- every widget input, linked or not, owns one slot in ``widgets_values``;
- an INT with ``control_after_generate`` (and any ``seed``/``noise_seed``) owns a second
  slot, the control mode;
- upload buttons are not serialised;
- muted and bypassed nodes and frontend-only nodes (Notes) are left out.
A node's title is kept as ``_meta.title``, as the frontend's own API export does.
"""
from __future__ import annotations

import json
from pathlib import Path

TEMPLATES_DIR = Path(__file__).resolve().parents[1] / "example_workflows"
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def _is_widget(spec: list) -> bool:
    kind = spec[0]
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if options.get("forceInput"):
        return False
    return isinstance(kind, list) or kind in WIDGET_TYPES


def _has_control_widget(name: str, spec: list) -> bool:
    options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    return spec[0] == "INT" and (options.get("control_after_generate") or name in ("seed", "noise_seed"))


def ui_to_api(workflow: dict, object_info: dict) -> dict:
    """A UI-format workflow -> an API-format prompt, with ``object_info`` (what the server's
    /object_info returns) saying each node's inputs."""
    links = {link[0]: link for link in workflow.get("links", [])}
    prompt = {}
    for node in workflow["nodes"]:
        if node.get("mode", 0) in (2, 4) or node["type"] not in object_info:  # muted, bypassed, notes
            continue
        info = object_info[node["type"]]
        linked = {}
        for slot in node.get("inputs", []):
            if slot.get("link") is not None:
                _, src_node, src_slot, *_ = links[slot["link"]]
                linked[slot["name"]] = [str(src_node), src_slot]
        values = list(node.get("widgets_values") or [])
        inputs = {}
        specs = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
        for name in info["input_order"].get("required", []) + info["input_order"].get("optional", []):
            spec = specs[name]
            if _is_widget(spec):
                value = values.pop(0) if values else None
                if _has_control_widget(name, spec) and values:
                    values.pop(0)
                if name not in linked and value is not None:
                    inputs[name] = value
            if name in linked:
                inputs[name] = linked[name]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs,
                                   "_meta": {"title": node.get("title") or node["type"]}}
    return prompt


def load(name: str) -> dict:
    """The UI-format template ``name`` (its file name without .json)."""
    path = TEMPLATES_DIR / f"{name}.json"
    return json.loads(path.read_text())


def set_inputs(prompt: dict, values: dict, class_types: set[str] | None = None) -> list[str]:
    """Set every unlinked input named in ``values`` (on nodes of ``class_types`` only, when
    given); returns the ids of the nodes changed."""
    changed = []
    for node_id, node in prompt.items():
        if class_types is not None and node["class_type"] not in class_types:
            continue
        for name, value in values.items():
            if name in node["inputs"] and not isinstance(node["inputs"][name], list):
                node["inputs"][name] = value
                changed.append(node_id)
    return changed


def nodes_titled(prompt: dict, title: str) -> list[str]:
    return [i for i, n in prompt.items() if n.get("_meta", {}).get("title") == title]


def feed_from(prompt: dict, class_types: set[str], source: list) -> None:
    """Every input fed by an output of a ``class_types`` node is fed by ``source`` instead
    ([node id, slot]); those nodes are then left out if nothing else uses them."""
    replaced = {i for i, n in prompt.items() if n["class_type"] in class_types}
    for node in prompt.values():
        for name, value in node["inputs"].items():
            if isinstance(value, list) and value[0] in replaced:
                node["inputs"][name] = list(source)
    for i in replaced:
        del prompt[i]


def reroute(prompt: dict, old: list, new: list, except_ids: set[str] = frozenset()) -> None:
    """Every input fed by ``old`` ([node id, slot]) is fed by ``new`` instead (but on the nodes
    ``except_ids``)."""
    for node_id, node in prompt.items():
        if node_id in except_ids:
            continue
        for name, value in node["inputs"].items():
            if value == list(old):
                node["inputs"][name] = list(new)


def pad_frames(prompt: dict, frames: int, padded: int) -> None:
    """Load ``frames`` frames, edit ``padded`` (the last frame repeated, core's ImageFromBatch /
    RepeatImageBatch / ImageBatch after every Load Video (OCD)) and save the first ``frames``
    of the edit (ImageFromBatch before every Save Video (OCD)): the clip keeps its length."""
    for load_id in [i for i, n in prompt.items() if n["class_type"] == "OCD_LoadVideo"]:
        last, repeat, batch = (f"ocd_pad_{load_id}_{k}" for k in ("last", "repeat", "batch"))
        prompt[last] = {"class_type": "ImageFromBatch",
                        "inputs": {"image": [load_id, 0], "batch_index": frames - 1, "length": 1},
                        "_meta": {"title": "Last frame (padding)"}}
        prompt[repeat] = {"class_type": "RepeatImageBatch", "inputs": {"image": [last, 0], "amount": padded - frames},
                          "_meta": {"title": f"Padding to {padded} frames"}}
        prompt[batch] = {"class_type": "ImageBatch", "inputs": {"image1": [load_id, 0], "image2": [repeat, 0]},
                         "_meta": {"title": f"{padded} frames"}}
        reroute(prompt, [load_id, 0], [batch, 0], except_ids={last, batch})
    for save_id in [i for i, n in prompt.items() if n["class_type"] == "OCD_SaveVideo"]:
        trim = f"ocd_trim_{save_id}"
        prompt[trim] = {"class_type": "ImageFromBatch",
                        "inputs": {"image": prompt[save_id]["inputs"]["images"], "batch_index": 0, "length": frames},
                        "_meta": {"title": f"The first {frames} frames"}}
        prompt[save_id]["inputs"]["images"] = [trim, 0]


def stand_in_text_encoder(prompt: dict, text_node: str) -> None:
    """Every CLIPTextEncode of ``prompt`` replaced by ``text_node`` (a node with a ``text``
    input and a CONDITIONING output), every CLIPLoader left out: for runs with random weights,
    whose text encoder (umt5-xxl) is too large to build."""
    for node_id, node in list(prompt.items()):
        if node["class_type"] == "CLIPLoader":
            del prompt[node_id]
        elif node["class_type"] == "CLIPTextEncode":
            prompt[node_id] = {"class_type": text_node, "inputs": {"text": node["inputs"]["text"]},
                               "_meta": node.get("_meta", {})}


def window_graph(prompt: dict, start: int, count: int, anchors: int, prefix: str) -> None:
    """The graph edits one window of a long clip (ocd/windows.py): every Load Video (OCD) loads
    clip frames ``[start, start + count)`` with the clip's first ``anchors`` frames in front
    (a second Load Video and core's ImageBatch), and every Save Video (OCD) becomes core's
    Save Image of the window's own frames (the anchors' edit dropped, ImageFromBatch), lossless
    PNGs under ``prefix``: the pieces the command assembles, with the sound, into one clip."""
    for load_id in [i for i, n in prompt.items() if n["class_type"] == "OCD_LoadVideo"]:
        prompt[load_id]["inputs"].update(skip_first_frames=start, frame_load_cap=count)
        if not anchors:
            continue
        anchor, batch = f"ocd_anchors_{load_id}", f"ocd_window_{load_id}"
        prompt[anchor] = {"class_type": "OCD_LoadVideo",
                          "inputs": {**prompt[load_id]["inputs"], "skip_first_frames": 0, "frame_load_cap": anchors},
                          "_meta": {"title": f"Anchor frames (the clip's first {anchors})"}}
        prompt[batch] = {"class_type": "ImageBatch", "inputs": {"image1": [anchor, 0], "image2": [load_id, 0]},
                         "_meta": {"title": f"Anchors + frames {start}-{start + count - 1}"}}
        reroute(prompt, [load_id, 0], [batch, 0], except_ids={batch})
    for save_id in [i for i, n in prompt.items() if n["class_type"] == "OCD_SaveVideo"]:
        images = prompt[save_id]["inputs"]["images"]
        if anchors:
            trim = f"ocd_trim_{save_id}"
            prompt[trim] = {"class_type": "ImageFromBatch", "inputs": {"image": images, "batch_index": anchors,
                                                                        "length": count},
                            "_meta": {"title": "The window's own frames"}}
            images = [trim, 0]
        prompt[save_id] = {"class_type": "SaveImage", "inputs": {"images": images, "filename_prefix": prefix},
                           "_meta": {"title": "The window's frames (PNG)"}}


def mask_from_clip(prompt: dict, video: str, size: tuple[int, int]) -> list[str]:
    """Every input Auto Saliency (OCD) fed takes the object mask of the whole clip instead: the
    frames of ``video`` (a lossless clip of the mask, white = object) by Load Video (OCD) at
    ``size`` (width, height) and core's ImageToMask. Its Load Video selects frames like the
    clip's (``window_graph`` then loads a window's). Returns the ids of the nodes replaced."""
    replaced = [i for i, n in prompt.items() if n["class_type"] == "OCD_AutoSaliency"]
    if not replaced:
        return []
    load, to_mask = "ocd_clip_mask_load", "ocd_clip_mask"
    prompt[load] = {"class_type": "OCD_LoadVideo",
                    "inputs": {"video": video, "frame_load_cap": 0, "skip_first_frames": 0, "select_every_nth": 1,
                               "force_rate": 0.0, "width": size[0], "height": size[1], "resize_mode": "stretch"},
                    "_meta": {"title": "Object mask of the whole clip"}}
    prompt[to_mask] = {"class_type": "ImageToMask", "inputs": {"image": [load, 0], "channel": "red"},
                       "_meta": {"title": "Object mask"}}
    feed_from(prompt, {"OCD_AutoSaliency"}, [to_mask, 0])
    return replaced


def number_frames(prompt: dict, first_frame: int, anchors: int) -> list[str]:
    """Every sampler's ``latent_image`` through Latent Frame Numbers (OCD): its frames numbered
    by their place in the clip (anchors first), so each frame's noise is the same in every
    window that holds it. For latents whose frames are a batch. Returns the new nodes' ids."""
    added = []
    for node_id, node in list(prompt.items()):
        latent = node["inputs"].get("latent_image")
        if isinstance(latent, list):
            numbered = f"ocd_frame_numbers_{node_id}"
            prompt[numbered] = {"class_type": "OCD_LatentFrameNumbers",
                                "inputs": {"samples": latent, "first_frame": first_frame, "anchors": anchors},
                                "_meta": {"title": "Noise by clip frame"}}
            node["inputs"]["latent_image"] = [numbered, 0]
            added.append(numbered)
    return added
