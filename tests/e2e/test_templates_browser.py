"""Every template opened in the real frontend (headless Chromium, a 1600x900 window): the saved
view shows the whole graph at a zoom where the frontend draws text, no node under the sidebar,
no two nodes overlapping. Screenshots land in /tmp/ocd_templates."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.support import browser

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((REPO_ROOT / "example_workflows").glob("*.json"))
pytestmark = pytest.mark.e2e
SHOTS = Path("/tmp/ocd_templates")

# node rectangles on the screen, title bar included, as the frontend laid them out
RECTS = """
const canvas = app.canvas, ds = canvas.ds, box = canvas.canvas.getBoundingClientRect();
const title = (window.LiteGraph && LiteGraph.NODE_TITLE_HEIGHT) || 30;
return app.graph._nodes.map(n => {
    const [x, y] = [(n.pos[0] + ds.offset[0]) * ds.scale + box.left, (n.pos[1] - title + ds.offset[1]) * ds.scale + box.top];
    return {id: n.id, type: n.type, x0: x, y0: y, x1: x + n.size[0] * ds.scale, y1: y + (n.size[1] + title) * ds.scale};
});"""

SIDEBAR = """
const bar = document.querySelector('.side-tool-bar-container, .side-bar, nav');
const r = bar ? bar.getBoundingClientRect() : {right: 0};
return r.right;"""


@pytest.fixture(scope="module")
def driver(server, tmp_path_factory):
    reason = browser.unavailable_reason()
    if reason:
        print(f"SKIPPED browser test: {reason}")
        pytest.skip(reason)
    browser.skip_settings(server.base)
    profile = tmp_path_factory.mktemp("chromium-profile-templates")
    drv = browser.start_chromium(profile)
    drv.set_window_size(1600, 900)
    chrome = 900 - drv.execute_script("return window.innerHeight")
    drv.set_window_size(1600, 900 + chrome)  # the page itself gets 1600x900
    drv.set_script_timeout(60)
    drv.get(server.url)
    browser.wait_for(drv, "return !!(window.app && app.graph && app.canvas && app.extensionManager !== undefined)", 120)
    yield drv
    drv.quit()
    browser.clean_profile(profile)


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_the_template_opens_readable_in_a_1600x900_window(driver, path):
    drv = driver
    drv.execute_script("return app.loadGraphData(arguments[0], true, true, arguments[1])",
                       json.loads(path.read_text()), path.stem)
    time.sleep(1.5)  # layout and the DOM widgets
    rects = drv.execute_script(RECTS)
    width, height = drv.execute_script("return [window.innerWidth, window.innerHeight]")
    sidebar = drv.execute_script(SIDEBAR)
    SHOTS.mkdir(exist_ok=True)
    drv.save_screenshot(str(SHOTS / f"{path.stem}.png"))
    assert len(rects) == len(json.loads(path.read_text())["nodes"])
    # the frontend draws node text only above a zoom of 0.6 (low-quality rendering below)
    assert drv.execute_script("return app.canvas.ds.scale") >= 0.6
    for r in rects:
        where = f"{r['type']} #{r['id']} at {r['x0']:.0f},{r['y0']:.0f} .. {r['x1']:.0f},{r['y1']:.0f}"
        assert r["x0"] >= sidebar and r["y0"] >= 0, f"{where}: under the sidebar ({sidebar:.0f}) or above the view"
        assert r["x1"] <= width and r["y1"] <= height, f"{where}: outside the {width}x{height} window"
    for i, a in enumerate(rects):
        for b in rects[i + 1:]:
            overlap = a["x0"] < b["x1"] and b["x0"] < a["x1"] and a["y0"] < b["y1"] and b["y0"] < a["y1"]
            assert not overlap, f"{a['type']} #{a['id']} overlaps {b['type']} #{b['id']}"
