"""Every input of every OCD node checked before use, against the node's own V3 schema.

ComfyUI 0.3.75 does not check a V3 combo value against its options, lets NaN and infinite
floats through its min/max comparison, and skips min/max altogether for the inputs a custom
``validate_inputs`` receives. So each node derives from ``OCDNode``, whose one
``validate_inputs`` checks every widget value the prompt carries (``ocd.checks``: options,
ranges, finite numbers, text) and whose ``execute`` wrapper checks the values that arrive
through links once they exist (a frame rate from another node, an IMAGE, an AUDIO; a MASK,
IMAGE, LATENT or CONDITIONING holding NaN or infinity is refused by name before the node does
any work). A node adds
what only it knows (a file in a folder, the form of a JSON field) in ``INPUT_CHECKS``; ranges
that depend on each other stay in the library.

How ComfyUI calls it (execution.py, ``validate_inputs``): a ``validate_inputs(**kwargs)`` is
passed every input the prompt has, linked ones as None (their values do not exist yet);
inputs the prompt lacks are not passed at all, so a required one that is absent (the frontend
sends nothing for a combo without options) reaches its node's own message here instead of a
TypeError about a missing argument. A returned message is shown once per passed input: that
repetition is the host's.
"""
from __future__ import annotations

import functools
import inspect
from types import MappingProxyType
from typing import Any, Callable, Mapping

import torch
from comfy_api.latest import io

from ..ocd import checks
from ..ocd.errors import OCDInputError
from ..ocd.masks.ops import require_finite

_CHECKED = "__ocd_checked_execute__"


def _conditioning_tensors(value) -> list:
    """A CONDITIONING's tensors: each entry's text encoding and its pooled vector, if any."""
    tensors = []
    for entry in value:
        if isinstance(entry, (list, tuple)) and entry:
            extra = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
            tensors += [t for t in (entry[0], extra.get("pooled_output")) if torch.is_tensor(t)]
    return tensors


# Linked values refused when they hold NaN or infinity (docs/masks.md), by the tensors they
# carry: every MASK; every IMAGE, which the pack's nodes turn into masks, analyse or save; every
# LATENT's samples and noise mask and every CONDITIONING's tensors, which a sampler would turn
# into a latent of NaN.
FINITE_TENSORS = {
    "MASK": lambda value: [value],
    "IMAGE": lambda value: [value],
    "LATENT": lambda value: [value["samples"]] + [m for m in [value.get("noise_mask")] if torch.is_tensor(m)],
    # a text encoder's output and its pooled vector: a NaN there makes every step NaN
    "CONDITIONING": _conditioning_tensors,
}


def check_widget_value(spec: io.Input, value: Any) -> Any:
    """One value against its input's declaration (type, options, range)."""
    name = spec.id
    if isinstance(spec, io.Combo.Input):
        return checks.option(name, value, spec.options or [])
    if isinstance(spec, io.Int.Input):
        return checks.number(name, value, integer=True, minimum=spec.min, maximum=spec.max)
    if isinstance(spec, io.Float.Input):
        return checks.number(name, value, integer=False, minimum=spec.min, maximum=spec.max)
    if isinstance(spec, io.String.Input):
        return checks.text(name, value)
    if isinstance(spec, io.Boolean.Input):
        return checks.boolean(name, value)
    kind = str(spec.get_io_type())
    linked = checks.LINKED_VALUE_CHECKS.get(kind)
    if linked is not None:
        value = linked(name, value)
    for tensor in FINITE_TENSORS.get(kind, lambda _: [])(value):
        require_finite(tensor, name, kind)  # before any work: NaN never reaches a mask, a latent, a file
    return value


def is_widget(spec: io.Input) -> bool:
    return isinstance(spec, (io.Combo.Input, io.Int.Input, io.Float.Input, io.String.Input, io.Boolean.Input))


def problems(node_cls, values: Mapping[str, Any], *, validating: bool) -> list[OCDInputError]:
    """What is wrong with ``values`` for ``node_cls`` (empty: nothing).

    ``validating``: called from ``validate_inputs``, where None stands for a linked input
    (checked later, in ``execute``) and an absent required input was not sent at all.
    """
    found = []
    own_checks = node_cls.INPUT_CHECKS
    for spec in node_cls.define_schema().inputs:  # fresh: file lists change while the server runs
        name, own = spec.id, own_checks.get(spec.id)
        try:
            if name not in values:
                if validating and not spec.optional:
                    if own is not None and isinstance(spec, io.Combo.Input):
                        own(None)  # a list of files with none in it: the node says where to put one
                    raise OCDInputError(name, "no value was sent for this required input")
                continue
            value = values[name]
            if validating and value is None:
                continue  # a link: its value does not exist before the run
            if not is_widget(spec) and validating:
                raise OCDInputError(name, f"must be connected to a {spec.get_io_type()} output, "
                                    f"got the constant {value!r:.60}")
            if own is not None and isinstance(spec, io.Combo.Input):
                # the node's own check replaces the option list (files in a folder), after the
                # type: the options' (text when there are none to look at)
                kind = type(spec.options[0]) if spec.options else str
                if not isinstance(value, kind) or isinstance(value, bool):
                    raise OCDInputError(name, f"must be a {kind.__name__} choice, got {type(value).__name__} "
                                        f"{value!r:.60}")
                own(value)
                continue
            check_widget_value(spec, value)
            if own is not None:
                own(value)
        except OCDInputError as e:
            found.append(e)
    return found


class OCDNode(io.ComfyNode):
    """Base of every OCD node: its inputs are checked against its schema before it runs.

    ``INPUT_CHECKS``: input name -> callable raising ``OCDInputError`` for a value only the
    node can judge (after the type and range checks); for a combo it replaces the option
    check (a file that exists in its folder), and is called with None when no value was sent.
    """

    INPUT_CHECKS: Mapping[str, Callable[[Any], Any]] = MappingProxyType({})

    @classmethod
    def validate_inputs(cls, **values) -> bool | str:
        found = problems(cls, values, validating=True)
        return "; ".join(map(str, found)) if found else True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # Values that came through links are checked when they arrive: wrap the node's own
        # execute once (ComfyUI's per-run class clones copy the wrapped one; skip them).
        own = cls.__dict__.get("execute")
        if own is None or getattr(own.__func__, _CHECKED, False):
            return
        run = own.__func__
        parameters = run.__code__.co_varnames[1:run.__code__.co_argcount]

        def check(node_cls, args, kwargs) -> None:
            values = {**dict(zip(parameters, args)), **kwargs}  # ComfyUI passes keywords only
            found = problems(node_cls, values, validating=False)
            if found:
                raise found[0]  # ComfyUI shows it as the node's error, naming the input

        if inspect.iscoroutinefunction(run):
            @functools.wraps(run)
            async def execute(node_cls, *args, **kwargs):
                check(node_cls, args, kwargs)
                return await run(node_cls, *args, **kwargs)
        else:
            @functools.wraps(run)
            def execute(node_cls, *args, **kwargs):
                check(node_cls, args, kwargs)
                return run(node_cls, *args, **kwargs)

        setattr(execute, _CHECKED, True)
        cls.execute = classmethod(execute)
