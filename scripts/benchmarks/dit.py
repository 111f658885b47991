"""Benchmark: OCD on a Wan video transformer (Wan 2.1 1.3B width, random weights).

Two parts, each rewriting its own docs/BENCHMARKS.md section:

- ``blocks``: one Wan 2.1 1.3B block at full width (dim 1536, 12 heads of 128, FFN 8960) at
  production token counts (21 latent frames = 81 video frames; 240x416 -> 8,190 tokens,
  480x832 -> 32,760): the unpatched block and the share of its time in self-attention;
  object-centric token merging ("tokens": the block on merged tokens; "keys_values": only the
  background's keys/values merged) and a token-subset step (the object's tokens and margin,
  the rest's kept keys/values as context), for an object of 10%, 25% and 50% of the frame.
  Merging takes ``merge_ratio = 0.75 x background share`` (every background source of a 2x2
  stride, no object token); the plan is made once per call for every merged block (its time
  is given apart). A torch.profiler breakdown of the unpatched and the merged block says
  where the time goes.
- ``calls``: whole sampling runs of a depth-reduced full-width model at a CPU size, side by
  side in one process through ComfyUI's samplers: vanilla KSampler, core EasyCache, OCD token
  merging (KSampler), OCD sampling (OCD_DualRateKSampler), both, and both + EasyCache: wall
  time, model evaluations, transformer calls, tokens per call, peak memory, and the error
  against vanilla inside and outside the object (relative error of the final latent; PSNR of
  the frames a random Wan 2.1 VAE decodes).

Random weights: the errors compare runs, they do not judge an edit.

    .comfy/venv/bin/python scripts/benchmarks/dit.py blocks              # CPU, ~40 min
    .comfy/venv/bin/python scripts/benchmarks/dit.py calls               # CPU, ~25 min
    .comfy/venv/bin/python scripts/benchmarks/dit.py blocks --device cuda --grids 21x30x52 21x45x80
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.append(str(REPO_ROOT))  # append: the repo's nodes/ must not shadow ComfyUI's nodes

from scripts.benchmarks.report import command_line, machine_description, markdown_table, today, write_section  # noqa: E402

OBJECT_SHARES = (0.10, 0.25, 0.50)


def object_mask(frames: int, height: int, width: int, share: float):
    """A centred rectangle covering ``share`` of every frame (same aspect as the frame)."""
    import torch

    mask = torch.zeros(frames, height, width)
    h, w = round(height * math.sqrt(share)), round(width * math.sqrt(share))
    top, left = (height - h) // 2, (width - w) // 2
    mask[:, top:top + h, left:left + w] = 1.0
    return mask


def timed(fn, repeats: int, device: str):
    import torch

    times, out = [], None
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


# ---------------------------------------------------------------------------------------------
# blocks
# ---------------------------------------------------------------------------------------------

def block_inputs(network, grid, device, dtype, seed=0):
    """What WanModel.forward_orig hands a block for a latent of ``grid`` tokens (T, h, w)."""
    import torch
    from comfy.ldm.wan.model import sinusoidal_embedding_1d

    T, h, w = grid
    g = torch.Generator().manual_seed(seed)
    # a smooth latent, so neighbouring tokens are alike as in a real video
    latent = torch.nn.functional.interpolate(torch.randn(1, 16, T, h // 2 + 1, w // 2 + 1, generator=g),
                                             size=(T, 2 * h, 2 * w), mode="trilinear")
    latent = latent.to(device)
    with torch.inference_mode():
        x = network.patch_embedding(latent.float()).to(dtype).flatten(2).transpose(1, 2)
        t = torch.full((1,), 700.0, device=device)
        e = network.time_embedding(sinusoidal_embedding_1d(network.freq_dim, t).to(dtype))
        e0 = network.time_projection(e.reshape(1, -1, e.shape[-1])).unflatten(2, (6, network.dim))
        context = network.text_embedding(torch.randn(1, 512, 4096, generator=g).to(device, dtype) * 0.15)
        freqs = network.rope_encode(T, 2 * h, 2 * w, device=device, dtype=dtype)
    return {"img": x, "txt": context, "vec": e0, "pe": freqs, "transformer_options": {}}


def bench_blocks(a) -> list[dict]:
    import torch

    from ocd.attention.token_merge import TokenMergeSettings, plan_token_sets
    from ocd.host.models import WanDiT
    from ocd.masks import grid as mask_grid
    from ocd.sampling import dual_rate
    from ocd.tokens import KeptKeys, MergedTokens, TokenSubset, attention_pool
    from tests.support import random_wan as rw

    dtype = torch.float32 if a.device == "cpu" else torch.bfloat16
    network = rw.build_wan_network(rw.WAN21_1_3B_WIDTH(1), seed=0).to(a.device, dtype).eval()
    block = network.blocks[0]
    family = WanDiT()

    def run(args):
        return {"img": block(args["img"], context=args["txt"], e=args["vec"], freqs=args["pe"],
                             context_img_len=None, transformer_options=args["transformer_options"])}

    rows = []
    # warm-up at a small size (kernels, allocator)
    small = block_inputs(network, (2, 8, 8), a.device, dtype)
    with torch.inference_mode():
        run(small)
    for spec in a.grids:
        T, h, w = (int(n) for n in spec.split("x"))
        L = T * h * w
        args = block_inputs(network, (T, h, w), a.device, dtype)
        attention_seconds = []

        def timing_attention(q, k, v, heads, attend):
            if a.device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            out = attend(q, k, v, None)
            if a.device.startswith("cuda"):
                torch.cuda.synchronize()
            attention_seconds.append(time.perf_counter() - start)
            return out

        with torch.inference_mode():
            vanilla, _ = timed(lambda: run(args), a.repeats, a.device)
            family.run_block(args, run, None, timing_attention)
        share = attention_seconds[-1] / vanilla
        print(f"{spec} ({L} tokens): block {vanilla:.2f} s, self-attention {attention_seconds[-1]:.2f} s "
              f"({share:.0%})", flush=True)
        row = {"grid": spec, "tokens": L, "vanilla": vanilla, "attention_share": share, "objects": {}}
        for object_share in a.objects:
            mask = object_mask(1, 2 * h, 2 * w, object_share)
            weights = mask_grid.latent_token_weights(mask, range(T), T, 4, h, w).reshape(T, h * w)
            ratio = 0.75 * (1.0 - object_share)
            settings = TokenMergeSettings(ratio=ratio, foreground_mask=mask)
            metric = args["img"]
            with torch.inference_mode():
                plan_seconds, plan = timed(lambda: plan_token_sets(
                    metric, [tuple(range(T))], [None], (h, w), 0, settings,
                    frame_weights=lambda fs, hh, ww, dev: weights[list(fs)].to(dev)), 1, a.device)
            tokens = MergedTokens(plan)
            bias = tokens.key_bias()
            positions = torch.arange(L, device=metric.device).expand(1, L)

            def merged_attention(q, k, v, heads, attend):
                k2, v2, b, _ = attention_pool(k, v, tokens.positions(1), bias)
                return attend(q, k2, v2, b)

            def kv_attention(q, k, v, heads, attend):
                k2, v2, b, _ = attention_pool(k, v, positions, None, plan)
                return attend(q, k2, v2, b)

            cover = mask_grid.latent_coverage(mask, range(T), T, 4, 2 * h, 2 * w)
            subsets = {}
            for padding in a.paddings:
                subset_plan = dual_rate.plan_token_steps(torch.linspace(1, 0, 21), cover,
                                                         dual_rate.DualRateSettings(crop_padding=padding), (2, 2))
                inside = subset_plan.subset.reshape(-1)
                subset = TokenSubset(torch.nonzero(inside).flatten().to(a.device))
                g = torch.Generator().manual_seed(1)
                outside = int((~inside).sum())
                kept = KeptKeys(torch.randn(1, outside, network.dim, generator=g).to(a.device, dtype),
                                torch.randn(1, outside, network.dim, generator=g).to(a.device, dtype))

                def subset_attention(q, k, v, heads, attend, subset=subset, kept=kept):
                    k2, v2, b, _ = attention_pool(k, v, subset.positions(1), context=kept)
                    return attend(q, k2, v2, b)

                with torch.inference_mode():
                    seconds, _ = timed(lambda: family.run_block(args, run, subset, subset_attention), a.repeats,
                                       a.device)
                subsets[padding] = {"tokens": subset.count(), "seconds": seconds}

            with torch.inference_mode():
                merged_s, _ = timed(lambda: family.run_block(args, run, tokens, merged_attention), a.repeats, a.device)
                kv_s, _ = timed(lambda: family.run_block(args, run, None, kv_attention), a.repeats, a.device)
            row["objects"][object_share] = {
                "merge_ratio": ratio, "merged_tokens": plan.size, "plan": plan_seconds,
                "tokens": merged_s, "keys_values": kv_s, "subsets": subsets}
            print(f"  object {object_share:.0%}: merge {ratio:.3f} -> {plan.size} tokens {merged_s:.2f} s "
                  f"({vanilla / merged_s:.2f}x), plan {plan_seconds:.2f} s; keys_values {kv_s:.2f} s "
                  f"({vanilla / kv_s:.2f}x); " + "; ".join(
                      f"subset (crop_padding {pad}) {sub['tokens']} tokens {sub['seconds']:.2f} s "
                      f"({vanilla / sub['seconds']:.2f}x)" for pad, sub in subsets.items()), flush=True)
        if a.profile:
            row["profile"] = profile_blocks(a, family, run, args, spec, network.dim)
        rows.append(row)
    return rows


def profile_blocks(a, family, run, args, spec, dim) -> dict:
    """Self time by op group of the unpatched block and of the block on merged tokens (25%)."""
    import torch

    from ocd.attention.token_merge import TokenMergeSettings, plan_token_sets
    from ocd.masks import grid as mask_grid
    from ocd.tokens import MergedTokens, attention_pool

    T, h, w = (int(n) for n in spec.split("x"))
    mask = object_mask(1, 2 * h, 2 * w, 0.25)
    weights = mask_grid.latent_token_weights(mask, range(T), T, 4, h, w).reshape(T, h * w)

    def merged():
        plan = plan_token_sets(args["img"], [tuple(range(T))], [None], (h, w), 0,
                               TokenMergeSettings(ratio=0.5625, foreground_mask=mask),
                               frame_weights=lambda fs, hh, ww, dev: weights[list(fs)].to(dev))
        tokens = MergedTokens(plan)

        def merged_attention(q, k, v, heads, attend):
            k2, v2, b, _ = attention_pool(k, v, tokens.positions(1), tokens.key_bias())
            return attend(q, k2, v2, b)

        return family.run_block(args, run, tokens, merged_attention)

    with torch.inference_mode():
        return {"vanilla": profile_run(lambda: run(args), a.device),
                "merged 25% (plan included)": profile_run(merged, a.device)}


def write_blocks(a, rows: list[dict]) -> str:
    table = []
    for row in rows:
        for share, o in row["objects"].items():
            v = row["vanilla"]
            table.append([f"{row['grid']} ({row['tokens']})", f"{v:.2f}", f"{row['attention_share']:.0%}",
                          f"{share:.0%}", f"{o['merge_ratio']:.3f} -> {o['merged_tokens']}",
                          f"{o['tokens']:.2f} ({v / o['tokens']:.2f}x)", f"{o['plan']:.2f}",
                          f"{o['keys_values']:.2f} ({v / o['keys_values']:.2f}x)"]
                         + [f"{sub['tokens']}: {sub['seconds']:.2f} ({v / sub['seconds']:.2f}x)"
                            for sub in o["subsets"].values()])
    body = [f"## Wan 2.1 1.3B block at full width: OCD per block ({a.device})", "",
            f"`{command_line()}`, {machine_description(a.device)}, {today()}, run alone; median of "
            f"{a.repeats} run(s) after a warm-up. One block (dim 1536, 12 heads, FFN 8960, random weights), "
            "tokens = latent frames x token rows x columns; object = a centred rectangle in every frame; merging at "
            "`merge_ratio = 0.75 x background share` (2x2 stride: every background source, no object token); "
            "the token-subset step runs the object, its feathered edge (one token) and `crop_padding` latent "
            "pixels more, with the other tokens' keys/values as context. Times in seconds (speed-up over the "
            "unpatched block).", "",
            markdown_table(["tokens", "block", "self-attention share", "object", "merge: ratio -> tokens",
                            "merged block", "plan (once per call)", "keys_values block"]
                           + [f"token-subset step, crop_padding {pad}: tokens: time" for pad in a.paddings],
                           table)]
    for row in rows:
        for label, prof in (row.get("profile") or {}).items():
            body += ["", profile_text(f"{row['grid']} {label}", prof)]
    return "\n".join(body)


# ---------------------------------------------------------------------------------------------
# calls: whole sampling runs
# ---------------------------------------------------------------------------------------------

PRESETS = ("vanilla", "easycache", "ocd merge", "ocd sampling", "ocd both", "ocd both + easycache")


def run_node(node_cls, **inputs):
    return node_cls.PREPARE_CLASS_CLONE({}).EXECUTE_NORMALIZED(**inputs).result


def bench_calls(a) -> dict:
    import nodes
    import torch
    from comfy_extras.nodes_easycache import EasyCacheNode

    from ocd import comfy_report
    from ocd.attention.comfy_patches import apply_token_merge
    from ocd.attention.token_merge import TokenMergeSettings
    from ocd.comfy_bench import PeakMemory
    from ocd.masks import grid as mask_grid
    from ocd.report import RunReport
    from ocd.sampling.comfy_sampler import sample_dual_rate
    from ocd.sampling.dual_rate import DualRateSettings
    from tests.support import random_wan as rw

    frames, height, width = (int(n) for n in a.size.split("x"))
    T, lh, lw = (frames - 1) // 4 + 1, height // 8, width // 8
    tokens = T * (lh // 2) * (lw // 2)
    tmp = Path(a.tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    model_path = rw.write_wan_model(tmp / "wan-1.3b-width.safetensors", rw.WAN21_1_3B_WIDTH(a.depth), seed=0,
                                    dtype=torch.float16 if a.device != "cpu" else torch.float32)
    model = rw.load_wan(model_path)
    vae = rw.load_wan21_vae(rw.write_wan21_vae(tmp / "wan21-vae.safetensors", seed=0))
    pos, neg = rw.text_conditioning("a red sports car on a road", tokens=64), rw.text_conditioning("", tokens=64)
    mask = object_mask(frames, height, width, a.object)
    latent = {"samples": torch.zeros(1, 16, T, lh, lw)}
    settings = DualRateSettings(a.background_step_ratio, a.blend_point, a.crop_padding, "feathered")
    # every background source of a 2x2 stride, no object token: the object's share counted in
    # tokens (the pack's rule: a token at least half covered is the object's)
    object_tokens = float((mask_grid.latent_token_weights(mask, range(T), T, 4, lh // 2, lw // 2) >= 1.0)
                          .float().mean())
    ratio = 0.75 * (1.0 - object_tokens)
    merge = TokenMergeSettings(ratio=ratio, foreground_mask=mask)

    def easycache(m):
        return run_node(EasyCacheNode, model=m, reuse_threshold=a.easycache_threshold, start_percent=0.15,
                        end_percent=0.95, verbose=False)[0]

    def ksampler(m, report):
        return nodes.KSampler().sample(comfy_report.attach(m, report), a.seed, a.steps, a.cfg, a.sampler,
                                       a.scheduler, pos, neg, latent)[0]["samples"]

    def dual(m, report):
        return sample_dual_rate(m, a.seed, a.steps, a.cfg, a.sampler, a.scheduler, pos, neg, latent, 1.0, mask,
                                settings, report=report).latent["samples"]

    runs = {
        "vanilla": lambda r: ksampler(model, r),
        "easycache": lambda r: ksampler(easycache(model), r),
        "ocd merge": lambda r: ksampler(apply_token_merge(model, merge), r),
        "ocd sampling": lambda r: dual(model, r),
        "ocd both": lambda r: dual(apply_token_merge(model, merge), r),
        "ocd both + easycache": lambda r: dual(apply_token_merge(easycache(model), merge), r),
    }
    ran = []  # calls that ran the transformer's blocks (a step cache answers the others)
    network = model.model.diffusion_model
    network.blocks[0].register_forward_pre_hook(lambda module, args: ran.append(1))
    with torch.inference_mode():
        warm = dict(latent, samples=torch.zeros(1, 16, 2, 16, 16))
        nodes.KSampler().sample(model, 0, 1, a.cfg, a.sampler, a.scheduler, pos, neg, warm)  # load, warm up
        results = {}
        for name in a.presets:
            report = RunReport()
            ran.clear()
            with PeakMemory() as peak:
                start = time.perf_counter()
                samples = runs[name](report)
                seconds = time.perf_counter() - start
            data = report.as_dict()
            counted = sum(p.get("calls", 0) for p in data["phases"].values())
            token_sum = sum(p.get("tokens", 0.0) for p in data["phases"].values())
            calls = len(ran)
            results[name] = {"seconds": seconds, "samples": samples, "evaluations": data["unet_evaluations"],
                             "calls": calls, "tokens_per_call": token_sum / counted if counted else tokens,
                             "peak_mib": peak.mib}
            print(f"{name}: {seconds:.1f} s, {data['unet_evaluations']} evaluations, {calls} calls", flush=True)
        profiles = {}
        for name in a.profile_presets:
            profiles[name] = profile_run(lambda: runs[name](RunReport()), a.device)
        inside = mask_grid.weights(mask, frames, height, width) >= 1.0  # [F, H, W] video pixels
        latent_inside = mask_grid.latent_coverage(mask, range(T), T, 4, lh, lw) >= 0.5
        decoded = {name: vae.decode(r["samples"])[0] for name, r in results.items()}  # [F, H, W, 3]
    reference = results["vanilla"]["samples"]
    for name, r in results.items():
        r.update(latent_error(r["samples"], reference, latent_inside))
        r.update(decoded_psnr(decoded[name], decoded["vanilla"], inside))
        del r["samples"]
    return {"tokens": tokens, "latent": [T, lh, lw], "frames": frames, "size": [height, width],
            "merge_ratio": ratio, "results": results, "profiles": profiles}


def profile_run(fn, device: str) -> dict:
    """Self time by op group of one run under torch.profiler, and the time outside ops."""
    import torch
    from torch.profiler import ProfilerActivity, profile as torch_profile

    from ocd.comfy_bench import op_group

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    self_time = "self_device_time_total" if device.startswith("cuda") else "self_cpu_time_total"
    with torch_profile(activities=activities) as prof:
        start = time.perf_counter()
        fn()
        seconds = time.perf_counter() - start
    groups: dict[str, float] = {}
    for event in prof.key_averages():
        if event.key.startswith("aten::"):
            group = op_group(event.key)
            groups[group] = groups.get(group, 0.0) + getattr(event, self_time) / 1e6
    return {"seconds": seconds, "groups": groups, "outside_ops": seconds - sum(groups.values())}


def profile_text(title: str, prof: dict) -> str:
    total = prof["seconds"]
    parts = ", ".join(f"{group} {sec / total:.0%}" for group, sec in sorted(prof["groups"].items(), key=lambda kv: -kv[1])
                      if sec / total >= 0.005)
    return f"Where the time goes, {title} ({total:.1f} s under the profiler): {parts}; outside ops " \
           f"{prof['outside_ops'] / total:.0%}."


def latent_error(x, reference, inside) -> dict:
    """Relative L2 error of a latent [1, C, T, h, w] against the reference, inside/outside."""
    region = inside[None, None].expand_as(x)
    out = {}
    for name, where in (("err_in", region), ("err_out", ~region)):
        diff, ref = (x - reference)[where], reference[where]
        out[name] = float(diff.norm() / ref.norm()) if ref.numel() else float("nan")
    return out


def decoded_psnr(frames, reference, inside) -> dict:
    n = min(frames.shape[0], inside.shape[0])
    frames, reference, inside = frames[:n], reference[:n], inside[:n]
    out = {}
    for name, where in (("psnr_in", inside), ("psnr_out", ~inside)):
        mse = float(((frames - reference) ** 2)[where].mean())
        out[name] = float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)
    return out


def write_calls(a, result: dict) -> str:
    res = result["results"]
    v = res["vanilla"]["seconds"]
    ec = res.get("easycache", {}).get("seconds")
    rows = []
    for name, r in res.items():
        rows.append([name, f"{r['seconds']:.1f}", f"{v / r['seconds']:.2f}x",
                     f"{ec / r['seconds']:.2f}x" if ec else "-", r["evaluations"], r["calls"],
                     f"{r['tokens_per_call']:.0f}", f"{r['peak_mib']:.0f}", f"{r['err_in']:.3f}",
                     f"{r['err_out']:.3f}", f"{r['psnr_in']:.1f}", f"{r['psnr_out']:.1f}"])
    T, lh, lw = result["latent"]
    body = [f"## Wan sampling runs: OCD beside vanilla and EasyCache ({a.device}, {result['tokens']} tokens)", "",
            f"`{command_line()}`, {machine_description(a.device)}, {today()}, run alone, one process, after a "
            f"warm-up. Wan 2.1 1.3B width (dim 1536, 12 heads, FFN 8960) at depth {a.depth}, random weights, "
            f"flow matching with Wan 2.1's shift 8; {result['frames']} frames at {result['size'][0]}x{result['size'][1]} "
            f"(latent {T}x{lh}x{lw}, {result['tokens']} tokens), {a.steps} steps {a.sampler}/{a.scheduler}, "
            f"cfg {a.cfg}; object = a centred rectangle of {a.object:.0%} of every frame. OCD merge: "
            f"merge_ratio {result['merge_ratio']:.3f} (dit_merge tokens, every block); OCD sampling: "
            f"background_step_ratio {a.background_step_ratio}, blend_point {a.blend_point}, crop_padding "
            f"{a.crop_padding}; "
            f"EasyCache: reuse_threshold {a.easycache_threshold}, 0.15-0.95. Errors against vanilla: relative "
            "L2 error of the final latent inside/outside the object, PSNR (dB) of the frames a random Wan 2.1 VAE "
            "decodes (random weights: they compare runs, they do not judge an edit).", "",
            markdown_table(["preset", "seconds", "vs vanilla", "vs EasyCache", "evaluations", "transformer calls",
                            "tokens per call", "peak MiB", "latent err in", "latent err out", "PSNR in",
                            "PSNR out"], rows)]
    for name, prof in result.get("profiles", {}).items():
        body += ["", profile_text(f"the {name} run", prof)]
    return "\n".join(body)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("part", choices=("blocks", "calls"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-write", action="store_true", help="print, do not write docs/BENCHMARKS.md")
    p.add_argument("--repeats", type=int, default=1)
    # blocks
    p.add_argument("--grids", nargs="+", default=["21x15x26", "21x30x52"], help="latent frames x token rows x cols")
    p.add_argument("--objects", nargs="+", type=float, default=list(OBJECT_SHARES))
    p.add_argument("--profile", action="store_true", help="also a torch.profiler breakdown per grid")
    p.add_argument("--paddings", nargs="+", type=int, default=[2, 0], help="crop_padding of the token-subset step")
    # calls
    p.add_argument("--size", default="17x256x416", help="video frames x height x width")
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--cfg", type=float, default=5.0)
    p.add_argument("--sampler", default="euler")
    p.add_argument("--scheduler", default="simple")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--object", type=float, default=0.25)
    p.add_argument("--background-step-ratio", type=float, default=4.0)
    p.add_argument("--blend-point", type=float, default=0.25)
    p.add_argument("--crop-padding", type=int, default=0, help="0: the fast choice on a transformer (docs/sampling.md)")
    p.add_argument("--easycache-threshold", type=float, default=0.2)
    p.add_argument("--presets", nargs="+", default=list(PRESETS), choices=PRESETS)
    p.add_argument("--profile-presets", nargs="*", default=["vanilla", "ocd both"], choices=PRESETS,
                   help="runs repeated under torch.profiler for the breakdown")
    p.add_argument("--tmp", default=str(REPO_ROOT / ".comfy" / "bench_models"), help="where the random models go")
    a = p.parse_args()

    from scripts.benchmarks.dual_rate_sampling import init_host

    init_host(a.device)
    import torch

    if a.device == "cpu":
        torch.set_num_threads(max(1, torch.get_num_threads()))
    if a.part == "blocks":
        text = write_blocks(a, bench_blocks(a))
        name = f"dit-blocks-{a.device}"
    else:
        if "vanilla" not in a.presets:
            a.presets = ["vanilla", *a.presets]
        text = write_calls(a, bench_calls(a))
        name = f"dit-calls-{a.device}-{a.size}"
    print(text)
    if not a.no_write:
        write_section(name, text)


if __name__ == "__main__":
    main()
