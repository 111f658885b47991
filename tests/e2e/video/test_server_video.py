"""Through a real ComfyUI server: /object_info, example workflows, bad input, recovery."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import PACK_DIR_NAME
from tests.e2e.conftest import MINI_CHECKPOINT
from tests.support.server import execution_error
from tests.support.workflow import ui_to_api

REPO_ROOT = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.e2e


def example(name: str) -> dict:
    return json.loads((REPO_ROOT / "example_workflows" / f"{name}.json").read_text())


def node_of(prompt: dict, class_type: str) -> dict:
    (node,) = [n for n in prompt.values() if n["class_type"] == class_type]
    return node


def test_server_lists_the_nodes(object_info):
    for node_id in ("OCD_LoadVideo", "OCD_SaveVideo", "OCD_VideoInfo"):
        assert object_info[node_id]["category"].startswith("OCD/")
    video = object_info["OCD_LoadVideo"]["input"]["required"]["video"]
    assert "bikes.mp4" in video[1]["options"] and video[1]["video_upload"] is True


def test_example_workflows_are_served_as_templates(server):
    listed = server.get("/workflow_templates")
    assert set(listed[PACK_DIR_NAME]) >= {"ocd_load_save_video", "ocd_video_img2img_sd15"}
    served = server.get(f"/api/workflow_templates/{PACK_DIR_NAME}/ocd_load_save_video.json")
    assert served == example("ocd_load_save_video")  # served as application/json


def test_frontend_extension_is_served(server):
    scripts = server.get("/extensions")
    assert f"/extensions/{PACK_DIR_NAME}/ocd_video.js" in scripts
    source = server.get(f"/extensions/{PACK_DIR_NAME}/ocd_video.js")
    assert b"OCD_LoadVideo" in source and b'from "./ocd_node_text.js"' in source
    assert b"export function showNodeText" in server.get(f"/extensions/{PACK_DIR_NAME}/ocd_node_text.js")


def test_load_save_example_runs(server, object_info):
    prompt = ui_to_api(example("ocd_load_save_video"), object_info)
    node_of(prompt, "OCD_LoadVideo")["inputs"].update(frame_load_cap=6, width=128)
    entry = server.run(prompt)
    assert entry["status"]["status_str"] == "success", execution_error(entry)
    (saved,) = [o for o in entry["outputs"].values() if "images" in o]
    item = saved["images"][0]
    assert item["type"] == "output" and item["filename"].endswith(".mp4")
    path = server.base / "output" / item["subfolder"] / item["filename"]
    assert path.is_file()
    from ocd.video.codec import probe_video

    info = probe_video(str(path))
    assert (info.frame_count, info.width, info.height) == (6, 128, 56)
    assert info.fps == pytest.approx(25.0)  # frame_rate came from the video_info link
    (loaded,) = [o for o in entry["outputs"].values() if "text" in o]
    assert loaded["text"] == ["6 frames at 25 fps, 128x56, 0.24 s from 0.00 s\n"
                              "source: 250 frames at 25 fps, 640x272\n"
                              "no sound track: silent AUDIO"]


def test_img2img_example_runs_with_a_random_sd15_checkpoint(server, object_info):
    prompt = ui_to_api(example("ocd_video_img2img_sd15"), object_info)
    node_of(prompt, "CheckpointLoaderSimple")["inputs"]["ckpt_name"] = MINI_CHECKPOINT
    node_of(prompt, "OCD_LoadVideo")["inputs"].update(frame_load_cap=3, width=64)
    node_of(prompt, "KSampler")["inputs"].update(steps=2)
    entry = server.run(prompt)
    assert entry["status"]["status_str"] == "success", execution_error(entry)
    (saved,) = [o for o in entry["outputs"].values() if "images" in o]
    from ocd.video.codec import probe_video

    item = saved["images"][0]
    info = probe_video(str(server.base / "output" / item["subfolder"] / item["filename"]))
    assert (info.frame_count, info.width, info.height) == (3, 64, 24)  # 272 * 64 / 640 = 27.2 -> 24


def _load_prompt(video: str, **overrides) -> dict:
    inputs = dict(video=video, frame_load_cap=4, skip_first_frames=0, select_every_nth=1, force_rate=0.0,
                  width=64, height=0, resize_mode="crop")
    inputs.update(overrides)
    return {
        "1": {"class_type": "OCD_LoadVideo", "inputs": inputs},
        "2": {"class_type": "OCD_SaveVideo", "inputs": {
            "images": ["1", 0], "frame_rate": 8.0, "filename_prefix": "OCD/e2e", "format": "mp4",
            "crf": 23, "save_output": True}},
    }


@pytest.mark.parametrize("video", ["../../x.mp4", "/etc/hostname"])
def test_escaping_names_are_rejected_before_running(server, video):
    status, body = server.queue(_load_prompt(video))
    assert status == 400
    errors = body["node_errors"]["1"]["errors"]
    assert any("'video'" in e["details"] for e in errors), errors


def test_broken_files_fail_cleanly_and_the_server_keeps_serving(server):
    inp = server.base / "input"
    data = (inp / "bikes.mp4").read_bytes()
    (inp / "cut.mp4").write_bytes(data[: len(data) // 3])
    (inp / "text.mp4").write_bytes(b"not a video\n" * 64)
    outputs_before = sorted((server.base / "output").rglob("*"))
    for video, overrides, name in (
        ("cut.mp4", {}, "video"),
        ("text.mp4", {}, "video"),
        ("bikes.mp4", {"skip_first_frames": 500}, "skip_first_frames"),
    ):
        entry = server.run(_load_prompt(video, **overrides))
        error = execution_error(entry)
        assert entry["status"]["status_str"] == "error" and error is not None
        assert error["node_type"] == "OCD_LoadVideo"
        assert f"input '{name}'" in error["exception_message"]
    assert sorted((server.base / "output").rglob("*")) == outputs_before  # nothing half-written
    # and the server still does real work
    entry = server.run(_load_prompt("bikes.mp4"))
    assert entry["status"]["status_str"] == "success", execution_error(entry)
