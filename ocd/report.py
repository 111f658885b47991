"""The run report: what the pack's nodes actually did in one sampling run (pure; counters only).

Every OCD node that patches a model or samples says afterwards, on the node in the UI and as
one line in the server log, what happened: UNet evaluations per phase with their sigma range,
latent pixels and wall time; tokens before and after merging per merged layer, split into
the object's and the background's; the cross-frame key/value pool per layer; the fused
(step, layer) pairs; the attention record; the dual-rate plan; and the warnings (what a node
could not do and skipped, once per run each).

Life cycle. A sampler node of the pack creates one ``RunReport`` for its execution and puts
it into the options of the model it samples (``ocd.host.RUN_REPORT_KEY``); when a model
patched by the pack is sampled by another sampler (core's KSampler), the patches' keyed
wrapper creates one for that sampling run. The patches and hooks count into whatever report
the running call carries; the report is published (log line, UI text, the sampler node's
output) when the run ends and dropped. Nothing of it survives the run. Within a run it is
shared across the model clones the run makes (``ocd.shared``).

Cost: a few integer sums per attention call, and one object/background split per merged
layer and step (the mask's weights on the layer's grid, cached for the run).
"""
from __future__ import annotations

import logging
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import torch

from .shared import SharedAcrossClones

log = logging.getLogger("ocd.report")


@dataclass(frozen=True)
class NodeRef:
    """Which node of the graph a part of the report belongs to."""

    name: str  # the node's display name, e.g. "Object-Centric Token Merge (OCD)"
    node_id: str | None = None  # the graph's node id (ComfyUI's unique_id), None outside a graph

    def __str__(self) -> str:
        return f"{self.name} #{self.node_id}" if self.node_id is not None else self.name

    @property
    def key(self) -> str:
        return str(self)


def layer_name(layer: tuple, token_grid: tuple[int, ...] | None = None) -> str:
    """("input", 1, 0) -> "input.1.0"; with the token grid (a crop has its own): "input.1.0 16x16";
    a video transformer's block and its frames x height x width tokens: "block.3 9x16x16"."""
    name = ".".join(str(part) for part in layer)
    return name if token_grid is None else f"{name} {'x'.join(str(n) for n in token_grid)}"


@dataclass
class PhaseStats:
    evaluations: int = 0
    sigma_max: float | None = None
    sigma_min: float | None = None
    latent_pixels: int = 0  # frames x h x w summed over evaluations (the token-steps)
    seconds: float = 0.0
    tokens: float = 0.0  # video transformers: tokens run per batch row (average over blocks), summed over calls
    calls: int = 0  # video transformers: calls that ran the network (a step cache may answer others)

    def add(self, sigma: float | None, pixels: int) -> None:
        self.evaluations += 1
        self.latent_pixels += int(pixels)
        if sigma is not None:
            self.sigma_max = sigma if self.sigma_max is None else max(self.sigma_max, sigma)
            self.sigma_min = sigma if self.sigma_min is None else min(self.sigma_min, sigma)


@dataclass
class MergeStats:
    """Token counts of one merged layer, summed over its calls (per token set: a frame, or a
    key/value pool of several frames)."""

    calls: int = 0
    sets: int = 0
    tokens: int = 0
    kept: int = 0  # tokens after merging
    object_tokens: int = 0  # tokens of the object (weight 1 by ocd.masks.grid's rule)
    object_unmerged: int = 0  # object tokens that keep a slot of their own

    def as_dict(self) -> dict:
        per = max(1, self.sets)
        return {
            "calls": self.calls,
            "tokens_per_set": self.tokens / per,
            "kept_per_set": self.kept / per,
            "merged_share": 1.0 - self.kept / self.tokens if self.tokens else 0.0,
            "object_tokens_per_set": self.object_tokens / per,
            "object_unmerged_share": self.object_unmerged / self.object_tokens if self.object_tokens else None,
            "background_tokens_per_set": (self.tokens - self.object_tokens) / per,
        }


@dataclass
class Section:
    """What one node's part of the run did."""

    node: NodeRef
    facts: dict = field(default_factory=dict)  # settings and one-off results, JSON-able
    merges: dict[str, MergeStats] = field(default_factory=dict)  # "layer hxw" -> query merges
    pools: dict[str, MergeStats] = field(default_factory=dict)  # "layer hxw" -> key/value pool merges
    warnings: list[str] = field(default_factory=list)


