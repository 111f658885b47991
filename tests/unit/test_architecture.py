"""The layout's rules, read from the source (docs/ARCHITECTURE.md):

1. Only the host adapter (ocd/host/) and the glue modules (ocd/<family>/comfy_*.py) import
   ComfyUI; nodes/ imports only its public node API (comfy_api) and folder registry
   (folder_paths); the rest of ocd/ is plain PyTorch/NumPy/OpenCV.
2. Only the host adapter reads ComfyUI's private conventions: transformer_options /
   extra_options keys, the UNet's blocks, model, ControlNet and VAE configuration, other
   packs' keys.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

# ComfyUI's own top-level modules and packages (the host), as a custom node sees them.
HOST_MODULES = {"comfy", "comfy_extras", "comfy_api", "comfy_execution", "comfy_config", "latent_preview",
                "server", "nodes", "folder_paths", "execution", "node_helpers", "app", "utils"}
NODE_ALLOWED = {"comfy_api", "folder_paths"}

# Keys of transformer_options / extra_options / conditioning options that are ComfyUI's (or
# other packs') private conventions.
PRIVATE_KEYS = {"transformer_options", "sigmas", "sample_sigmas", "activations_shape", "original_shape",
                "cond_or_uncond", "block", "block_index", "n_heads", "dim_head", "attn_precision", "ad_params",
                "sub_idxs", "context_window", "patches", "patches_replace", "attn1", "attn2", "control",
                "concat_latent_image", "concat_mask", "area", "latent_format", "model_sampling",
                "diffusion_model",
                # a video transformer's block patch arguments, attention override, wrappers
                "img", "txt", "vec", "pe", "original_block", "optimized_attention_override", "wrappers", "dit",
                "double_block", "time_dim_concat"}
# Attributes of ComfyUI objects (ModelPatcher, BaseModel, UNetModel, ControlBase, context windows).
PRIVATE_ATTRIBUTES = {"model_options", "diffusion_model", "input_blocks", "middle_block", "output_blocks",
                      "unet_config", "channel_mult", "model_config", "cond_hint_original", "extra_concat_orig",
                      "compression_ratio", "previous_controlnet", "upscale_algorithm", "index_list",
                      "get_model_object", "spacial_compression_encode", "patch_size", "latent_channels",
                      "rope_encode", "vace_blocks"}


def sources(folder: str):
    for path in sorted((REPO_ROOT / folder).rglob("*.py")):
        yield path.relative_to(REPO_ROOT).as_posix(), ast.parse(path.read_text(), str(path))


def absolute_imports(tree: ast.AST) -> set[str]:
    """Top-level names of every absolute import, also inside functions."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def is_adapter(path: str) -> bool:
    return path.startswith("ocd/host/")


def is_glue(path: str) -> bool:
    return path.startswith("ocd/") and Path(path).name.startswith("comfy_")


def test_only_the_adapter_and_the_glue_import_comfyui():
    offences = []
    for path, tree in sources("ocd"):
        host = absolute_imports(tree) & HOST_MODULES
        if host and not (is_adapter(path) or is_glue(path)):
            offences.append(f"{path} imports {sorted(host)}")
    for path, tree in sources("nodes"):
        host = absolute_imports(tree) & HOST_MODULES - NODE_ALLOWED
        if host:
            offences.append(f"{path} imports {sorted(host)} (nodes ask ocd.host instead)")
    assert not offences, "\n".join(offences)


def _key_constants(tree: ast.AST):
    """String constants used as dict keys: ``d["k"]``, ``d.get("k")`` / ``pop`` / ``setdefault``,
    ``"k" in d``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript):
            yield node.slice
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args
              and node.func.attr in ("get", "pop", "setdefault")):
            yield node.args[0]
        elif isinstance(node, ast.Compare) and any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops):
            yield node.left


def private_uses(tree: ast.AST) -> list[str]:
    found = []
    for key in _key_constants(tree):
        if isinstance(key, ast.Constant) and isinstance(key.value, str) and key.value in PRIVATE_KEYS:
            found.append(f"line {key.lineno}: key {key.value!r}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in PRIVATE_ATTRIBUTES:
            found.append(f"line {node.lineno}: attribute .{node.attr}")
    return found


def test_only_the_adapter_reads_comfyuis_private_conventions():
    offences = []
    for folder in ("ocd", "nodes"):
        for path, tree in sources(folder):
            if not is_adapter(path):
                offences += [f"{path} {use}" for use in private_uses(tree)]
    assert not offences, "ask ocd.host instead:\n" + "\n".join(offences)


@pytest.mark.parametrize("snippet, rule", [
    ("import comfy.samplers", "import"),
    ("x = extra_options['cond_or_uncond']", "key"),
    ("x = options.get('activations_shape')", "key"),
    ("x = 'control' in conditioning_options", "key"),
    ("m = model.model.diffusion_model.input_blocks", "attribute"),
])
def test_the_rules_see_a_breach(snippet, rule):
    """Each check fires on a line that breaks it (so an empty result above means something)."""
    tree = ast.parse(snippet)
    if rule == "import":
        assert absolute_imports(tree) & HOST_MODULES
    else:
        assert private_uses(tree)


def test_the_families_mirror_nodes_and_docs():
    """ocd/ is grouped by the families of nodes/ and docs/: each family has its package."""
    families = {p.name for p in (REPO_ROOT / "ocd").iterdir() if (p / "__init__.py").is_file()} - {"host"}
    assert families == {"video", "masks", "attention", "inversion", "sampling"}
    assert {p.stem for p in (REPO_ROOT / "nodes").glob("*.py") if not p.stem.startswith("_")} == families
    assert {p.stem for p in (REPO_ROOT / "docs").glob("*.md") if p.stem.islower()} == families
    for level in ("unit", "integration"):
        tested = {p.name for p in (REPO_ROOT / "tests" / level).iterdir() if p.is_dir()}
        assert families <= tested, f"tests/{level} lacks {families - tested}"
