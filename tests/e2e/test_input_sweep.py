"""Every input of every OCD node, as /object_info lists it, sent through the real server with
values it must refuse: outside the options, outside the range, NaN, infinite, of the wrong
type, malformed text. Each is refused before anything runs, with a message naming the input;
nothing is written, and the server keeps serving. A required value that is not sent at all
(what the frontend does for a combo without options) gets the node's own message.

Each node is put in a graph whose other inputs are valid (defaults, links from small core or
pack nodes) ending in an output node, since ComfyUI validates only what leads to an output;
the checks below also require that only the swept input is reported, which shows the rest of
the graph was valid."""
from __future__ import annotations

import re

import pytest

from tests.e2e.conftest import MINI_CHECKPOINT
from tests.support.server import execution_error

pytestmark = pytest.mark.e2e
DUMMY_SAM = "ocd-sweep-dummy.pth"  # only has to exist: no prompt here runs SAM Loader

# A node (class, inputs, output slot) giving each link type; their own links are built the same way.
PROVIDERS = {
    "IMAGE": ("OCD_LoadVideo", {"video": "bikes.mp4", "frame_load_cap": 2, "width": 64}, 0),
    "VHS_VIDEOINFO": ("OCD_LoadVideo", {"video": "bikes.mp4", "frame_load_cap": 2, "width": 64}, 2),
    "AUDIO": ("OCD_LoadVideo", {"video": "bikes.mp4", "frame_load_cap": 2, "width": 64}, 3),
    "MASK": ("SolidMask", {"value": 1.0, "width": 64, "height": 64}, 0),
    "LATENT": ("EmptyLatentImage", {"width": 64, "height": 64, "batch_size": 1}, 0),
    "MODEL": ("CheckpointLoaderSimple", {"ckpt_name": MINI_CHECKPOINT}, 0),
    "CLIP": ("CheckpointLoaderSimple", {"ckpt_name": MINI_CHECKPOINT}, 1),
    "CONDITIONING": ("CLIPTextEncode", {"text": "a car"}, 0),
    "SAMPLER": ("OCD_InversionSampler", {}, 0),
    "OCD_INVERSION": ("OCD_InvertLatents", {}, 1),
    "OCD_MERGE_RECORD": ("OCD_TokenMerge", {}, 1),
    "OCD_SAM_MODEL": ("OCD_SAMLoader", {"sam_name": DUMMY_SAM}, 0),
}
# Text inputs with a form the node checks before running, and values that break it.
FORMED_TEXT = {
    ("OCD_SAMVideoMask", "prompts"): [
        "{not json", "[1, 2]", '{"points": "here"}', '{"points": [[1, 2, 3]]}', '{"labels": [2]}',
        '{"frame": 1.5}', '{"frame": -1}', '{"box": [1, 2]}', '{"width": "wide"}', '{"points": [[NaN, 1]]}'],
    ("OCD_TokenMerge", "blocks"): ["", "nowhere", "input.x", "middle,,sideways"],
    ("OCD_TokenMerge", "dit_blocks"): ["", "everything", "3-1", "-4", "2,x"],
    ("OCD_SaveVideo", "filename_prefix"): ["", "../../escaped", "/tmp/abs", "OCD/../../../x"],
}
# Text anything may be written in (checked while running against the prompt and the CLIP).
FREE_TEXT = {("OCD_CrossAttentionMask", "source_prompt"), ("OCD_CrossAttentionMask", "words")}
# ComfyUI converts every BOOLEAN value with bool() before any node code sees it ("no" is True):
# nothing a node can check. INT values are converted with int() the same way (2.7 arrives as 2).
UNCHECKABLE_TYPES = {"BOOLEAN"}


@pytest.fixture(scope="module")
def sams(server):
    folder = server.base / "models" / "sams"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / DUMMY_SAM).write_bytes(b"never loaded")
    yield folder
    (folder / DUMMY_SAM).unlink()


@pytest.fixture(scope="module")
def info(server, sams):
    return server.get("/object_info")  # after the dummy SAM exists: it is listed


def spec_of(info: dict, class_type: str) -> dict:
    """name -> (section, type, options dict) of a node's inputs, in order."""
    node = info[class_type]["input"]
    return {name: (section, s[0], s[1] if len(s) > 1 else {})
            for section in ("required", "optional") for name, s in node.get(section, {}).items()}


def default_of(kind, options: dict):
    if kind == "COMBO" or isinstance(kind, list):
        values = options.get("options", kind if isinstance(kind, list) else [])
        return options.get("default", values[0] if values else None)
    return options.get("default", {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}.get(kind))


class Graph:
    """An API-format prompt built node by node, with valid values everywhere."""

    def __init__(self, info: dict):
        self.info, self.prompt, self.made = info, {}, {}

    def node(self, class_type: str, given: dict | None = None) -> str:
        key = (class_type, repr(sorted((given or {}).items())))
        if key in self.made:
            return self.made[key]
        inputs = {}
        for name, (section, kind, options) in spec_of(self.info, class_type).items():
            if given and name in given:
                inputs[name] = given[name]
            elif kind in PROVIDERS:
                if section == "required":
                    provider, values, slot = PROVIDERS[kind]
                    inputs[name] = [self.node(provider, values), slot]
            elif section == "required":
                inputs[name] = default_of(kind, options)
        node_id = str(len(self.prompt) + 1)
        self.prompt[node_id] = {"class_type": class_type, "inputs": inputs}
        self.made[key] = node_id
        return node_id

    def with_sink(self, node_id: str) -> dict:
        """The prompt with an output node reading ``node_id``'s first output."""
        prompt = {**self.prompt, "sink": {"class_type": "PreviewAny", "inputs": {"source": [node_id, 0]}}}
        if not self.info[self.prompt[node_id]["class_type"]]["output"]:
            prompt.pop("sink")
        return prompt


