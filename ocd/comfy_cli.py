"""``python -m ocd edit``: the pack's templates run headless, in-process, through ComfyUI's own
executor (the glue; the pipelines are data in ``ocd.pipelines``, the templates' conversion is
``ocd.templates``).

    python -m ocd edit VIDEO --prompt TEXT [--source-prompt TEXT] [--pipeline inversion|control|wan|wan_inversion]
                     [--preset vanilla|optimized|easycache|ocd|ocd+easycache]
                     [--checkpoint FILE] [--controlnet FILE]                            (SD1.5 pipelines)
                     [--diffusion-model FILE] [--vae FILE] [--text-encoder FILE]        (wan)
                     [--mask auto|FILE] [--object WORDS] [--frames N] [--fit-frames cut|pad]
                     [--size PIXELS] [--steps N] [--seed N] [--feature-reuse CLOCK]
                     [--out FILE.mp4] [--report FILE.json] [--random-weights] [--comfyui DIR]

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

from . import templates, windows
from .pipelines import PIPELINES, PRESETS, Pipeline

PACK_ROOT = Path(__file__).resolve().parents[1]
# the test-only text node (tests/support/test_nodes): umt5-xxl stand-in for --random-weights
TEST_NODE_PACK = PACK_ROOT / "tests" / "support" / "test_nodes" / "ocd_test_nodes"
TEXT_STAND_IN = "OCDTest_TextConditioning"
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
    """ComfyUI in this process, with ``base`` as its --base-directory, the pack and whatever
    else is in ``base/custom_nodes`` loaded; returns ``nodes``."""
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
    for pack in sorted((base / "custom_nodes").iterdir()):
        if not asyncio.run(nodes.load_custom_node(str(pack))):
            raise UsageError(f"ComfyUI could not load {pack.name} from {pack.resolve()}")
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


def pipeline_of(a) -> Pipeline:
    return PIPELINES[a.pipeline]


def check_arguments(a) -> None:
    """Refuse bad values before any model loads; fill the pipeline's defaults."""
    pipeline = pipeline_of(a)
    if a.preset not in pipeline.presets:
        raise UsageError(f"--preset {a.preset}: the {a.pipeline} pipeline has {', '.join(pipeline.presets)}")
    a.frames = pipeline.default_frames if a.frames is None else a.frames
    a.size = pipeline.default_size if a.size is None else a.size
    a.window = pipeline.default_window if getattr(a, "window", None) is None else a.window
    a.overlap = pipeline.default_overlap if getattr(a, "overlap", None) is None else a.overlap
    a.anchors = 1 if getattr(a, "anchors", None) is None else a.anchors
    for name, value, low in (("--frames", a.frames, 0), ("--steps", a.steps, 1), ("--size", a.size, 64),
                             ("--feature-reuse", getattr(a, "feature_reuse", None), 1), ("--window", a.window, 0),
                             ("--overlap", a.overlap, 0), ("--anchors", a.anchors, 0)):
        if value is not None and value < low:
            raise UsageError(f"{name} {value}: must be at least {low}")
    if a.window:
        if a.overlap >= a.window:
            raise UsageError(f"--overlap {a.overlap}: must be below --window ({a.window})")
        if not pipeline.frames_ok(a.anchors + a.window):
            fit = pipeline.fitted_frames(a.anchors + a.window, "cut") - a.anchors
            raise UsageError(f"--window {a.window} with --anchors {a.anchors}: a window edits "
                             f"{a.anchors + a.window} frames, but the {a.pipeline} pipeline's VAE holds "
                             f"{pipeline.temporal_scale}k+1 frames: give --window {fit if fit > 0 else fit + pipeline.temporal_scale}")
    if a.size % 8:
        raise UsageError(f"--size {a.size}: must be a multiple of 8 (the latent is 1/8 of the frame)")
    if a.out is not None and Path(a.out).suffix.lower() != ".mp4":
        raise UsageError(f"--out {a.out}: the edited clip is written as .mp4")
    if getattr(a, "feature_reuse", None) and pipeline.random_models == "wan":
        raise UsageError("--feature-reuse: Clockwork feature reuse cuts a UNet; on Wan use --preset easycache or "
                         "ocd+easycache (core EasyCache)")
    if not a.random_weights:
        for model in pipeline.models:
            if getattr(a, model.key, None) is None:
                raise UsageError(f"{model.flag} FILE is needed ({model.what}; it goes in {model.folder} of a "
                                 "ComfyUI install), or --random-weights for a smoke run")


