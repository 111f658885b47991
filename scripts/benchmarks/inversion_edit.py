"""Benchmark: the whole inversion-based edit, FateZero-style "vanilla" vs OCD's "optimized".

- vanilla:   DDIM 50 inversion + 50 editing steps, self-attention recorded in float32 in
             CPU RAM (FateZero's way), no token merging.
- optimized: DPM++ 2M 20 + 20 steps, the record in float16 on the compute device, token
             merging (ratio 0.5) with the inversion's merge indices replayed in the edit,
             destinations re-drawn per frame and step.
Both use sparse-causal cross-frame attention (FateZero's spatio-temporal attention), record
the first 80% of the steps of layers with at most 32x32 tokens, and edit with the source
prompt at cfg 1 with self-attention fusion on, so the edit should reconstruct the input: the
PSNR of that reconstruction is the quality measure.

Opt-in variants run the optimized edit through OCD_DualRateEditFromInversion's code
(Object-Centric Sampling: phi 4, gamma 0.25, crop_padding 0, a centred square covering 25% of
the frame as the object), with and without the crop's own inversion (``reinvert_object``); they
need a latent of at least 32x32 for the crop (aligned to 8 latent pixels) to be smaller than
the frame:

    .comfy/venv/bin/python scripts/benchmarks/inversion_edit.py --frames 2 --size 256 \
        --variants optimized optimized-dual-rate optimized-dual-rate-no-reinvert

The variant ``optimized-feature-reuse`` edits with Clockwork feature reuse (OCD_FeatureReuse,
clock 2, recomputed_levels 1) on top of the optimized edit; the inversion runs fully, as the
node's default does:

    .comfy/venv/bin/python scripts/benchmarks/inversion_edit.py --variants optimized optimized-feature-reuse

Each variant runs in a fresh subprocess, so its peak resident memory (ru_maxrss) is its own.
Random weights with the real SD1.5 UNet architecture (timings are real, images are not).

    .comfy/venv/bin/python scripts/benchmarks/inversion_edit.py                 # CPU, 4 x 128x128
    .comfy/venv/bin/python scripts/benchmarks/inversion_edit.py --device cuda --frames 8 --size 512
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.append(str(REPO_ROOT))  # append: the repo's nodes/ must not shadow ComfyUI's nodes

from scripts.benchmarks.report import command_line, machine_description, markdown_table, today, write_section  # noqa: E402

VARIANTS = {
    "vanilla": dict(solver="ddim", steps=50, record_dtype="float32", record_on_cpu=True, merge_ratio=0.0),
    "optimized": dict(solver="dpmpp_2m", steps=20, record_dtype="float16", record_on_cpu=False, merge_ratio=0.5),
    # the optimized run without token merging: separates what the solver and step count
    # cost in fidelity from what merging costs
    "optimized-no-merge": dict(solver="dpmpp_2m", steps=20, record_dtype="float16", record_on_cpu=False,
                               merge_ratio=0.0),
    # the optimized run edited by the dual-rate sampler, with and without the crop's inversion
    "optimized-dual-rate": dict(solver="dpmpp_2m", steps=20, record_dtype="float16", record_on_cpu=False,
                                merge_ratio=0.5, dual_rate=True, reinvert_object=True),
    # the optimized edit with Clockwork feature reuse (the inversion runs fully)
    "optimized-feature-reuse": dict(solver="dpmpp_2m", steps=20, record_dtype="float16", record_on_cpu=False,
                                    merge_ratio=0.5, feature_reuse_clock=2),
    "optimized-dual-rate-no-reinvert": dict(solver="dpmpp_2m", steps=20, record_dtype="float16",
                                            record_on_cpu=False, merge_ratio=0.5, dual_rate=True,
                                            reinvert_object=False),
}
DEFAULT_VARIANTS = ["vanilla", "optimized", "optimized-no-merge"]


def run_variant(name: str, args) -> dict:
    from tests.support.comfy_host import init_comfy

    init_comfy()
    import torch

    from ocd.attention.comfy_patches import apply_cross_frame_attention, apply_token_merge
    from ocd.attention.token_merge import MergeStore, TokenMergeSettings
    from ocd.inversion import comfy_passes
    from ocd.inversion.record import SELF_ATTENTION
    from ocd.sampling.dual_rate import DualRateSettings
    from tests.support import random_models as rm

    cfg = VARIANTS[name]
    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    model = rm.build_model_patcher(rm.FULL_SD15_UNET, seed=args.seed, dtype=dtype)
    if not args.rough_time:
        # a random UNet is rough in sigma (it reads every timestep frequency); a trained one is
        # smooth, and only then do 20 DPM++ steps reconstruct like 50 DDIM ones (docs/inversion.md)
        rm.smooth_time_dependence_(model)
    model = apply_cross_frame_attention(model, "sparse_causal")
    gen = torch.Generator().manual_seed(args.seed)
    side = args.size // 8
    latent = torch.randn(args.frames, 4, side, side, generator=gen) / 0.18215
    mask = torch.zeros(side, side)  # the object: a centred square, 25% of the frame
    mask[side // 4 : side - side // 4, side // 4 : side - side // 4] = 1.0
    source = rm.random_text_conditioning(1, 768, args.seed + 1)

    inversion_model = edit_model = model
    if cfg["merge_ratio"] > 0:
        store = MergeStore()
        inversion_model = apply_token_merge(model, TokenMergeSettings(
            ratio=cfg["merge_ratio"], seed=args.seed, protection=0.0, pairing="record", store=store))
        edit_model = apply_token_merge(model, TokenMergeSettings(
            ratio=cfg["merge_ratio"], seed=args.seed, protection=0.0, pairing="replay", store=store))
    if cfg.get("feature_reuse_clock"):
        from ocd.sampling.comfy_feature_reuse import apply_feature_reuse
        from ocd.sampling.feature_reuse import FeatureReuseSettings

        edit_model = apply_feature_reuse(edit_model, FeatureReuseSettings(clock=cfg["feature_reuse_clock"]))

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    with torch.inference_mode():
        start = time.perf_counter()
        inverted, record = comfy_passes.invert(
            inversion_model, latent, source, solver=cfg["solver"], steps=cfg["steps"], cfg=1.0,
            record_attention=0.8, max_record_tokens=32 * 32,
            record_dtype=getattr(torch, cfg["record_dtype"]), record_device="cpu" if cfg["record_on_cpu"] else None)
        inverted_at = time.perf_counter()
        mode = "plain"
        if cfg.get("dual_rate"):
            result, hook = comfy_passes.edit_dual_rate(
                edit_model, record, inverted, source, None, 1.0, mask[None],
                DualRateSettings(background_step_ratio=4.0, blend_point=0.25, crop_padding=0),
                self_replace=0.8, reinvert_object=cfg["reinvert_object"])
            edited, mode = result.latent["samples"], f"{result.mode}, crop {result.box.height}x{result.box.width}"
        else:
            edited, hook = comfy_passes.edit(edit_model, record, inverted, source, None, cfg=1.0,
                                             self_replace=0.8)
        if device.type == "cuda":
            torch.cuda.synchronize()
        done = time.perf_counter()
    attention = record.extras[SELF_ATTENTION]
    mse = torch.mean((edited.float().cpu() - latent) ** 2).item()
    inside = mask.bool().expand_as(latent)
    mse_in = torch.mean((edited.float().cpu() - latent)[inside] ** 2).item()
    peak_range = (latent.max() - latent.min()).item()
    return {
        "variant": name,
        "edit_mode": mode,
        "solver": cfg["solver"],
        "steps": cfg["steps"],
        "merge_ratio": cfg["merge_ratio"],
        "inversion_s": inverted_at - start,
        "edit_s": done - inverted_at,
        "total_s": done - start,
        "record_mib": attention.nbytes / 2**20,
        "record_where": f"{cfg['record_dtype']} on {'cpu' if cfg['record_on_cpu'] else args.device}",
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_device_mib": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else float("nan"),
        "fused_pairs": len(hook.fused) if hook is not None else 0,
        "psnr_db": 10 * math.log10(peak_range**2 / mse) if mse > 0 else float("inf"),
        "psnr_in_mask_db": 10 * math.log10(peak_range**2 / mse_in) if mse_in > 0 else float("inf"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--size", type=int, default=128, help="frame side in pixels (latent = size/8)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=list(VARIANTS))
    parser.add_argument("--rough-time", action="store_true",
                        help="keep the random UNet's full timestep sensitivity (see docs/inversion.md)")
    parser.add_argument("--no-write", action="store_true", help="print, do not write docs/BENCHMARKS.md")
    parser.add_argument("--run-variant", help=argparse.SUPPRESS)
    parser.add_argument("--json-out", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.run_variant:
        Path(args.json_out).write_text(json.dumps(run_variant(args.run_variant, args)))
        return

    results = []
    for name in args.variants:
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            cmd = [sys.executable, __file__, "--run-variant", name, "--json-out", out.name, "--device", args.device,
                   "--frames", str(args.frames), "--size", str(args.size), "--seed", str(args.seed)]
            if args.rough_time:
                cmd.append("--rough-time")
            subprocess.run(cmd, check=True)
            results.append(json.loads(Path(out.name).read_text()))
        print(results[-1], flush=True)

    header = ["variant", "solver x steps", "merge", "inversion s", "edit s", "total s", "attention record",
              "peak RSS MiB", "peak device MiB", "fused (step, layer) calls", "edit", "reconstruction PSNR dB",
              "PSNR in the object dB"]
    rows = [[r["variant"], f"{r['solver']} x {r['steps']}+{r['steps']}", r["merge_ratio"], r["inversion_s"],
             r["edit_s"], r["total_s"], f"{r['record_mib']:.1f} MiB ({r['record_where']})", r["peak_rss_mib"],
             r["peak_device_mib"], r["fused_pairs"], r["edit_mode"], r["psnr_db"], r["psnr_in_mask_db"]]
            for r in results]
    summary = ""
    by_name = {r["variant"]: r for r in results}
    if {"vanilla", "optimized"} <= set(by_name):
        v, o = by_name["vanilla"], by_name["optimized"]
        summary = (f"\nSpeed-up of optimized over vanilla: {v['total_s'] / o['total_s']:.2f}x (target 4x); "
                   f"attention record {v['record_mib'] / max(o['record_mib'], 1e-9):.2f}x smaller (target 4x); "
                   f"PSNR {o['psnr_db'] - v['psnr_db']:+.2f} dB (target within 1 dB).\n")
        if "optimized-no-merge" in by_name:
            n = by_name["optimized-no-merge"]
            summary += (f"Without token merging the optimized run is {v['total_s'] / n['total_s']:.2f}x faster than "
                        f"vanilla at PSNR {n['psnr_db'] - v['psnr_db']:+.2f} dB: token merging changes PSNR by "
                        f"{o['psnr_db'] - n['psnr_db']:+.2f} dB and time by a factor {o['total_s'] / n['total_s']:.2f}.\n")
    dual = [r for r in results if VARIANTS[r["variant"]].get("dual_rate")]
    if dual and "optimized" in by_name:
        o = by_name["optimized"]
        for r in dual:
            summary += (f"{r['variant']}: edit {o['edit_s'] / r['edit_s']:.2f}x faster than the optimized plain edit, "
                        f"inversion + edit {o['total_s'] / r['total_s']:.2f}x; PSNR {r['psnr_db'] - o['psnr_db']:+.2f} dB, "
                        f"in the object {r['psnr_in_mask_db'] - o['psnr_in_mask_db']:+.2f} dB.\n")
    reuse = [r for r in results if VARIANTS[r["variant"]].get("feature_reuse_clock")]
    if reuse and "optimized" in by_name:
        o = by_name["optimized"]
        for r in reuse:
            summary += (f"{r['variant']}: edit {o['edit_s'] / r['edit_s']:.2f}x faster than the optimized edit, "
                        f"inversion + edit {o['total_s'] / r['total_s']:.2f}x; PSNR {r['psnr_db'] - o['psnr_db']:+.2f} dB, "
                        f"in the object {r['psnr_in_mask_db'] - o['psnr_in_mask_db']:+.2f} dB.\n")
    title = "dual-rate edit" if dual else "feature reuse" if reuse else "vanilla (FateZero-style) vs optimized"
    dual_setup = ("; dual-rate: phi 4, gamma 0.25, crop_padding 0, the object a centred square covering 25% "
                  "of the frame" if dual else "")
    body = (f"## Inversion-based edit: {title}\n\n"
            f"{args.frames} frames at {args.size}x{args.size}, SD1.5 UNet architecture with random weights"
            f"{' (full timestep sensitivity)' if args.rough_time else ' smoothed in time (smooth_time_dependence_)'}, "
            f"sparse-causal cross-frame attention, record of 80% of the steps for layers <= 32x32 tokens, "
            f"edit = reconstruction with the source prompt at cfg 1 and self-attention fusion 0.8{dual_setup}.\n\n"
            f"- command: `{command_line()}`\n- machine: {machine_description(args.device)}\n- date: {today()}\n\n"
            + markdown_table(header, rows) + "\n" + summary)
    print(body)
    if not args.no_write:
        group = "inversion_edit_dual_rate" if dual else "inversion_edit_feature_reuse" if reuse else "inversion_edit"
        write_section(f"{group}_{args.device.split(':')[0]}", body)


if __name__ == "__main__":
    main()
