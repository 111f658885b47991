"""One real ComfyUI server per test run, with the pack, test clips and a mini SD1.5 checkpoint."""
from __future__ import annotations

import pytest

from tests.conftest import make_base_directory
from tests.support.server import ComfyServer

MINI_CHECKPOINT = "ocd-test-mini-sd15.safetensors"


@pytest.fixture(scope="session")
def server(tmp_path_factory, test_videos, mini_sd15_checkpoint):
    base = make_base_directory(tmp_path_factory.mktemp("comfy_server"), test_videos)
    # Random weights, built through ComfyUI's classes once per run (tests/conftest.py); never committed.
    (base / "models" / "checkpoints" / MINI_CHECKPOINT).symlink_to(mini_sd15_checkpoint)
    # --cache-none: identical prompts must run again, not be answered from the cache
    srv = ComfyServer(base, extra_args=("--cache-none",)).start()
    srv.base = base
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def object_info(server):
    return server.get("/object_info")
