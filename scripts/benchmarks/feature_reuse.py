"""Benchmark: Clockwork feature reuse (OCD_FeatureReuse) against the unpatched UNet.

For each size and step count: one sampling run of core's sampler with the unpatched SD1.5
UNet architecture (random weights) and one with feature reuse; the UNet FLOPs of a full and
of a reused call (torch's FlopCounterMode: matmuls and convolutions), the FLOP saving the
schedule gives, the measured wall-time saving, and the fidelity of the reused run against
the unpatched one: PSNR of the final latent and of its frames decoded by ComfyUI's live
preview decoder for SD1.5 latents (latent_rgb_factors, upsampled x8; a trained VAE is not at
hand, and a random-weight one saturates). Random UNet weights: only the comparison between
rows means anything.

    .comfy/venv/bin/python scripts/benchmarks/feature_reuse.py                  # CPU rows
    .comfy/venv/bin/python scripts/benchmarks/feature_reuse.py --device cuda --configs 8x512:20
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.append(str(REPO_ROOT))  # append: the repo's nodes/ must not shadow ComfyUI's nodes

from scripts.benchmarks.report import command_line, machine_description, markdown_table, today, write_section  # noqa: E402

DEFAULT_CONFIGS = ["2x256:8", "2x256:20", "1x512:8", "1x512:20"]  # frames x size : steps


def psnr(a, b) -> float:
    mse = float(((a.float() - b.float()) ** 2).mean())
    peak = float(b.max() - b.min())
    return float("inf") if mse == 0 else 10 * math.log10(peak ** 2 / mse)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS, help="FRAMESxSIZE:STEPS, e.g. 2x256:20")
    p.add_argument("--sampler", default="dpmpp_2m")
    p.add_argument("--scheduler", default="karras")
    p.add_argument("--cfg", type=float, default=1.0, help="1 runs one UNet batch per step (CPU time)")
    p.add_argument("--clocks", nargs="+", type=int, default=[2, 3])
    p.add_argument("--levels", type=int, default=1, help="recomputed_levels")
    p.add_argument("--no-write", action="store_true", help="print, do not write docs/BENCHMARKS.md")
    args = p.parse_args()

    from scripts.benchmarks.dual_rate_sampling import init_host

    init_host(args.device)
    import comfy.latent_formats
    import comfy.sample
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ocd import host
    from ocd.sampling.comfy_feature_reuse import apply_feature_reuse
    from ocd.sampling.feature_reuse import FeatureReuseSettings, reused_steps
    from tests.support import random_models as rm

    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    base = rm.build_model_patcher(rm.FULL_SD15_UNET, seed=0, dtype=dtype)
    rgb_factors = torch.tensor(comfy.latent_formats.SD15().latent_rgb_factors)  # [4, 3]
    pos, neg = rm.random_text_conditioning(1, 768, 1), rm.random_text_conditioning(1, 768, 2)
    network = host.network_of(base)
    points = host.network_family(network).reuse_points(network, args.levels)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def run(model, frames, side, steps):
        latent = torch.zeros(frames, 4, side, side)
        noise = comfy.sample.prepare_noise(latent, 0)
        sync()
        start = time.perf_counter()
        with torch.inference_mode():
            out = comfy.sample.sample(model, noise, steps, args.cfg, args.sampler, args.scheduler, pos, neg, latent,
                                      disable_pbar=True, seed=0)
        sync()
        return time.perf_counter() - start, out

    def call_flops(frames, side):
        """FLOPs of one full call, and of one call of the recomputed levels."""
        x = torch.randn(frames, 4, side, side, device=device, dtype=dtype)
        t = torch.full((frames,), 500.0, device=device)
        context = torch.randn(frames, 77, 768, device=device, dtype=dtype)
        kept = {}
        family = host.network_family(network)
        handle = family.cached_module(network, points).register_forward_hook(lambda m, i, o: kept.update(h=o))
        with torch.inference_mode(), FlopCounterMode(display=False) as full:
            network(x, t, context=context, transformer_options={})
        handle.remove()
        call = host.diffusion_call((x, t, context, None, None, {}), {})
        with torch.inference_mode(), FlopCounterMode(display=False) as reduced:
            family.forward_recomputed(network, points, kept["h"], call)
        return full.get_total_flops(), reduced.get_total_flops()

    def decode(latent):
        """Frames [F, 3, 8h, 8w] as ComfyUI's live preview draws SD1.5 latents."""
        rgb = torch.einsum("fchw,cr->frhw", latent.float().cpu() * 0.18215, rgb_factors)
        return torch.nn.functional.interpolate(rgb, scale_factor=8, mode="bilinear", align_corners=False)

    network.to(device)
    run(base, 1, 8, 1)  # warm-up: loads the model, first-call allocations
    rows = []
    for config in args.configs:
        shape, steps = config.split(":")
        frames, size = (int(v) for v in shape.split("x"))
        steps, side = int(steps), size // 8
        full_flops, reduced_flops = call_flops(frames, side)
        run(base, frames, side, 1)  # warm-up at this size (allocations)
        # unpatched before and after the reuse runs: their median, against the machine's drift
        t_first, plain = run(base, frames, side, steps)
        reuse_runs = []
        for clock in args.clocks:
            settings = FeatureReuseSettings(clock=clock, recomputed_levels=args.levels)
            reuse_runs.append((clock, settings, *run(apply_feature_reuse(base, settings), frames, side, steps)))
        t_last, _ = run(base, frames, side, steps)
        t_plain = (t_first + t_last) / 2
        print(f"{config}: unpatched {t_first:.1f} s and {t_last:.1f} s", flush=True)
        for clock, settings, t_reuse, out in reuse_runs:
            n_reused = len(reused_steps(steps, settings))
            flop_saving = n_reused * (full_flops - reduced_flops) / (steps * full_flops)
            measured = 1.0 - t_reuse / t_plain
            rows.append([f"{frames} x {size}x{size}", steps, clock, f"{n_reused} of {steps}",
                         f"{full_flops / 1e9:.0f} / {reduced_flops / 1e9:.0f}", f"{flop_saving:.0%}",
                         f"{t_plain:.1f}", f"{t_reuse:.1f}", f"{t_plain / t_reuse:.2f}x", f"{measured:.0%}",
                         f"{measured / flop_saving:.2f}" if flop_saving > 0 else "-",
                         f"{psnr(out, plain):.1f}", f"{psnr(decode(out), decode(plain)):.1f}"])
            print(rows[-1], flush=True)
    header = ["frames x size", "steps", "clock", "reused steps", "GFLOP per call full / reused", "FLOP saving",
              "s unpatched", "s reuse", "speed-up", "time saving", "time saving / FLOP saving",
              "PSNR latent dB", "PSNR decoded dB"]
    body = (f"## Feature reuse (Clockwork) vs the unpatched UNet ({args.device})\n\n"
            f"- command: `{command_line()}`\n- machine: {machine_description(args.device)}\n- date: {today()}\n"
            f"- SD1.5 UNet architecture, random weights, {dtype}; core's sampler `{args.sampler}` / `{args.scheduler}`, "
            f"cfg {args.cfg}; recomputed_levels {args.levels} (input blocks 0..{points.inputs - 1} and output blocks "
            f"{points.first_output}..11 run on a reused step); after a warm-up at each size, one run per clock, "
            "between two unpatched runs (their mean is the unpatched time). FLOPs: "
            "torch FlopCounterMode over one UNet call (matmuls and convolutions). PSNR: the reused run's final "
            "latent and of its frames as the live preview decodes them, against the unpatched run's.\n\n"
            f"{markdown_table(header, rows)}\n")
    print(body)
    if not args.no_write:
        write_section(f"feature_reuse-{args.device}", body)


if __name__ == "__main__":
    main()
