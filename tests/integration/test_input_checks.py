"""nodes/_inputs.py in ComfyUI: every OCD node checks its inputs against its own V3 schema,
the widget values in validate_inputs (as ComfyUI calls it: linked inputs as None, inputs the
prompt lacks not passed), and the values that came through links when the node runs, before
it does anything."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch


def defaults(node_cls) -> dict:
    """The values a fresh node sends: widget defaults (a combo's first option), links as None."""
    from comfy_api.latest import io

    values = {}
    for spec in node_cls.define_schema().inputs:
        if spec.optional:
            continue
        if isinstance(spec, io.Combo.Input):
            values[spec.id] = spec.default if spec.default is not None else (spec.options or [None])[0]
        elif getattr(spec, "default", None) is not None:
            values[spec.id] = spec.default
        elif isinstance(spec, (io.String.Input,)):
            values[spec.id] = ""
        else:
            values[spec.id] = None  # a link
    return values


def test_every_node_is_checked_by_the_one_mechanism(ocd_nodes):
    from comfy_api.internal import first_real_override

    bases = {next(c for c in node_cls.__mro__ if c.__name__ == "OCDNode") for node_cls in ocd_nodes.values()}
    assert len(bases) == 1  # one base (the pack as ComfyUI loaded it), under every node
    (base,) = bases
    for node_id, node_cls in ocd_nodes.items():
        # what ComfyUI's validation calls (execution.validate_inputs): the base's, never a node's own
        assert first_real_override(node_cls, "validate_inputs").__func__ is base.validate_inputs.__func__, node_id
        assert getattr(node_cls.execute.__func__, "__ocd_checked_execute__", False), node_id


@pytest.mark.parametrize("node_id", ["OCD_LoadVideo", "OCD_SaveVideo", "OCD_TokenMerge", "OCD_DualRateKSampler",
                                     "OCD_MaskOps", "OCD_SAMVideoMask", "OCD_InvertLatents"])
def test_defaults_pass_and_each_bad_value_is_named(ocd_nodes, node_id):
    node_cls = ocd_nodes[node_id]
    values = defaults(node_cls)
    assert node_cls.validate_inputs(**values) is True
    from comfy_api.latest import io

    for spec in node_cls.define_schema().inputs:
        if isinstance(spec, (io.Int.Input, io.Float.Input)) and not spec.optional:
            for bad in (float("nan"), float("inf"), (spec.max if spec.max is not None else 0) + 1):
                message = node_cls.validate_inputs(**{**values, spec.id: bad})
                assert isinstance(message, str) and message.startswith(f"input '{spec.id}'"), (spec.id, bad, message)
        if isinstance(spec, io.Combo.Input) and not spec.optional:
            message = node_cls.validate_inputs(**{**values, spec.id: "no-such-option"})
            assert isinstance(message, str) and f"input '{spec.id}'" in message, message


def test_an_absent_required_value_reaches_the_nodes_message(ocd_nodes, comfy):
    values = defaults(ocd_nodes["OCD_LoadVideo"])
    del values["video"]
    message = ocd_nodes["OCD_LoadVideo"].validate_inputs(**values)
    assert message.startswith("input 'video': no video chosen: put a video")
    assert str(Path(comfy.base_directory) / "input") in message
    message = ocd_nodes["OCD_SAMLoader"].validate_inputs(device="cpu")
    assert message.startswith("input 'sam_name': no checkpoint chosen; put a Segment Anything checkpoint")


def test_linked_values_are_checked_before_the_node_runs(run, ocd_nodes, comfy, inference):
    """Values from other nodes do not exist at validation: the node checks them when it runs,
    before it reads a file or writes one."""
    output = Path(comfy.base_directory) / "output"
    before = sorted(output.rglob("*"))
    save = dict(images=torch.rand(2, 16, 16, 3), frame_rate=8.0, filename_prefix="OCD/linked", format="mp4",
                crf=19, save_output=True)
    for name, value, message in (
        ("frame_rate", float("nan"), "must be a finite number"),
        ("frame_rate", 0.0, "must be 0.01..1000"),
        ("crf", 60, "must be 0..51"),
        ("format", "avi", "must be one of"),
        ("images", [1, 2], "must be an IMAGE"),
        ("images", torch.rand(16, 16, 3), "must be an IMAGE"),
        ("audio", {"waveform": torch.zeros(2, 5)}, "must be an AUDIO"),
        ("video_info", "25 fps", "must be a dict"),
    ):
        with pytest.raises(ValueError, match=f"input '{name}': {message}"):
            run(ocd_nodes["OCD_SaveVideo"], **{**save, name: value})
    assert sorted(output.rglob("*")) == before

    load = dict(video="bikes.mp4", frame_load_cap=2, skip_first_frames=0, select_every_nth=1, force_rate=0.0,
                width=64, height=0, resize_mode="crop")
    for name, value in (("resize_mode", "zoom"), ("select_every_nth", 0), ("width", -8), ("video", 3)):
        with pytest.raises(ValueError, match=f"input '{name}'"):
            run(ocd_nodes["OCD_LoadVideo"], **{**load, name: value})
    with pytest.raises(ValueError, match="input 'mask': must be a MASK"):
        run(ocd_nodes["OCD_MaskOps"], mask="not a mask", grow_pixels=0, feather_pixels=0.0, threshold=-1.0,
            invert=False, smooth_frames=1, tube_frames=1, width=0, height=0)


def test_the_run_clones_comfyui_makes_are_not_wrapped_twice(ocd_nodes):
    node_cls = ocd_nodes["OCD_SaveVideo"]
    clone = node_cls.PREPARE_CLASS_CLONE({})
    assert clone.execute.__func__ is node_cls.execute.__func__
    assert os.path.basename(node_cls.execute.__func__.__code__.co_filename) == "_inputs.py"
