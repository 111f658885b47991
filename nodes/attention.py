"""Attention nodes: cross-frame self-attention and object-centric token merging.

Thin wrappers over ocd.attention.comfy_patches: each returns a patched clone of its MODEL
input and never changes the input. The two compose in either order; token merging on top
of cross-frame attention merges the spatio-temporal key/value pool across frames.
"""
from __future__ import annotations

from comfy_api.latest import io

from ..ocd.attention import comfy_patches
from ..ocd.attention.cross_frame import CROSS_FRAME_MODES
from ..ocd.attention.token_merge import (DIT_MERGE_MODES, PAIRING_MODES, MergeStore, TokenMergeSettings,
                                         parse_block_numbers, parse_blocks)
from ..ocd.errors import OCDInputError
from ..ocd.masks.ops import normalize_mask
from ._inputs import OCDNode
from ._report import node_ref

# A record of merge indices shared between two samplers (see docs/attention.md): the
# recording OCD_TokenMerge outputs it, the replaying one takes it as input.
MergeRecord = io.Custom("OCD_MERGE_RECORD")

class CrossFrameAttention(OCDNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="OCD_CrossFrameAttention",
            display_name="Cross-Frame Attention (OCD)",
            category="OCD/attention",
            description="Makes self-attention look across the frames of a video batch, so frames "
            "edited together stay consistent (FateZero, ControlVideo). Frames are told apart by "
            "their absolute index, also under context windows (core or AnimateDiff-Evolved). "
            "Returns a patched copy of the model.",
            inputs=[
                io.Model.Input("model", tooltip="The model to patch (not changed; a patched copy is returned)."),
                io.Combo.Input(
                    "mode", options=list(CROSS_FRAME_MODES), default="full",
                    tooltip="Whose keys/values each frame attends to: first = the first frame and "
                    "itself; sparse_causal = the first and the previous frame (FateZero); window = "
                    "frames within window_size; full = all frames (ControlVideo, most consistent, "
                    "costliest: add OCD Token Merge).",
                ),
                io.Int.Input(
                    "window_size", default=2, min=0, max=64,
                    tooltip="For mode window: attend to frames at most this many frames away "
                    "(on each side). Ignored by the other modes.",
                ),
            ],
            outputs=[io.Model.Output(tooltip="The patched copy of the model.")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model, mode, window_size) -> io.NodeOutput:
        node = node_ref(cls)
        return io.NodeOutput(comfy_patches.apply_cross_frame_attention(model, mode, window_size, node))


class TokenMerge(OCDNode):
    INPUT_CHECKS = {"blocks": parse_blocks, "dit_blocks": parse_block_numbers}

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="OCD_TokenMerge",
            display_name="Object-Centric Token Merge (OCD)",
            category="OCD/attention",
            description="Merges redundant self-attention tokens (queries and keys/values; with "
            "Cross-Frame Attention, the key/value pool across frames) while the tokens of the "
            "masked object stay unmerged; outputs are unmerged back to every token. On a video "
            "transformer (Wan 2.1/2.2) the background's tokens merge over the whole clip (across "
            "frames) in the blocks dit_blocks names. Returns a patched copy of the model.",
            inputs=[
                io.Model.Input("model", tooltip="The model to patch (not changed; a patched copy is returned)."),
                io.Float.Input(
                    "merge_ratio", default=0.5, min=0.0, max=0.9375, step=0.01,
                    tooltip="Share of tokens merged away in each merged layer (0 = off). At most "
                    "1 - 1/(stride_x*stride_y), e.g. 0.75 with a 2x2 stride. On a video transformer: "
                    "the share of all the clip's tokens (the object's stay, so at most the background's "
                    "share of them is merged).",
                ),
                io.Int.Input(
                    "stride_x", default=2, min=1, max=8,
                    tooltip="Destination grid: one destination token per stride_x x stride_y "
                    "cell, drawn anew per frame and step.",
                ),
                io.Int.Input("stride_y", default=2, min=1, max=8, tooltip="See stride_x."),
                io.Combo.Input(
                    "max_downsample", options=["1", "2", "4", "8"], default="1",
                    tooltip="UNets: merge in layers whose token grid is at most this much smaller "
                    "than the latent: 1 = the highest resolution only (most tokens, most gain), 2 adds "
                    "the next level, and so on. Video transformers: see dit_blocks.",
                ),
                io.String.Input(
                    "blocks", default="input,middle,output",
                    tooltip="UNet parts to merge in, separated by commas: input, middle, output, or "
                    "single blocks as name.number (e.g. output.9). Video transformers: see dit_blocks.",
                ),
                io.Float.Input(
                    "foreground_protection", default=1.0, min=0.0, max=1.0, step=0.05,
                    tooltip="How strongly masked (object) tokens are kept unmerged: 0 = plain "
                    "token merging; 1 = no object token is merged while a background token "
                    "can be, and no token merges across the object's outline. Needs a mask.",
                ),
                io.Int.Input(
                    "seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF,
                    tooltip="Seed of the random destination tokens (drawn per frame and step).",
                ),
                io.Combo.Input(
                    "pairing", options=list(PAIRING_MODES), default="off",
                    tooltip="Reuse merges between two sampling passes: record = store this model's "
                    "merges (connect merge_record to a replaying node); replay = merge exactly as "
                    "the connected record did. The replaying sampler must run after the recording one.",
                ),
                io.Mask.Input(
                    "mask", optional=True,
                    tooltip="The object to keep (white): one mask per video frame, or one for all "
                    "frames, any size. Without a mask merging is plain token merging.",
                ),
                MergeRecord.Input(
                    "merge_record", optional=True,
                    tooltip="For pairing = replay: the merge_record output of the recording node.",
                ),
                io.Boolean.Input(
                    "protect_object_keys", default=False, optional=True,
                    tooltip="Also keep object tokens out of the merges of the cross-frame key/value "
                    "pool (the paper's rule taken literally). Off: the object's queries are "
                    "protected, and the pool (read by every query) merges by similarity without "
                    "mixing object and background; this kept the object closer to the unmerged "
                    "result in our measurements (docs/attention.md).",
                ),
                io.String.Input(
                    "dit_blocks", default="all", optional=True,
                    tooltip="Video transformers (Wan): the blocks that merge, numbered from 0: 'all', "
                    "or numbers and ranges such as '2-27' or '0,5-' (an open end reaches the last "
                    "block; Wan 2.1 1.3B has 30 blocks, 14B 40). Ignored by UNets.",
                ),
                io.Combo.Input(
                    "dit_merge", options=list(DIT_MERGE_MODES), default="tokens", optional=True,
                    tooltip="Video transformers: tokens = the background's tokens merge before each "
                    "merged block and are unmerged after it, so attention, cross-attention and the "
                    "feed-forward all run on fewer tokens (fastest); keys_values = every token stays "
                    "and only the background's keys/values merge inside self-attention, after the "
                    "positional encoding (closest to the unmerged model). Ignored by UNets.",
                ),
            ],
            outputs=[
                io.Model.Output(tooltip="The patched copy of the model."),
                MergeRecord.Output(
                    display_name="merge_record",
                    tooltip="With pairing = record: the record the sampler fills (connect it to a "
                    "replaying node); with replay: the record used; otherwise empty.",
                ),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model, merge_ratio, stride_x, stride_y, max_downsample, blocks,
                foreground_protection, seed, pairing, mask=None, merge_record=None,
                protect_object_keys=False, dit_blocks="all", dit_merge="tokens") -> io.NodeOutput:
        if pairing == "replay" and merge_record is None:
            raise OCDInputError("merge_record", "pairing replay needs the merge_record output of an "
                                "OCD_TokenMerge node set to record")
        store = MergeStore() if pairing == "record" else (merge_record if pairing == "replay" else None)
        settings = TokenMergeSettings(
            ratio=float(merge_ratio), sx=int(stride_x), sy=int(stride_y),
            max_downsample=int(max_downsample), blocks=parse_blocks(blocks), seed=int(seed),
            protection=float(foreground_protection), protect_keys=bool(protect_object_keys),
            foreground_mask=None if mask is None else normalize_mask(mask),
            pairing=pairing, store=store,
            node=node_ref(cls),
            dit_blocks=parse_block_numbers(dit_blocks), dit_merge=dit_merge,
        )
        return io.NodeOutput(comfy_patches.apply_token_merge(model, settings), store)


NODES = [CrossFrameAttention, TokenMerge]
