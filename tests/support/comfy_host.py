"""Locate and initialise the real ComfyUI host built by scripts/setup_host.sh.

In-process use needs a fixed order (see ../shared/guide/host.md): ComfyUI's root first on
sys.path, ``utils.extra_config`` imported before anything resolves ``utils`` to
``comfy/utils.py``, ``args.cpu`` set before ``comfy.model_management`` is imported, then
``import nodes``.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def host_dir() -> Path:
    return Path(os.environ.get("OCD_HOST_DIR", REPO_ROOT / ".comfy")).resolve()


def comfy_root() -> Path:
    root = host_dir() / "ComfyUI"
    if not (root / "main.py").is_file():
        raise RuntimeError(
            f"No ComfyUI host at {root}: run `bash scripts/setup_host.sh` first "
            "(the README's test command does)."
        )
    return root


def test_data_dir() -> Path:
    return host_dir() / "testdata"


def init_comfy(base_directory: Path | None = None):
    """Import ComfyUI in-process on the CPU and return its ``nodes`` module.

    ``base_directory`` (optional) plays the role of ``--base-directory``: models/, input/,
    output/, temp/ and custom_nodes/ live there instead of inside the ComfyUI tree.
    """
    root = str(comfy_root())
    if root not in sys.path:
        sys.path.insert(0, root)
    from comfy.cli_args import args

    args.cpu = True
    args.disable_api_nodes = True
    if base_directory is not None:
        # folder_paths reads --base-directory once, at import.
        if "folder_paths" in sys.modules:
            raise RuntimeError("init_comfy(base_directory) must run before folder_paths is imported")
        args.base_directory = str(base_directory)
        for name in ("input", "output", "temp", "custom_nodes", "models/checkpoints"):
            Path(base_directory, name).mkdir(parents=True, exist_ok=True)
    import utils.extra_config  # noqa: F401  (before anything resolves `utils` to comfy/utils.py)
    import nodes

    return nodes
