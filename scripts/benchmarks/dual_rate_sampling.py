"""Benchmark: OCD_DualRateKSampler vs core KSampler on the SD1.5 UNet architecture.

Random weights (no downloads): timings are real, the images are not. For each mask area
(a centred rectangle or ellipse covering that fraction of the frame) and each
background_step_ratio phi, it runs the dual-rate sampler and core KSampler with the same
seed, steps, sampler and CFG, and reports wall time (median of --repeats), denoiser
evaluations (counted), the predicted cost from token-steps next to the measured one, and
the PSNR inside the mask of the final latent against KSampler's.

    .comfy/venv/bin/python scripts/benchmarks/dual_rate_sampling.py --size 256 --frames 4 --steps 10
    python scripts/benchmarks/dual_rate_sampling.py --device cuda --size 512 --frames 8 --steps 20

Writes the section "dual_rate_sampling-<device>-<size>" of docs/BENCHMARKS.md (unless --no-write).
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.append(str(REPO_ROOT))  # APPEND: our nodes/ must not shadow ComfyUI's nodes


def init_host(device: str):
    """tests.support.comfy_host.init_comfy, with the CPU forced only for --device cpu."""
    from tests.support import comfy_host

    if device == "cpu":
        return comfy_host.init_comfy()
    root = str(comfy_host.comfy_root())
    if root not in sys.path:
        sys.path.insert(0, root)
    from comfy.cli_args import args

    args.disable_api_nodes = True
    import utils.extra_config  # noqa: F401
    import nodes

    return nodes


def centred_mask(frames: int, size: int, area: float, shape: str):
    import torch

    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    c = size / 2
    if shape == "rect":
        half = size * math.sqrt(area) / 2
        m = ((ys - c).abs() < half) & ((xs - c).abs() < half)
    else:
        r = size * math.sqrt(area / math.pi)
        m = (ys - c) ** 2 + (xs - c) ** 2 < r * r
    return m.float().expand(frames, size, size).contiguous()


def psnr(x, ref, where):
    """PSNR (dB) of x against ref over the elements where `where` is true; peak = ref's range there."""
    import torch

    a, b = x[where].double(), ref[where].double()
    mse = torch.mean((a - b) ** 2).item()
    peak = (b.max() - b.min()).item()
    return float("inf") if mse == 0 else 10 * math.log10(peak * peak / mse)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--size", type=int, default=256, help="image side in pixels (latent = size/8)")
    p.add_argument("--frames", type=int, default=4)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--cfg", type=float, default=7.5)
    p.add_argument("--sampler", default="euler")
    p.add_argument("--scheduler", default="normal")
    p.add_argument("--areas", type=float, nargs="+", default=[0.10, 0.25, 0.50])
    p.add_argument("--phis", type=float, nargs="+", default=[2.0, 4.0])
    p.add_argument("--gamma", type=float, default=0.25)
    p.add_argument("--crop-padding", type=int, default=2)
    p.add_argument("--blend", default="feathered", choices=["feathered", "hard"])
    p.add_argument("--shape", default="rect", choices=["rect", "ellipse"])
    p.add_argument("--repeats", type=int, default=1, help="timed runs per configuration (median)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-write", action="store_true", help="print only; do not touch docs/BENCHMARKS.md")
    args = p.parse_args()

    nodes = init_host(args.device)
    import comfy.model_management as mm
    import comfy.patcher_extension
    import torch

    from ocd.masks import grid
    from ocd.sampling.comfy_sampler import sample_dual_rate
    from ocd.sampling.dual_rate import DualRateSettings
    from scripts.benchmarks import report
    from tests.support import random_models as rm

    dtype = torch.float16 if args.device == "cuda" else torch.float32
    t0 = time.perf_counter()
    model = rm.build_model_patcher(rm.FULL_SD15_UNET, seed=0, dtype=dtype)
    print(f"built the SD1.5 UNet in {time.perf_counter() - t0:.1f}s", flush=True)
    pos = rm.random_text_conditioning(1, 768, 1)
    neg = rm.random_text_conditioning(1, 768, 2)
    h = w = args.size // 8
    latent = {"samples": torch.zeros(args.frames, 4, h, w)}

    def sync():
        if args.device == "cuda":
            torch.cuda.synchronize()

    counted = model.clone()
    calls = [0]

    def count(executor, *a, **k):
        calls[0] += 1
        return executor(*a, **k)

    counted.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.PREDICT_NOISE, "bench_count", count)

    def timed(fn):
        times, out = [], None
        for _ in range(args.repeats):
            sync()
            start = time.perf_counter()
            out = fn()
            sync()
            times.append(time.perf_counter() - start)
        return statistics.median(times), out

    # warm-up: loads the model onto the device, first-call allocations
    nodes.KSampler().sample(model, args.seed, 1, args.cfg, args.sampler, args.scheduler, pos, neg,
                            {"samples": latent["samples"][:1]})

    def core():
        calls[0] = 0
        return nodes.KSampler().sample(counted, args.seed, args.steps, args.cfg, args.sampler, args.scheduler,
                                       pos, neg, latent)[0]["samples"]

    with torch.inference_mode():
        t_core, ref = timed(core)
    core_calls = calls[0]
    print(f"KSampler: {t_core:.1f}s, {core_calls} evaluations", flush=True)

    header = ["mask area", "phi", "crop (latent px)", "evaluations (KSampler)", "time s (KSampler)",
              "measured speed-up", "predicted speed-up (token-steps)", "measured / predicted",
              "PSNR in mask dB", "PSNR outside dB"]
    rows = []
    for area in args.areas:
        mask = centred_mask(args.frames, args.size, area, args.shape)
        inside = grid.object_cells(grid.coverage(mask, args.frames, h, w)).bool()[:, None]
        inside = inside.expand(args.frames, 4, h, w)
        for phi in args.phis:
            def dual():
                return sample_dual_rate(model, args.seed, args.steps, args.cfg, args.sampler, args.scheduler,
                                        pos, neg, latent, 1.0, mask,
                                        DualRateSettings(phi, args.gamma, args.crop_padding, args.blend))

            with torch.inference_mode():
                t_dual, result = timed(dual)
            out = result.latent["samples"]
            predicted = result.prediction.speedup
            measured = t_core / t_dual
            box = result.box
            rows.append([
                f"{area:.0%}", f"{phi:g}", f"{box.height}x{box.width} of {h}x{w}" if box else "-",
                f"{result.evaluations} ({core_calls})", f"{t_dual:.1f} ({t_core:.1f})",
                round(measured, 2), round(predicted, 2), round(measured / predicted, 2),
                round(psnr(out, ref, inside), 1), round(psnr(out, ref, ~inside), 1),
            ])
            print(rows[-1], flush=True)

    device = report.machine_description(args.device)
    if args.device == "cuda":
        device += f", {str(dtype).replace('torch.', '')}"
    body = f"""## Object-Centric Sampling: OCD_DualRateKSampler vs KSampler

{report.today()}, `{report.command_line()}`, {device}.
SD1.5 UNet architecture (859.5 M parameters, random weights), {args.frames} frames at
{args.size}x{args.size} ({h}x{w} latent), {args.steps} steps of `{args.sampler}`/`{args.scheduler}`,
CFG {args.cfg:g}, blend_point (gamma) {args.gamma:g}, crop_padding {args.crop_padding},
{args.blend} blend, a centred {args.shape} mask. Times are the median of {args.repeats} run(s)
of the whole sampler (wall time: noisy if other jobs share the machine). The predicted speed-up
is KSampler's token-steps over the dual-rate run's (evaluations x frames x latent pixels of
each phase: cost linear in tokens). PSNR: final latent against KSampler's (same seed),
peak = KSampler's range in the region, inside the mask at latent resolution and outside it
(random weights: only the comparison between rows means anything).

{report.markdown_table(header, rows)}
"""
    print(body)
    if not args.no_write:
        report.write_section(f"dual_rate_sampling-{args.device}-{args.size}", body)


if __name__ == "__main__":
    main()
