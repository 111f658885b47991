"""``python -m ocd edit`` on a clip of any length: the template run once per window
(ocd/windows.py says which frames), each window's frames saved as a part file the moment it
is done, the parts assembled (overlaps cross-faded) and written with the clip's sound piece by
piece: the clip is never whole in memory, neither its frames nor its sound (the glue; it uses
ocd/comfy_cli.py's pieces).

Resuming: the parts and a manifest (what job they belong to, which windows are done) live in
a hidden folder beside the output, ``.<out name>.ocd-parts``. A run that stops (killed,
interrupted, an error) leaves them; the same command with ``--resume`` skips the windows
done and gives the clip an uninterrupted run gives (every window is its own deterministic
run: same inputs, same frames). The output is written under a hidden name and renamed when
complete, so it appears whole or not at all; the parts are deleted once it is there.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from . import comfy_cli, templates, windows
from .comfy_cli import UsageError

MANIFEST = "manifest.json"


def output_path(a) -> Path:
    return Path(a.out or f"{Path(a.video).stem}_ocd_{a.pipeline}_{a.preset}.mp4")


def parts_folder(out: Path) -> Path:
    return out.parent / f".{out.name}.ocd-parts"


def _file_identity(path: str | None) -> dict | None:
    if path is None:
        return None
    stat = Path(path).stat()
    return {"name": Path(path).name, "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def job_identity(a, plan: windows.WindowPlan, first_prompt: dict) -> dict:
    """What the parts depend on: the clip and mask files, the model files, the first window's
    graph (the template, every argument that reaches it), the windows. A resumed run must match."""
    models = {m.key: _file_identity(getattr(a, m.key, None)) for m in comfy_cli.pipeline_of(a).models}
    graph = hashlib.sha256(json.dumps(first_prompt, sort_keys=True).encode()).hexdigest()
    return {"video": _file_identity(a.video), "mask": _file_identity(a.mask) if a.mask not in (None, "auto") else None,
            "models": models, "random_weights": bool(a.random_weights), "device": "cpu" if a.cpu else "default",
            "graph": graph, "windows": [[w.start, w.count, w.anchors] for w in plan.windows]}


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def _load_manifest(parts: Path, job: dict, resume: bool) -> dict:
    """The manifest of the parts done so far (a new one when starting)."""
    if not (parts / MANIFEST).is_file():
        if resume:
            print(f"note: --resume: nothing to resume at {parts}; starting from the first window", file=sys.stderr)
        elif parts.exists():
            shutil.rmtree(parts)  # a folder without a manifest holds no finished window
        parts.mkdir(parents=True, exist_ok=True)
        manifest = {"job": job, "done": {}}
        _write_json(parts / MANIFEST, manifest)  # from the start: the clip's mask kept here is this job's
        return manifest
    saved = json.loads((parts / MANIFEST).read_text())
    if not resume:
        raise UsageError(f"a run of this edit stopped with {len(saved['done'])} of {len(saved['job']['windows'])} "
                         f"windows done (in {parts}): add --resume to continue it, or delete that folder to start over")
    if saved["job"] != job:
        changed = sorted(k for k in job if saved["job"].get(k) != job[k])
        raise UsageError(f"--resume: the windows in {parts} belong to another edit (different "
                         f"{', '.join(changed)}): run the command they were made with, or delete the folder")
    for name in os.listdir(parts):  # a part being written when the run stopped
        if name.endswith(".tmp"):
            os.remove(parts / name)
    return saved


def record_sizes(runs: list[dict]) -> dict:
    """MiB of every record a window's runs kept (attention records, kept outputs...), by node and fact."""
    sizes = {}
    for run in runs:
        for section in run["nodes"].values():
            for fact, value in section["facts"].items():
                if isinstance(value, dict) and "MiB" in value:
                    sizes[f"{section['name']}: {fact}"] = value["MiB"]
    return sizes


def _window_frames(base: Path, outputs: dict, name: str, count: int) -> np.ndarray:
    """The window's frames from the PNGs its Save Image wrote as ``OCD/<name>_*`` (batch order),
    deleted after."""
    from PIL import Image

    images = [item for out in outputs.values() for item in out.get("images", [])
              if item.get("type") == "output" and item["subfolder"] == "OCD" and item["filename"].startswith(name + "_")]
    if len(images) != count:
        raise UsageError(f"the window's graph saved {len(images)} frames, {count} expected")
    frames = []
    for item in images:
        path = base / item["type"] / item["subfolder"] / item["filename"]
        with Image.open(path) as image:
            frames.append(np.asarray(image.convert("RGB")))
        path.unlink()
    return np.stack(frames)


CLIP_MASK = "ocd_clip_mask.mp4"