def clip_frames(a, video: Path) -> int:
    """The frames ``--frames`` asks of the clip (0: all), fewer when the clip is shorter."""
    from .video import codec

    clip = len(codec.select_frames(codec.probe_video(str(video))))
    return min(a.frames or clip, clip)


def frames_to_load(a, video: Path) -> int:
    """The frames Load Video will load (``--frames``, fewer when the clip is shorter), checked
    against the pipeline's frame rule: a count its latent cannot hold is cut or padded as
    ``--fit-frames`` says, never silently."""
    pipeline = pipeline_of(a)
    frames = clip_frames(a, video)
    if pipeline.frames_ok(frames) or len(window_plan(a, frames).windows) > 1:  # windows hold 4k+1 each
        return frames
    cut, pad = pipeline.fitted_frames(frames, "cut"), pipeline.fitted_frames(frames, "pad")
    if a.fit_frames is None:
        raise UsageError(f"--frames: {frames} frames would be loaded, but the {a.pipeline} pipeline's VAE holds "
                         f"{pipeline.temporal_scale}k+1 frames: give --frames {cut} or {pad}, or --fit-frames cut "
                         f"(edit {cut}) or pad (edit {pad}, the last frame repeated, and keep the first {frames})")
    print(f"note: {frames} frames are not {pipeline.temporal_scale}k+1: " +
          (f"editing the first {cut}" if a.fit_frames == "cut" else
           f"editing {pad} (the last frame repeated {pad - frames} times), saving the first {frames}"),
          file=sys.stderr)
    return frames


def window_plan(a, frames: int) -> windows.WindowPlan:
    """The windows ``frames`` frames are edited in (one: the whole clip, with ``--window 0``
    or a clip that fits one window)."""
    if not a.window:
        return windows.WindowPlan(frames, frames, 0, 0, (windows.Window(0, 0, frames, 0),))
    return windows.plan_windows(frames, a.window, a.overlap, a.anchors)


def build_prompt(a, info: dict, names: dict) -> dict:
    """The template of the pipeline and preset, its inputs set from the arguments."""
    pipeline = pipeline_of(a)
    prompt = templates.ui_to_api(templates.load(pipeline.presets[a.preset]), info)
    templates.set_inputs(prompt, {"video": names["video"], "height": 0}, {"OCD_LoadVideo"})
    frames = names.get("frames", a.frames)
    edited = pipeline.fitted_frames(frames, a.fit_frames or "cut")
    templates.set_inputs(prompt, {"frame_load_cap": frames if edited > frames else edited}, {"OCD_LoadVideo"})
    if edited > frames:
        templates.pad_frames(prompt, frames, edited)
    templates.set_inputs(prompt, {"width": a.size}, {"OCD_LoadVideo"})
    for model in pipeline.models:
        if names.get(model.key) is not None:
            templates.set_inputs(prompt, {model.input: names[model.key]}, {model.loader})
    if names.get("text_stand_in"):
        templates.stand_in_text_encoder(prompt, TEXT_STAND_IN)
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


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class PeakMemory:
    """Peak memory of a block above what was resident when it started, in MiB (``mib``; CPU: the
    kernel's high-water mark of RSS, reset first; GPU: max_memory_allocated), and the peak
    itself (``total_mib``: resident before the block and the block's own).

    On the CPU the C heap is trimmed first: glibc keeps the pages an earlier, larger run
    freed, so without the trim a later run reuses them and its peak reads as zero. ``device``:
    "cpu" or "cuda..." (default: the GPU when there is one)."""

    def __init__(self, device: str | None = None):
        self.device = device
        self.mib = float("nan")

    def __enter__(self):
        import torch

        self.cuda = torch.cuda.is_available() if self.device is None else self.device.startswith("cuda")
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
        else:
            import ctypes
            import gc

            gc.collect()
            try:
                ctypes.CDLL("libc.so.6").malloc_trim(0)
            except (OSError, AttributeError):  # not glibc: the figure may read low after a larger run
                pass
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
            except OSError:
                pass
            self.start = _status_kib("VmRSS")
        return self

    def __exit__(self, *exc):
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            self.total_mib = torch.cuda.max_memory_allocated() / 2**20
            self.mib = self.total_mib - self.start / 2**20
        else:
            self.total_mib = _status_kib("VmHWM") / 1024
            self.mib = self.total_mib - self.start / 1024
        return False


