"""Benchmark: cross-frame attention and token merging on the SD1.5 UNet architecture.

Per-UNet-call time (median of --repeats), peak memory of one call, attention FLOPs counted
from the token counts of every self-attention layer, and the fidelity (PSNR inside / outside
an object mask) of each merged variant's UNet output against the unmerged cross-frame output.

Variants: no patch; cross-frame `full`; `full` + core TomePatchModel; `full` + OCD_TokenMerge
at each --ratios (object-centric: protection 1, the node's defaults); and, for fidelity
only, at the same ratios, the literal rule (protect_object_keys) and plain merging
(protection 0).

Memory: on CUDA, torch.cuda.max_memory_allocated around one call. On the CPU, tracemalloc
does not see torch's allocations, so the peak resident set size of the process is used:
before each measured call freed memory is handed back to the OS (glibc malloc_trim) and the
kernel's high-water mark is reset (/proc/self/clear_refs = 5); the call's peak is then
VmHWM - VmRSS(before). Large tensors are mmap-ed by the allocator, so this follows the live
tensors closely; all variants run in one process with the same weights.

Run from the repository root:
    .comfy/venv/bin/python scripts/benchmarks/attention.py              # CPU, 8 x 256x256
    .comfy/venv/bin/python scripts/benchmarks/attention.py --device cuda --size 512
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


# ---------------------------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------------------------

from ocd.comfy_cli import PeakMemory  # noqa: E402  (peak memory of a block, CPU RSS or GPU)


class AttentionPeakMemory:
    """Peak memory of each self-attention step of a UNet call, above what was resident when
    the step started; ``mib`` is the largest over the call's layers.

    A step runs from the layer's ``attn1.to_q`` projection to its ``attn1.to_out`` projection,
    in every variant: ComfyUI's own attention, core ToMe (which merges before ``to_q`` and
    unmerges after ``to_out``), and OCD's cross-frame replace (pool gathering, matching,
    merging and the attention kernel all run between the two). Measured with module hooks,
    the same way as ``PeakMemory`` but per step."""

    def __init__(self, model, device: str):
        self.model, self.device, self.mib = model, device, 0.0
        self.handles = []

    def _start(self, *_):
        self.step = PeakMemory(self.device).__enter__()

    def _stop(self, *_):
        self.step.__exit__(None, None, None)
        self.mib = max(self.mib, self.step.mib)

    def __enter__(self):
        from ocd.host import transformer_blocks

        for _key, block in transformer_blocks(self.model):
            if not getattr(block, "disable_self_attn", False):
                self.handles.append(block.attn1.to_q.register_forward_pre_hook(self._start))
                self.handles.append(block.attn1.to_out.register_forward_hook(self._stop))
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()
        return False


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------

def ellipse_mask(h: int, w: int):
    """A centred ellipse covering ~25% of the frame (the "object"): [h, w] float."""
    import torch

    y = (torch.arange(h) + 0.5) / h - 0.5
    x = (torch.arange(w) + 0.5) / w - 0.5
    # area pi*a*b = 0.25 with a = b*w/h-proportional axes: a = b = sqrt(0.25/pi) in unit coords
    radius = math.sqrt(0.25 / math.pi)
    return ((y[:, None] / radius) ** 2 + (x[None, :] / radius) ** 2 <= 1.0).float()


def video_latent(frames: int, h: int, w: int, seed: int):
    """A latent "video": a smooth background drifting one latent pixel per frame and a
    textured object inside the ellipse moving the other way. [frames, 4, h, w]."""
    import torch
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(seed)
    background = F.interpolate(torch.randn(1, 4, h // 4, w // 4 + frames, generator=gen),
                               size=(h, w + 4 * frames), mode="bicubic", align_corners=False)
    texture = torch.randn(1, 4, h, w + frames, generator=gen)
    mask = ellipse_mask(h, w)
    out = []
    for f in range(frames):
        bg = background[..., 4 * f : 4 * f + w]
        obj = texture[..., frames - f : frames - f + w]
        out.append(bg * (1 - mask) + (0.5 + obj) * mask)
    return torch.cat(out)


def tokens_as_image(tokens):
    """Attention output tokens ``[F, h*w, C]`` of a square grid -> ``[F, C, h, w]``."""
    F_, n, C = tokens.shape
    side = math.isqrt(n)
    return tokens.reshape(F_, side, side, C).permute(0, 3, 1, 2)


def psnr(a, b, region) -> float:
    """PSNR of a against the reference b over a boolean [h, w] region (peak = b's range)."""
    sel = region.to(a.device).expand_as(a)
    mse = float(((a - b)[sel] ** 2).mean())
    peak = float(b.max() - b.min())
    return float("inf") if mse == 0 else 10 * math.log10(peak**2 / mse)


# ---------------------------------------------------------------------------------------------
# Attention FLOPs, from each layer's token count
# ---------------------------------------------------------------------------------------------

def attention_layers(model, x, t, context):
    """(block, tokens per frame, channels, downsample) of every self-attention call."""
    import torch

    layers = []

    def spy(n, c, v, extra_options):
        shape = extra_options["activations_shape"]
        layers.append((extra_options["block"], n.shape[1], n.shape[2],
                       max(1, round(extra_options["original_shape"][2] / shape[2]))))
        return n, c, v

    probe = model.clone()
    probe.set_model_attn1_patch(spy)
    with torch.inference_mode():
        probe.model.apply_model(x[:1], t[:1], c_crossattn=context[:1],
                                transformer_options=dict(probe.model_options["transformer_options"], cond_or_uncond=[0]))
    return layers


def attention_gflops(layers, frames: int, variant: dict) -> tuple[float, float]:
    """(attention GFLOPs, matching GFLOPs) of one UNet call: 2 FLOPs per multiply-add, QK^T and
    AV counted (4 * queries * keys * channels), bipartite matching as sources x destinations x
    channels multiply-adds."""
    attn = match = 0.0
    for _block, n, c, downsample in layers:
        cross = variant.get("cross", False)
        keys = frames * n if cross else n  # per query frame
        queries = n
        merged = downsample <= variant.get("max_downsample", 1)
        if variant.get("core_tome") and merged:
            r = int(n * variant["core_tome"])
            queries = n - r
            match += 2 * (n - n // 4) * (n // 4) * c * frames
        if variant.get("ocd") and merged:
            ratio = variant["ocd"]
            queries = n - int(n * ratio)
            match += 2 * (n - n // 4) * (n // 4) * c * frames  # per-frame query plans
            if cross:
                pool = frames * n
                keys = pool - int(pool * ratio)
                match += 2 * (pool - pool // 4) * (pool // 4) * c  # one shared pool (full)
            else:
                keys = queries
        attn += 4 * frames * queries * keys * c
    return attn / 1e9, match / 1e9


# ---------------------------------------------------------------------------------------------
# The benchmark
# ---------------------------------------------------------------------------------------------

def build_variants(base, ratios, mask, seed):
    from comfy_extras.nodes_tomesd import TomePatchModel

    from ocd.attention.comfy_patches import apply_cross_frame_attention, apply_token_merge
    from ocd.attention.token_merge import TokenMergeSettings

    full = apply_cross_frame_attention(base, "full")
    variants = [
        ("no patch", base, {}, True),
        ("cross-frame full", full, {"cross": True}, True),
    ]
    for ratio in ratios:
        if ratio == 0.5:
            core = TomePatchModel.execute(full, 0.5).result[0]
            variants.append(("full + core TomePatchModel 0.5", core, {"cross": True, "core_tome": 0.5}, True))
    # Per ratio: object-centric as the node's defaults (timed), then for fidelity only the
    # literal rule (object keys kept out of the pool's merges too) and plain merging.
    kinds = (("object-centric", dict(protection=1.0), True),
             ("object-centric, object keys protected", dict(protection=1.0, protect_keys=True), False),
             ("plain", dict(protection=0.0), False))
    for ratio in ratios:
        for label, options, timed in kinds:
            settings = TokenMergeSettings(ratio=ratio, foreground_mask=mask[None], seed=seed, **options)
            name = f"full + OCD_TokenMerge {ratio:g} ({label})"
            variants.append((name, apply_token_merge(full, settings), {"cross": True, "ocd": ratio}, timed))
    return variants


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--size", type=int, default=256, help="frame size in pixels (square; latent = size/8)")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed calls per variant after the untimed ones (median reported)")
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sharpness", type=float, default=2.0,
                        help="scale of the random to_q and to_k weights (see the docs: random weights give "
                        "near-uniform attention, which no merging can harm)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--no-write", action="store_true", help="print, do not write docs/BENCHMARKS.md")
    args = parser.parse_args(argv)

    from tests.support.comfy_host import init_comfy

    init_comfy()
    import torch

    from tests.support.random_models import FULL_SD15_UNET, build_model_patcher

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32

    t0 = time.perf_counter()
    base = build_model_patcher(FULL_SD15_UNET, seed=args.seed, dtype=dtype)
    unet = base.model.diffusion_model
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if name.endswith(("attn1.to_q.weight", "attn1.to_k.weight")):
                p.mul_(args.sharpness)
    base.model.to(device)
    print(f"built the SD1.5 UNet in {time.perf_counter() - t0:.1f} s", flush=True)

    latent = args.size // 8
    x = video_latent(args.frames, latent, latent, args.seed).to(device)
    mask = ellipse_mask(latent, latent)
    sigma = torch.full((args.frames,), 1.0, device=device)
    context = torch.randn(args.frames, 77, 768, generator=torch.Generator().manual_seed(args.seed + 1)).to(device)
    layers = attention_layers(base, x, sigma, context)

    def call(model):
        options = dict(model.model_options["transformer_options"], cond_or_uncond=[0])
        with torch.inference_mode():
            out = model.model.apply_model(x, sigma, c_crossattn=context, transformer_options=options)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return out

    def timed_call(model):
        wall, cpu = time.perf_counter(), time.process_time()
        call(model)
        return time.perf_counter() - wall, time.process_time() - cpu

    # The first merged layer's attention output: every variant gets the same input there, so
    # it shows the merging's own error before later layers spread it.
    first_merged = ("input", 1)
    local = {}

    def capture(out, extra_options):
        if tuple(extra_options["block"]) == first_merged:
            local["out"] = out.detach().float().cpu()
        return out

    # Untimed first: each variant's output (with the whole call's peak memory), then, for the
    # timed variants, one call measuring the peak of every self-attention step. Then the timed
    # calls round-robin, variant after variant, so that the load of other jobs on a shared
    # machine drifts over all variants alike. CPU time (all threads of this process) is
    # reported beside wall time: it is what the call costs, whatever else runs.
    variants = build_variants(base, args.ratios, mask, args.seed)
    outputs, layer_outputs, peaks, attention_peaks, walls, cpus = {}, {}, {}, {}, {}, {}
    for name, model, _flops, timed in variants:
        probe = model.clone()
        probe.set_model_attn1_output_patch(capture)
        with PeakMemory(args.device) as peak:
            out = call(probe)
        outputs[name], layer_outputs[name], peaks[name] = out.float().cpu(), local.pop("out"), peak.mib
        attention_peaks[name], walls[name], cpus[name] = float("nan"), [], []
        if timed:
            with AttentionPeakMemory(model, args.device) as attention_peak:
                call(model)
            attention_peaks[name] = attention_peak.mib
        print(f"{name}: peak {peak.mib:.0f} MiB, self-attention peak {attention_peaks[name]:.0f} MiB", flush=True)
    for _ in range(args.repeats):
        for name, model, _flops, timed in variants:
            if timed:
                wall, cpu = timed_call(model)
                walls[name].append(wall)
                cpus[name].append(cpu)
                print(f"{name}: {wall:.2f} s ({cpu:.1f} CPU s)", flush=True)
    reference, layer_reference = outputs["cross-frame full"], tokens_as_image(layer_outputs["cross-frame full"])
    inside = mask.bool()
    median = lambda values: statistics.median(values) if values else float("nan")  # noqa: E731
    full_name, core_name = "cross-frame full", next((v[0] for v in variants if "core" in v[0]), None)
    table = []
    for name, _model, flops_variant, timed in variants:
        attn, match = attention_gflops(layers, args.frames, flops_variant)
        wall, cpu = median(walls[name]), median(cpus[name])
        is_ref = name == full_name
        vs = lambda other: (f"{median(walls[other]) / wall:.2f}x / {median(cpus[other]) / cpu:.2f}x"  # noqa: E731
                            if timed and other is not None else "")
        layer = tokens_as_image(layer_outputs[name])
        table.append([
            name, f"{wall:.1f}" if timed else "", f"{cpu:.1f}" if timed else "",
            vs(full_name), vs(core_name) if "OCD" in name else "", f"{peaks[name]:.0f}",
            f"{attention_peaks[name]:.0f}" if timed else "", f"{attn:.1f}", f"{match:.1f}",
            "ref." if is_ref else f"{psnr(outputs[name], reference, inside):.2f}",
            "ref." if is_ref else f"{psnr(outputs[name], reference, ~inside):.2f}",
            "ref." if is_ref else f"{psnr(layer, layer_reference, inside):.2f}",
            "ref." if is_ref else f"{psnr(layer, layer_reference, ~inside):.2f}",
        ])
    header = ["variant", "wall s / call", "CPU s / call", "speed-up vs full (wall / CPU)",
              "vs core ToMe (wall / CPU)", "peak MiB (call)", "peak MiB (self-attention)", "attn GFLOP",
              "matching GFLOP", "PSNR in mask (dB)", "PSNR outside (dB)",
              "first merged layer: PSNR in mask", "first merged layer: PSNR outside"]
    device_name = "GPU" if device.type == "cuda" else "CPU"
    body = "\n".join([
        f"## Cross-frame attention and token merging ({device_name}, {args.frames} x {args.size}x{args.size})",
        "",
        f"- command: `{command_line()}`",
        f"- machine: {machine_description(args.device)}",
        f"- date: {today()}; SD1.5 UNet architecture, random weights (seed {args.seed}, attention q/k "
        f"weights x{args.sharpness:g}), {dtype}, batch of {args.frames} frames, one group (no CFG batch), "
        f"merging in the highest-resolution layers (max_downsample 1).",
        f"- time: median of {args.repeats} calls per variant after untimed ones, taken round-robin over "
        "the variants; CPU time (all threads of the process) is less sensitive than wall time to "
        "other jobs on the machine.",
        "- memory: peak of a whole call, and the largest peak of one self-attention step (from the "
        "layer's q projection to its output projection: gathering, matching, merging and the "
        "attention kernel), above the memory resident when it started (CPU: peak RSS, see the "
        "script's docstring; GPU: max_memory_allocated).",
        "- attention FLOPs: counted from the token counts of every self-attention layer (QK^T and AV); "
        "matching: the cosine-similarity products of bipartite matching.",
        "- fidelity: PSNR against the unmerged cross-frame `full` run, inside and outside a centred "
        "ellipse covering ~25% of the frame (the object mask given to OCD_TokenMerge): of the UNet "
        f"output, and of the attention output of the first merged layer ({first_merged[0]} block "
        f"{first_merged[1]}, the same input in every variant: the merging's own error). Plain = "
        "foreground_protection 0; object-centric = 1 (the node's defaults: object queries protected, "
        "the key/value pool merged without crossing the object's outline); object keys protected = "
        "also protect_object_keys. Rows without times ran once, for fidelity.",
        "",
        markdown_table(header, table),
    ])
    print(body)
    if not args.no_write:
        section = f"attention-{device_name.lower()}-{args.size}"
        write_section(section, body)
        print(f"wrote section {section} of docs/BENCHMARKS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
