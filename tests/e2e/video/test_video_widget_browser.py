"""The "loaded" info on Load Video (OCD) (web/ocd_video.js) in the real ComfyUI frontend, in
headless Chromium: after a run the node shows the text the server sent, in full, on screen
(read back from the DOM and seen in a screenshot), without getting wider than it was; and
the text is still there after switching to another workflow tab and back."""
from __future__ import annotations

import io
import json

import pytest

from tests.support import browser
from tests.support.server import execution_error

pytestmark = pytest.mark.e2e
SHOTS = "/tmp/ocd_video_widget"
NODE_WIDTH = 320  # the width the issue saw grow to 424 px after a run
WORKFLOW = "ocd_video_widget_test"


def workflow() -> dict:
    return {
        "1": {"class_type": "OCD_LoadVideo", "inputs": {
            "video": "bikes.mp4", "frame_load_cap": 6, "skip_first_frames": 10, "select_every_nth": 2,
            "force_rate": 0.0, "width": 128, "height": 0, "resize_mode": "crop"}},
        "2": {"class_type": "OCD_SaveVideo", "inputs": {
            "images": ["1", 0], "frame_rate": 8.0, "filename_prefix": "OCD/widget", "format": "mp4",
            "crf": 30, "save_output": False, "audio": ["1", 3], "video_info": ["1", 2]}},
    }


@pytest.fixture(scope="module")
def driver(server, tmp_path_factory):
    with browser.session(server.base, tmp_path_factory.mktemp("chromium-profile-video")) as drv:
        yield drv


SHOWN = """
const n = app.graph.findNodesByType('OCD_LoadVideo')[0];
const w = n && n.widgets?.find(w => w.name === 'loaded');
if (!w || !w.element || !w.element.isConnected) return null;
const r = w.element.getBoundingClientRect();
const c = app.canvas.canvas.getBoundingClientRect(), ds = app.canvas.ds;
// the node's box on screen (title bar included), from its graph position
const title = LiteGraph.NODE_TITLE_HEIGHT;
const box = {left: c.left + (n.pos[0] + ds.offset[0]) * ds.scale, top: c.top + (n.pos[1] - title + ds.offset[1]) * ds.scale,
             right: c.left + (n.pos[0] + n.size[0] + ds.offset[0]) * ds.scale,
             bottom: c.top + (n.pos[1] + n.size[1] + ds.offset[1]) * ds.scale};
const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
return {text: w.element.textContent, width: n.size[0], rect: [r.left, r.top, r.right, r.bottom],
        node: [box.left, box.top, box.right, box.bottom], onTop: !!hit && w.element.contains(hit),
        scrolls: w.element.scrollHeight > w.element.clientHeight + 1,
        visible: getComputedStyle(w.element.parentElement).display !== 'none' && r.width > 0 && r.height > 0};
"""


def shown(drv, expected: str) -> dict:
    """Wait until the widget shows ``expected``; its state on screen."""
    return browser.wait_for(drv, f"const s = (() => {{{SHOWN}}})(); return s && s.text === {json.dumps(expected)} "
                                 "&& s.visible ? s : null;", 60)


