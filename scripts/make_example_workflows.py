"""Writes example_workflows/*.json (ComfyUI's UI format) from the compact specs below.

Keeping the workflows as code makes links, slots and widget orders consistent; the e2e tests
run every workflow through a real server (tests/support/workflow.py converts them) and check
what each is for from the nodes' run reports.

Each template is a readable graph: the stages are groups laid out left to right (a column
each), the nodes a user edits first have titles ("Source prompt", "Object mask", ...), a Note
says what the workflow does, what to change first and what it costs, and the saved view
shows the whole graph in a 1600x900 window right of the sidebar.

    python scripts/make_example_workflows.py
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

OUT_DIR = Path(__file__).resolve().parents[1] / "example_workflows"

# layout (graph units)
COLUMN_PITCH = 370
NODE_WIDTH = 320
GAP = 50  # the frontend draws a node's title bar (30) above its position
GROUP_PAD = 20
GROUP_TITLE = 70  # the group's title, then the first node's title bar (30)
TOP = 40
# the window the saved view must fit: 1600x900, minus the frontend's sidebar and top bar; the
# frontend draws no text below a scale of 0.6, so the columns are laid out to stay above it
VIEW_W, VIEW_H, SIDEBAR, TOPBAR, MARGIN = 1600, 900, 70, 125, 10  # top: tabs and the workflow name


@dataclass
class N:
    """A node: id, type, widget values (in input order), socket inputs [(name, type)],
    outputs [(name, type)], optional title, extra height (previews)."""

    id: int
    type: str
    widgets: list = field(default_factory=list)
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    title: str | None = None
    extra_height: int = 0
    widget_inputs: list = field(default_factory=list)  # widgets that are linked (converted to inputs)

    def height(self) -> int:
        rows = len(self.widgets) + max(len(self.inputs) + len(self.widget_inputs), len(self.outputs))
        return 46 + 24 * rows + self.extra_height


@dataclass
class G:
    """A group (a stage): title, colour and its nodes, stacked in one column."""

    title: str
    color: str
    nodes: list


COLORS = {"load": "#3f789e", "prompt": "#8A8", "mask": "#a1309b", "patch": "#b58b2a", "run": "#88A", "save": "#444"}


def build(groups: list[list[G]], links: list, note: str) -> dict:
    """groups: columns of stage groups (top to bottom in a column); links: (source id, source
    slot, target id, target input name); note: the workflow's Note text."""
    node_objs, group_objs = {}, []

    def column_height(column) -> int:
        return sum(GROUP_TITLE + sum(n.height() + GAP for n in g.nodes) + GAP for g in column)

    # the Note spans two columns, on top of the pair it makes the least tall (a graph as
    # low as it can be shows at the largest scale)
    note_width = 2 * NODE_WIDTH + (COLUMN_PITCH - NODE_WIDTH)
    note_height = 40 + 17 * sum(1 + len(line) // 84 for line in note.split("\n"))
    about_height = GROUP_TITLE + note_height + 2 * GAP
    heights = [column_height(c) for c in groups]
    pair = min(range(max(1, len(groups) - 1)), key=lambda i: max(heights[i:i + 2]))
    note_x = 40 + pair * COLUMN_PITCH
    node_objs[0] = {"id": 0, "type": "Note", "pos": [note_x, TOP + GROUP_TITLE], "size": [note_width, note_height],
                    "flags": {}, "order": 0, "mode": 0, "inputs": [], "outputs": [], "properties": {"text": ""},
                    "widgets_values": [note], "color": "#432", "bgcolor": "#653"}
    group_objs.append({"title": "About this workflow", "color": "#432", "font_size": 22,
                       "bounding": [note_x - GROUP_PAD, TOP, note_width + 2 * GROUP_PAD,
                                    GROUP_TITLE + note_height + GROUP_PAD]})
    order = 1
    for col, column in enumerate(groups):
        x, y = 40 + col * COLUMN_PITCH, TOP + (about_height if col in (pair, pair + 1) else 0)
        for group in column:
            top = y
            y += GROUP_TITLE
            for n in group.nodes:
                height = n.height()
                obj = {
                    "id": n.id, "type": n.type, "pos": [x, y], "size": [NODE_WIDTH, height],
                    "flags": {}, "order": order, "mode": 0,
                    "inputs": [dict(name=name, type=t, link=None) for name, t in n.inputs]
                    + [dict(name=name, type=t, link=None, widget={"name": name}) for name, t in n.widget_inputs],
                    "outputs": [{"name": name, "type": t, "links": [], "slot_index": k}
                                for k, (name, t) in enumerate(n.outputs)],
                    "properties": {"Node name for S&R": n.type},
                    "widgets_values": n.widgets,
                }
                if n.title:
                    obj["title"] = n.title
                node_objs[n.id] = obj
                order += 1
                y += height + GAP
            group_objs.append({"title": group.title, "color": group.color, "font_size": 22,
                               "bounding": [x - GROUP_PAD, top, NODE_WIDTH + 2 * GROUP_PAD, y - top - GAP + GROUP_PAD]})
            y += GAP
    link_rows = []
    for lid, (src, sslot, dst, dname) in enumerate(links, start=1):
        s, d = node_objs[src], node_objs[dst]
        dslot = next(k for k, inp in enumerate(d["inputs"]) if inp["name"] == dname)
        d["inputs"][dslot]["link"] = lid
        s["outputs"][sslot]["links"].append(lid)
        link_rows.append([lid, src, sslot, dst, dslot, s["outputs"][sslot]["type"]])
    # the view: everything inside the window, right of the sidebar and below the top bar
    x0 = min(g["bounding"][0] for g in group_objs)
    y0 = min(g["bounding"][1] for g in group_objs)
    x1 = max(g["bounding"][0] + g["bounding"][2] for g in group_objs)
    y1 = max(g["bounding"][1] + g["bounding"][3] for g in group_objs)
    scale = min(1.0, (VIEW_W - SIDEBAR - 2 * MARGIN) / (x1 - x0), (VIEW_H - TOPBAR - 2 * MARGIN) / (y1 - y0))
    scale = int(scale * 1000) / 1000
    offset = [round((SIDEBAR + MARGIN) / scale - x0, 1), round((TOPBAR + MARGIN) / scale - y0, 1)]
    return {
        "last_node_id": max(node_objs), "last_link_id": len(link_rows),
        "nodes": list(node_objs.values()), "links": link_rows, "groups": group_objs, "config": {},
        "extra": {"ds": {"scale": scale, "offset": offset}}, "version": 0.4,
    }


# ---------------------------------------------------------------------------------------------
# Nodes used by several templates
# ---------------------------------------------------------------------------------------------

LOAD_OUT = [("IMAGE", "IMAGE"), ("frame_count", "INT"), ("video_info", "VHS_VIDEOINFO"), ("audio", "AUDIO")]
# Save Video (OCD)'s sockets: the frames, and from Load Video the sound of the loaded frames and
# the video_info whose loaded frame rate it saves at (its frame_rate widget is then unused)
SAVE_IN = [("images", "IMAGE"), ("audio", "AUDIO"), ("video_info", "VHS_VIDEOINFO")]
MERGE_OUT = [("MODEL", "MODEL"), ("merge_record", "OCD_MERGE_RECORD")]
INVERT_OUT = [("inverted_latent", "LATENT"), ("inversion", "OCD_INVERSION")]
EDIT_IN = [("model", "MODEL"), ("inversion", "OCD_INVERSION"), ("inverted_latent", "LATENT"),
           ("positive", "CONDITIONING"), ("negative", "CONDITIONING")]
CHECKPOINT = "v1-5-pruned-emaonly.safetensors"
CONTROLNET = "control_v11p_sd15_canny.pth"
SOURCE = "a man riding a bicycle on a street"
TARGET = "a robot riding a bicycle on a street"
NEGATIVE = "blurry, low quality, watermark"


def checkpoint(nid=4):
    return N(nid, "CheckpointLoaderSimple", [CHECKPOINT], [], [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")],
             title="Checkpoint (SD1.5)")


def text(nid, prompt, title):
    return N(nid, "CLIPTextEncode", [prompt], [("clip", "CLIP")], [("CONDITIONING", "CONDITIONING")], title=title,
             extra_height=60)


def load_video(nid=1, frames=8):
    return N(nid, "OCD_LoadVideo", ["bikes.mp4", frames, 0, 1, 0, 512, 0, "crop"], [], LOAD_OUT, title="Source clip",
             extra_height=170)


def encode(nid=7):
    return N(nid, "VAEEncode", [], [("pixels", "IMAGE"), ("vae", "VAE")], [("LATENT", "LATENT")])


def saliency(nid=17):
    return N(nid, "OCD_AutoSaliency", [0.7, "flow", -1.0, 5, 256], [("images", "IMAGE")],
             [("mask", "MASK"), ("saliency", "MASK")], title="Object mask")


def cross_frame(nid, mode):
    return N(nid, "OCD_CrossFrameAttention", [mode, 2], [("model", "MODEL")], [("MODEL", "MODEL")])


def token_merge(nid, pairing, protection, mask: bool, record: bool, title):
    inputs = [("model", "MODEL")] + ([("mask", "MASK")] if mask else []) \
        + ([("merge_record", "OCD_MERGE_RECORD")] if record else [])
    return N(nid, "OCD_TokenMerge", [0.5, 2, 2, "1", "input,middle,output", protection, 0, "fixed", pairing, False,
                                     "all", "tokens"],
             inputs, MERGE_OUT, title=title)


def invert(nid, solver, steps, offload, precision, cross_attention):
    return N(nid, "OCD_InvertLatents",
             [solver, steps, "normal", 1.0, 1.0, 0.8, 1024, cross_attention, offload, precision],
             [("model", "MODEL"), ("latent", "LATENT"), ("positive", "CONDITIONING")], INVERT_OUT,
             title="Invert (source prompt)")


def save_video(save_id, prefix, **kw):
    return N(save_id, "OCD_SaveVideo", [8.0, prefix, "mp4", 19, True], SAVE_IN, [("filename", "STRING")],
             extra_height=170, **kw)


def decode_and_save(prefix, decode_id=9, save_id=3):
    return [
        N(decode_id, "VAEDecode", [], [("samples", "LATENT"), ("vae", "VAE")], [("IMAGE", "IMAGE")]),
        save_video(save_id, prefix, title="Edited clip"),
    ]


def sound_and_rate_links(load_id=1, save_id=3):
    """The source's sound and loaded frame rate into the save: the edit keeps both."""
    return [(load_id, 3, save_id, "audio"), (load_id, 2, save_id, "video_info")]


def save_links(samples_from, decode_id=9, save_id=3, vae_from=(4, 2), load_id=1):
    return [(samples_from, 0, decode_id, "samples"), (*vae_from, decode_id, "vae"),
            (decode_id, 0, save_id, "images"), *sound_and_rate_links(load_id, save_id)]


PROMPT_LINKS = [(4, 1, 5, "clip"), (4, 1, 6, "clip"), (4, 1, 10, "clip")]


def prompts(source=True):
    nodes = [text(5, SOURCE, "Source prompt")] if source else []
    return nodes + [text(6, TARGET, "Target prompt"), text(10, NEGATIVE, "Negative prompt")]


# ---------------------------------------------------------------------------------------------
# The templates
# ---------------------------------------------------------------------------------------------

roundtrip = build(
    [[G("Load", COLORS["load"], [load_video(1, 16)])],
     [G("Save", COLORS["save"], [save_video(3, "OCD/video")])]],
    [(1, 0, 3, "images"), *sound_and_rate_links()],
    "Loads a clip from the input folder and saves it again as mp4 at the loaded frame rate, with its sound.\n"
    "Change first: the video, frame_load_cap and the size on Source clip.\nCost: decoding and encoding only.",
)

img2img = build(
    [[G("Load", COLORS["load"], [checkpoint(), load_video(1, 8), encode()])],
     [G("Prompts", COLORS["prompt"], [text(5, "a watercolor painting of people riding bicycles", "Target prompt"),
                                      text(6, NEGATIVE, "Negative prompt")])],
     [G("Sample", COLORS["run"], [N(8, "KSampler", [0, "fixed", 20, 7.0, "euler", "normal", 0.6],
                                    [("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                                     ("latent_image", "LATENT")], [("LATENT", "LATENT")])])],
     [G("Decode and save", COLORS["save"], decode_and_save("OCD/img2img"))]],
    [(4, 1, 5, "clip"), (4, 1, 6, "clip"), (1, 0, 7, "pixels"), (4, 2, 7, "vae"),
     (4, 0, 8, "model"), (5, 0, 8, "positive"), (6, 0, 8, "negative"), (7, 0, 8, "latent_image"),
     *save_links(8)],
    "Frame-by-frame img2img of a clip with core's KSampler (denoise 0.6): the plain baseline, no OCD patch.\n"
    "Change first: the checkpoint, Target prompt, denoise.\nCost: steps x frames UNet calls.",
)

# Inversion-based editing (FateZero and its accelerations)
INVERSION_LINKS = PROMPT_LINKS + [(1, 0, 7, "pixels"), (4, 2, 7, "vae"), (7, 0, 11, "latent"), (5, 0, 11, "positive")]

fatezero_vanilla = build(
    [[G("Load", COLORS["load"], [checkpoint(), load_video(), encode()])],
     [G("Prompts", COLORS["prompt"], prompts()),
      G("Object mask", COLORS["mask"], [N(12, "OCD_CrossAttentionMask", [SOURCE, "man", 0.3, 8],
                                          [("inversion", "OCD_INVERSION"), ("clip", "CLIP")], [("MASK", "MASK")],
                                          title="Object mask (from the source prompt's words)")])],
     [G("Model patches", COLORS["patch"], [cross_frame(14, "sparse_causal")])],
     [G("Invert and edit", COLORS["run"], [
         invert(11, "ddim", 50, True, "float32", True),
         N(13, "OCD_EditFromInversion", [7.5, 0.8], EDIT_IN + [("blend_mask", "MASK")], [("LATENT", "LATENT")],
           title="Edit (target prompt)")])],
     [G("Decode and save", COLORS["save"], decode_and_save("OCD/fatezero_vanilla"))]],
    INVERSION_LINKS + [(4, 0, 14, "model"), (14, 0, 11, "model"), (11, 1, 12, "inversion"), (4, 1, 12, "clip"),
                       (14, 0, 13, "model"), (11, 1, 13, "inversion"), (11, 0, 13, "inverted_latent"),
                       (6, 0, 13, "positive"), (10, 0, 13, "negative"), (12, 0, 13, "blend_mask"), *save_links(13)],
    "Vanilla FateZero (the baseline OCD accelerates): DDIM 50 inversion with the source prompt, the "
    "self-attention recorded in float32 in CPU RAM, sparse-causal cross-frame attention, then 50 editing "
    "steps with the target prompt fusing the recorded attention (the object's mask from the words' "
    "cross-attention lets its shape change).\nChange first: Source prompt (what the clip shows), Target "
    "prompt, the object's words on Object mask.\nCost: 100 UNet calls x frames, a record of GBs; compare "
    "with the Optimized and OCD templates.",
)

fatezero_optimized = build(
    [[G("Load", COLORS["load"], [checkpoint(), load_video(), encode()])],
     [G("Prompts", COLORS["prompt"], prompts()),
      G("Object mask", COLORS["mask"], [N(12, "OCD_CrossAttentionMask", [SOURCE, "man", 0.3, 8],
                                          [("inversion", "OCD_INVERSION"), ("clip", "CLIP")], [("MASK", "MASK")],
                                          title="Object mask (from the source prompt's words)")])],
     [G("Model patches", COLORS["patch"], [
         cross_frame(14, "sparse_causal"),
         token_merge(15, "record", 0.0, False, False, "Token merge (records in the inversion)"),
         token_merge(16, "replay", 0.0, False, True, "Token merge (replays in the edit)")])],
     [G("Invert and edit", COLORS["run"], [
          invert(11, "dpmpp_2m", 20, False, "float16", True),
          N(13, "OCD_EditFromInversion", [7.5, 0.8], EDIT_IN + [("blend_mask", "MASK")], [("LATENT", "LATENT")],
            title="Edit (target prompt)")])],
     [G("Decode and save", COLORS["save"], decode_and_save("OCD/fatezero_optimized"))]],
    INVERSION_LINKS + [(4, 0, 14, "model"), (14, 0, 15, "model"), (14, 0, 16, "model"), (15, 1, 16, "merge_record"),
                       (15, 0, 11, "model"), (11, 1, 12, "inversion"), (4, 1, 12, "clip"),
                       (16, 0, 13, "model"), (11, 1, 13, "inversion"), (11, 0, 13, "inverted_latent"),
                       (6, 0, 13, "positive"), (10, 0, 13, "negative"), (12, 0, 13, "blend_mask"), *save_links(13)],
    "Optimized-FateZero (the paper's off-the-shelf accelerations): DPM++ 2M 20 + 20 steps, the attention "
    "record in half precision on the device, token merging 0.5 whose merges are recorded during the "
    "inversion and replayed in the edit (destinations re-drawn per frame and step).\nChange first: the "
    "prompts and the object's words.\nCost: 40 UNet calls x frames at about half the attention tokens.",
)

ocd_inversion = build(
    [[G("Load", COLORS["load"], [checkpoint(), load_video(), encode()])],
     [G("Prompts", COLORS["prompt"], prompts()), G("Object mask", COLORS["mask"], [saliency()])],
     [G("Model patches", COLORS["patch"], [
         cross_frame(14, "sparse_causal"),
         token_merge(15, "record", 1.0, True, False, "Object merge (records in the inversion)"),
         token_merge(16, "replay", 1.0, True, True, "Object merge (replays in the edit)")])],
     [G("Invert and edit", COLORS["run"], [
         invert(11, "dpmpp_2m", 20, False, "float16", False),
         N(13, "OCD_DualRateEditFromInversion", [7.5, 0.8, 4.0, 0.25, 2, "feathered", True],
           EDIT_IN + [("mask", "MASK")], [("LATENT", "LATENT")], title="Dual-rate edit (target prompt)")])],
     [G("Decode and save", COLORS["save"], decode_and_save("OCD/ocd_inversion"))]],
    INVERSION_LINKS + [(1, 0, 17, "images"), (4, 0, 14, "model"), (14, 0, 15, "model"), (14, 0, 16, "model"),
                       (15, 1, 16, "merge_record"), (17, 0, 15, "mask"), (17, 0, 16, "mask"), (15, 0, 11, "model"),
                       (16, 0, 13, "model"), (11, 1, 13, "inversion"), (11, 0, 13, "inverted_latent"),
                       (6, 0, 13, "positive"), (10, 0, 13, "negative"), (17, 0, 13, "mask"), *save_links(13)],
    "OCD on the inversion pipeline: Optimized-FateZero plus object-centric token merging (the object's "
    "tokens are kept, the background and the frames' redundancy merged) and the dual-rate edit (the "
    "object's crop at every step, the background 4x fewer). The mask comes from Auto Saliency (what moves "
    "and stands out); it exists before the inversion, whose merges it protects.\nChange first: the "
    "prompts; the mask if the saliency misses the object (or use the SAM template).\nCost: the cheapest "
    "inversion edit here; each node shows what it did after a run.",
)


def sam_mask(loader_id=18, mask_id=17):
    prompts = json.dumps({"frame": 0, "width": 512, "height": 216, "points": [[256, 120]], "labels": [1], "box": None})
    return [N(loader_id, "OCD_SAMLoader", ["sam_vit_b_01ec64.pth", "auto"], [], [("sam_model", "OCD_SAM_MODEL")]),
            N(mask_id, "OCD_SAMVideoMask", [prompts], [("sam_model", "OCD_SAM_MODEL"), ("images", "IMAGE")],
              [("mask", "MASK")], title="Object mask (click on the object)", extra_height=300)]


ocd_inversion_sam = build(
    [[G("Load", COLORS["load"], [checkpoint(), load_video(), encode()])],
     [G("Prompts", COLORS["prompt"], prompts())],
     [G("Object mask", COLORS["mask"], sam_mask())],
     [G("Model patches", COLORS["patch"], [
         cross_frame(14, "sparse_causal"),
         token_merge(15, "record", 1.0, True, False, "Object merge (records in the inversion)"),
         token_merge(16, "replay", 1.0, True, True, "Object merge (replays in the edit)")])],
     [G("Invert and edit", COLORS["run"], [
         invert(11, "dpmpp_2m", 20, False, "float16", False),
         N(13, "OCD_DualRateEditFromInversion", [7.5, 0.8, 4.0, 0.25, 2, "feathered", True],
           EDIT_IN + [("mask", "MASK")], [("LATENT", "LATENT")], title="Dual-rate edit (target prompt)")])],
     [G("Decode and save", COLORS["save"], decode_and_save("OCD/ocd_inversion_sam"))]],
    INVERSION_LINKS + [(18, 0, 17, "sam_model"), (1, 0, 17, "images"), (4, 0, 14, "model"), (14, 0, 15, "model"),
                       (14, 0, 16, "model"), (15, 1, 16, "merge_record"), (17, 0, 15, "mask"), (17, 0, 16, "mask"),
                       (15, 0, 11, "model"), (16, 0, 13, "model"), (11, 1, 13, "inversion"),
                       (11, 0, 13, "inverted_latent"), (6, 0, 13, "positive"), (10, 0, 13, "negative"),
                       (17, 0, 13, "mask"), *save_links(13)],
    "The OCD inversion edit with the object marked by Segment Anything; the mask follows the object "
    "through the clip.\nChange first: click on the object in the key frame shown in Object mask (left = "
    "object, right = background, drag = box), then queue; the prompts.\nNeeds a SAM checkpoint (e.g. sam_vit_b_01ec64.pth) in "
    "models/sams.\nCost: the OCD inversion edit plus SAM's image encoder once per frame.",
)

# Control-based editing (ControlVideo and OCD on it)
CONTROL_NODES = [
    N(20, "Canny", [0.4, 0.8], [("image", "IMAGE")], [("IMAGE", "IMAGE")], title="Edges (the control)"),
    N(21, "ControlNetLoader", [CONTROLNET], [], [("CONTROL_NET", "CONTROL_NET")], title="ControlNet (canny)"),
    N(22, "ControlNetApplyAdvanced", [1.0, 0.0, 1.0],
      [("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("control_net", "CONTROL_NET"), ("image", "IMAGE")],
      [("positive", "CONDITIONING"), ("negative", "CONDITIONING")]),
]
CONTROL_LINKS = [(4, 1, 6, "clip"), (4, 1, 10, "clip"), (1, 0, 7, "pixels"), (4, 2, 7, "vae"), (1, 0, 20, "image"),
                 (6, 0, 22, "positive"), (10, 0, 22, "negative"), (21, 0, 22, "control_net"), (20, 0, 22, "image")]
SAMPLE_IN = [("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("latent_image", "LATENT")]

controlvideo_vanilla = build(
    [[G("Load", COLORS["load"], [checkpoint(), load_video(), encode()])],
     [G("Prompts", COLORS["prompt"], prompts(source=False)), G("Control", COLORS["mask"], CONTROL_NODES)],
     [G("Model patches", COLORS["patch"], [cross_frame(14, "full")]),
      G("Sample", COLORS["run"], [N(8, "KSampler", [0, "fixed", 50, 7.5, "ddim", "ddim_uniform", 1.0], SAMPLE_IN,
                                    [("LATENT", "LATENT")], title="Sample (DDIM 50)")])],
     [G("Decode and save", COLORS["save"], decode_and_save("OCD/controlvideo_vanilla"))]],
    CONTROL_LINKS + [(4, 0, 14, "model"), (14, 0, 8, "model"), (22, 0, 8, "positive"), (22, 1, 8, "negative"),
                     (7, 0, 8, "latent_image"), *save_links(8)],
    "Vanilla ControlVideo (the baseline OCD accelerates): the clip's edges (core Canny) guide a ControlNet, "
    "every frame attends to all frames (fully cross-frame attention), DDIM 50 from noise with the target "
    "prompt.\nChange first: Target prompt, the ControlNet file (models/controlnet), the edge thresholds.\n"
    "Cost: 50 UNet + ControlNet calls x frames, attention over all frames' tokens.",
)

controlvideo_ocd = build(
    [[G("Load", COLORS["load"], [checkpoint(), load_video(), encode()])],
     [G("Prompts", COLORS["prompt"], prompts(source=False)), G("Control", COLORS["mask"], CONTROL_NODES)],
     [G("Object mask", COLORS["mask"], [saliency()]),
      G("Model patches", COLORS["patch"], [
          cross_frame(14, "full"),
          token_merge(15, "off", 1.0, True, False, "Object merge (the cross-frame pool)")])],
     [G("Sample", COLORS["run"], [N(8, "OCD_DualRateKSampler",
                                    [0, "fixed", 50, 7.5, "ddim", "ddim_uniform", 1.0, 4.0, 0.25, 2, "feathered"],
                                    SAMPLE_IN + [("mask", "MASK")], [("LATENT", "LATENT")],
                                    title="Dual-rate sample (DDIM 50)")])],
     [G("Decode and save", COLORS["save"], decode_and_save("OCD/controlvideo_ocd"))]],
    CONTROL_LINKS + [(1, 0, 17, "images"), (4, 0, 14, "model"), (14, 0, 15, "model"), (17, 0, 15, "mask"),
                     (15, 0, 8, "model"), (22, 0, 8, "positive"), (22, 1, 8, "negative"), (7, 0, 8, "latent_image"),
                     (17, 0, 8, "mask"), *save_links(8)],
    "OCD on the control pipeline: vanilla ControlVideo plus object-centric token merging of the "
    "cross-frame key/value pool (the object's tokens kept, the background and the frames' redundancy "
    "merged) and dual-rate sampling (the object's crop at every step, with its part of the edge map; the "
    "background 4x fewer).\nChange first: Target prompt, the ControlNet file; the mask if the saliency "
    "misses the object.\nCost: the vanilla template's calls with fewer tokens and fewer background steps.",
)

# Video-to-video editing with Wan 2.1 (a video transformer), beside core EasyCache
WAN_MODEL = "wan2.1_t2v_1.3B_fp16.safetensors"
WAN_TEXT_ENCODER = "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
WAN_VAE = "wan_2.1_vae.safetensors"
WAN_TARGET = "a red sports bicycle ridden along a sunny street, cinematic"
WAN_NEGATIVE = "blurry, static, low quality, watermark, deformed"
# 4k+1 frames: Wan's VAE holds the first frame alone, then 4 per latent frame
WAN_FRAMES = 33


def wan_load(model=WAN_MODEL, model_name="Wan 2.1", vae=WAN_VAE, vae_name="Wan 2.1", width=832,
             encode_clip=True):
    """The loaders, the clip (``width`` px) and, unless VACE encodes it itself, its VAE Encode."""
    return [
        N(30, "UNETLoader", [model, "default"], [], [("MODEL", "MODEL")], title=f"Diffusion model ({model_name})"),
        N(31, "CLIPLoader", [WAN_TEXT_ENCODER, "wan", "default"], [], [("CLIP", "CLIP")],
          title="Text encoder (umt5-xxl)"),
        N(32, "VAELoader", [vae], [], [("VAE", "VAE")], title=f"VAE ({vae_name})"),
        N(1, "OCD_LoadVideo", ["bikes.mp4", WAN_FRAMES, 0, 1, 0, width, 0, "crop"], [], LOAD_OUT,
          title="Source clip (4k+1 frames)", extra_height=170),
    ] + ([encode()] if encode_clip else [])


def wan_prompts():
    return [text(6, WAN_TARGET, "Target prompt"), text(10, WAN_NEGATIVE, "Negative prompt")]


# EasyCache's reuse threshold: core's default alone; stacked with OCD a quarter of it, because the
# object-token steps leave the background's output as the last full step's, which EasyCache reads
# as little change: at 0.2 it skipped 73% of OCD's remaining work (16.5 dB in the object against
# vanilla, random weights), at 0.05 41% (24.0 dB; docs/BENCHMARKS.md)
EASYCACHE_THRESHOLD = {False: 0.2, True: 0.05}


def wan_patches(easycache: bool, merge: bool, model_name: str = "Wan 2.1"):
    nodes = [N(33, "ModelSamplingSD3", [8.0], [("model", "MODEL")], [("MODEL", "MODEL")],
               title=f"Shift 8 ({model_name})")]
    if easycache:
        nodes.append(N(34, "EasyCache", [EASYCACHE_THRESHOLD[merge], 0.15, 0.95, False], [("model", "MODEL")],
                       [("MODEL", "MODEL")], title="EasyCache (skips steps)"))
    if merge:
        nodes.append(token_merge(15, "off", 1.0, True, False, "Object merge (the background, over the clip)"))
    return nodes


WAN_SETTINGS = [0, "fixed", 30, 6.0, "uni_pc", "simple", 0.7]  # seed, control, steps, cfg, sampler, scheduler, denoise


def wan_v2v(easycache: bool, ocd: bool, prefix: str, note: str, load: list | None = None,
            model_name: str = "Wan 2.1") -> dict:
    model_chain = [30, 33] + ([34] if easycache else []) + ([15] if ocd else [])
    links = [(31, 0, 6, "clip"), (31, 0, 10, "clip"), (1, 0, 7, "pixels"), (32, 0, 7, "vae")]
    links += [(a, 0, b, "model") for a, b in zip(model_chain, model_chain[1:])]
    if ocd:
        sampler = N(8, "OCD_DualRateKSampler", WAN_SETTINGS + [4.0, 0.25, 0, "feathered"],
                    SAMPLE_IN + [("mask", "MASK")], [("LATENT", "LATENT")], title="Dual-rate sample (30 steps)")
        links += [(1, 0, 17, "images"), (17, 0, 15, "mask"), (17, 0, 8, "mask")]
    else:
        sampler = N(8, "KSampler", WAN_SETTINGS, SAMPLE_IN, [("LATENT", "LATENT")], title="Sample (30 steps)")
    links += [(model_chain[-1], 0, 8, "model"), (6, 0, 8, "positive"), (10, 0, 8, "negative"),
              (7, 0, 8, "latent_image"), *save_links(8, vae_from=(32, 0))]
    prompts_column = [G("Prompts", COLORS["prompt"], wan_prompts())]
    if ocd:
        prompts_column.append(G("Object mask", COLORS["mask"], [saliency()]))
    return build(
        [[G("Load", COLORS["load"], load or wan_load())], prompts_column,
         [G("Model patches", COLORS["patch"], wan_patches(easycache, ocd, model_name))],
         [G("Sample", COLORS["run"], [sampler])],
         [G("Decode and save", COLORS["save"], decode_and_save(prefix))]],
        links, note)


WAN_COMMON_NOTE = ("Change first: Target prompt, the source clip (keep 4k+1 frames: 33, 49, 81), denoise on the "
                   "sampler (lower keeps more of the clip). Models: the Wan 2.1 T2V diffusion model in "
                   "models/diffusion_models, umt5-xxl in models/text_encoders, the Wan 2.1 VAE in models/vae.")

wan_v2v_vanilla = wan_v2v(
    False, False, "OCD/wan_v2v_vanilla",
    "Video-to-video with Wan 2.1 (the baseline): the clip is encoded by Wan's VAE and re-denoised from 0.7 "
    "of the schedule with the target prompt by core's KSampler (uni_pc, 30 steps, cfg 6).\n" + WAN_COMMON_NOTE +
    "\nCost: 30 x 2 (CFG) transformer calls over every token of the clip (33 frames at 832x352: 9 x 22 x 52 "
    "= 10,296 tokens).")
wan_v2v_easycache = wan_v2v(
    True, False, "OCD/wan_v2v_easycache",
    "The Wan 2.1 video-to-video edit with core EasyCache: steps whose output is predicted to change little "
    "reuse the last change instead of running the transformer (what users run today for speed).\n"
    + WAN_COMMON_NOTE + "\nCost: the vanilla template's calls less the skipped steps (the log says how many).")
wan_v2v_ocd = wan_v2v(
    False, True, "OCD/wan_v2v_ocd",
    "OCD on Wan 2.1 video-to-video: the object's mask (Auto Saliency) keeps its tokens whole while the "
    "background's merge over the whole clip in every block (Object merge), and the dual-rate sampler runs "
    "only the object's tokens on the steps the background skips (4x fewer for the background, the last "
    "quarter joint).\n" + WAN_COMMON_NOTE + " The mask if the saliency misses the object.\nCost: fewer tokens "
    "in every block and on most steps; each OCD node shows what it ran after a run.")
wan_v2v_ocd_easycache = wan_v2v(
    True, True, "OCD/wan_v2v_ocd_easycache",
    "OCD on Wan 2.1 video-to-video stacked with core EasyCache: EasyCache skips whole steps, OCD makes the "
    "others cheaper (object merge, object-token steps); the sampler keeps its blend inside EasyCache, so "
    "EasyCache caches what each step really returned. EasyCache's threshold is 0.05 here (0.2 alone): the "
    "object-token steps look like small changes to it, and at 0.2 it would skip too much.\n" + WAN_COMMON_NOTE +
    "\nCost: the least of these four templates.")

# Wan 2.2 TI2V 5B: the same edit; its VAE packs 16x16 pixels into 48 channels, so a frame has a
# quarter of Wan 2.1's tokens at a size, and it runs at 1280x704 (its native size)
WAN22_MODEL = "wan2.2_ti2v_5B_fp16.safetensors"
WAN22_VAE = "wan2.2_vae.safetensors"


def wan22_v2v_ocd() -> dict:
    return wan_v2v(False, True, "OCD/wan22_v2v_ocd", (
        "OCD on Wan 2.2 TI2V 5B video-to-video: the Wan 2.1 OCD template with the 5B model and the Wan 2.2 VAE "
        "(48 latent channels, 16x16 pixels each: 1280x704 x 33 frames is 9 x 22 x 40 = 7,920 tokens). The "
        "object's mask (Auto Saliency) keeps its tokens whole while the background merges over the clip "
        "(Object merge); the dual-rate sampler runs only the object's tokens on the steps the background "
        "skips.\nChange first: Target prompt, the source clip (4k+1 frames), denoise on the sampler, the mask "
        "if the saliency misses the object. Models: the Wan 2.2 TI2V 5B diffusion model in "
        "models/diffusion_models, umt5-xxl in models/text_encoders, the Wan 2.2 VAE in models/vae.\nCost: 30 x "
        "2 (CFG) calls of the 5B, each on fewer tokens; the 16x VAE is the slow part at this size."),
        wan_load(WAN22_MODEL, "Wan 2.2 TI2V 5B", WAN22_VAE, "Wan 2.2", width=1280), "Wan 2.2 5B")


wan22_v2v = wan22_v2v_ocd()

WAN_SOURCE = "people riding bicycles along a sunny street"


WAN_INVERSION = ["dpmpp_2m", 30, "simple", 1.0, 0.8, 0.0, 1024, False, False, "float16"]


def wan_inversion_edit(ocd: bool) -> dict:
    """Inversion on Wan's flow: the clip's latent carried up to 0.8 of the way to noise with the
    source prompt, then edited back down with the target prompt: by Edit From Inversion (the
    baseline) or, with OCD, by the dual-rate edit on the object-merged model."""
    model = 15 if ocd else 33
    links = [(31, 0, 5, "clip"), (31, 0, 6, "clip"), (31, 0, 10, "clip"), (1, 0, 7, "pixels"), (32, 0, 7, "vae"),
             (30, 0, 33, "model"), (model, 0, 11, "model"), (7, 0, 11, "latent"), (5, 0, 11, "positive"),
             (model, 0, 13, "model"), (11, 1, 13, "inversion"), (11, 0, 13, "inverted_latent"), (6, 0, 13, "positive"),
             (10, 0, 13, "negative"), *save_links(13, vae_from=(32, 0))]
    inversion = N(11, "OCD_InvertLatents", WAN_INVERSION,
                  [("model", "MODEL"), ("latent", "LATENT"), ("positive", "CONDITIONING")], INVERT_OUT,
                  title="Invert (source prompt, 30 steps)")
    if ocd:
        links += [(33, 0, 15, "model"), (1, 0, 17, "images"), (17, 0, 15, "mask"), (17, 0, 13, "mask")]
        edit = N(13, "OCD_DualRateEditFromInversion", [5.0, 0.0, 4.0, 0.25, 0, "feathered", False],
                 EDIT_IN + [("mask", "MASK")], [("LATENT", "LATENT")], title="Dual-rate edit (target prompt)")
        middle = [G("Object mask", COLORS["mask"], [saliency()]),
                  G("Model patches", COLORS["patch"], wan_patches(False, True))]
        note = ("OCD inversion edit on Wan 2.1: the clip's latent is carried up Wan's flow to 0.8 of the way to "
                "noise with the source prompt (DPM++ 2M 30, no guidance), then brought back with the target prompt "
                "by the dual-rate edit (the object's tokens every step, the background's 4x fewer); the background "
                "merges over the clip in both passes. No attention fusion: at this size a record would be GBs per "
                "step.\nChange first: Source and Target prompts, inversion_depth on Invert (lower keeps more of the "
                "clip). " + WAN_COMMON_NOTE.split(". ", 1)[1] + "\nCost: 30 inversion calls without guidance + the "
                "dual-rate edit's (2 per step with CFG), each on fewer tokens.")
    else:
        edit = N(13, "OCD_EditFromInversion", [5.0, 0.0], EDIT_IN, [("LATENT", "LATENT")],
                 title="Edit (target prompt, 30 steps)")
        middle = [G("Model patches", COLORS["patch"], wan_patches(False, False))]
        note = ("Inversion edit on Wan 2.1 (the baseline of the OCD inversion template): the clip's latent is "
                "carried up Wan's flow to 0.8 of the way to noise with the source prompt (DPM++ 2M 30, no "
                "guidance), then brought back along the same schedule with the target prompt (cfg 5). Starting "
                "from the clip's own inverted noise keeps its layout and motion deeper into the schedule than "
                "video-to-video.\nChange first: Source and Target prompts, inversion_depth on Invert (lower keeps "
                "more of the clip). " + WAN_COMMON_NOTE.split(". ", 1)[1] + "\nCost: 30 inversion calls without "
                "guidance + 30 x 2 (CFG) edit calls, every token of the clip each.")
    return build(
        [[G("Load", COLORS["load"], wan_load())],
         [G("Prompts", COLORS["prompt"], [text(5, WAN_SOURCE, "Source prompt")] + wan_prompts())],
         middle,
         [G("Invert and edit", COLORS["run"], [inversion, edit])],
         [G("Decode and save", COLORS["save"], decode_and_save("OCD/wan_inversion_" + ("ocd" if ocd else "vanilla")))]],
        links, note)


wan_inversion = wan_inversion_edit(True)
wan_inversion_vanilla = wan_inversion_edit(False)

WAN_VACE_MODEL = "wan2.1_vace_1.3B_fp16.safetensors"


def wan_vace_ocd() -> dict:
    """VACE repaints the object (its mask as VACE's control mask, the clip as the control video,
    the rest kept); OCD spends the steps there."""
    load = wan_load(WAN_VACE_MODEL, "Wan 2.1 VACE", encode_clip=False)  # VACE encodes the control video itself
    size = N(41, "GetImageSize", [], [("image", "IMAGE")],
             [("width", "INT"), ("height", "INT"), ("batch_size", "INT")], title="Clip size")
    vace = N(40, "WanVaceToVideo", [832, 480, WAN_FRAMES, 1, 1.0],
             [("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("vae", "VAE"),
              ("control_video", "IMAGE"), ("control_masks", "MASK")],
             [("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("latent", "LATENT"),
              ("trim_latent", "INT")], title="VACE: repaint the object",
             widget_inputs=[("width", "INT"), ("height", "INT"), ("length", "INT")])
    sampler = N(8, "OCD_DualRateKSampler", WAN_SETTINGS[:-1] + [1.0, 4.0, 0.25, 0, "feathered"],
                SAMPLE_IN + [("mask", "MASK")], [("LATENT", "LATENT")], title="Dual-rate sample (30 steps)")
    trim = N(42, "TrimVideoLatent", [0], [("samples", "LATENT")], [("LATENT", "LATENT")],
             widget_inputs=[("trim_amount", "INT")])
    links = [(31, 0, 6, "clip"), (31, 0, 10, "clip"), (30, 0, 33, "model"), (33, 0, 15, "model"),
             (1, 0, 17, "images"), (17, 0, 15, "mask"), (1, 0, 41, "image"),
             (41, 0, 40, "width"), (41, 1, 40, "height"), (41, 2, 40, "length"),
             (6, 0, 40, "positive"), (10, 0, 40, "negative"), (32, 0, 40, "vae"), (1, 0, 40, "control_video"),
             (17, 0, 40, "control_masks"),
             (15, 0, 8, "model"), (40, 0, 8, "positive"), (40, 1, 8, "negative"), (40, 2, 8, "latent_image"),
             (17, 0, 8, "mask"), (8, 0, 42, "samples"), (40, 3, 42, "trim_amount"),
             *save_links(42, vae_from=(32, 0))]
    return build(
        [[G("Load", COLORS["load"], load)],
         [G("Prompts", COLORS["prompt"], wan_prompts()), G("Object mask", COLORS["mask"], [saliency()]),
          G("Clip size", COLORS["load"], [size])],
         [G("Model patches", COLORS["patch"], wan_patches(False, True)), G("VACE", COLORS["run"], [vace])],
         [G("Sample", COLORS["run"], [sampler, trim])],
         [G("Decode and save", COLORS["save"], decode_and_save("OCD/wan_vace_ocd"))]],
        links,
        "OCD on a Wan 2.1 VACE edit: VACE repaints what the object's mask (Auto Saliency) covers, as the target "
        "prompt says, and keeps the rest of the clip (the control video); the dual-rate sampler runs every step "
        "on the object's tokens, 4x fewer on the rest, and the background merges over the clip (Object merge).\n"
        "Change first: Target prompt (the new object), the source clip (4k+1 frames; size and length follow "
        "it), the mask. Models: Wan 2.1 VACE in models/diffusion_models, umt5-xxl in models/text_encoders, the "
        "Wan 2.1 VAE in models/vae.\nCost: 30 x 2 "
        "(CFG) calls from noise, each on fewer tokens; VACE's own blocks run on every token.")


wan_vace = wan_vace_ocd()

WORKFLOWS = {
    "ocd_load_save_video": roundtrip,
    "ocd_video_img2img_sd15": img2img,
    "ocd_inversion_vanilla_fatezero_sd15": fatezero_vanilla,
    "ocd_inversion_optimized_fatezero_sd15": fatezero_optimized,
    "ocd_inversion_ocd_sd15": ocd_inversion,
    "ocd_inversion_ocd_sam_sd15": ocd_inversion_sam,
    "ocd_control_vanilla_controlvideo_sd15": controlvideo_vanilla,
    "ocd_control_ocd_sd15": controlvideo_ocd,
    "ocd_wan_v2v_vanilla_wan21": wan_v2v_vanilla,
    "ocd_wan_v2v_easycache_wan21": wan_v2v_easycache,
    "ocd_wan_v2v_ocd_wan21": wan_v2v_ocd,
    "ocd_wan_v2v_ocd_easycache_wan21": wan_v2v_ocd_easycache,
    "ocd_wan_inversion_vanilla_wan21": wan_inversion_vanilla,
    "ocd_wan_inversion_ocd_wan21": wan_inversion,
    "ocd_wan_vace_ocd_wan21": wan_vace,
    "ocd_wan_v2v_ocd_wan22_5b": wan22_v2v,
}

if __name__ == "__main__":
    for stale in OUT_DIR.glob("*.json"):
        if stale.stem not in WORKFLOWS:
            stale.unlink()
    for name, wf in WORKFLOWS.items():
        (OUT_DIR / f"{name}.json").write_text(json.dumps(wf, indent=1) + "\n")
