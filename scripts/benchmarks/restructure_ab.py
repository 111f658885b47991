"""A/B in one process: the OCD 0.5 (object-centric) UNet call of the attention benchmark (SD1.5
architecture, 8 x 256x256, CPU) with the code before the ocd/ restructure (issue 11) and with
this checkout's, alternating calls on the same base model and inputs. Checks that the two
outputs are bit-identical and prints each side's median time (both sides see the same
machine state, which separate benchmark runs on a shared machine do not).

The code before is a git worktree of commit 36876c7, loaded as the package ``ocd_old``:

    git worktree add /tmp/ocd_before 36876c7
    .comfy/venv/bin/python scripts/benchmarks/restructure_ab.py /tmp/ocd_before [pairs]
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.append(str(REPO_ROOT))  # append: the repo's nodes/ must not shadow ComfyUI's nodes


def load_package(name: str, root: str):
    """The ``ocd`` package under ``root`` as the package ``name`` (its imports are relative)."""
    folder = os.path.join(root, "ocd")
    spec = importlib.util.spec_from_file_location(name, os.path.join(folder, "__init__.py"),
                                                  submodule_search_locations=[folder])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def main(before: str, pairs: int) -> None:
    from tests.support.comfy_host import init_comfy

    init_comfy()
    import torch

    from scripts.benchmarks.attention import ellipse_mask, video_latent
    from tests.support import random_models as rm

    load_package("ocd_old", before)
    old_patch, old_tm = (importlib.import_module(f"ocd_old.{m}") for m in ("attention_patch", "token_merge"))
    new_patch, new_tm = (importlib.import_module(f"ocd.attention.{m}") for m in ("comfy_patches", "token_merge"))

    base = rm.build_model_patcher(rm.FULL_SD15_UNET, seed=0)
    for name, p in base.model.diffusion_model.named_parameters():  # the benchmark's sharpness 2
        if name.endswith(("attn1.to_q.weight", "attn1.to_k.weight")):
            p.data.mul_(2.0)
    mask = ellipse_mask(256, 256)[None]
    models = {
        side: patch.apply_token_merge(patch.apply_cross_frame_attention(base, "full"),
                                      tm.TokenMergeSettings(ratio=0.5, protection=1.0, foreground_mask=mask))
        for side, patch, tm in (("before", old_patch, old_tm), ("after", new_patch, new_tm))
    }
    x = video_latent(8, 32, 32, 0)
    t = torch.full((8,), 5.0)
    context = torch.randn(1, 77, 768, generator=torch.Generator().manual_seed(1)).expand(8, 77, 768)

    def call(side: str):
        options = dict(models[side].model_options["transformer_options"], cond_or_uncond=[0])
        start = time.perf_counter()
        with torch.inference_mode():
            out = models[side].model.apply_model(x, t, c_crossattn=context, transformer_options=options)
        return time.perf_counter() - start, out

    first = {side: call(side)[1] for side in models}  # untimed
    print("outputs bit-identical:", torch.equal(first["before"], first["after"]), flush=True)
    times = {side: [] for side in models}
    for i in range(pairs):
        for side in (("before", "after") if i % 2 == 0 else ("after", "before")):
            times[side].append(call(side)[0])
    for side, values in times.items():
        print(f"{side}: median {statistics.median(values):.2f} s of {[round(v, 2) for v in values]}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 6)
