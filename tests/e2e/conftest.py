"""One real ComfyUI server per test run, with the pack, test clips, a mini SD1.5 checkpoint, a
random ControlNet of its architecture, a random Segment Anything vit_b, a small random Wan 2.1
model, its VACE variant and VAE, a small Wan 2.2 5B-style model and the (full-size) Wan 2.2
VAE, and the test-only node pack (OCDTest_TextConditioning, a stand-in for Wan's text
encoder)."""
from __future__ import annotations

import pytest

from tests.conftest import (TEST_NODE_PACK, WAN21_SMALL_FILE, WAN21_VACE_SMALL_FILE, WAN21_VAE_FILE, WAN22_5B_SMALL_FILE,
                            WAN22_VAE_FILE, make_base_directory)
from tests.support.server import ComfyServer

MINI_CHECKPOINT = "ocd-test-mini-sd15.safetensors"
MINI_CONTROLNET = "ocd-test-mini-controlnet.safetensors"
RANDOM_SAM = "ocd-test-random-vit-b.pth"


@pytest.fixture(scope="session")
def server(tmp_path_factory, test_videos, mini_sd15_checkpoint, wan21_small_model_file, wan21_vae_file):
    base = make_base_directory(tmp_path_factory.mktemp("comfy_server"), test_videos)
    # Random weights, built through ComfyUI's classes once per run (tests/conftest.py); never committed.
    (base / "models" / "checkpoints" / MINI_CHECKPOINT).symlink_to(mini_sd15_checkpoint)
    for folder, name, path in (("diffusion_models", WAN21_SMALL_FILE, wan21_small_model_file),
                               ("vae", WAN21_VAE_FILE, wan21_vae_file)):
        (base / "models" / folder).mkdir(parents=True, exist_ok=True)
        (base / "models" / folder / name).symlink_to(path)
    (base / "custom_nodes" / TEST_NODE_PACK.name).symlink_to(TEST_NODE_PACK, target_is_directory=True)
    from tests.support.random_models import write_mini_sd15_controlnet
    from tests.support.random_sam import write_sam_checkpoint
    from tests.support.random_wan import WAN21_VACE_SMALL, WAN22_5B_SMALL, write_wan22_vae, write_wan_model

    write_wan_model(base / "models" / "diffusion_models" / WAN21_VACE_SMALL_FILE, WAN21_VACE_SMALL, seed=2)
    write_wan_model(base / "models" / "diffusion_models" / WAN22_5B_SMALL_FILE, WAN22_5B_SMALL, seed=3)
    write_wan22_vae(base / "models" / "vae" / WAN22_VAE_FILE, seed=3)  # full size (ComfyUI fixes it): 1.4 GB

    write_mini_sd15_controlnet(base / "models" / "controlnet" / MINI_CONTROLNET, seed=1)
    write_sam_checkpoint(base / "models" / "sams" / RANDOM_SAM)
    # --cache-none: identical prompts must run again, not be answered from the cache
    srv = ComfyServer(base, extra_args=("--cache-none",)).start()
    srv.base = base
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def object_info(server):
    return server.get("/object_info")