def clip_mask(a, base: Path, nodes, info: dict, names: dict, plan: windows.WindowPlan, parts: Path) -> str | None:
    """The object mask of the whole clip, made once by the template's own Auto Saliency (OCD)
    (its settings, on the clip's frames at its working size) and kept with the parts as a
    lossless mp4 (x264 at crf 0: an animated WebP would merge identical frames), reused by
    ``--resume``: every window takes its frames of it, so all windows agree on the object
    (masks made window by window disagree where they overlap: each window's threshold and
    motion statistics are its own). None when the template makes no mask with Auto Saliency
    or ``--mask`` gives one."""
    if getattr(a, "mask", None) not in (None, "auto"):
        return None
    job = argparse.Namespace(**{**vars(a), "fit_frames": None})
    prompt = comfy_cli.build_prompt(job, info, {**names, "frames": plan.windows[0].edited})
    node = next((n for n in prompt.values() if n["class_type"] == "OCD_AutoSaliency"), None)
    if node is None:
        return None
    kept = parts / CLIP_MASK
    if not kept.is_file():
        working = node["inputs"].get("working_size", 256)
        load = {"class_type": "OCD_LoadVideo",
                "inputs": {"video": names["video"], "frame_load_cap": plan.frames, "skip_first_frames": 0,
                           "select_every_nth": 1, "force_rate": 0.0, "width": working, "height": 0,
                           "resize_mode": "crop"}}
        graph = {"load": load, "mask": {"class_type": "OCD_AutoSaliency",
                                        "inputs": {**node["inputs"], "images": ["load", 0]}},
                 "image": {"class_type": "MaskToImage", "inputs": {"mask": ["mask", 0]}},
                 "save": {"class_type": "OCD_SaveVideo",
                          "inputs": {"images": ["image", 0], "frame_rate": 8.0, "filename_prefix": "OCD/clip_mask",
                                     "format": "mp4", "crf": 0, "save_output": True}}}
        print(f"the object mask of the whole clip ({plan.frames} frames at {working} px)...", file=sys.stderr)
        outputs, _ = comfy_cli.run_prompt(nodes, graph, cache=True)
        (item,) = [i for out in outputs.values() for i in out.get("images", []) if i["filename"].endswith(".mp4")]
        made = base / item["type"] / item["subfolder"] / item["filename"]
        tmp = kept.with_name(kept.name + ".tmp")
        shutil.move(made, tmp)
        os.replace(tmp, kept)
    linked = base / "input" / CLIP_MASK
    if not linked.exists():
        shutil.copyfile(kept, linked)
    return CLIP_MASK


def run_window(a, base: Path, nodes, info: dict, names: dict, w: windows.Window) -> tuple[np.ndarray, dict]:
    """Window ``w`` through the template: (its own frames as uint8, its report)."""
    job = argparse.Namespace(**{**vars(a), "fit_frames": None})
    prompt = comfy_cli.build_prompt(job, info, {**names, "frames": w.edited})
    if names.get("clip_mask"):
        templates.mask_from_clip(prompt, names["clip_mask"], names["frame_size"])
    if comfy_cli.pipeline_of(a).temporal_scale == 1:  # frames are a batch: their noise by clip frame
        templates.number_frames(prompt, w.start, w.anchors)
    name = f"window{w.index:05d}"
    templates.window_graph(prompt, w.start, w.count, w.anchors, f"OCD/{name}")
    with comfy_cli.PeakMemory() as memory:
        start = time.perf_counter()
        outputs, messages = comfy_cli.run_prompt(nodes, prompt, cache=True)  # the models stay loaded
        seconds = time.perf_counter() - start
    report = comfy_cli.summarise(outputs, messages, seconds, memory.total_mib)
    frames = _window_frames(base, outputs, name, w.count)
    return frames, {"window": w.index, "frames": [w.start, w.end], "anchors": w.anchors, "seconds": report["seconds"],
                    "unet_evaluations": report["unet_evaluations"], "peak_memory_mib": report["peak_memory_mib"],
                    "records_mib": record_sizes(report["runs"]), "runs": report["runs"]}


def window_names(a, base: Path, nodes, info: dict, names: dict, plan: windows.WindowPlan, parts: Path) -> dict:
    """What every window's graph needs beyond the clip's names: the clip's object mask and the
    frames' size."""
    from .video import codec

    source = codec.probe_video(str(a.video))
    size = codec.output_size(source.width, source.height, a.size, 0)
    return {"clip_mask": clip_mask(a, base, nodes, info, names, plan, parts), "frame_size": size}


