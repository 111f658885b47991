"""The one mechanism for state that must survive ``ModelPatcher.clone()``.

A patch node returns a *clone* of its model with this pack's objects in the clone's
``model_options["transformer_options"]``. ComfyUI then copies those options again and
again before anything runs: ``ModelPatcher.clone()`` deep-copies ``model_options``
(0.3.75: ``copy.deepcopy``), every later patch node clones once more, and the guider copies
them per sampling run (``comfy.model_patcher.create_model_options_clone``); other packs
use ``copy.deepcopy`` or ``copy.copy`` too. An object that is *filled* while sampling (a
merge record, an attention record, the hook that writes into it) must still be the object
the node returned, or the sampler writes into a copy nobody reads (the bug where the
cross-attention recorder's clone made the self-attention record land in a copy).

Every such object derives from ``SharedAcrossClones``: copying returns the object itself.
Three kinds use it, and nothing else may:
- immutable settings (``CrossFrameSettings``, ``TokenMergeSettings``): sharing is safe
  because nothing changes them;
- records and the hooks that fill or read them (``MergeStore``, ``AttentionRecord``,
  ``RecordingHook``, ``FusionHook``, ``CrossAttentionRecord``, ``CrossAttentionRecorder``):
  shared on purpose, created by one node run and emptied at the start of the pass that
  fills them, so nothing of one run leaks into the next;
- the run report (``ocd.report.RunReport``): created when a node's run starts, put only on
  the clones that run makes, published and dropped when it ends.

Everything else a run needs (progress counters, merge plans of one call) lives in the run or
the call and is never put into a model's options.
"""
from __future__ import annotations


class SharedAcrossClones:
    """Copies of this object (``copy.copy``, ``copy.deepcopy``, model clones) are itself."""

    __slots__ = ()

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self
