"""The SAM prompt editor (web/ocd_sam_editor.js) in the real ComfyUI frontend, in headless
Chromium: load a workflow, queue it once (no prompt yet: the node shows the key frame and
fails with a clear message), click on the frame (left = object, right = background, drag =
box), check the prompts widget, queue again and check the mask came back, both in /history
and on the node. One SAM encoder pass in the server (a one-frame clip)."""
from __future__ import annotations

import json
import time

import pytest

from tests.support import browser
from tests.support.random_sam import write_sam_checkpoint
from tests.support.server import execution_error

pytestmark = pytest.mark.e2e
SAM_FILE = "ocd-browser-random-vit-b.pth"
SHOTS = "/tmp/ocd_sam_editor"


def workflow() -> dict:
    return {
        "1": {"class_type": "OCD_LoadVideo", "inputs": {
            "video": "bikes.mp4", "frame_load_cap": 1, "skip_first_frames": 40, "select_every_nth": 1,
            "force_rate": 0.0, "width": 160, "height": 0, "resize_mode": "crop"}},
        "2": {"class_type": "OCD_SAMLoader", "inputs": {"sam_name": SAM_FILE, "device": "cpu"}},
        "3": {"class_type": "OCD_SAMVideoMask", "inputs": {
            "sam_model": ["2", 0], "images": ["1", 0],
            "prompts": json.dumps({"frame": 0, "width": 0, "height": 0, "points": [], "labels": [], "box": None})}},
    }


@pytest.fixture(scope="module")
def driver(server, tmp_path_factory):
    if browser.unavailable_reason() is None:
        write_sam_checkpoint(server.base / "models" / "sams" / SAM_FILE)
    with browser.session(server.base, tmp_path_factory.mktemp("chromium-profile")) as drv:
        yield drv


def history_entries(server) -> dict:
    return server.get("/history")


def wait_history(server, known: set, timeout=400) -> dict:
    return server.wait_new_entry(known, timeout)


def prompts_value(drv) -> dict:
    return json.loads(drv.execute_script(
        "return app.graph.findNodesByType('OCD_SAMVideoMask')[0].widgets.find(w => w.name === 'prompts').value"))


def test_clicks_become_prompts_and_the_mask_comes_back(server, driver):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    drv = driver
    drv.get(server.url)
    browser.wait_for(drv, "return !!(window.app && app.graph && app.extensionManager !== undefined)", 120)
    browser.wait_for(drv, "return app.extensions?.some?.(e => e.name === 'OCD.SAMEditor')"
                          " || !!document.querySelector('canvas')", 60)
    drv.execute_script("return app.loadApiJson(arguments[0], 'ocd_sam_editor_test.json')", workflow())
    node_id = browser.wait_for(drv, """
        const n = app.graph.findNodesByType('OCD_SAMVideoMask')[0];
        if (!n || !n.ocdSamEditor) return null;
        n.pos = [500, 160]; n.setSize([420, 440]);
        app.canvas.ds.scale = 1; app.canvas.ds.offset = [0, 0];
        app.graph.setDirtyCanvas(true, true);
        return n.id;""", 60)

    # 1. queue without a prompt: a clear error, and the node shows the key frame to click on
    known = set(history_entries(server))
    drv.execute_script("app.queuePrompt(0, 1)")
    entry = wait_history(server, known)
    error = execution_error(entry)
    assert error is not None and error["node_type"] == "OCD_SAMVideoMask"
    assert "input 'prompts'" in error["exception_message"] and "no prompt" in error["exception_message"]
    browser.wait_for(drv, f"return app.graph.getNodeById({node_id}).ocdSamEditor.frames.length === 1", 60)
    for _ in range(3):  # close the error dialog the frontend opened
        drv.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
        time.sleep(0.3)
    drv.execute_script("document.querySelectorAll('.p-dialog-mask').forEach(m => m.remove())")
    time.sleep(0.5)

    canvas = browser.wait_for(drv, f"""
        const c = app.graph.getNodeById({node_id}).ocdSamEditor.canvas;
        const r = c.getBoundingClientRect();
        return r.width > 50 && r.height > 50 ? c : null;""", 30)
    size = drv.execute_script("const r = arguments[0].getBoundingClientRect(); return [r.width, r.height];", canvas)
    assert prompts_value(drv)["points"] == []
    # 2. left click = object point at the canvas centre, right click = background point
    ActionChains(drv).move_to_element(canvas).click().perform()
    value = prompts_value(drv)
    assert len(value["points"]) == 1 and value["labels"] == [1]
    assert (value["width"], value["height"]) == (160, 72)  # the frame's pixels (272 * 160 / 640 = 68 -> 72)
    assert value["points"][0] == pytest.approx([80, 36], abs=3)  # the centre of the frame
    ActionChains(drv).move_to_element_with_offset(canvas, size[0] * 0.2, 0).context_click().perform()
    value = prompts_value(drv)
    assert value["labels"] == [1, 0] and value["points"][1][0] > value["points"][0][0]
    # 3. drag = box; Undo removes it again, then redo it
    def drag():
        (ActionChains(drv).move_to_element_with_offset(canvas, -size[0] * 0.3, -size[1] * 0.1).click_and_hold()
         .move_by_offset(20, 10).move_by_offset(int(size[0] * 0.3), int(size[1] * 0.1)).release().perform())
    drag()
    box = prompts_value(drv)["box"]
    assert box is not None and box[0] < box[2] and box[1] < box[3]
    undo = drv.execute_script(
        f"return [...app.graph.getNodeById({node_id}).ocdSamEditor.root.querySelectorAll('button')]"
        ".find(b => b.textContent === 'Undo')")
    undo.click()
    assert prompts_value(drv)["box"] is None and len(prompts_value(drv)["points"]) == 2
    drag()
    drv.save_screenshot(f"{SHOTS}_prompts.png")

    # 4. queue again: the mask comes back, in /history and on the node
    known = set(history_entries(server))
    drv.execute_script("app.queuePrompt(0, 1)")
    entry = wait_history(server, known)
    assert entry["status"]["status_str"] == "success", execution_error(entry)
    sent = entry["prompt"][2][str(node_id)]["inputs"]["prompts"]
    assert json.loads(sent) == prompts_value(drv)  # the widget value is what the server got
    output = entry["outputs"][str(node_id)]
    assert len(output["ocd_overlays"]) == 1 and len(output["ocd_frames"]) == 1
    browser.wait_for(drv, f"return app.graph.getNodeById({node_id}).ocdSamEditor.overlays.length === 1", 60)
    drv.save_screenshot(f"{SHOTS}_result.png")
    # the editor draws the overlay, not the raw frame, once a mask is back
    shown = drv.execute_script(f"const e = app.graph.getNodeById({node_id}).ocdSamEditor; "
                               "return e.currentImage() === e.overlays[0];")
    assert shown
