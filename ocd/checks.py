"""Checks of one input value against what its node declares: a number in its range (never NaN
or infinite), a choice among its options, text, a JSON object of an expected form, and the
shapes of the values ComfyUI passes between nodes (IMAGE, MASK, LATENT, AUDIO, ...).

Pure Python/PyTorch; ``nodes/_inputs.py`` reads each node's V3 schema and calls these, so every
input of every node is checked the same way. Each check returns the value it accepted and
raises ``OCDInputError`` naming the input and saying what is allowed.
"""
from __future__ import annotations

import json
import math
from numbers import Integral, Real
from typing import Any, Sequence

import torch

from .errors import OCDInputError

MAX_LISTED_OPTIONS = 12  # longer option lists (file names, samplers) are summarised in messages


def _shown(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _range_text(minimum, maximum) -> str:
    if minimum is not None and maximum is not None:
        return f"{minimum:g}..{maximum:g}"
    if minimum is not None:
        return f"at least {minimum:g}"
    if maximum is not None:
        return f"at most {maximum:g}"
    return "a finite number"


def number(name: str, value: Any, *, integer: bool, minimum: float | None = None,
           maximum: float | None = None) -> int | float:
    """An INT or FLOAT input: a number (not a bool, not text), finite, within [minimum, maximum]."""
    kind = "a whole number" if integer else "a number"
    allowed = _range_text(minimum, maximum)
    if isinstance(value, bool) or not isinstance(value, Real):
        raise OCDInputError(name, f"must be {kind} ({allowed}), got {type(value).__name__} {_shown(value)}")
    if integer and not isinstance(value, Integral):
        if not math.isfinite(value) or value != int(value):
            raise OCDInputError(name, f"must be {kind} ({allowed}), got {_shown(value)}")
        value = int(value)
    if not math.isfinite(value):
        raise OCDInputError(name, f"must be a finite number ({allowed}), got {value}")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise OCDInputError(name, f"must be {allowed}, got {value:g}")
    return value


def option(name: str, value: Any, options: Sequence) -> Any:
    """A COMBO input: exactly one of ``options`` (same type: 2 is not '2')."""
    if any(value == o and type(value) is type(o) for o in options):
        return value
    if not options:
        raise OCDInputError(name, f"has no options to choose from, got {_shown(value)}")
    listed = list(options) if len(options) <= MAX_LISTED_OPTIONS else \
        [*options[:MAX_LISTED_OPTIONS], f"... ({len(options)} in all)"]
    raise OCDInputError(name, f"must be one of {listed}, got {_shown(value)}")


def _instance(name: str, value: Any, kind: type, wanted: str) -> Any:
    if not isinstance(value, kind):
        raise OCDInputError(name, f"must be {wanted}, got {_described(value)}")
    return value


def text(name: str, value: Any) -> str:
    return _instance(name, value, str, "text")


def boolean(name: str, value: Any) -> bool:
    return _instance(name, value, bool, "true or false")


def json_object(name: str, value: Any, form: str) -> dict:
    """A JSON text field: parsed to an object; ``form`` (an example of the expected JSON) is
    shown in every message, so the user sees what to write."""
    if isinstance(value, dict):
        return value
    if not isinstance(value, str):
        raise OCDInputError(name, f"must be JSON text of the form {form}, got {type(value).__name__}")
    try:
        # NaN/Infinity are not JSON (Python's parser would accept them): refused by name
        data = json.loads(value, parse_constant=_refuse_constant) if value.strip() else {}
    except (json.JSONDecodeError, ValueError) as e:
        raise OCDInputError(name, f"is not valid JSON ({e}); expected the form {form}") from None
    if not isinstance(data, dict):
        raise OCDInputError(name, f"must be a JSON object of the form {form}, got {_shown(data)}")
    return data


def _refuse_constant(constant: str):
    raise ValueError(f"{constant} is not a JSON number")


def field(name: str, data: dict, key: str, form: str, *, kind: str, default: Any = None,
          minimum: float | None = None) -> Any:
    """One field of a parsed JSON object: ``kind`` is 'int', 'number', 'list' or 'null|list'.
    Wrong types are refused naming the field and showing ``form``."""
    value = data.get(key, default)
    ok = {
        "int": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
        "list": isinstance(value, list),
        "null|list": value is None or isinstance(value, list),
    }[kind]
    if ok and minimum is not None and value < minimum:
        ok = False
    if not ok:
        wanted = {"int": "a whole number", "number": "a number", "list": "a list",
                  "null|list": "null or a list"}[kind]
        if minimum is not None:
            wanted += f" >= {minimum:g}"
        raise OCDInputError(name, f"field '{key}' must be {wanted}, got {_shown(value)}; expected the form {form}")
    return value


# ---- values passed between nodes ------------------------------------------------------------

def image(name: str, value: Any) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or value.ndim != 4 or not value.is_floating_point():
        raise OCDInputError(name, f"must be an IMAGE (a float tensor [frames, height, width, channels]), "
                            f"got {_described(value)}")
    return value


def mask(name: str, value: Any) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or not 2 <= value.ndim <= 4:
        raise OCDInputError(name, f"must be a MASK (a tensor [height, width], [frames, height, width] or "
                            f"[frames, 1, height, width]), got {_described(value)}")
    return value


def latent(name: str, value: Any) -> dict:
    if not isinstance(value, dict) or not isinstance(value.get("samples"), torch.Tensor):
        raise OCDInputError(name, f"must be a LATENT (a dict with a 'samples' tensor), got {_described(value)}")
    return value


def audio(name: str, value: Any) -> dict:
    """Core's AUDIO: ``{"waveform": float tensor [batch, channels, samples], "sample_rate": int}``."""
    waveform = value.get("waveform") if isinstance(value, dict) else None
    rate = value.get("sample_rate") if isinstance(value, dict) else None
    if (not isinstance(waveform, torch.Tensor) or waveform.ndim != 3 or not waveform.is_floating_point()
            or waveform.shape[1] < 1):
        raise OCDInputError(name, "must be an AUDIO ({'waveform': float tensor [batch, channels, samples], "
                            f"'sample_rate': int}}), got {_described(value)}")
    if isinstance(rate, bool) or not isinstance(rate, Integral) or rate <= 0:
        raise OCDInputError(name, f"AUDIO sample_rate must be a positive whole number, got {_shown(rate)}")
    return value


def mapping(name: str, value: Any) -> dict:
    return _instance(name, value, dict, "a dict (e.g. a video_info)")


def _described(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {str(value.dtype).replace('torch.', '')} tensor of shape {list(value.shape)}"
    if isinstance(value, dict):
        return f"a dict with keys {sorted(map(str, value))[:8]}"
    return f"{type(value).__name__} {_shown(value)}"


# The value checks of the types ComfyUI passes between nodes, by socket type. Types not listed
# (MODEL, CLIP, CONDITIONING, SAMPLER, the pack's own records) are opaque host or library objects:
# the library code that uses them checks them (``ensure_record``, ``family_of``, ...).
LINKED_VALUE_CHECKS = {
    "IMAGE": image,
    "MASK": mask,
    "LATENT": latent,
    "AUDIO": audio,
    "VHS_VIDEOINFO": mapping,
}
