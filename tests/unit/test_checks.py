"""ocd.checks: one value against what its input declares (no ComfyUI needed), and the JSON
form of SAM Video Mask's prompts, checked before the frames exist."""
from __future__ import annotations

import json
import math

import pytest
import torch

from ocd import checks
from ocd.errors import OCDInputError
from ocd.masks import sam_video


@pytest.mark.parametrize("value, integer, minimum, maximum, accepted", [
    (3, True, 0, 10, 3),
    (3.0, True, 0, 10, 3),  # a whole float is a whole number
    (0.5, False, 0.0, 1.0, 0.5),
    (10**20, True, 0, None, 10**20),
])
def test_numbers_in_range_pass(value, integer, minimum, maximum, accepted):
    result = checks.number("n", value, integer=integer, minimum=minimum, maximum=maximum)
    assert result == accepted and type(result) is type(accepted)


@pytest.mark.parametrize("value, integer, message", [
    (float("nan"), False, "finite"),
    (float("inf"), False, "finite"),
    (-math.inf, True, "whole number"),
    (2.5, True, "whole number"),
    (11, True, "0..10"),
    (-0.1, False, "0..10"),
    (True, True, "got bool"),
    ("3", False, "got str"),
    (None, False, "got NoneType"),
])
def test_numbers_refused_name_the_input_and_the_range(value, integer, message):
    with pytest.raises(OCDInputError, match=f"input 'n': .*{message}") as err:
        checks.number("n", value, integer=integer, minimum=0, maximum=10)
    assert err.value.input_name == "n"


def test_options_are_matched_exactly_with_their_type():
    assert checks.option("mode", "full", ["first", "full"]) == "full"
    for wrong in ("Full", 1, True, None, {"x": 1}, ["full"]):
        with pytest.raises(OCDInputError, match=r"input 'mode': must be one of \['first', 'full'\]"):
            checks.option("mode", wrong, ["first", "full"])
    with pytest.raises(OCDInputError, match="must be one of"):
        checks.option("max_downsample", 2, ["1", "2", "4"])  # 2 is not '2'
    with pytest.raises(OCDInputError, match=r"\.\.\. \(40 in all\)"):  # long lists are summarised
        checks.option("name", "x", [f"f{i}" for i in range(40)])


def test_json_objects_are_parsed_with_the_form_shown():
    assert checks.json_object("p", '{"a": 1}', "{a: n}") == {"a": 1}
    assert checks.json_object("p", "  ", "{a: n}") == {}
    for text, message in (("{nope", "not valid JSON"), ("[1]", "must be a JSON object"),
                          ('{"a": NaN}', "NaN is not a JSON number"), (3, "must be JSON text")):
        with pytest.raises(OCDInputError, match=f"input 'p': .*{message}") as err:
            checks.json_object("p", text, "{a: n}")
        assert "form {a: n}" in str(err.value)


def test_linked_values_are_checked_by_their_socket_type():
    checks.LINKED_VALUE_CHECKS["IMAGE"]("images", torch.zeros(1, 8, 8, 3))
    checks.LINKED_VALUE_CHECKS["LATENT"]("latent", {"samples": torch.zeros(1, 4, 8, 8)})
    checks.LINKED_VALUE_CHECKS["MASK"]("mask", torch.zeros(8, 8))
    checks.LINKED_VALUE_CHECKS["AUDIO"]("audio", {"waveform": torch.zeros(1, 2, 10), "sample_rate": 8000})
    for kind, name, value in (("IMAGE", "images", torch.zeros(8, 8, 3)), ("IMAGE", "images", "x"),
                              ("IMAGE", "images", torch.zeros(1, 8, 8, 3, dtype=torch.uint8)),
                              ("LATENT", "latent", torch.zeros(1, 4, 8, 8)), ("MASK", "mask", torch.zeros(8)),
                              ("AUDIO", "audio", {"waveform": torch.zeros(2, 10), "sample_rate": 8000}),
                              ("AUDIO", "audio", {"waveform": torch.zeros(1, 2, 10), "sample_rate": 8000.5}),
                              ("VHS_VIDEOINFO", "video_info", [1])):
        with pytest.raises(OCDInputError, match=f"input '{name}'"):
            checks.LINKED_VALUE_CHECKS[kind](name, value)


# ---- SAM prompts: the form, before any frame exists ------------------------------------------

@pytest.mark.parametrize("prompts", [
    json.dumps(sam_video.EMPTY_PROMPTS),  # the default: no prompt yet (the editor's first run)
    "",
    json.dumps({"frame": 2, "width": 640, "height": 360.5, "points": [[1, 2.5]], "labels": [1], "box": None}),
    json.dumps({"points": [[1, 2]], "box": [0, 0, 10, 10]}),
])
def test_well_formed_prompts_pass(prompts):
    sam_video.read_prompts(prompts)


@pytest.mark.parametrize("prompts, field", [
    ('{"frame": 1.5}', "frame"), ('{"frame": -1}', "frame"), ('{"frame": "0"}', "frame"),
    ('{"width": "wide"}', "width"), ('{"height": -3}', "height"),
    ('{"points": "here"}', "points"), ('{"points": [[1, 2, 3]]}', "points"), ('{"points": [["a", 1]]}', "points"),
    ('{"points": [[1, true]]}', "points"),
    ('{"labels": [2]}', "labels"), ('{"labels": "1"}', "labels"), ('{"labels": [true]}', "labels"),
    ('{"box": [1, 2]}', "box"), ('{"box": "none"}', "box"),
])
def test_wrong_field_types_name_the_field_and_show_the_form(prompts, field):
    with pytest.raises(OCDInputError, match=f"input 'prompts': field '{field}'") as err:
        sam_video.read_prompts(prompts)
    assert sam_video.PROMPTS_FORM in str(err.value)
    with pytest.raises(OCDInputError, match=f"field '{field}'"):  # parse_prompts says the same
        sam_video.parse_prompts(prompts, frame_count=3, height=40, width=60)
