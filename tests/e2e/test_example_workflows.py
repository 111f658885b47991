"""Every workflow in example_workflows/ runs through the real server (shrunk to test size)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.conftest import MINI_CHECKPOINT
from tests.support.server import execution_error
from tests.support.workflow import ui_to_api

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((REPO_ROOT / "example_workflows").glob("*.json"))
pytestmark = pytest.mark.e2e

# Test-size settings, by input name, applied to whatever node has that input.
SHRINK = {"ckpt_name": MINI_CHECKPOINT, "frame_load_cap": 2, "steps": 2, "width": 64, "height": 0}


def shrink(prompt: dict) -> dict:
    for node in prompt.values():
        for name, value in SHRINK.items():
            if name in node["inputs"] and not isinstance(node["inputs"][name], list):
                if name in ("width", "height") and node["class_type"] != "OCD_LoadVideo":
                    continue
                node["inputs"][name] = value
    return prompt


def test_the_example_workflows_are_generated_from_the_script():
    from scripts.make_example_workflows import WORKFLOWS as SPECS

    assert {p.stem for p in WORKFLOWS} == set(SPECS)
    for path in WORKFLOWS:
        assert json.loads(path.read_text()) == SPECS[path.stem], f"{path.name}: run scripts/make_example_workflows.py"


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_example_workflow_runs(server, object_info, path):
    prompt = shrink(ui_to_api(json.loads(path.read_text()), object_info))
    entry = server.run(prompt)
    assert entry["status"]["status_str"] == "success", execution_error(entry)
    saved = [item for out in entry["outputs"].values() for item in out.get("images", [])
             if item["filename"].endswith((".mp4", ".webp", ".gif"))]
    assert saved, f"{path.name} saved no video"
    for item in saved:
        assert (server.base / item["type"] / item["subfolder"] / item["filename"]).stat().st_size > 0
