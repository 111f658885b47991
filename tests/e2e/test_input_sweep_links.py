"""The input sweep (test_input_sweep.py) extended from widget values to what arrives through
links and files, through the real server:

- every MASK, IMAGE, LATENT and CONDITIONING input of every OCD node gets a tensor holding NaN, +inf or -inf (from the
  test-only node OCDTest_NonFinite, what a broken upstream node or a division by zero in a mask
  graph makes): the node is refused before it does any work, with a message naming the input;
  on the mini SD1.5 checkpoint and, for the nodes that take a Wan model, on the random Wan;
- every file-name input gets names holding NUL and other control characters, or a lone
  surrogate: refused by the node's own message naming the input before the host's file
  functions see them (never "embedded null byte");
- broken files of each kind the pack reads itself (SAM checkpoints, videos): refused naming
  the input.
Nothing is written, and the server keeps serving."""
from __future__ import annotations

import re

import pytest
import torch

from tests.conftest import WAN21_SMALL_FILE
from tests.e2e.conftest import RANDOM_SAM
from tests.e2e.test_input_sweep import Graph, files_of, named_inputs, spec_of, stop_everything
from tests.support.server import execution_error

pytestmark = pytest.mark.e2e

NON_FINITE = ("nan", "posinf", "neginf")
SOURCE = "OCDTest_NonFinite"  # tests/support/test_nodes/ocd_test_nodes
SOURCE_SLOT = {"MASK": 0, "IMAGE": 1, "LATENT": 2, "CONDITIONING": 3}
# The inputs the sweep below must find (it finds every MASK / IMAGE input /object_info lists).
KNOWN_TENSOR_INPUTS = {
    ("OCD_MaskOps", "mask"), ("OCD_MaskOps", "reference_images"), ("OCD_TokenMerge", "mask"),
    ("OCD_DualRateKSampler", "mask"), ("OCD_EditFromInversion", "blend_mask"),
    ("OCD_DualRateEditFromInversion", "mask"), ("OCD_SAMVideoMask", "images"), ("OCD_AutoSaliency", "images"),
    ("OCD_SaveVideo", "images"), ("OCD_InvertLatents", "latent"), ("OCD_EditFromInversion", "inverted_latent"),
    ("OCD_DualRateEditFromInversion", "inverted_latent"), ("OCD_DualRateKSampler", "latent_image"),
    ("OCD_InvertLatents", "positive"), ("OCD_InvertLatents", "negative"), ("OCD_EditFromInversion", "positive"),
    ("OCD_EditFromInversion", "negative"), ("OCD_DualRateEditFromInversion", "positive"),
    ("OCD_DualRateEditFromInversion", "negative"), ("OCD_DualRateKSampler", "positive"),
    ("OCD_DualRateKSampler", "negative"),
}
# The nodes taking a MODEL that may be a Wan video transformer, swept on the random Wan too.
WAN_TENSOR_INPUTS = (("OCD_DualRateKSampler", "mask"), ("OCD_TokenMerge", "mask"))

# Every input that takes a file name, with a valid name to spoil.
FILE_NAME_INPUTS = {
    ("OCD_LoadVideo", "video"): "bikes.mp4",
    ("OCD_SAMLoader", "sam_name"): RANDOM_SAM,
    ("OCD_SaveVideo", "filename_prefix"): "OCD/video",
}
ODD = ("\x00", "\x01", "\x1b", "\x7f", "\n", "\x85")


def odd_names(name: str) -> list[str]:
    """``name`` with each odd character at its end, its start and inside; and a lone surrogate."""
    stem, dot, ext = name.rpartition(".")
    spoiled = [f"{name}{c}" for c in ODD] + [f"{c}{name}" for c in ODD[1:3]]
    spoiled.append(f"{stem}\x00.{ext}" if dot else f"{name[:2]}\x00{name[2:]}")
    return spoiled + [f"\ud800{name}"]


def _torch_bytes(value) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def _safetensors_bytes(state: dict) -> bytes:
    import safetensors.torch

    return safetensors.torch.save(state)


class _NotAState:  # a pickled object: torch.load(weights_only=True) refuses its class
    pass