def bad_values(class_type: str, name: str, kind, options: dict) -> list:
    """Values of the input's own kind that it must refuse, and values of other kinds."""
    if kind == "COMBO" or isinstance(kind, list):
        return ["no-such-option", 12345, True, {"x": 1}, ""]
    if kind in ("INT", "FLOAT"):
        values = ["abc", float("nan"), float("inf"), float("-inf"), [1, 2, 3]]
        if options.get("min") is not None:
            values.append(options["min"] - 1)
        if options.get("max") is not None:
            values.append(options["max"] + 1 if kind == "INT" else options["max"] * 2 + 1)
        return values
    if kind == "STRING":
        return FORMED_TEXT.get((class_type, name), [])
    if kind in UNCHECKABLE_TYPES:
        return []
    return [5, "an IMAGE?", {"samples": 1}]  # a constant where a link must go


def named_inputs(errors: list[dict]) -> set[str]:
    """The inputs an error list of /prompt names: ours say "input 'x'", ComfyUI's own carry
    extra_info.input_name (except custom validation, which repeats it for every input)."""
    names = set()
    for error in errors:
        names.update(re.findall(r"input '([A-Za-z_0-9]+)'", error.get("details", "")))
        if error.get("type") != "custom_validation_failed" and error.get("extra_info", {}).get("input_name"):
            names.add(error["extra_info"]["input_name"])
    return names


def stop_everything(server) -> None:
    """Clear the queue and interrupt the running prompt (answers have no JSON body)."""
    import json
    import urllib.request

    for path, payload in (("/queue", {"clear": True}), ("/interrupt", {})):
        request = urllib.request.Request(server.url + path, data=json.dumps(payload).encode(),
                                         headers={"Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=30).read()


def files_of(server) -> list:
    return sorted(p for folder in ("output", "temp", "input") for p in (server.base / folder).rglob("*"))


def test_every_input_refuses_bad_values_by_name_and_nothing_runs(server, info):
    ocd = sorted(n for n in info if n.startswith("OCD_"))
    assert len(ocd) >= 15, ocd  # the whole pack (a new node is swept too)
    strings = {(n, name) for n in ocd for name, (_, kind, _) in spec_of(info, n).items() if kind == "STRING"}
    assert strings == set(FORMED_TEXT) | FREE_TEXT, "classify every text input: formed or free"
    before = files_of(server)
    failures, swept = [], 0
    for class_type in ocd:
        for name, (section, kind, options) in spec_of(info, class_type).items():
            for value in bad_values(class_type, name, kind, options):
                graph = Graph(info)
                node_id = graph.node(class_type, {name: value})
                status, body = server.queue(graph.with_sink(node_id))
                swept += 1
                if status == 200:  # accepted: it would run; stop it and report
                    stop_everything(server)
                    failures.append(f"{class_type}.{name} = {value!r}: accepted")
                    continue
                errors = body.get("node_errors", {})
                mine = errors.get(node_id, {}).get("errors", [])
                others = {k: v for k, v in errors.items() if k != node_id}
                named = named_inputs(mine)
                if others or named != {name}:
                    failures.append(f"{class_type}.{name} = {value!r}: named {sorted(named)}, other nodes "
                                    f"{sorted(others)}: {[e['details'][:160] for e in mine]}")
    assert not failures, f"{len(failures)} of {swept} refusals wrong:\n" + "\n".join(failures)
    assert swept > 300
    assert files_of(server) == before  # nothing written
    # and the server still does real work
    graph = Graph(info)
    save = graph.node("OCD_SaveVideo", {"save_output": False, "filename_prefix": "OCD/after_sweep"})
    entry = server.run(graph.with_sink(save))
    assert entry["status"]["status_str"] == "success", execution_error(entry)


@pytest.mark.parametrize("class_type, name, message", [
    ("OCD_SAMLoader", "sam_name", r"no checkpoint chosen; put a Segment Anything checkpoint .* into \S+sams"),
    ("OCD_LoadVideo", "video", r"no video chosen: put a video .* into \S+input or use the upload button"),
])
def test_a_value_not_sent_gets_the_nodes_own_message(server, info, class_type, name, message):
    """The frontend sends no value for a combo without options (no SAM checkpoint, no video):
    the node's message says where to put a file (before: a TypeError about a missing argument)."""
    graph = Graph(info)
    node_id = graph.node(class_type)
    prompt = graph.with_sink(node_id)
    del prompt[node_id]["inputs"][name]
    status, body = server.queue(prompt)
    assert status == 400
    details = [e["details"] for e in body["node_errors"][node_id]["errors"]]
    assert any(re.search(f"input '{name}': {message}", d) for d in details), details
    assert not any("missing 1 required positional argument" in d for d in details)