def peak_memory_mib() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def prepare_base(base: Path, a) -> dict:
    """The private base directory's folders, the pack (and, for random Wan weights, the test
    text node) under custom_nodes, the clip and mask linked in; returns the names so far."""
    for folder in ("input", "output", "temp", "user", "custom_nodes"):
        (base / folder).mkdir(parents=True, exist_ok=True)
    (base / "custom_nodes" / PACK_ROOT.name).symlink_to(PACK_ROOT, target_is_directory=True)
    if a.random_weights and pipeline_of(a).random_models == "wan":
        if not TEST_NODE_PACK.is_dir():
            raise UsageError("--random-weights on Wan needs the repository's tests/support (run from a clone)")
        (base / "custom_nodes" / TEST_NODE_PACK.name).symlink_to(TEST_NODE_PACK, target_is_directory=True)
    video = Path(a.video)
    names = {"video": _link(base, "input", video, "video", "give the path of a clip (mp4, webm, mov, ...)")}
    names["frames"] = frames_to_load(a, video)
    if getattr(a, "mask", None) not in (None, "auto"):
        names["mask"] = _link(base, "input", Path(a.mask), "mask image", "give a PNG whose white is the object")
    return names


def model_names(base: Path, a, full_architecture: bool = False, depth: int | None = None) -> dict:
    """The pipeline's model files linked into ``base`` (or random ones built there)."""
    pipeline = pipeline_of(a)
    if a.random_weights:
        return _random_models(base, pipeline, full_architecture, depth)
    return {model.key: _link(base, model.folder, Path(getattr(a, model.key)), model.flag[2:].replace("-", " "),
                             f"{model.what}; pass its path") for model in pipeline.models}


def edit(a) -> dict:
    check_arguments(a)
    root = find_comfyui(a.comfyui)
    with tempfile.TemporaryDirectory(prefix="ocd-cli-") as tmp:
        base = Path(tmp)
        names = prepare_base(base, a)
        nodes = start_comfyui(root, base, a.cpu)
        names.update(model_names(base, a))
        prompt = build_prompt(a, object_info(nodes), names)
        start = time.perf_counter()
        outputs, messages = run_prompt(nodes, prompt)
        seconds = time.perf_counter() - start
        report = summarise(outputs, messages, seconds, peak_memory_mib())
        saved = [item for out in outputs.values() for item in out.get("images", [])
                 if item.get("filename", "").endswith(".mp4")]
        if saved:
            out = Path(a.out or f"{Path(a.video).stem}_ocd_{a.pipeline}_{a.preset}.mp4")
            shutil.copyfile(base / saved[0]["type"] / saved[0]["subfolder"] / saved[0]["filename"], out)
            report["output"] = str(out)
    if a.report:
        Path(a.report).write_text(json.dumps(report, indent=1))
    return report


def _support_module(name: str):
    """A module of the repository's tests/support, imported as a package of its own
    (``ocd_test_support``): ComfyUI's own tests/ package is first on sys.path."""
    import importlib
    import importlib.util

    folder = PACK_ROOT / "tests" / "support"
    if not (folder / f"{name}.py").is_file():
        raise UsageError("--random-weights needs the repository's tests/support (run from a clone)")
    if "ocd_test_support" not in sys.modules:
        spec = importlib.util.spec_from_file_location("ocd_test_support", folder / "__init__.py",
                                                      submodule_search_locations=[str(folder)])
        package = importlib.util.module_from_spec(spec)
        sys.modules["ocd_test_support"] = package
        spec.loader.exec_module(package)
    return importlib.import_module(f"ocd_test_support.{name}")


