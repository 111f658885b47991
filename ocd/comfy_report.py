"""ComfyUI glue of the run report (ocd/report.py): where a report lives during a run, how
evaluations are counted, how the patches announce themselves, and publishing.

- ``attach(model, report)``: a clone carrying ``report`` for the runs of one node execution
  (the pack's sampler nodes), with the counting wrappers;
- ``install(model)``: the keyed wrappers alone (the patch nodes): when a sampler that is not
  the pack's (core's KSampler) runs the model, the OUTER_SAMPLE wrapper makes a report for
  that sampling run and publishes it when the run ends;
- the PREDICT_NOISE wrapper counts one evaluation per denoiser call (the UNet on the CFG
  batch) into the running phase, with its sigma and latent pixels;
- ``publish(report)``: one log line, the text of each node's part shown on that node (the
  ``ocd.report`` message, web/ocd_report.js), and the owner node's UI output.
"""
from __future__ import annotations

import logging

from . import host
from .report import NodeRef, RunReport

log = logging.getLogger("ocd.report")

_RUN_WRAPPER_KEY = "ocd_run_report"
UI_TEXT = "ocd_report"  # UI output key: the report's lines for the node
UI_DATA = "ocd_run"  # UI output key: the whole report as data (tests read it from /history)
UI_EVENT = "ocd.report"  # message to the browser: {"node": id, "text": lines, "run": the report's data}


def _count_evaluation(executor, x, timestep, *args, **kwargs):
    """PREDICT_NOISE wrapper: one denoiser evaluation of the running phase."""
    out = executor(x, timestep, *args, **kwargs)
    report = host.guider_state(executor.class_obj, host.RUN_REPORT_KEY)
    if report is not None:
        sigma = float(timestep.reshape(-1)[0]) if hasattr(timestep, "reshape") else float(timestep)
        report.evaluated(sigma, x.shape[0] * x[0, 0].numel())  # batch x (frames) x h x w
    return out


def register_patches(report: RunReport, options: dict) -> None:
    """Give every pack patch in the run's options its part of the report, so a patch that
    never acts in the run (no layer it may merge) is still seen, and says why."""
    for key in (host.CROSS_FRAME_KEY, host.TOKEN_MERGE_KEY, host.FEATURE_REUSE_KEY):
        settings = options.get(key)
        node = getattr(settings, "node", None)
        if node is not None and node.key not in report.sections:
            report.note(node, **settings.summary())
            for warning in settings.warnings() if hasattr(settings, "warnings") else ():
                report.warn(node, warning)


def _run_report(executor, *args, **kwargs):
    """OUTER_SAMPLE wrapper: the run's report (the pack sampler's, or one made for this run)."""
    guider = executor.class_obj
    options = host.guider_options(guider)
    report = options.get(host.RUN_REPORT_KEY)
    if report is not None:  # a sampler node of the pack owns the run and publishes it
        register_patches(report, options)
        report.controlnet |= host.guider_has_controlnet(guider)
        return executor(*args, **kwargs)
    report = RunReport()
    options[host.RUN_REPORT_KEY] = report
    register_patches(report, options)
    report.controlnet = host.guider_has_controlnet(guider)
    try:
        with report.phase("sampling"):
            return executor(*args, **kwargs)
    finally:
        options.pop(host.RUN_REPORT_KEY, None)
        publish(report)


def install(model_patcher) -> None:
    """Put the report's keyed wrappers on (a clone's) options; idempotent."""
    import comfy.patcher_extension

    wrappers = comfy.patcher_extension.WrappersMP
    for kind, wrapper in ((wrappers.OUTER_SAMPLE, _run_report), (wrappers.PREDICT_NOISE, _count_evaluation)):
        model_patcher.remove_wrappers_with_key(kind, _RUN_WRAPPER_KEY)
        model_patcher.add_wrapper_with_key(kind, _RUN_WRAPPER_KEY, wrapper)


def attach(model_patcher, report: RunReport):
    """A clone whose sampling runs count into ``report`` (and publish nothing themselves)."""
    patched = model_patcher.clone()
    host.put_state(patched, host.RUN_REPORT_KEY, report)
    install(patched)
    return patched


def report_of(model_patcher) -> RunReport | None:
    return host.state_of(model_patcher, host.RUN_REPORT_KEY)


def _check_patches(report: RunReport) -> None:
    """End-of-run checks of the patches' parts: what a patch was asked to do and never did."""
    for section in report.sections.values():
        facts = section.facts
        if facts.get("feature") == "token_merge" and facts.get("merge_ratio", 0) > 0 and not section.merges \
                and not section.pools:
            report.warn(section.node, "merged no layer in this run: no self-attention layer had a token grid "
                        f"within max_downsample {facts.get('max_downsample')} in blocks "
                        f"{facts.get('blocks')} (raise max_downsample or list other blocks)")


def publish(report: RunReport) -> dict:
    """Log the report, show each node's part on it, and return the owner node's UI output."""
    _check_patches(report)
    log.info(report.summary_line())
    for section in report.sections.values():
        if section.node.node_id is not None:
            host.send_to_ui(UI_EVENT, {"node": section.node.node_id, "text": report.text(section.node),
                                       "run": report.as_dict()})
    if report.owner is None:
        return {}
    return {UI_TEXT: [report.text(report.owner)], UI_DATA: [report.as_dict()]}


def node_ref(name: str, node_id) -> NodeRef:
    return NodeRef(name, None if node_id is None else str(node_id))
