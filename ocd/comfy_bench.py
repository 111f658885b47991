"""``python -m ocd bench``: the presets of a pipeline side by side, in one process, through the
same templates and executor as ``python -m ocd edit`` (the glue; it uses ocd/comfy_cli.py's
pieces, never the other way round; the pipelines and their presets are ``ocd.pipelines``).

For each preset (inversion: vanilla, optimized, ocd; control: vanilla, ocd; wan: vanilla,
easycache, ocd, ocd+easycache): wall time of the edit (the models loaded once
before, by a one-step warm-up of the same graph), UNet evaluations, latent pixels processed
(evaluations x frames x latent pixels, from the run reports), peak memory (process RSS on the
CPU, device memory on a GPU), the attention record, and, against vanilla, the fidelity of
the decoded frames (PSNR inside and outside the object's mask from Auto Saliency, same seed)
and the temporal consistency of each preset's output (mean flow-warping error between
consecutive frames, OpenCV Farneback flow). The object's mask is Auto Saliency's on the source
clip's frames, as the OCD templates make it. It rewrites its section of docs/BENCHMARKS.md and
a plot (docs/benchmarks/e2e-<pipeline>-<device>.png), or of ``--write FILE`` and a plot beside
it (scripts/benchmarks/gpu_rows.sh). ``--feature-reuse CLOCK`` adds one row:
the ocd preset with Feature Reuse (OCD) after the checkpoint, and its speed-up over ocd.
"""
from __future__ import annotations

import argparse
import contextlib
import fnmatch
import math
import time
from pathlib import Path

from . import comfy_cli, comfy_windows, host, windows
from .pipelines import PIPELINES, PRESETS


PeakMemory = comfy_cli.PeakMemory  # where scripts/benchmarks/dit.py finds it


def psnr(a, b, region) -> float:
    sel = region.expand_as(a)
    mse = float(((a - b)[sel] ** 2).mean()) if bool(sel.any()) else 0.0
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)


def warping_errors(frames) -> list[float]:
    """|frame t - frame t+1 warped back to t| per consecutive pair t (frames [F,H,W,3] in 0..1;
    OpenCV Farneback flow)."""
    import cv2
    import numpy as np

    images = (frames.clamp(0, 1).numpy() * 255).astype(np.uint8)
    errors = []
    h, w = images.shape[1:3]
    grid = np.stack(np.meshgrid(np.arange(w), np.arange(h)), -1).astype(np.float32)
    for a, b in zip(images[:-1], images[1:]):
        flow = cv2.calcOpticalFlowFarneback(cv2.cvtColor(a, cv2.COLOR_RGB2GRAY), cv2.cvtColor(b, cv2.COLOR_RGB2GRAY),
                                            None, 0.5, 3, 15, 3, 5, 1.2, 0)
        warped = cv2.remap(b, grid + flow, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        errors.append(float(np.abs(a.astype(np.float32) - warped.astype(np.float32)).mean() / 255))
    return errors


def seam_consistency(frames, plan, errors: list[float]) -> dict:
    """How well windows join: the flow-warping error (``errors``, ``warping_errors(frames)``)
    and the PSNR between consecutive frames, over the pairs at window boundaries
    (``windows.seam_pairs``: in and around each cross-fade) against the pairs inside windows.
    A seam that shows has a higher warping error and a lower PSNR at the boundaries than inside."""
    at = windows.seam_pairs(plan)
    pairs = range(len(errors))

    def mean(values):
        values = list(values)
        return sum(values) / len(values) if values else float("nan")

    def pair_psnr(chosen) -> float:  # of the pairs' mean squared difference (identical pairs: no infinity)
        mse = mean(float(((frames[t] - frames[t + 1]) ** 2).mean()) for t in chosen)
        return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)

    boundary = mean(errors[t] for t in pairs if t in at)
    inside = mean(errors[t] for t in pairs if t not in at)
    return {"seam_warping": boundary, "inside_warping": inside, "seam_ratio": boundary / inside if inside else float("nan"),
            "seam_psnr": pair_psnr(t for t in pairs if t in at), "inside_psnr": pair_psnr(t for t in pairs if t not in at)}


