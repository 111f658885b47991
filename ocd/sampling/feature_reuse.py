"""Clockwork feature reuse: which sampling steps run the whole UNet (pure; no ComfyUI import).

Clockwork Diffusion (Habibian et al., CVPR 2024, Qualcomm AI Research) observes that the
UNet's low-resolution features change slowly from step to step while its high-resolution
layers are sensitive. Its training-free variant runs the full UNet every ``clock``-th step
and keeps the output of the second-highest-resolution decoder stage; on the steps in between
only the highest-resolution encoder and decoder stages run, and the kept features stand in
for everything below them. ``recomputed_levels`` generalises the cut: 1 is Clockwork, 2 also
recomputes the next level, and so on.

This module owns the schedule: ``FeatureReuseSettings`` and ``full_step`` (which steps run
fully). ``ocd/sampling/comfy_feature_reuse.py`` runs it inside ComfyUI; ``ocd/host`` knows
where a UNet is cut.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import OCDInputError
from ..shared import SharedAcrossClones


@dataclass(frozen=True, eq=False)
class FeatureReuseSettings(SharedAcrossClones):
    """OCD_FeatureReuse's settings (immutable; model clones share them).

    - clock: a full UNet every ``clock``-th sampling step (1 = always: no reuse)
    - recomputed_levels: how many of the highest-resolution levels run on every step
    - start, end: the fraction of the schedule where reuse may happen, ``start <= i / N < end``
      for step i of N; the first and last steps always run fully
    - during_inversion: reuse in inversion passes too (ascending sigmas); off, inversions run
      fully, because an inversion accumulates every error it makes
    - node: the graph node the settings came from (its part of the run report)
    """

    clock: int = 3  # the measured default (docs/BENCHMARKS.md, feature reuse)
    recomputed_levels: int = 1
    start: float = 0.0
    end: float = 1.0
    during_inversion: bool = False
    node: object = None

    def validate(self) -> "FeatureReuseSettings":
        if self.clock < 1:
            raise OCDInputError("clock", f"is {self.clock}; it must be at least 1 (1 = a full UNet on every step)")
        if self.recomputed_levels < 1:
            raise OCDInputError("recomputed_levels", f"is {self.recomputed_levels}; it must be at least 1")
        for name, value in (("start", self.start), ("end", self.end)):
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise OCDInputError(name, f"is {value}; it must be a fraction of the schedule in 0..1")
        if self.start > self.end:
            raise OCDInputError("end", f"is {self.end}, before start {self.start}: reuse needs start <= end")
        return self

    def summary(self) -> dict:
        return {"feature": "feature_reuse", "clock": self.clock, "recomputed_levels": self.recomputed_levels,
                "start": self.start, "end": self.end, "during_inversion": self.during_inversion}


def full_step(step: int, steps: int, settings: FeatureReuseSettings, inversion: bool = False) -> bool:
    """Whether sampling step ``step`` (0-based) of ``steps`` runs the whole UNet."""
    if settings.clock <= 1 or step <= 0 or step >= steps - 1:
        return True
    if inversion and not settings.during_inversion:
        return True
    if not settings.start <= step / steps < settings.end:
        return True
    return step % settings.clock == 0


def reused_steps(steps: int, settings: FeatureReuseSettings, inversion: bool = False) -> list[int]:
    """The steps that reuse features, for ``steps`` sampling steps."""
    return [i for i in range(steps) if not full_step(i, steps, settings, inversion)]
