"""The pack's public interface as saved workflows depend on it, read from /object_info's
data (``GET_NODE_INFO_V1``): node ids, inputs (section, type, options, defaults, ranges) in
order, and output slots (name, type, list flag) in order.

A saved workflow stores node ids, widget values in input order and links by output slot, so
any change to these breaks workflows users have shared. ``compare`` allows only what keeps
them loading: new nodes, new optional inputs after the existing ones, new combo options,
new outputs after the existing ones.
"""
from __future__ import annotations

import json
from pathlib import Path

SNAPSHOT = Path(__file__).resolve().parents[1] / "integration" / "public_interface.json"

# Combo options that list files of the user's folders: their content is not part of the interface.
FILE_COMBOS = {("OCD_LoadVideo", "video"), ("OCD_SAMLoader", "sam_name")}
WIDGET_KEYS = ("default", "min", "max", "step", "multiline", "video_upload")


def describe(node_classes: dict) -> dict:
    """``{node id: {"inputs": [...], "outputs": [...]}}`` for the given node classes."""
    out = {}
    for node_id in sorted(node_classes):
        info = node_classes[node_id].GET_NODE_INFO_V1()
        inputs = []
        for section in ("required", "optional"):
            for name, spec in info["input"].get(section, {}).items():
                kind, options = spec[0], dict(spec[1]) if len(spec) > 1 else {}
                entry = {"name": name, "section": section}
                if isinstance(kind, list) or kind == "COMBO":
                    entry["type"] = "COMBO"
                    values = kind if isinstance(kind, list) else options.get("options", [])
                    entry["options"] = "<files>" if (node_id, name) in FILE_COMBOS else list(values)
                else:
                    entry["type"] = kind
                for key in WIDGET_KEYS:
                    if key in options:
                        entry[key] = options[key]
                inputs.append(entry)
        outputs = [{"name": n, "type": t, "is_list": bool(l)}
                   for n, t, l in zip(info["output_name"], info["output"], info["output_is_list"])]
        out[node_id] = {"inputs": inputs, "outputs": outputs}
    return out


def defaults(node_id: str, node_cls) -> dict:
    """The node's widget defaults, by input name, as a new node in the UI has them."""
    return {i["name"]: i["default"] for i in describe({node_id: node_cls})[node_id]["inputs"] if "default" in i}


def compare(snapshot: dict, current: dict) -> list[str]:
    """What in ``current`` would break a workflow saved against ``snapshot`` (empty: nothing)."""
    problems = []
    for node_id, before in snapshot.items():
        now = current.get(node_id)
        if now is None:
            problems.append(f"{node_id}: node removed or renamed")
            continue
        names_now = [i["name"] for i in now["inputs"]]
        names_before = [i["name"] for i in before["inputs"]]
        if names_now[: len(names_before)] != names_before:
            problems.append(f"{node_id}: inputs were {names_before}, now start {names_now[: len(names_before)]}")
        for extra in now["inputs"][len(names_before):]:
            if extra["section"] == "required":
                problems.append(f"{node_id}.{extra['name']}: a new input must be optional")
        by_name = {i["name"]: i for i in now["inputs"]}
        for old in before["inputs"]:
            new = by_name.get(old["name"])
            if new is None:
                continue
            for key, value in old.items():
                if key == "options" and isinstance(value, list) and isinstance(new.get("options"), list):
                    lost = [o for o in value if o not in new["options"]]
                    if lost:
                        problems.append(f"{node_id}.{old['name']}: options {lost} removed")
                elif new.get(key) != value:
                    problems.append(f"{node_id}.{old['name']}: {key} was {value!r}, now {new.get(key)!r}")
        if now["outputs"][: len(before["outputs"])] != before["outputs"]:
            problems.append(f"{node_id}: outputs were {before['outputs']}, now {now['outputs']}")
    return problems


def load_snapshot() -> dict:
    return json.loads(SNAPSHOT.read_text())


def write_snapshot(node_classes: dict) -> None:
    SNAPSHOT.write_text(json.dumps(describe(node_classes), indent=1) + "\n")
