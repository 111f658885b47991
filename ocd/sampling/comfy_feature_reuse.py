"""Clockwork feature reuse in ComfyUI's sampling (the glue; the schedule is in
``ocd.sampling.feature_reuse``, where a network is cut in ``ocd.host``).

Two keyed wrappers on a clone of the model, so it composes with other packs' patches:

- OUTER_SAMPLE: each sampling run gets its own ``_RunFeatures`` (in the run's options) and a
  step count from the sampler's callback, which samplers call once per step however many
  times they evaluate the model in between. The features are dropped when the run ends
  (also when it is interrupted): nothing survives between runs, and the dual-rate sampler's
  branches, inversion and editing passes are separate runs.
- DIFFUSION_MODEL: on a full step the network runs as it always does, and the output of the
  cut (the second-highest-resolution decoder stage) is kept; on a reused step only the
  recomputed levels run, with the kept features in between. Features are kept per batch
  identity (shape, CFG groups, context-window frames) and ControlNet on or off, so no call
  ever reads another's features; a call with nothing kept runs fully.

Cross-frame attention and token merging run in the recomputed levels as usual; attention
fusion fuses the layers that run, and the recorded layers a reused step skips are counted in
the run report.
"""
from __future__ import annotations

from .. import comfy_report, host
from ..report import NodeRef
from .feature_reuse import FeatureReuseSettings, full_step

_WRAPPER_KEY = "ocd_feature_reuse"
FEATURE_REUSE_NODE = NodeRef("Feature Reuse (OCD)")  # the report's part without a node (library use)


class _RunFeatures:
    """What one sampling run keeps: the features per batch identity and the step count."""

    def __init__(self, steps: int, inversion: bool):
        self.steps = steps
        self.inversion = inversion
        self.step = 0  # sampling steps completed (the sampler's callback count)
        self.features: dict[tuple, object] = {}
        self.points = None
        self.fused_skipped: set[tuple] = set()

    def finished(self, i: int) -> None:
        self.step = i + 1


def _run_features(executor, *args, **kwargs):
    """OUTER_SAMPLE wrapper: the run's features and step count, dropped when the run ends."""
    options = host.guider_options(executor.class_obj)
    if options.get(host.FEATURE_REUSE_KEY) is None:
        return executor(*args, **kwargs)
    sigmas = host.run_sigmas(args, kwargs)
    run = _RunFeatures(len(sigmas) - 1, bool(len(sigmas) > 1 and sigmas[-1] > sigmas[0]))
    args, kwargs = host.with_step_callback(args, kwargs, run.finished)
    options[host.FEATURE_CACHE_KEY] = run
    try:
        return executor(*args, **kwargs)
    finally:
        options.pop(host.FEATURE_CACHE_KEY, None)


def _count(report, settings: FeatureReuseSettings, run: _RunFeatures, reused: bool) -> None:
    if report is None:
        return
    facts = report.section(settings.node or FEATURE_REUSE_NODE).facts
    key = "reused_evaluations" if reused else "full_evaluations"
    facts[key] = facts.get(key, 0) + 1
    if reused:
        steps = facts.setdefault("reused_steps", [])
        if run.step not in steps:
            steps.append(run.step)
    if run.fused_skipped:
        facts["fused_pairs_skipped"] = len(run.fused_skipped)


def _note_skipped_fusion(run: _RunFeatures, options: dict) -> None:
    """The recorded attention a reused step does not fuse: its layers do not run."""
    hook = host.call_state(options, host.ATTENTION_HOOK_KEY)
    record, steps = getattr(hook, "record", None), getattr(hook, "replace_steps", None)
    if record is None or steps is None:
        return
    step = host.step_index(options)
    if step in steps:
        run.fused_skipped.update((step, layer) for s, layer in record.maps if s == step and run.points.skips(layer))


def _reuse_features(executor, *args, **kwargs):
    """DIFFUSION_MODEL wrapper: the whole network, or its recomputed levels and kept features."""
    call = host.diffusion_call(args, kwargs)
    run = host.call_state(call.options, host.FEATURE_CACHE_KEY)
    settings = host.call_state(call.options, host.FEATURE_REUSE_KEY)
    if run is None or settings is None:  # outside a sampling run (a direct model call)
        return executor(*args, **kwargs)
    network = executor.class_obj
    family = host.network_family(network)
    if run.points is None:
        run.points = family.reuse_points(network, settings.recomputed_levels)
    key = (host.batch_identity(call.x.shape, call.options), call.control is not None)
    report = host.call_state(call.options, host.RUN_REPORT_KEY)
    kept = run.features.get(key)
    if kept is not None and not full_step(run.step, run.steps, settings, run.inversion):
        _note_skipped_fusion(run, call.options)
        _count(report, settings, run, reused=True)
        return family.forward_recomputed(network, run.points, kept, call)
    captured = {}
    handle = family.cached_module(network, run.points).register_forward_hook(
        lambda module, inputs, output: captured.update(features=output))
    try:
        out = executor(*args, **kwargs)
    finally:
        handle.remove()
    if "features" in captured:
        run.features[key] = captured["features"]
    _count(report, settings, run, reused=False)
    return out


def apply_feature_reuse(model_patcher, settings: FeatureReuseSettings):
    """A clone of ``model_patcher`` that reuses its low-resolution features per ``settings``."""
    import comfy.patcher_extension

    settings.validate()
    family = host.family_of(model_patcher)
    family.reuse_points(host.network_of(model_patcher), settings.recomputed_levels)  # refuses bad levels
    patched = model_patcher.clone()
    host.put_state(patched, host.FEATURE_REUSE_KEY, settings)
    wrappers = comfy.patcher_extension.WrappersMP
    for kind, wrapper in ((wrappers.OUTER_SAMPLE, _run_features), (wrappers.DIFFUSION_MODEL, _reuse_features)):
        patched.remove_wrappers_with_key(kind, _WRAPPER_KEY)
        patched.add_wrapper_with_key(kind, _WRAPPER_KEY, wrapper)
    comfy_report.install(patched)
    return patched