def _decode(path: Path):
    from .video import codec

    info = codec.probe_video(str(path))
    selection = codec.select_frames(info)
    return codec.decode_frames(str(path), selection, (info.width, info.height))


def _source_frames(a, edited):
    """The clip's frames as the templates load them (the first ``len(edited)`` frames at the
    edit's size): what the object's mask is made from, in the templates and here."""
    from .video import codec

    info = codec.probe_video(a.video)
    selection = codec.select_frames(info, frame_load_cap=edited.shape[0])
    return codec.decode_frames(a.video, selection, (edited.shape[2], edited.shape[1]))


def _plot(rows: list[dict], path: Path, title: str) -> None:
    """Bars of wall time per preset with their speed-up and PSNR (Pillow, no plotting package)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (1, 1), "white")
    left = 20 + max(int(ImageDraw.Draw(image).textlength(r["preset"])) for r in rows)  # room for the longest label
    width, height, bottom = 520 + left, 300, 50
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((10, 8), title, fill="black")
    longest = max(r["seconds"] for r in rows) or 1.0
    bar_h = (height - bottom - 40) / max(1, len(rows))
    for i, r in enumerate(rows):
        y = 40 + i * bar_h
        length = (width - left - 20) * r["seconds"] / longest
        draw.rectangle([left, y + 4, left + length, y + bar_h - 4], fill=(70, 120, 200))
        draw.text((10, y + bar_h / 2 - 6), r["preset"], fill="black")
        label = f"{r['seconds']:.0f} s, {r['speedup']:.2f}x"
        if r.get("psnr_in") is not None:
            label += f", PSNR {r['psnr_in']:.1f}/{r['psnr_out']:.1f} dB"
        draw.text((left + 6, y + bar_h / 2 - 6), label, fill="white" if length > 260 else "black")
    draw.text((left, height - bottom + 12), "wall time per preset (PSNR in / outside the object vs vanilla)",
              fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


@contextlib.contextmanager
def _session(a):
    """ComfyUI started in-process on a private base directory with the clip and the models
    linked in; yields (base, nodes, object_info, names)."""
    import tempfile

    root = comfy_cli.find_comfyui(a.comfyui)
    with tempfile.TemporaryDirectory(prefix="ocd-bench-") as tmp:
        base = Path(tmp)
        names = comfy_cli.prepare_base(base, a)
        nodes = comfy_cli.start_comfyui(root, base, a.device == "cpu")
        names.update(comfy_cli.model_names(base, a, full_architecture=not a.mini, depth=a.depth))
        yield base, nodes, comfy_cli.object_info(nodes), names


def _job(a, preset: str, clock: int | None) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(a), "preset": preset, "out": None, "mask": "auto", "object": "man",
                                 "seed": 0, "feature_reuse": clock})


def _label(preset: str, clock: int | None) -> str:
    return preset + (f" + feature reuse (clock {clock})" if clock else "")


def _warm_up(nodes, job, info, names) -> None:
    """A one-step run of the same graph: loads the models (kept) and the clip."""
    comfy_cli.run_prompt(nodes, comfy_cli.build_prompt(argparse.Namespace(**{**vars(job), "steps": 1}), info, names),
                         cache=True)


def _run_whole(job, base, nodes, info, names, plan):
    """The preset's template on the whole clip: (seconds, run reports, frames, memory, work,
    row facts of windowed runs: none)."""
    prompt = comfy_cli.build_prompt(job, info, names)
    _warm_up(nodes, job, info, names)
    with PeakMemory() as memory, host.WorkCounter() as work:
        start = time.perf_counter()
        outputs, messages = comfy_cli.run_prompt(nodes, prompt, cache=True)
        seconds = time.perf_counter() - start
    report = comfy_cli.summarise(outputs, messages, seconds, memory.mib)
    saved = next(item for out in outputs.values() for item in out.get("images", [])
                 if item.get("filename", "").endswith(".mp4"))
    frames = _decode(base / saved["type"] / saved["subfolder"] / saved["filename"])
    return seconds, report["runs"], frames, memory, work, {}


def _run_windowed(job, base, nodes, info, names, plan):
    """The preset's template window by window, as ``python -m ocd edit`` runs a long clip (parts
    on disk, the clip assembled and written with its sound): (seconds, run reports, frames,
    memory, work, the windows' disagreement on the frames they share). Warm-up: the last
    window at one step."""
    import tempfile

    import numpy as np

    comfy_windows.run_window(argparse.Namespace(**{**vars(job), "steps": 1}), base, nodes, info, names,
                             plan.windows[-1])
    with tempfile.TemporaryDirectory(prefix="ocd-bench-parts-") as parts:
        parts = Path(parts)
        with PeakMemory() as memory, host.WorkCounter() as work:
            start = time.perf_counter()
            names = {**names, **comfy_windows.window_names(job, base, nodes, info, names, plan, parts)}
            runs = comfy_windows.run_windows(job, base, nodes, info, names, plan, parts, {"done": {}})
            comfy_windows.write_clip(job, plan, parts, parts / "clip.mp4")
            seconds = time.perf_counter() - start
        disagreement = windows.overlap_disagreement(plan, lambda w: np.load(parts / f"window{w.index:05d}.npy"))
        return seconds, runs, _decode(parts / "clip.mp4"), memory, work, {"overlap_disagreement": disagreement}


def bench(a) -> list[dict]:
    import torch

    from .masks import saliency

    results = []
    with _session(a) as (base, nodes, info, names):
        rows = [(preset, None) for preset in PIPELINES[a.pipeline].presets
                if not a.presets or preset in a.presets.split(",")]
        if a.feature_reuse:  # the OCD preset once more, with Feature Reuse (OCD) after the checkpoint
            rows.append(("ocd", a.feature_reuse))
        plan = comfy_cli.window_plan(a, names["frames"])
        for preset, clock in rows:
            label = _label(preset, clock)
            job = _job(a, preset, clock)
            run = _run_windowed if len(plan.windows) > 1 else _run_whole
            seconds, runs, frames, memory, work, windowed = run(job, base, nodes, info, names, plan)
            pixels = sum(p["latent_pixels"] for r in runs for p in r["phases"].values())
            records = [s["facts"]["attention_record"] for r in runs for s in r["nodes"].values()
                       if "attention_record" in s["facts"]]
            errors = warping_errors(frames)
            row = {"preset": label, "clock": clock, "seconds": seconds,
                   "evaluations": sum(r["unet_evaluations"] for r in runs), "latent_pixels": pixels,
                   "peak_mib": memory.mib, "frames": frames, "calls": work.calls, "block_tokens": work.block_tokens,
                   "record": records[0] if records else None, "windows": len(plan.windows),
                   # the largest records one sampling run held
                   "records_mib": max((sum(comfy_windows.record_sizes([r]).values()) for r in runs), default=0.0),
                   "reused_evaluations": sum(s["facts"].get("reused_evaluations", 0)
                                             for r in runs for s in r["nodes"].values()),
                   "warping_error": sum(errors) / max(1, len(errors)), **windowed}
            if len(plan.windows) > 1:
                row.update(seam_consistency(frames, plan, errors))
            results.append(row)
            print(f"{a.pipeline}/{label}: {seconds:.1f} s, {row['evaluations']} model evaluations", flush=True)
        vanilla = results[0]
        mask, _ = saliency.auto_saliency(_source_frames(a, vanilla["frames"]))
        inside = (mask >= 0.5)[..., None]
        for r in results:
            r["speedup"] = vanilla["seconds"] / r["seconds"]
            if r is not vanilla:
                r["psnr_in"] = psnr(r["frames"], vanilla["frames"], inside)
                r["psnr_out"] = psnr(r["frames"], vanilla["frames"], ~inside)
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return results


# Where a run's time goes: the self time of every aten op lands in the first group with a
# pattern that matches its name (fnmatch; leaf ops carry the time: a convolution's is in
# mkldnn_convolution, not in convolution, whose self time is small).
OP_GROUPS = [
    ("attention (QK^T, softmax, AV)", ("*scaled_dot_product*", "*flash_attention*", "*efficient_attention*",
                                       "bmm", "baddbmm", "softmax", "_softmax", "einsum")),
    ("convolutions (UNet, ControlNet, VAE)", ("*conv*",)),
    ("linear layers (projections, feed-forward)", ("addmm", "mm", "linear", "matmul")),
    ("normalisation and activations", ("*group_norm*", "*layer_norm*", "silu*", "gelu*", "sigmoid*")),
    ("copies, gathers, scatters (attention record, token merging, cross-frame pools)",
     ("copy_", "_to_copy", "to", "index*", "gather", "scatter*", "cat", "stack", "clone", "contiguous",
      "masked_select", "argsort", "sort", "topk", "_index_put_impl_", "nonzero", "repeat*")),
]


def op_group(name: str) -> str:
    op = name.split("::", 1)[-1]
    for group, patterns in OP_GROUPS:
        if any(fnmatch.fnmatchcase(op, pattern) for pattern in patterns):
            return group
    return "other tensor ops (element-wise, reductions)"


def profile(a) -> dict:
    """One run of ``a.profile`` (a preset, with ``--feature-reuse`` when given) under
    torch.profiler, after a warm-up: the self time of its aten ops by group, the time outside
    any op (Python, ComfyUI's executor, the pack's bookkeeping), and from its run report the
    wall time inside the sampling phases (UNet evaluations) against the rest (video
    decoding, VAE, masks, saving)."""
    import torch
    from torch.profiler import ProfilerActivity, profile as torch_profile

    with _session(a) as (base, nodes, info, names):
        job = _job(a, a.profile, a.feature_reuse if a.profile == "ocd" else None)
        prompt = comfy_cli.build_prompt(job, info, names)
        _warm_up(nodes, job, info, names)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if a.device == "cuda" else [])
        with torch_profile(activities=activities) as prof:
            start = time.perf_counter()
            outputs, messages = comfy_cli.run_prompt(nodes, prompt, cache=True)
            seconds = time.perf_counter() - start
    report = comfy_cli.summarise(outputs, messages, seconds, 0.0)
    groups: dict[str, float] = {}
    self_time = "self_device_time_total" if a.device == "cuda" else "self_cpu_time_total"
    for event in prof.key_averages():
        if event.key.startswith("aten::"):
            group = op_group(event.key)
            groups[group] = groups.get(group, 0.0) + getattr(event, self_time) / 1e6
    sampling = sum(p["seconds"] for run in report["runs"] for p in run["phases"].values())
    return {"seconds": seconds, "groups": dict(sorted(groups.items(), key=lambda kv: -kv[1])),
            "outside_ops": seconds - sum(groups.values()), "sampling": sampling,
            "evaluations": report["unet_evaluations"], "label": _label(job.preset, job.feature_reuse)}


def write_profile(a, result: dict) -> str:
    report = _report_module()
    seconds = result["seconds"]
    rows = [[group, f"{t:.1f}", f"{100 * t / seconds:.0f}%"] for group, t in result["groups"].items()]
    rows.append(["outside any tensor op (Python, executor, bookkeeping)" if a.device == "cpu"
                 else "host time not spent in device kernels", f"{result['outside_ops']:.1f}",
                 f"{100 * result['outside_ops'] / seconds:.0f}%"])
    name = f"e2e-profile-{a.pipeline}-{a.profile}-{a.device}-{a.frames}x{a.size}"
    body = (f"## Where the time goes: the {a.pipeline} pipeline's {result['label']} ({a.device}, {a.frames} x "
            f"{a.size})\n\n- command: `python -m ocd bench {' '.join(a.argv)}`\n"
            f"- machine: {report.machine_description(a.device)}\n- date: {report.today()}\n"
            f"- one run under torch.profiler after a warm-up ({seconds:.1f} s with the profiler's overhead, "
            f"{result['evaluations']} UNet evaluations); self time of the aten ops by group; the sampling "
            f"phases of the run report took {result['sampling']:.1f} s ({100 * result['sampling'] / seconds:.0f}%), "
            f"the rest ({seconds - result['sampling']:.1f} s) is VAE decoding, saving and the executor (as in the "
            f"side-by-side rows, loading, VAE encoding and masks are cached from the one-step warm-up: only "
            f"what depends on the step count runs again)\n\n" + report.markdown_table(["op group", "s", "share of the run"], rows) + "\n")
    if not a.no_write:
        report.write_section(name, body, _section_file(a, report))
    return body


def _report_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "ocd_bench_report", comfy_cli.PACK_ROOT / "scripts" / "benchmarks" / "report.py")
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    return report


def _section_file(a, report) -> Path:
    """Where the section goes: ``--write FILE``, or docs/BENCHMARKS.md."""
    return Path(a.write) if a.write else report.BENCHMARKS_MD


def _weights(a) -> str:
    """What the rows ran on, in words."""
    pipeline = PIPELINES[a.pipeline]
    if not a.random_weights:
        return ", ".join(f"{m.key.replace('_', ' ')} {Path(getattr(a, m.key)).name}" for m in pipeline.models)
    if pipeline.random_models == "wan":
        return ("random weights (" + ("a small Wan 2.1" if a.mini else
                                      f"Wan 2.1 1.3B's width at {a.depth or 30} blocks") + ", the test text node)")
    return "random weights (" + ("mini SD1.5 UNet" if a.mini else "the full SD1.5 architecture") + ")"


def write(a, results: list[dict]) -> str:
    """The docs/BENCHMARKS.md section and the plot; returns the section's text."""
    report = _report_module()
    header = ["preset", "wall s", "speed-up vs vanilla", "UNet evaluations", "latent pixels", "network calls",
              "block tokens (M)", "peak memory MiB",
              "attention record", "PSNR in object dB", "PSNR outside dB", "flow-warping error"]
    windowed = any(r["windows"] > 1 for r in results)
    if windowed:
        header += ["s per frame", "windows", "records per window MiB", "windows' disagreement on shared frames",
                   "warping at seams / inside",
                   "PSNR of consecutive frames at seams / inside dB"]
    rows = []
    for r in results:
        record = r["record"]
        rows.append([r["preset"], f"{r['seconds']:.1f}", f"{r['speedup']:.2f}x", r["evaluations"],
                     f"{r['latent_pixels']:.3g}", r["calls"], f"{r['block_tokens'] / 1e6:.3g}", f"{r['peak_mib']:.0f}",
                     f"{record['MiB']} MiB {record['dtype']} on {record['device']}" if record else "-",
                     f"{r['psnr_in']:.2f}" if "psnr_in" in r else "ref.",
                     f"{r['psnr_out']:.2f}" if "psnr_out" in r else "ref.", f"{r['warping_error']:.4f}"])
        if windowed:
            rows[-1] += [f"{r['seconds'] / len(r['frames']):.2f}", r["windows"], f"{r['records_mib']:.1f}",
                         f"{r['overlap_disagreement']:.4f}" if "overlap_disagreement" in r else "-",
                         f"{r['seam_warping']:.4f} / {r['inside_warping']:.4f} ({r['seam_ratio']:.2f}x)"
                         if "seam_warping" in r else "-",
                         f"{r['seam_psnr']:.2f} / {r['inside_psnr']:.2f}" if "seam_psnr" in r else "-"]
    name = f"e2e-{a.pipeline}-{a.device}-{a.frames}x{a.size}" + (
        f"-windows{a.window}-overlap{a.overlap}-anchors{a.anchors}" if windowed else "")
    plot = (Path(a.write).parent if a.write else comfy_cli.PACK_ROOT / "docs" / "benchmarks") / f"{name}.png"
    weights = _weights(a)
    title = f"{a.device}, {a.frames} x {a.size}" + (
        f", windows of {a.window} + {a.anchors} anchor(s), overlap {a.overlap}" if windowed else "")
    body = (f"## End to end: the {a.pipeline} pipeline's presets ({title})\n\n"
            f"- command: `python -m ocd bench {' '.join(a.argv)}`\n- machine: {report.machine_description(a.device)}\n"
            f"- date: {report.today()}\n- the templates of `python -m ocd edit` (docs/README), {weights}, the "
            f"clip {Path(a.video).name}; fidelity against vanilla on the decoded frames, the object's mask from "
            f"Auto Saliency on the source clip (what the OCD templates protect); wall time: after a one-step "
            f"warm-up of the same graph, so only what depends on the "
            f"step count runs again (samplers, inversion included, VAE decoding, saving); peak memory: above what was resident before the run (the models loaded; CPU: "
            f"RSS high-water mark after trimming the C heap, GPU: max_memory_allocated); plot: "
            f"`{plot.name if a.write else 'docs/benchmarks/' + plot.name}`\n\n"
            + report.markdown_table(header, rows) + "\n")
    ocd = [r for r in results if r["preset"] == "ocd"]
    reused = [r for r in results if r["clock"]]
    if reused and ocd:
        body += (f"\n{reused[0]['preset']} against ocd: {ocd[0]['seconds'] / reused[0]['seconds']:.2f}x "
                 f"faster ({reused[0]['evaluations']} UNet evaluations, of which "
                 f"{reused[0]['reused_evaluations']} on reused steps).\n")
    if not a.no_write:
        _plot(results, plot, f"{a.pipeline} pipeline, {a.frames} x {a.size}px, {a.device}")
        report.write_section(name, body, _section_file(a, report))
    return body


def add_parser(sub) -> None:
    b = sub.add_parser("bench", help="run a pipeline's presets side by side and write docs/BENCHMARKS.md")
    b.add_argument("--video", default=str(comfy_cli.PACK_ROOT / ".comfy" / "testdata" / "bikes.mp4"))
    comfy_cli.add_pipeline_arguments(b, presets=False)
    b.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    b.add_argument("--steps", type=int, help="sampling steps of every preset (default: each template's own)")
    b.add_argument("--prompt", default="a robot riding a bicycle on a street")
    b.add_argument("--source-prompt", default="a man riding a bicycle on a street")
    b.add_argument("--mini", action="store_true",
                   help="with --random-weights: small models (the mini SD1.5 UNet, a small Wan): a smoke run")
    b.add_argument("--depth", type=int, default=None,
                   help="with --random-weights on wan: blocks of the 1.3B-width model (default 30, the real depth)")
    b.add_argument("--presets", help="only these presets, comma-separated (default: all of the pipeline's; the "
                   "first is the reference of the PSNR columns)")
    b.add_argument("--feature-reuse", type=int, metavar="CLOCK",
                   help="one more row: the ocd preset with Feature Reuse (OCD) at this clock")
    b.add_argument("--profile", choices=PRESETS,
                   help="instead of the side-by-side run: profile this preset's run (torch.profiler), its own section")
    where = b.add_mutually_exclusive_group()
    where.add_argument("--no-write", action="store_true", help="print only; leave docs/ alone")
    where.add_argument("--write", metavar="FILE",
                       help="write the section into FILE (made if missing; its other sections kept) and the plot "
                       "beside it, instead of docs/BENCHMARKS.md and docs/benchmarks/")
    b.add_argument("--json", metavar="FILE", help="also write the rows as JSON here")
    b.add_argument("--cpu", action="store_true", help=argparse.SUPPRESS)


def main(a) -> int:
    pipeline = PIPELINES[a.pipeline]
    a.frames = pipeline.default_frames if a.frames is None else a.frames
    a.size = pipeline.bench_size if a.size is None else a.size
    checked = argparse.Namespace(**{**vars(a), "preset": pipeline.default_preset, "out": None})
    comfy_cli.check_arguments(checked)
    a.window, a.overlap, a.anchors = checked.window, checked.overlap, checked.anchors
    unknown = [p for p in (a.presets or "").split(",") if p and p not in pipeline.presets]
    if unknown:
        raise comfy_cli.UsageError(f"--presets {a.presets}: the {a.pipeline} pipeline has {', '.join(pipeline.presets)}")
    if a.profile and a.profile not in pipeline.presets:
        raise comfy_cli.UsageError(f"--profile {a.profile}: the {a.pipeline} pipeline has "
                                   f"{', '.join(pipeline.presets)}")
    if a.profile:
        print(write_profile(a, profile(a)))
        return 0
    results = bench(a)
    print(write(a, results))
    if a.json:  # the rows as data (scripts/benchmarks/long_clips.py gathers them)
        import json

        rows = [{k: v for k, v in r.items() if k not in ("frames", "record")} | {"frames": len(r["frames"])}
                for r in results]
        Path(a.json).write_text(json.dumps(rows, indent=1))
    return 0
