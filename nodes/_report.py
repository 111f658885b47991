"""The run report's view of a node: which graph node (ComfyUI's unique_id) and its name."""
from __future__ import annotations

from ..ocd import comfy_report
from ..ocd.report import NodeRef, RunReport


def node_ref(node_cls) -> NodeRef:
    """``node_cls`` as it appears in the graph being run (call from ``execute``; the executor's
    class clone is locked, so its schema is read, never built into it)."""
    schema = node_cls.SCHEMA or node_cls.define_schema()
    return comfy_report.node_ref(schema.display_name, node_cls.hidden.unique_id)


def new_report(node_cls) -> RunReport:
    """A run report owned by the executing sampler node ``node_cls``."""
    return RunReport(node_ref(node_cls))


publish = comfy_report.publish
