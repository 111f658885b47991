"""Writes example_workflows/*.json (ComfyUI's UI format) from the compact specs below.

Keeping the workflows as code makes links, slots and widget orders consistent; the e2e tests
run every workflow through a real server (tests/support/workflow.py converts them).

    python scripts/make_example_workflows.py
"""
import json
from pathlib import Path

OUT_DIR = Path(__file__).resolve().parents[1] / "example_workflows"

def build(nodes, links):
    """nodes: (id, type, pos, widgets_values, inputs [(name, type, is_widget)], outputs [(name, type)]);
    links: (source id, source slot, target id, target input name)."""
    link_rows = []
    node_objs = {}
    for i, (nid, typ, pos, widgets, inputs, outputs) in enumerate(nodes):
        node_objs[nid] = {
            "id": nid, "type": typ, "pos": pos, "size": [320, 80 + 26 * (len(widgets) + max(len(inputs), len(outputs)))],
            "flags": {}, "order": i, "mode": 0,
            "inputs": [dict(name=n, type=t, link=None, **({"widget": {"name": n}} if w else {})) for n, t, w in inputs],
            "outputs": [{"name": n, "type": t, "links": [], "slot_index": k} for k, (n, t) in enumerate(outputs)],
            "properties": {"Node name for S&R": typ},
            "widgets_values": widgets,
        }
    for lid, (src, sslot, dst, dname) in enumerate(links, start=1):
        s, d = node_objs[src], node_objs[dst]
        dslot = next(k for k, inp in enumerate(d["inputs"]) if inp["name"] == dname)
        typ = s["outputs"][sslot]["type"]
        d["inputs"][dslot]["link"] = lid
        s["outputs"][sslot]["links"].append(lid)
        link_rows.append([lid, src, sslot, dst, dslot, typ])
    return {
        "last_node_id": max(node_objs), "last_link_id": len(link_rows),
        "nodes": list(node_objs.values()), "links": link_rows, "groups": [], "config": {},
        "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}}, "version": 0.4,
    }

LOAD_OUT = [("IMAGE", "IMAGE"), ("frame_count", "INT"), ("video_info", "VHS_VIDEOINFO")]
INFO_OUT = [("fps", "FLOAT"), ("frame_count", "INT"), ("duration", "FLOAT"), ("width", "INT"), ("height", "INT")]