class RunReport(SharedAcrossClones):
    """Counters of one sampling run (see the module docstring). ``owner`` is the node whose
    execution the run is (a sampler node), or None when core's sampler runs the patches."""

    def __init__(self, owner: NodeRef | None = None):
        self.owner = owner
        self.run_id = uuid.uuid4().hex  # tells runs apart where their reports are gathered
        self.sections: dict[str, Section] = {}
        self.phases: dict[str, PhaseStats] = {}
        self.phase_name = "sampling"
        self._entered: tuple[str, float] | None = None  # enter_phase: the phase and when it began
        self.started = time.perf_counter()
        self.fused: set[tuple[int, tuple]] = set()
        self.controlnet = False  # a ControlNet (or T2I adapter) in the run's conditioning
        self._weights: dict[tuple, torch.Tensor] = {}
        if owner is not None:
            self.section(owner)

    # ---- sections and warnings -----------------------------------------------------------

    def section(self, node: NodeRef) -> Section:
        found = self.sections.get(node.key)
        if found is None:
            found = self.sections[node.key] = Section(node)
        return found

    def note(self, node: NodeRef, **facts) -> None:
        """Record settings or results of ``node`` (JSON-able values)."""
        self.section(node).facts.update(facts)

    def warn(self, node: NodeRef, message: str) -> None:
        """Say what ``node`` could not do and skipped: once per run, in the log and the report."""
        section = self.section(node)
        if message not in section.warnings:
            section.warnings.append(message)
            log.warning("OCD %s: %s", node, message)

    @property
    def warnings(self) -> list[str]:
        return [f"{s.node}: {w}" for s in self.sections.values() for w in s.warnings]

    # ---- phases ----------------------------------------------------------------------------

    @contextmanager
    def phase(self, name: str) -> Iterator[PhaseStats]:
        """Count the evaluations made inside the block as phase ``name``, and its wall time."""
        previous, self.phase_name = self.phase_name, name
        stats = self.phases.setdefault(name, PhaseStats())
        start = time.perf_counter()
        try:
            yield stats
        finally:
            stats.seconds += time.perf_counter() - start
            self.phase_name = previous

    def enter_phase(self, name: str) -> None:
        """Count what follows as phase ``name`` (a sampler whose phases alternate within one
        sampling pass: the token-step dual-rate run); its wall time until the next phase."""
        self.leave_phase()
        self._entered = (name, time.perf_counter())
        self.phase_name = name

    def leave_phase(self) -> None:
        """End what ``enter_phase`` started (the run is over)."""
        if self._entered is not None:
            name, started = self._entered
            self.phases.setdefault(name, PhaseStats()).seconds += time.perf_counter() - started
            self._entered = None

    def ran_tokens(self, tokens: float) -> None:
        """One transformer call of the current phase ran ``tokens`` tokens per batch row (the
        average over its blocks)."""
        stats = self.phases.setdefault(self.phase_name, PhaseStats())
        stats.tokens += tokens
        stats.calls += 1

    def evaluated(self, sigma: float | None, latent_pixels: int) -> None:
        """One denoiser evaluation (the UNet on the CFG batch) of the current phase."""
        self.phases.setdefault(self.phase_name, PhaseStats()).add(sigma, latent_pixels)

    @property
    def evaluations(self) -> int:
        return sum(p.evaluations for p in self.phases.values())

    # ---- attention -------------------------------------------------------------------------

    def object_tokens(self, mask: torch.Tensor | None, frames: tuple, h: int, w: int, weights_of) -> torch.Tensor | None:
        """Boolean ``[len(frames), h * w]``: the object's tokens, by the pack's mask-to-grid rule
        (``weights_of(mask, frames, h, w)``), cached for the run."""
        if mask is None:
            return None
        key = (id(mask), frames, h, w)
        found = self._weights.get(key)
        if found is None:
            found = self._weights[key] = weights_of(mask, frames, h, w) >= 1.0
        return found

    def merged(self, node: NodeRef, layer: tuple, token_grid: tuple[int, int], plan, objects: torch.Tensor | None,
               pool: bool = False) -> None:
        """A merge plan of ``layer`` (one frame's grid ``token_grid``) was applied. ``plan.slot``
        ``[B, T]``; ``objects`` ``[B, T]`` bool (or None without a mask)."""
        table = self.section(node).pools if pool else self.section(node).merges
        stats = table.setdefault(layer_name(layer, token_grid), MergeStats())
        rows, tokens = plan.slot.shape
        stats.calls += 1
        stats.sets += rows
        stats.tokens += rows * tokens
        stats.kept += rows * plan.size
        if objects is not None:
            objects = objects.to(plan.slot.device)
            stats.object_tokens += int(objects.sum())
            stats.object_unmerged += int((objects & ~plan.merged_away()).sum())

    def fusion_applied(self, step: int, layer: tuple) -> None:
        self.fused.add((step, layer))

    # ---- output ----------------------------------------------------------------------------

    def as_dict(self) -> dict:
        """Everything, JSON-able (the sampler node's ``ocd_run`` UI output; tests read it)."""
        return {
            "run_id": self.run_id,
            "owner": None if self.owner is None else self.owner.key,
            "seconds": time.perf_counter() - self.started,
            "unet_evaluations": self.evaluations,
            "controlnet": self.controlnet,
            "phases": {name: dict(vars(p)) for name, p in self.phases.items()},
            "fused_pairs": sorted([step, layer_name(layer)] for step, layer in self.fused),
            "nodes": {
                key: {
                    "name": s.node.name,
                    "node_id": s.node.node_id,
                    "facts": s.facts,
                    "merged_layers": {layer: m.as_dict() for layer, m in s.merges.items()},
                    "pool_layers": {layer: m.as_dict() for layer, m in s.pools.items()},
                    "warnings": list(s.warnings),
                }
                for key, s in self.sections.items()
            },
            "warnings": self.warnings,
        }

    def _phase_lines(self) -> list[str]:
        lines = []
        for name, p in self.phases.items():
            sigmas = "" if p.sigma_max is None else f", sigma {p.sigma_max:.3g} -> {p.sigma_min:.3g}"
            tokens = f", {p.calls} transformer calls of {p.tokens / max(1, p.calls):.0f} tokens" if p.calls else ""
            lines.append(f"{name}: {p.evaluations} UNet evaluations{sigmas}, "
                         f"{p.latent_pixels} latent px{tokens}, {p.seconds:.1f} s")
        return lines

    def text(self, node: NodeRef) -> str:
        """The lines shown on ``node`` after the run."""
        s = self.sections.get(node.key)
        lines = []
        if self.controlnet:
            lines.append("controlnet: yes")
        if self.owner is None or node.key == self.owner.key:
            lines += self._phase_lines()
            if self.fused:
                steps = sorted({step for step, _ in self.fused})
                lines.append(f"fused {len(self.fused)} (step, layer) pairs over steps {steps[0]}..{steps[-1]}")
        if s is not None:
            for key, value in s.facts.items():
                if key != "feature":  # which feature a part is: data for tests, not for the user
                    lines.append(f"{key}: {_format(value)}")
            for title, table in (("merged", s.merges), ("kv pool", s.pools)):
                for layer, m in table.items():
                    d = m.as_dict()
                    text = (f"{title} {layer}: {d['tokens_per_set']:.0f} -> {d['kept_per_set']:.0f} tokens "
                            f"({d['merged_share']:.0%} merged)")
                    if d["object_unmerged_share"] is not None:
                        text += (f"; object {d['object_tokens_per_set']:.0f} tokens, "
                                 f"{d['object_unmerged_share']:.0%} unmerged")
                    lines.append(text)
            lines += [f"WARNING: {w}" for w in s.warnings]
        return "\n".join(lines) if lines else "nothing to report"

    def summary_line(self) -> str:
        """One line for the server log."""
        phases = ", ".join(f"{name} {p.evaluations} evals {p.seconds:.1f} s" for name, p in self.phases.items())
        parts = [f"OCD run report ({self.owner or 'sampler'}): {phases or 'no evaluations'}"]
        merged = sum(len(s.merges) + len(s.pools) for s in self.sections.values())
        if merged:
            parts.append(f"{merged} merged layer(s)")
        if self.fused:
            parts.append(f"{len(self.fused)} fused (step, layer) pairs")
        if self.warnings:
            parts.append(f"{len(self.warnings)} warning(s)")
        return "; ".join(parts)


def _format(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_format(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return "x".join(map(str, value)) if len(value) == 2 else ", ".join(map(str, value))  # sizes: 8x8
        return ", ".join(_format(v) for v in value)
    return str(value)