@pytest.fixture(scope="module")
def broken_files(server):
    """Broken files of each kind the pack reads itself: SAM checkpoints in models/sams, videos in
    input/ (named to sort after every real file, so no graph's default option changes), removed
    afterwards. Yields their paths."""
    sams, inputs = server.base / "models" / "sams", server.base / "input"
    sam = (sams / RANDOM_SAM).read_bytes()
    clip = (inputs / "bikes.mp4").read_bytes()
    files = {
        sams / "zz-broken-garbage.pth": bytes(range(256)) * 40,
        sams / "zz-broken-empty.pth": b"",
        sams / "zz-broken-truncated.pth": sam[: len(sam) // 2],
        sams / "zz-broken-not-sam.pth": _torch_bytes({"model.diffusion_model.w": torch.zeros(2, 2)}),
        sams / "zz-broken-a-list.pth": _torch_bytes([1, 2, 3]),
        sams / "zz-broken-an-object.pth": _torch_bytes(_NotAState()),
        sams / "zz-broken-garbage.safetensors": b"\xff" * 64,
        sams / "zz-broken-wrong-size.safetensors": _safetensors_bytes(
            {"image_encoder.patch_embed.proj.weight": torch.zeros(768, 3, 16, 16),
             "image_encoder.blocks.0.norm1.weight": torch.zeros(768)}),
        inputs / "zz-broken-garbage.mp4": bytes(range(256)) * 40,
        inputs / "zz-broken-empty.mp4": b"",
        inputs / "zz-broken-truncated.mp4": clip[: len(clip) // 2],
        inputs / "zz-broken-text.gif": b"GIF89a? no, text\n",
        inputs / "zz-broken-garbage.webp": b"RIFF\x00\x00\x00\x00WEBPVP8 " + b"\x00" * 64,
    }
    for path, data in files.items():
        path.write_bytes(data)
    yield sorted(files, key=str)
    for path in files:
        path.unlink()


@pytest.fixture(scope="module")
def info(server, broken_files):
    return server.get("/object_info")  # after the broken files exist: they are listed


def tensor_inputs(info: dict) -> set[tuple[str, str, str]]:
    """(node, input, MASK, IMAGE, LATENT or CONDITIONING) of every OCD node."""
    return {(n, name, kind) for n in info if n.startswith("OCD_")
            for name, (_, kind, _) in spec_of(info, n).items() if kind in SOURCE_SLOT}


def wan_graph(info: dict) -> tuple[Graph, dict]:
    """A graph holding the random Wan, its text stand-in and an empty Wan latent: the links a
    node taking a Wan model gets."""
    graph = Graph(info)
    model = graph.node("UNETLoader", {"unet_name": WAN21_SMALL_FILE, "weight_dtype": "default"})
    text = graph.node("OCDTest_TextConditioning", {"text": "a red ball", "tokens": 4})
    latent = graph.node("EmptyHunyuanLatentVideo", {"width": 32, "height": 32, "length": 5, "batch_size": 1})
    return graph, {"model": [model, 0], "positive": [text, 0], "negative": [text, 0], "latent_image": [latent, 0]}


def cheap_links(graph: Graph, class_type: str) -> dict:
    """Links for inputs whose default provider would be slow or absent: a real SAM (the sweep's
    dummy is not there), a one-step inversion."""
    links = {}
    for name, (_, kind, _) in spec_of(graph.info, class_type).items():
        if kind == "OCD_SAM_MODEL":
            links[name] = [graph.node("OCD_SAMLoader", {"sam_name": RANDOM_SAM, "device": "cpu"}), 0]
        elif kind == "OCD_INVERSION":
            inverted = graph.node("OCD_InvertLatents", {"steps": 1})
            links[name] = [inverted, 1]
    return links


def refusal(server, prompt: dict, node_id: str) -> tuple[str, str]:
    """Run ``prompt``; it must fail at ``node_id`` with the pack's input error: (message, type)."""
    entry = server.run(prompt)
    error = execution_error(entry)
    if entry["status"]["status_str"] != "error" or error is None:
        return "accepted", ""
    if error["node_id"] != node_id:
        return f"failed at node {error['node_id']} ({error['node_type']}): {error['exception_message'][:200]}", ""
    return error["exception_message"], error["exception_type"]


def test_non_finite_masks_images_latents_and_conditioning_are_refused_by_name(server, info):
    targets = tensor_inputs(info)
    assert {(n, name) for n, name, _ in targets} >= KNOWN_TENSOR_INPUTS, sorted(targets)
    cases = [(n, name, kind, False) for n, name, kind in sorted(targets)]
    cases += [(n, name, "MASK", True) for n, name in WAN_TENSOR_INPUTS]
    before = files_of(server)
    failures, swept = [], 0
    for class_type, name, kind, on_wan in cases:
        for value in NON_FINITE:
            graph, given = wan_graph(info) if on_wan else (Graph(info), {})
            given = {**given, **cheap_links(graph, class_type)}
            source = graph.node(SOURCE, {"value": value, "frames": 1, "width": 32, "height": 32})
            node_id = graph.node(class_type, {**given, name: [source, SOURCE_SLOT[kind]]})
            message, error_type = refusal(server, graph.with_sink(node_id), node_id)
            swept += 1
            what = "NaN" if value == "nan" else "infinite"
            count = 4 * (3 if kind == "IMAGE" else 1)  # a 2x2 square (of every channel)
            expected = rf"^input '{name}': holds {count} {what} values \(of \d+\): an? {kind} must hold finite values"
            if not re.search(expected, message) or not error_type.endswith("OCDInputError"):
                failures.append(f"{class_type}.{name} = {value}{' (Wan)' if on_wan else ''}: {message[:240]}")
    assert not failures, f"{len(failures)} of {swept} refusals wrong:\n" + "\n".join(failures)
    assert swept >= 3 * (len(KNOWN_TENSOR_INPUTS) + len(WAN_TENSOR_INPUTS))
    assert files_of(server) == before  # nothing written
    # and the server still does real work: the same graphs with a finite mask run through
    graph, given = wan_graph(info)
    solid = graph.node("SolidMask", {"value": 1.0, "width": 32, "height": 32})
    merge = graph.node("OCD_TokenMerge", {"model": given["model"], "mask": [solid, 0]})
    sampler = graph.node("OCD_DualRateKSampler", {**given, "model": [merge, 0], "mask": [solid, 0], "steps": 2})
    entry = server.run(graph.with_sink(sampler))
    assert entry["status"]["status_str"] == "success", execution_error(entry)


def test_file_names_with_control_characters_are_refused_by_name(server, info):
    candidates = {(n, name) for n in info if n.startswith("OCD_")
                  for name, (_, kind, options) in spec_of(info, n).items()
                  if (kind == "COMBO" and any(re.search(r"\.[A-Za-z0-9]{2,12}$", str(o))
                                              for o in options.get("options", [])))
                  or (kind == "STRING" and re.search(r"file|path|prefix|folder", name))}
    assert candidates == set(FILE_NAME_INPUTS), "classify every file-name input"
    before = files_of(server)
    failures, swept = [], 0
    for (class_type, name), good in FILE_NAME_INPUTS.items():
        for value in odd_names(good):
            graph = Graph(info)
            node_id = graph.node(class_type, {name: value})
            status, body = server.queue(graph.with_sink(node_id))
            swept += 1
            if status == 200:
                stop_everything(server)
                failures.append(f"{class_type}.{name} = {value!r}: accepted")
                continue
            errors = body.get("node_errors", {})
            mine = errors.get(node_id, {}).get("errors", [])
            details = " ".join(e.get("details", "") for e in mine)
            others = {k for k in errors if k != node_id}
            if (others or named_inputs(mine) != {name} or "embedded null byte" in details
                    or not re.search(r"holds a control character|is not a file name this system can write", details)):
                failures.append(f"{class_type}.{name} = {value!r}: other nodes {sorted(others)}: "
                                f"{[(e['type'], e['details'][:200]) for e in mine]}")
    assert not failures, f"{len(failures)} of {swept} refusals wrong:\n" + "\n".join(failures)
    assert files_of(server) == before


def test_broken_files_are_refused_by_name(server, info, broken_files):
    before = files_of(server)
    failures = []
    for path in broken_files:
        class_type, name = ("OCD_SAMLoader", "sam_name") if path.parent.name == "sams" else ("OCD_LoadVideo", "video")
        graph = Graph(info)
        values = {name: path.name, "device": "cpu"} if name == "sam_name" else {name: path.name, "frame_load_cap": 0}
        node_id = graph.node(class_type, values)
        message, error_type = refusal(server, graph.with_sink(node_id), node_id)
        if not message.startswith(f"input '{name}': ") or not error_type.endswith("OCDInputError"):
            failures.append(f"{class_type}.{name} = {path.name}: {message[:240]}")
    assert not failures, f"{len(failures)} of {len(broken_files)} refusals wrong:\n" + "\n".join(failures)
    assert files_of(server) == before