roundtrip = build(
    [
        (1, "OCD_LoadVideo", [40, 120], ["bikes.mp4", 16, 0, 1, 0, 512, 0, "crop"], [], LOAD_OUT),
        (2, "OCD_VideoInfo", [420, 380], ["loaded"], [("video_info", "VHS_VIDEOINFO", False)], INFO_OUT),
        (3, "OCD_SaveVideo", [780, 120], [8.0, "OCD/video", "mp4", 19, True],
         [("images", "IMAGE", False), ("frame_rate", "FLOAT", True)], [("filename", "STRING")]),
    ],
    [(1, 0, 3, "images"), (1, 2, 2, "video_info"), (2, 0, 3, "frame_rate")],
)
img2img = build(
    [
        (4, "CheckpointLoaderSimple", [40, 40], ["v1-5-pruned-emaonly.safetensors"], [],
         [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")]),
        (5, "CLIPTextEncode", [420, 40], ["a watercolor painting of people riding bicycles"], [("clip", "CLIP", False)],
         [("CONDITIONING", "CONDITIONING")]),
        (6, "CLIPTextEncode", [420, 260], ["blurry, low quality, watermark"], [("clip", "CLIP", False)],
         [("CONDITIONING", "CONDITIONING")]),
        (1, "OCD_LoadVideo", [40, 300], ["bikes.mp4", 8, 0, 1, 0, 512, 0, "crop"], [], LOAD_OUT),
        (7, "VAEEncode", [420, 480], [], [("pixels", "IMAGE", False), ("vae", "VAE", False)], [("LATENT", "LATENT")]),
        (8, "KSampler", [800, 40], [0, "fixed", 20, 7.0, "euler", "normal", 0.6],
         [("model", "MODEL", False), ("positive", "CONDITIONING", False), ("negative", "CONDITIONING", False),
          ("latent_image", "LATENT", False)], [("LATENT", "LATENT")]),
        (9, "VAEDecode", [1180, 40], [], [("samples", "LATENT", False), ("vae", "VAE", False)], [("IMAGE", "IMAGE")]),
        (2, "OCD_VideoInfo", [800, 480], ["loaded"], [("video_info", "VHS_VIDEOINFO", False)], INFO_OUT),
        (3, "OCD_SaveVideo", [1180, 260], [8.0, "OCD/img2img", "mp4", 19, True],
         [("images", "IMAGE", False), ("frame_rate", "FLOAT", True)], [("filename", "STRING")]),
    ],
    [(4, 1, 5, "clip"), (4, 1, 6, "clip"), (1, 0, 7, "pixels"), (4, 2, 7, "vae"),
     (4, 0, 8, "model"), (5, 0, 8, "positive"), (6, 0, 8, "negative"), (7, 0, 8, "latent_image"),
     (8, 0, 9, "samples"), (4, 2, 9, "vae"), (1, 2, 2, "video_info"), (9, 0, 3, "images"), (2, 0, 3, "frame_rate")],
)
CKPT = (4, "CheckpointLoaderSimple", [40, 40], ["v1-5-pruned-emaonly.safetensors"], [],
        [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")])


def text(node_id, pos, prompt):
    return (node_id, "CLIPTextEncode", pos, [prompt], [("clip", "CLIP", False)], [("CONDITIONING", "CONDITIONING")])


SOURCE = "a man riding a bicycle on a street"
inversion_edit = build(
    [
        CKPT,
        text(5, [420, 40], SOURCE),
        text(6, [420, 240], "a robot riding a bicycle on a street"),
        text(10, [420, 440], "blurry, low quality, watermark"),
        (1, "OCD_LoadVideo", [40, 300], ["bikes.mp4", 8, 0, 1, 0, 512, 0, "crop"], [], LOAD_OUT),
        (7, "VAEEncode", [420, 640], [], [("pixels", "IMAGE", False), ("vae", "VAE", False)], [("LATENT", "LATENT")]),
        (11, "OCD_InvertLatents", [800, 40], ["dpmpp_2m", 20, "normal", 1.0, 1.0, 0.8, 1024, True, False],
         [("model", "MODEL", False), ("latent", "LATENT", False), ("positive", "CONDITIONING", False)],
         [("inverted_latent", "LATENT"), ("inversion", "OCD_INVERSION")]),
        (12, "OCD_CrossAttentionMask", [800, 420], [SOURCE, "man", 0.3, 8],
         [("inversion", "OCD_INVERSION", False), ("clip", "CLIP", False)], [("MASK", "MASK")]),
        (13, "OCD_EditFromInversion", [1180, 40], [7.5, 0.8],
         [("model", "MODEL", False), ("inversion", "OCD_INVERSION", False), ("inverted_latent", "LATENT", False),
          ("positive", "CONDITIONING", False), ("negative", "CONDITIONING", False), ("blend_mask", "MASK", False)],
         [("LATENT", "LATENT")]),
        (9, "VAEDecode", [1560, 40], [], [("samples", "LATENT", False), ("vae", "VAE", False)], [("IMAGE", "IMAGE")]),
        (2, "OCD_VideoInfo", [1180, 420], ["loaded"], [("video_info", "VHS_VIDEOINFO", False)], INFO_OUT),
        (3, "OCD_SaveVideo", [1560, 260], [8.0, "OCD/inversion_edit", "mp4", 19, True],
         [("images", "IMAGE", False), ("frame_rate", "FLOAT", True)], [("filename", "STRING")]),
    ],
    [(4, 1, 5, "clip"), (4, 1, 6, "clip"), (4, 1, 10, "clip"), (1, 0, 7, "pixels"), (4, 2, 7, "vae"),
     (4, 0, 11, "model"), (7, 0, 11, "latent"), (5, 0, 11, "positive"),
     (11, 1, 12, "inversion"), (4, 1, 12, "clip"),
     (4, 0, 13, "model"), (11, 1, 13, "inversion"), (11, 0, 13, "inverted_latent"), (6, 0, 13, "positive"),
     (10, 0, 13, "negative"), (12, 0, 13, "blend_mask"),
     (13, 0, 9, "samples"), (4, 2, 9, "vae"), (1, 2, 2, "video_info"), (9, 0, 3, "images"), (2, 0, 3, "frame_rate")],
)

MERGE_OUT = [("MODEL", "MODEL"), ("merge_record", "OCD_MERGE_RECORD")]
SALIENCY_OUT = [("mask", "MASK"), ("saliency", "MASK")]
# The whole OCD edit: cross-frame attention, object-centric token merging paired between
# inversion and edit, the object's mask from Auto Saliency (it must exist before the
# inversion, whose merges it protects), dual-rate (object-centric) sampling.
object_centric_edit = build(
    [
        CKPT,
        text(5, [420, 40], SOURCE),
        text(6, [420, 240], "a robot riding a bicycle on a street"),
        text(10, [420, 440], "blurry, low quality, watermark"),
        (1, "OCD_LoadVideo", [40, 300], ["bikes.mp4", 8, 0, 1, 0, 512, 0, "crop"], [], LOAD_OUT),
        (7, "VAEEncode", [420, 640], [], [("pixels", "IMAGE", False), ("vae", "VAE", False)], [("LATENT", "LATENT")]),
        (17, "OCD_AutoSaliency", [40, 1000], [0.7, "flow", -1.0, 5, 256], [("images", "IMAGE", False)],
         SALIENCY_OUT),
        (14, "OCD_CrossFrameAttention", [40, 620], ["sparse_causal", 2], [("model", "MODEL", False)],
         [("MODEL", "MODEL")]),
        (15, "OCD_TokenMerge", [40, 780], [0.5, 2, 2, "1", "input,middle,output", 1.0, 0, "fixed", "record", False],
         [("model", "MODEL", False), ("mask", "MASK", False)], MERGE_OUT),
        (16, "OCD_TokenMerge", [420, 820], [0.5, 2, 2, "1", "input,middle,output", 1.0, 0, "fixed", "replay", False],
         [("model", "MODEL", False), ("mask", "MASK", False), ("merge_record", "OCD_MERGE_RECORD", False)],
         MERGE_OUT),
        (11, "OCD_InvertLatents", [800, 40], ["dpmpp_2m", 20, "normal", 1.0, 1.0, 0.8, 1024, False, False],
         [("model", "MODEL", False), ("latent", "LATENT", False), ("positive", "CONDITIONING", False)],
         [("inverted_latent", "LATENT"), ("inversion", "OCD_INVERSION")]),
        (13, "OCD_DualRateEditFromInversion", [1180, 40], [7.5, 0.8, 4.0, 0.25, 2, "feathered", True],
         [("model", "MODEL", False), ("inversion", "OCD_INVERSION", False), ("inverted_latent", "LATENT", False),
          ("positive", "CONDITIONING", False), ("negative", "CONDITIONING", False), ("mask", "MASK", False)],
         [("LATENT", "LATENT")]),
        (9, "VAEDecode", [1560, 40], [], [("samples", "LATENT", False), ("vae", "VAE", False)], [("IMAGE", "IMAGE")]),
        (2, "OCD_VideoInfo", [1180, 420], ["loaded"], [("video_info", "VHS_VIDEOINFO", False)], INFO_OUT),
        (3, "OCD_SaveVideo", [1560, 260], [8.0, "OCD/object_centric_edit", "mp4", 19, True],
         [("images", "IMAGE", False), ("frame_rate", "FLOAT", True)], [("filename", "STRING")]),
    ],
    [(4, 1, 5, "clip"), (4, 1, 6, "clip"), (4, 1, 10, "clip"), (1, 0, 7, "pixels"), (4, 2, 7, "vae"),
     (1, 0, 17, "images"),
     (4, 0, 14, "model"), (14, 0, 15, "model"), (14, 0, 16, "model"), (15, 1, 16, "merge_record"),
     (17, 0, 15, "mask"), (17, 0, 16, "mask"),
     (15, 0, 11, "model"), (7, 0, 11, "latent"), (5, 0, 11, "positive"),
     (16, 0, 13, "model"), (11, 1, 13, "inversion"), (11, 0, 13, "inverted_latent"), (6, 0, 13, "positive"),
     (10, 0, 13, "negative"), (17, 0, 13, "mask"),
     (13, 0, 9, "samples"), (4, 2, 9, "vae"), (1, 2, 2, "video_info"), (9, 0, 3, "images"), (2, 0, 3, "frame_rate")],
)

WORKFLOWS = {
    "ocd_load_save_video": roundtrip,
    "ocd_video_img2img_sd15": img2img,
    "ocd_inversion_edit_sd15": inversion_edit,
    "ocd_object_centric_edit_sd15": object_centric_edit,
}

if __name__ == "__main__":
    for name, wf in WORKFLOWS.items():
        (OUT_DIR / f"{name}.json").write_text(json.dumps(wf, indent=1) + "\n")