def run_windows(a, base: Path, nodes, info: dict, names: dict, plan: windows.WindowPlan, parts: Path,
                manifest: dict) -> list[dict]:
    """Every window not done yet in ``manifest``: run, its frames saved to ``parts``, the
    manifest updated on disk after each; returns the run reports of the windows run."""
    total, runs = len(plan.windows), []
    for w in plan.windows:
        label = f"window {w.index + 1}/{total} (frames {w.start}-{w.end - 1}" + \
                (f", anchor frames 0-{w.anchors - 1})" if w.anchors > 1 else ", anchor frame 0)" if w.anchors else ")")
        if str(w.index) in manifest["done"]:
            print(f"{label}: done in an earlier run", file=sys.stderr)
            continue
        print(f"{label}...", file=sys.stderr, flush=True)
        try:
            frames, report = run_window(a, base, nodes, info, names, w)
        except KeyboardInterrupt:
            raise UsageError(f"interrupted: {len(manifest['done'])} of {total} windows are saved in {parts}; "
                             "the same command with --resume continues") from None
        part = parts / f"window{w.index:05d}.npy"
        with open(part.with_name(part.name + ".tmp"), "wb") as f:
            np.save(f, frames)
        os.replace(part.with_name(part.name + ".tmp"), part)
        runs += report["runs"]
        manifest["done"][str(w.index)] = {k: v for k, v in report.items() if k != "runs"}
        _write_json(parts / MANIFEST, manifest)
        print(f"{label}: {report['seconds']:.1f} s, peak memory {report['peak_memory_mib']:.0f} MiB, records "
              f"{sum(report['records_mib'].values()):.1f} MiB", file=sys.stderr, flush=True)
    return runs


def write_clip(a, plan: windows.WindowPlan, parts: Path, out: Path) -> dict:
    """The parts assembled (overlaps cross-faded) and written with the clip's sound, piece by
    piece, under a hidden name renamed to ``out`` when complete; what was written."""
    from .video import codec

    video = str(a.video)
    fps = codec.select_frames(codec.probe_video(video), frame_load_cap=plan.frames).fps
    sound = codec.has_sound(video)

    def sound_of(first: int, count: int) -> codec.Sound:
        return codec.decode_audio(video, first / fps, count / fps, tile=True)

    pieces = windows.assemble(plan, lambda w: np.load(parts / f"window{w.index:05d}.npy"))
    first_index, first = next(pieces)
    first_sound = sound_of(first_index, len(first)) if sound else None  # its rate and channels open the stream
    rate, channels = (first_sound.sample_rate, first_sound.waveform.shape[1]) if sound else (0, 0)
    written = 0
    with codec.StreamWriter(str(out), fps, (first.shape[2], first.shape[1]), sound_rate=rate,
                            sound_channels=channels) as writer:
        for index, frames in [(first_index, first), *pieces]:
            if index != written:
                raise RuntimeError(f"window assembly skipped frames {written}-{index - 1}")
            piece = (first_sound if index == first_index else sound_of(index, len(frames))) if sound else None
            writer.write(frames, piece.waveform[0].numpy() if sound else None)
            written += len(frames)
    return {"frames": written, "fps": fps, "sound": f"{rate} Hz, {channels} channel(s)" if sound else "none"}


def edit(a) -> dict:
    """``python -m ocd edit``: the whole clip in one run when it fits a window, else window by window."""
    comfy_cli.check_arguments(a)
    out = output_path(a)
    clip = comfy_cli.clip_frames(a, Path(a.video)) if Path(a.video).is_file() else 0
    plan = comfy_cli.window_plan(a, clip) if clip else None
    if plan is None or len(plan.windows) == 1:
        if getattr(a, "resume", False):
            print("note: --resume: the clip is edited in one run (it fits one window): nothing to resume",
                  file=sys.stderr)
        return comfy_cli.edit(a)
    return edit_windows(a, plan, out)


def edit_windows(a, plan: windows.WindowPlan, out: Path) -> dict:
    root = comfy_cli.find_comfyui(a.comfyui)
    parts = parts_folder(out)
    print(f"{plan.frames} frames in {len(plan.windows)} windows of {plan.window} frames (+ {plan.anchors} anchor frame(s), "
          f"overlap {plan.overlap}): {plan.edited_frames} frames edited in all", file=sys.stderr)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ocd-cli-") as tmp:
        base = Path(tmp)
        names = comfy_cli.prepare_base(base, a)
        nodes = comfy_cli.start_comfyui(root, base, a.cpu)
        names.update(comfy_cli.model_names(base, a))
        info = comfy_cli.object_info(nodes)
        first_prompt = comfy_cli.build_prompt(argparse.Namespace(**{**vars(a), "fit_frames": None}), info,
                                              {**names, "frames": plan.windows[0].edited})
        manifest = _load_manifest(parts, job_identity(a, plan, first_prompt), getattr(a, "resume", False))
        names.update(window_names(a, base, nodes, info, names, plan, parts))
        run_windows(a, base, nodes, info, names, plan, parts, manifest)
    written = write_clip(a, plan, parts, out)
    done = [manifest["done"][str(w.index)] for w in plan.windows]
    report = {"seconds": round(time.perf_counter() - started, 2),
              "unet_evaluations": sum(d["unet_evaluations"] for d in done),
              "peak_memory_mib": round(comfy_cli.peak_memory_mib(), 1), "output": str(out),
              "windows": done, "plan": {"frames": plan.frames, "window": plan.window, "overlap": plan.overlap,
                                        "anchors": plan.anchors, "seams": plan.seams}, "written": written}
    shutil.rmtree(parts)
    if a.report:
        Path(a.report).write_text(json.dumps(report, indent=1))
    return report
