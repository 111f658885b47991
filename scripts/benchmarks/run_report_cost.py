"""Benchmark: what the run report (ocd/report.py) costs per UNet call.

The same patched SD1.5-architecture UNet call (cross-frame attention `full` + object-centric
token merging 0.5 with an object mask, the report's busiest case: every merged layer splits
its tokens into object and background) is timed with and without a RunReport in the call's
options, alternating, so that both see the same machine state.

    .comfy/venv/bin/python scripts/benchmarks/run_report_cost.py            # CPU, 8 x 256x256
    .comfy/venv/bin/python scripts/benchmarks/run_report_cost.py --device cuda --size 512
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.append(str(REPO_ROOT))  # append: the repo's nodes/ must not shadow ComfyUI's nodes

from scripts.benchmarks.report import command_line, machine_description, markdown_table, today, write_section  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--size", type=int, default=256, help="frame side in pixels (latent = size/8)")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--pairs", type=int, default=5, help="timed (with, without) pairs after one untimed pair")
    p.add_argument("--no-write", action="store_true", help="print, do not write docs/BENCHMARKS.md")
    args = p.parse_args()

    from scripts.benchmarks.dual_rate_sampling import init_host

    init_host(args.device)  # the CPU forced only for --device cpu
    import torch

    from ocd import host
    from ocd.attention.comfy_patches import apply_cross_frame_attention, apply_token_merge
    from ocd.attention.token_merge import TokenMergeSettings
    from ocd.report import RunReport
    from tests.support import random_models as rm

    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    base = rm.build_model_patcher(rm.FULL_SD15_UNET, seed=0, dtype=dtype)
    side = args.size // 8
    mask = torch.zeros(1, args.size, args.size)
    mask[:, args.size // 4: 3 * args.size // 4, args.size // 4: 3 * args.size // 4] = 1.0  # 25% of the frame
    model = apply_token_merge(apply_cross_frame_attention(base, "full"),
                              TokenMergeSettings(ratio=0.5, protection=1.0, foreground_mask=mask))
    diffusion = model.model.to(device)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.frames, 4, side, side, generator=gen).to(device, dtype)
    t = torch.full((args.frames,), 5.0, device=device)
    context = torch.randn(args.frames, 77, 768, generator=gen).to(device, dtype)
    options = dict(model.model_options["transformer_options"], cond_or_uncond=[0])

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def call(report: RunReport | None) -> float:
        opts = dict(options)
        if report is not None:
            opts[host.RUN_REPORT_KEY] = report
        sync()
        start = time.perf_counter()
        with torch.inference_mode():
            diffusion.apply_model(x, t, c_crossattn=context, transformer_options=opts)
        sync()
        return time.perf_counter() - start

    call(None), call(RunReport())  # untimed
    with_report, without = [], []
    report = RunReport()
    for _ in range(args.pairs):
        without.append(call(None))
        with_report.append(call(report))
    merged_layers = sum(len(s.merges) + len(s.pools) for s in report.sections.values())
    a, b = statistics.median(with_report), statistics.median(without)
    rows = [["without the report", f"{b:.3f}", ""], ["with the report", f"{a:.3f}", f"{(a / b - 1) * 100:+.1f}%"]]
    table = markdown_table(["UNet call", "median s", "cost"], rows)
    body = (f"## Run report: cost per UNet call ({args.device}, {args.frames} x {args.size}x{args.size})\n\n"
            f"- command: `{command_line()}`\n- machine: {machine_description(args.device)}\n- date: {today()}\n"
            f"- SD1.5 UNet architecture, random weights, {dtype}; cross-frame attention `full` + token merging 0.5 "
            f"with a 25% object mask (every call counts {merged_layers} merged layers, queries and key/value pools, object vs background); median of "
            f"{args.pairs} calls each, alternating with / without.\n\n{table}\n")
    print(body)
    if not args.no_write:
        write_section(f"run_report_cost-{args.device}-{args.size}", body)


if __name__ == "__main__":
    main()
