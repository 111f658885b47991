"""UI-format workflow JSON (what the browser saves and example_workflows/ ship) -> API format.

The frontend stores widget values positionally (``widgets_values``); the server's
``/object_info`` says which inputs are widgets and in what order. This mirrors the
frontend's rules closely enough to run the example workflows through ``/prompt``:
- every widget input, linked or not, owns one slot in ``widgets_values``;
- an INT with ``control_after_generate`` (and any ``seed``/``noise_seed``) owns a second
  slot, the control mode;
- upload buttons are not serialised.
"""
from __future__ import annotations

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
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt
