"""``python -m ocd``: the pack's templates run headless, in-process, through ComfyUI's own
executor (the glue; the templates' conversion is ``ocd.templates``).

    python -m ocd edit VIDEO --prompt TEXT [--source-prompt TEXT] [--pipeline inversion|control]
                     [--preset vanilla|optimized|ocd] [--checkpoint FILE] [--controlnet FILE]
                     [--mask auto|FILE] [--object WORDS] [--frames N] [--size PIXELS] [--steps N]
                     [--seed N] [--feature-reuse CLOCK] [--out FILE.mp4] [--report FILE.json]
                     [--random-weights] [--comfyui DIR]

The command runs the template of the pipeline and preset itself (its API form with the
inputs overridden), so the command and the templates can never drift apart. ComfyUI is
found by ``--comfyui``, else next to this pack (``<ComfyUI>/custom_nodes/<pack>``), else in
the repository's development host (``.comfy/ComfyUI``). Inputs are linked into a private
base directory (models/, input/, output/), so nothing of the user's folders is written.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

from . import templates
from .errors import OCDInputError

PACK_ROOT = Path(__file__).resolve().parents[1]
TEMPLATE_OF = {
    ("inversion", "vanilla"): "ocd_inversion_vanilla_fatezero_sd15",
    ("inversion", "optimized"): "ocd_inversion_optimized_fatezero_sd15",
    ("inversion", "ocd"): "ocd_inversion_ocd_sd15",
    ("control", "vanilla"): "ocd_control_vanilla_controlvideo_sd15",
    ("control", "ocd"): "ocd_control_ocd_sd15",
}
MASK_NODES = {"OCD_AutoSaliency", "OCD_CrossAttentionMask", "OCD_SAMVideoMask"}
STEP_NODES = {"OCD_InvertLatents", "KSampler", "OCD_DualRateKSampler"}
SEED_NODES = {"KSampler", "OCD_DualRateKSampler", "OCD_TokenMerge"}


class UsageError(Exception):
    """A one-line error for the user: what is wrong and what to do."""


# ---------------------------------------------------------------------------------------------
# Finding and starting ComfyUI
# ---------------------------------------------------------------------------------------------

def find_comfyui(explicit: str | None) -> Path:
    candidates = [Path(explicit)] if explicit else [
        PACK_ROOT.parents[1],  # <ComfyUI>/custom_nodes/<pack>
        Path(os.environ.get("OCD_HOST_DIR", PACK_ROOT / ".comfy")) / "ComfyUI",  # the development host
    ]
    for candidate in candidates:
        if (candidate / "main.py").is_file() and (candidate / "comfy").is_dir():
            return candidate.resolve()
    where = explicit or " or ".join(str(c) for c in candidates)
    raise UsageError(f"no ComfyUI found at {where}: pass --comfyui DIR (the folder with main.py), or run "
                     "`bash scripts/setup_host.sh` in the repository")


class _Server:
    """What ComfyUI's executor needs of a server, collecting the pack's report messages."""

    def __init__(self):
        self.client_id = None
        self.last_node_id = None
        self.last_prompt_id = None
        self.messages: list[tuple[str, dict]] = []

    def send_sync(self, event, data, sid=None):
        self.messages.append((event, data))

    def queue_updated(self):
        pass


def start_comfyui(root: Path, base: Path, cpu: bool):
    """ComfyUI in this process, with ``base`` as its --base-directory; returns ``nodes``."""
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from comfy.cli_args import args

    import torch

    args.base_directory = str(base)
    args.disable_api_nodes = True
    if cpu or not torch.cuda.is_available():
        args.cpu = True
    import utils.extra_config  # noqa: F401  (before anything resolves `utils` to comfy/utils.py)
    import nodes

    asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False))
    pack = base / "custom_nodes" / PACK_ROOT.name
    if not asyncio.run(nodes.load_custom_node(str(pack))):
        raise UsageError(f"ComfyUI could not load the pack from {PACK_ROOT}")
    return nodes


def object_info(nodes) -> dict:
    """What the server's /object_info says of every node, from the node classes."""
    from comfy_api.internal import _ComfyNodeInternal

    info = {}
    for name, cls in nodes.NODE_CLASS_MAPPINGS.items():
        if issubclass(cls, _ComfyNodeInternal):
            info[name] = cls.GET_NODE_INFO_V1()
        else:
            types = cls.INPUT_TYPES()
            info[name] = {"input": types, "input_order": {k: list(v) for k, v in types.items()}}
    return info


# ---------------------------------------------------------------------------------------------
# The job
# ---------------------------------------------------------------------------------------------

def _link(base: Path, folder: str, source: Path, what: str, hint: str) -> str:
    """``source`` made available in ``base/folder``: models by a symlink; inputs (which the
    pack's nodes refuse to follow out of the input folder) by a hard link, else a copy."""
    if not source.is_file():
        raise UsageError(f"{what} {source} not found: {hint}")
    target = base / folder / source.name
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        return source.name
    if folder == "input":
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)
    else:
        target.symlink_to(source.resolve())
    return source.name


def check_arguments(a) -> None:
    """Refuse bad values before any model loads."""
    if (a.pipeline, a.preset) not in TEMPLATE_OF:
        presets = sorted(p for pipeline, p in TEMPLATE_OF if pipeline == a.pipeline)
        raise UsageError(f"--preset {a.preset}: the {a.pipeline} pipeline has {', '.join(presets)}")
    for name, value, low in (("--frames", a.frames, 1), ("--steps", a.steps, 1), ("--size", a.size, 64),
                             ("--feature-reuse", getattr(a, "feature_reuse", None), 1)):
        if value is not None and value < low:
            raise UsageError(f"{name} {value}: must be at least {low}")
    if a.size is not None and a.size % 8:
        raise UsageError(f"--size {a.size}: must be a multiple of 8 (the latent is 1/8 of the frame)")
    if a.out is not None and Path(a.out).suffix.lower() != ".mp4":
        raise UsageError(f"--out {a.out}: the edited clip is written as .mp4")
    if not a.random_weights and a.checkpoint is None:
        raise UsageError("--checkpoint FILE is needed (an SD1.5 checkpoint; models/checkpoints of a ComfyUI "
                         "install), or --random-weights for a smoke run")
    if a.pipeline == "control" and not a.random_weights and a.controlnet is None:
        raise UsageError("--controlnet FILE is needed for the control pipeline (an SD1.5 canny ControlNet, "
                         "e.g. control_v11p_sd15_canny.pth)")


def build_prompt(a, info: dict, names: dict) -> dict:
    """The template of the pipeline and preset, its inputs set from the arguments."""
    prompt = templates.ui_to_api(templates.load(TEMPLATE_OF[(a.pipeline, a.preset)]), info)
    templates.set_inputs(prompt, {"video": names["video"], "height": 0}, {"OCD_LoadVideo"})
    if a.frames is not None:
        templates.set_inputs(prompt, {"frame_load_cap": a.frames}, {"OCD_LoadVideo"})
    if a.size is not None:
        templates.set_inputs(prompt, {"width": a.size}, {"OCD_LoadVideo"})
    templates.set_inputs(prompt, {"ckpt_name": names["checkpoint"]}, {"CheckpointLoaderSimple"})
    if "controlnet" in names:
        templates.set_inputs(prompt, {"control_net_name": names["controlnet"]}, {"ControlNetLoader"})
    if a.steps is not None:
        templates.set_inputs(prompt, {"steps": a.steps}, STEP_NODES)
    templates.set_inputs(prompt, {"seed": a.seed}, SEED_NODES)
    for title, text in (("Target prompt", a.prompt), ("Source prompt", a.source_prompt)):
        for node_id in templates.nodes_titled(prompt, title):
            prompt[node_id]["inputs"]["text"] = text
    templates.set_inputs(prompt, {"source_prompt": a.source_prompt, "words": a.object}, {"OCD_CrossAttentionMask"})
    templates.set_inputs(prompt, {"filename_prefix": "OCD/cli", "save_output": True}, {"OCD_SaveVideo"})
    if "mask" in names:  # a mask image for every frame instead of the template's mask
        mask_id = "ocd_cli_mask"
        prompt[mask_id] = {"class_type": "LoadImageMask", "inputs": {"image": names["mask"], "channel": "red"},
                           "_meta": {"title": "Object mask (from --mask)"}}
        templates.feed_from(prompt, MASK_NODES, [mask_id, 0])
    if getattr(a, "feature_reuse", None):
        add_feature_reuse(prompt, a.feature_reuse)
    return prompt


def add_feature_reuse(prompt: dict, clock: int) -> str:
    """Feature Reuse (OCD) right after the checkpoint's MODEL, so that every patch and sampler
    of the template works on the reusing model (inversions still run fully: the node's
    ``during_inversion`` is off). Returns the new node's id."""
    loader = next(i for i, n in prompt.items() if n["class_type"] == "CheckpointLoaderSimple")
    reuse_id = "ocd_cli_feature_reuse"
    for node in prompt.values():
        for name, value in node["inputs"].items():
            if value == [loader, 0]:
                node["inputs"][name] = [reuse_id, 0]
    prompt[reuse_id] = {"class_type": "OCD_FeatureReuse",
                        "inputs": {"model": [loader, 0], "clock": clock, "recomputed_levels": 1, "start": 0.0,
                                   "end": 1.0, "during_inversion": False},
                        "_meta": {"title": f"Feature reuse (from --feature-reuse {clock})"}}
    return reuse_id


def _progress_hook(stream):
    def hook(value, total, preview, node_id=None):
        width = 30
        done = int(width * value / max(1, total))
        where = f"node {node_id} " if node_id is not None else ""
        stream.write(f"\r  {where}[{'#' * done}{'.' * (width - done)}] {value}/{total}")
        stream.flush()
        if value >= total:
            stream.write("\n")
    return hook


_EXECUTORS: dict = {}


def run_prompt(nodes, prompt: dict, cache: bool = False) -> tuple[dict, list]:
    """Validate and execute ``prompt`` with ComfyUI's executor; (outputs per node, messages).
    ``cache``: keep node outputs between calls (the bench loads its models once)."""
    import comfy.utils
    import execution

    try:
        import server as comfy_server
    except ImportError:  # pragma: no cover - ComfyUI always ships server.py
        comfy_server = None
    stub = _Server()
    if comfy_server is not None:
        comfy_server.PromptServer.instance = stub  # the pack's UI messages (run reports) land in the stub
    prompt_id = uuid.uuid4().hex
    valid, error, outputs, node_errors = asyncio.run(execution.validate_prompt(prompt_id, prompt, None))
    if not valid:
        details = "; ".join(f"{prompt[i]['class_type']}: {e['errors'][0]['message']} "
                            f"({e['errors'][0].get('details', '')})" for i, e in node_errors.items() if e["errors"])
        raise UsageError(f"the workflow is not valid: {error.get('message')} {details}".strip())
    comfy.utils.set_progress_bar_global_hook(_progress_hook(sys.stderr))
    kind = execution.CacheType.CLASSIC if cache else execution.CacheType.NONE
    executor = _EXECUTORS.get(kind)
    if executor is None:
        executor = _EXECUTORS[kind] = execution.PromptExecutor(stub, cache_type=kind, cache_args={"lru": 0, "ram": 0})
    executor.server = stub
    executor.execute(prompt, prompt_id, {}, outputs)
    if not executor.success:
        for event, data in executor.status_messages:
            if event == "execution_error":
                raise UsageError(f"{data['node_type']} (node {data['node_id']}): {data['exception_message']}")
        raise UsageError("the run was interrupted")
    return executor.history_result.get("outputs", {}), stub.messages


def summarise(outputs: dict, messages: list, seconds: float, peak_mib: float) -> dict:
    """The run report as JSON: totals first, then the report of every sampling run by node."""
    runs = {}
    for output in outputs.values():
        for run in output.get("ocd_run", []):
            runs[run["run_id"]] = run
    for event, data in messages:  # core-sampler runs reach only their patch nodes, by message
        if event == "ocd.report" and data.get("run"):
            runs.setdefault(data["run"]["run_id"], data["run"])
    return {"seconds": round(seconds, 2), "unet_evaluations": sum(r["unet_evaluations"] for r in runs.values()),
            "peak_memory_mib": round(peak_mib, 1), "runs": list(runs.values())}


def peak_memory_mib() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def edit(a) -> dict:
    check_arguments(a)
    root = find_comfyui(a.comfyui)
    video = Path(a.video)
    with tempfile.TemporaryDirectory(prefix="ocd-cli-") as tmp:
        base = Path(tmp)
        for folder in ("input", "output", "temp", "user", "custom_nodes", "models/checkpoints", "models/controlnet"):
            (base / folder).mkdir(parents=True, exist_ok=True)
        (base / "custom_nodes" / PACK_ROOT.name).symlink_to(PACK_ROOT, target_is_directory=True)
        names = {"video": _link(base, "input", video, "video", "give the path of a clip (mp4, webm, mov, ...)")}
        if a.mask not in (None, "auto"):
            names["mask"] = _link(base, "input", Path(a.mask), "mask image", "give a PNG whose white is the object")
        nodes = start_comfyui(root, base, a.cpu)
        if a.random_weights:
            names.update(_random_models(base, a.pipeline))
        else:
            names["checkpoint"] = _link(base, "models/checkpoints", Path(a.checkpoint), "checkpoint",
                                        "put an SD1.5 checkpoint there or pass its path")
            if a.pipeline == "control":
                names["controlnet"] = _link(base, "models/controlnet", Path(a.controlnet), "ControlNet",
                                            "pass the path of an SD1.5 canny ControlNet")
        prompt = build_prompt(a, object_info(nodes), names)
        start = time.perf_counter()
        outputs, messages = run_prompt(nodes, prompt)
        seconds = time.perf_counter() - start
        report = summarise(outputs, messages, seconds, peak_memory_mib())
        saved = [item for out in outputs.values() for item in out.get("images", [])
                 if item.get("filename", "").endswith(".mp4")]
        if saved:
            out = Path(a.out or f"{video.stem}_ocd_{a.pipeline}_{a.preset}.mp4")
            shutil.copyfile(base / saved[0]["type"] / saved[0]["subfolder"] / saved[0]["filename"], out)
            report["output"] = str(out)
    if a.report:
        Path(a.report).write_text(json.dumps(report, indent=1))
    return report


def _random_models(base: Path, pipeline: str, full_architecture: bool = False) -> dict:
    """Random-weight models (the repository's test builders): the mini SD1.5 UNet for a smoke
    run, or the full SD1.5 architecture (benchmarks)."""
    import importlib.util

    # by path: ComfyUI's own tests/ package is first on sys.path
    path = PACK_ROOT / "tests" / "support" / "random_models.py"
    if not path.is_file():
        raise UsageError("--random-weights needs the repository's tests/support (run from a clone)")
    spec = importlib.util.spec_from_file_location("ocd_random_models", path)
    random_models = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(random_models)
    write_mini_sd15_checkpoint = random_models.write_mini_sd15_checkpoint
    write_mini_sd15_controlnet = random_models.write_mini_sd15_controlnet
    print("WARNING: --random-weights: random models, the output is NOT an edit (a smoke run of the pipeline)",
          file=sys.stderr)
    config = random_models.FULL_SD15_UNET if full_architecture else None
    kind = "full" if full_architecture else "mini"
    names = {"checkpoint": write_mini_sd15_checkpoint(base / f"models/checkpoints/random-{kind}-sd15.safetensors",
                                                      unet_config=config).name}
    if pipeline == "control":
        names["controlnet"] = write_mini_sd15_controlnet(base / f"models/controlnet/random-{kind}-cn.safetensors",
                                                         unet_config=config).name
    return names


# ---------------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------------

def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ocd", description="OCD video editing without the browser.")
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("edit", help="edit a clip with one of the pack's templates")
    e.add_argument("video", help="the clip to edit")
    e.add_argument("--prompt", required=True, help="what the clip should show (the target prompt)")
    e.add_argument("--source-prompt", default="a video", help="what the clip shows now (inversion pipeline)")
    e.add_argument("--object", default="man", help="the object's words in --source-prompt (FateZero's mask)")
    e.add_argument("--pipeline", choices=["inversion", "control"], default="inversion")
    e.add_argument("--preset", choices=["vanilla", "optimized", "ocd"], default="ocd")
    e.add_argument("--checkpoint", help="an SD1.5 checkpoint file")
    e.add_argument("--controlnet", help="an SD1.5 canny ControlNet file (control pipeline)")
    e.add_argument("--mask", default="auto", help="auto (the template's saliency/words) or an image: white = object")
    e.add_argument("--frames", type=int, default=8)
    e.add_argument("--size", type=int, default=512, help="frame width in pixels (multiple of 8)")
    e.add_argument("--steps", type=int, help="sampling steps (default: the template's)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--feature-reuse", type=int, metavar="CLOCK",
                   help="add Feature Reuse (OCD) with this clock: a full UNet every CLOCK-th step (3 measured best)")
    e.add_argument("--out", help="the edited clip (.mp4)")
    e.add_argument("--report", help="write the run report here (JSON)")
    e.add_argument("--random-weights", action="store_true", help="random models: a smoke run, not an edit")
    e.add_argument("--cpu", action="store_true", help="run on the CPU even with a GPU")
    e.add_argument("--comfyui", help="the ComfyUI folder (with main.py)")
    from . import comfy_bench

    comfy_bench.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    a = parser().parse_args(argv)
    a.argv = argv[1:]
    try:
        if a.command == "bench":
            from . import comfy_bench

            return comfy_bench.main(a)
        report = edit(a)
    except (UsageError, OCDInputError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"done in {report['seconds']:.1f} s, {report['unet_evaluations']} UNet evaluations, "
          f"peak memory {report['peak_memory_mib']:.0f} MiB" + (f": {report['output']}" if "output" in report else ""))
    return 0