def _random_models(base: Path, pipeline: Pipeline, full_architecture: bool = False, depth: int | None = None) -> dict:
    """Random-weight models (the repository's test builders): for a smoke run, small ones
    (the mini SD1.5 UNet, a small Wan); for benchmarks the real architectures (SD1.5's; Wan
    2.1 1.3B's width at ``depth`` blocks, 30 for the real depth). Wan's text encoder is too
    large to build: a test-only text node stands in for it."""
    print("WARNING: --random-weights: random models, the output is NOT an edit (a smoke run of the pipeline)",
          file=sys.stderr)
    kind = "full" if full_architecture else "mini"
    if pipeline.random_models == "wan":
        random_wan = _support_module("random_wan")
        config = random_wan.WAN21_1_3B_WIDTH(depth or 30) if full_architecture else random_wan.WAN21_SMALL
        model = random_wan.write_wan_model(base / f"models/diffusion_models/random-{kind}-wan21.safetensors", config)
        vae = random_wan.write_wan21_vae(base / "models/vae/random-wan21-vae.safetensors")
        return {"diffusion_model": model.name, "vae": vae.name, "text_encoder": None, "text_stand_in": True}
    random_models = _support_module("random_models")
    config = random_models.FULL_SD15_UNET if full_architecture else None
    names = {"checkpoint": random_models.write_mini_sd15_checkpoint(
        base / f"models/checkpoints/random-{kind}-sd15.safetensors", unet_config=config).name}
    if any(m.key == "controlnet" for m in pipeline.models):
        names["controlnet"] = random_models.write_mini_sd15_controlnet(
            base / f"models/controlnet/random-{kind}-cn.safetensors", unet_config=config).name
    return names


# ---------------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------------

def add_parser(sub) -> None:
    e = sub.add_parser("edit", help="edit a clip with one of the pack's templates")
    e.add_argument("video", help="the clip to edit")
    e.add_argument("--prompt", required=True, help="what the clip should show (the target prompt)")
    e.add_argument("--source-prompt", default="a video", help="what the clip shows now (the inversion pipelines)")
    e.add_argument("--object", default="man", help="the object's words in --source-prompt (FateZero's mask)")
    add_pipeline_arguments(e)
    e.add_argument("--mask", default="auto", help="auto (the template's saliency/words) or an image: white = object")
    e.add_argument("--steps", type=int, help="sampling steps (default: the template's)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--feature-reuse", type=int, metavar="CLOCK",
                   help="add Feature Reuse (OCD) with this clock: a full UNet every CLOCK-th step (3 measured best)")
    e.add_argument("--out", help="the edited clip (.mp4)")
    e.add_argument("--report", help="write the run report here (JSON)")
    e.add_argument("--cpu", action="store_true", help="run on the CPU even with a GPU")
    e.add_argument("--resume", action="store_true",
                   help="continue a windowed edit that stopped, from its last finished window (same command)")


def add_pipeline_arguments(p, presets: bool = True) -> None:
    """The arguments ``edit`` and ``bench`` share: the pipeline, its model files, the clip's size."""
    p.add_argument("--pipeline", choices=sorted(PIPELINES), default="inversion")
    if presets:
        p.add_argument("--preset", choices=PRESETS, default="ocd")
    seen = set()
    for pipeline in PIPELINES.values():
        for model in pipeline.models:
            if model.key not in seen:
                seen.add(model.key)
                p.add_argument(model.flag, dest=model.key, metavar="FILE",
                               help=f"{model.what} (goes in {model.folder}); {pipeline.name} pipeline")
    p.add_argument("--frames", type=int, help="frames to load (default: 8; wan 33); 0: the whole clip")
    p.add_argument("--window", type=int, help="a longer clip is edited in windows of this many frames, one run "
                   "each, so memory does not grow with the clip (default: 16; wan 32); 0: the whole clip in one run")
    p.add_argument("--overlap", type=int, help="frames consecutive windows share, cross-faded (default: 2; wan 4)")
    p.add_argument("--anchors", type=int, help="the clip's first frames every window edits in front of its own, "
                   "dropped after: the shared reference that keeps the windows alike (default: 1)")
    p.add_argument("--fit-frames", choices=["cut", "pad"],
                   help="wan: a frame count that is not 4k+1 is cut to the one below or padded to the one above "
                   "(the last frame repeated, the clip saved at its own length); without it, an error")
    p.add_argument("--size", type=int, help="frame width in pixels, a multiple of 8 (default: 512; wan 832)")
    p.add_argument("--random-weights", action="store_true", help="random models: a smoke run, not an edit")
    p.add_argument("--comfyui", help="the ComfyUI folder (with main.py)")