def text_pixels(drv, rect, name: str) -> int:
    """Pixels of the widget's box in a screenshot that are much brighter than its background:
    the drawn text (light glyphs on the dark box). Saves the screenshot for a person to look at."""
    from PIL import Image

    png = drv.get_screenshot_as_png()
    with open(f"{SHOTS}_{name}.png", "wb") as f:
        f.write(png)
    image = Image.open(io.BytesIO(png)).convert("L")
    ratio = image.width / drv.execute_script("return window.innerWidth")  # device pixels per CSS pixel
    left, top, right, bottom = (round(v * ratio) for v in rect)
    crop = image.crop((left + 2, top + 2, right - 2, bottom - 2))
    background = sorted(crop.getdata())[len(crop.getdata()) // 2]  # the median: the box itself
    return sum(1 for v in crop.getdata() if v > background + 80)


def test_the_loaded_info_shows_its_text_keeps_the_width_and_survives_a_tab_switch(server, driver):
    from selenium.webdriver.common.by import By

    drv = driver
    drv.get(server.url)
    browser.wait_for(drv, "return !!(window.app && app.graph && app.extensionManager !== undefined)", 120)
    browser.wait_for(drv, "return app.extensions?.some?.(e => e.name === 'OCD.Video')", 60)
    drv.execute_script("return app.loadApiJson(arguments[0], arguments[1] + '.json')", workflow(), WORKFLOW)
    browser.wait_for(drv, f"""
        const n = app.graph.findNodesByType('OCD_LoadVideo')[0];
        if (!n) return null;
        n.pos = [120, 140]; n.setSize([{NODE_WIDTH}, n.size[1]]);
        const s = app.graph.findNodesByType('OCD_SaveVideo')[0];
        s.pos = [120 + {NODE_WIDTH} + 20, 140];  // the neighbour the old widget grew over
        app.canvas.ds.scale = 1; app.canvas.ds.offset = [0, 0];
        app.graph.setDirtyCanvas(true, true);
        return n.id;""", 60)
    neighbour_left = drv.execute_script("return app.graph.findNodesByType('OCD_SaveVideo')[0].pos[0]")

    known = set(server.get("/history"))
    drv.execute_script("app.queuePrompt(0, 1)")
    entry = server.wait_new_entry(known, 300)
    assert entry["status"]["status_str"] == "success", execution_error(entry)
    (expected,) = [o["text"][0] for o in entry["outputs"].values() if "text" in o]
    assert "6 frames at 12.5 fps, 128x56" in expected and "no sound track" in expected

    after_run = shown(drv, expected)
    assert after_run["width"] == NODE_WIDTH  # the node kept its width ...
    left, top, right, bottom = after_run["rect"]
    assert right <= after_run["node"][2] + 1 and bottom <= after_run["node"][3] + 1  # ... and holds the text
    assert drv.execute_script("const n = app.graph.findNodesByType('OCD_LoadVideo')[0]; "
                              "return n.pos[0] + n.size[0]") < neighbour_left  # not over its neighbour
    assert after_run["onTop"] and not after_run["scrolls"]  # nothing covers it, nothing cut off
    lit = text_pixels(drv, after_run["rect"], "after_run")
    assert lit > 200, f"only {lit} text pixels in the widget's box: is the text drawn?"

    # another tab, then back to this one: the frontend rebuilds the nodes from the saved graph
    drv.execute_script("return app.extensionManager.command.execute('Comfy.NewBlankWorkflow')")
    browser.wait_for(drv, "return app.graph.nodes.length === 0", 30)
    tab = [b for b in drv.find_elements(By.CSS_SELECTOR, ".workflow-tabs .p-togglebutton") if WORKFLOW in b.text]
    assert tab, "the workflow's tab is not in the tab bar"
    tab[0].click()
    browser.wait_for(drv, "return app.graph.findNodesByType('OCD_LoadVideo').length === 1", 30)
    after_switch = shown(drv, expected)
    assert after_switch["width"] == NODE_WIDTH and after_switch["onTop"] and not after_switch["scrolls"]
    assert text_pixels(drv, after_switch["rect"], "after_tab_switch") > 200


PARSE = """
const [url, name, type, done] = [arguments[0], arguments[1], arguments[2], arguments[arguments.length - 1]];
fetch(url).then(r => r.blob())
  .then(blob => window.comfyAPI.parser.getWorkflowDataFromFile(new File([blob], name, {type})))
  .then(data => done({workflow: data?.workflow ?? null, prompt: data?.prompt ?? null}))
  .catch(e => done({error: String(e)}));
"""


@pytest.mark.parametrize("fmt, mime", [("mp4", "video/mp4"), ("webm", "video/webm")])
def test_the_frontend_restores_the_workflow_from_the_saved_video(server, driver, fmt, mime):
    """What ComfyUI does with a video dropped on the canvas: its own parser reads the
    workflow back out of the file Save Video (OCD) wrote."""
    drv = driver
    drv.get(server.url)
    browser.wait_for(drv, "return !!(window.app && app.graph && window.comfyAPI?.parser?.getWorkflowDataFromFile)", 120)
    api_prompt = workflow()
    api_prompt["2"]["inputs"].update(format=fmt, filename_prefix=f"OCD/restore_{fmt}")
    drv.execute_script("return app.loadApiJson(arguments[0], arguments[1])", api_prompt, f"restore_{fmt}.json")
    browser.wait_for(drv, "return app.graph.findNodesByType('OCD_SaveVideo').length === 1", 30)
    known = set(server.get("/history"))
    drv.execute_script("app.queuePrompt(0, 1)")
    entry = server.wait_new_entry(known, 300)
    assert entry["status"]["status_str"] == "success", execution_error(entry)
    (item,) = entry["outputs"]["2"]["images"]
    url = f"/view?filename={item['filename']}&subfolder={item['subfolder']}&type={item['type']}"
    data = drv.execute_async_script(PARSE, url, item["filename"], mime)
    assert "error" not in data, data
    workflow_back = data["workflow"] if isinstance(data["workflow"], dict) else json.loads(data["workflow"])
    assert sorted(n["type"] for n in workflow_back["nodes"]) == ["OCD_LoadVideo", "OCD_SaveVideo"]
    prompt_back = data["prompt"] if isinstance(data["prompt"], dict) else json.loads(data["prompt"])
    assert prompt_back["2"]["inputs"]["format"] == fmt
