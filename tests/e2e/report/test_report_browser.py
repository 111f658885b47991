"""The run report on the nodes in the real ComfyUI frontend (web/ocd_report.js), in headless
Chromium: queue a graph with Cross-Frame Attention, Token Merge and the Dual-Rate KSampler;
after the run each of the three shows its part of the report under itself (the sampler from
its own output, the patch nodes from the ``ocd.report`` message), and no node grew wider."""
from __future__ import annotations

import time

import pytest

from tests.e2e.conftest import MINI_CHECKPOINT
from tests.support import browser
from tests.support.server import execution_error

pytestmark = pytest.mark.e2e
SHOT = "/tmp/ocd_run_report.png"


def workflow() -> dict:
    return {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": MINI_CHECKPOINT}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red bicycle", "clip": ["ckpt", 1]}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["ckpt", 1]}},
        "load": {"class_type": "OCD_LoadVideo", "inputs": {
            "video": "bikes.mp4", "frame_load_cap": 2, "skip_first_frames": 0, "select_every_nth": 1,
            "force_rate": 0.0, "width": 128, "height": 0, "resize_mode": "crop"}},
        "encode": {"class_type": "VAEEncode", "inputs": {"pixels": ["load", 0], "vae": ["ckpt", 2]}},
        "mask": {"class_type": "OCD_AutoSaliency", "inputs": {
            "images": ["load", 0], "motion_weight": 0.7, "motion_source": "flow", "threshold": -1.0,
            "smooth_frames": 5, "working_size": 128}},
        "cross": {"class_type": "OCD_CrossFrameAttention", "inputs": {
            "model": ["ckpt", 0], "mode": "full", "window_size": 2}},
        "merge": {"class_type": "OCD_TokenMerge", "inputs": {
            "model": ["cross", 0], "merge_ratio": 0.5, "stride_x": 2, "stride_y": 2, "max_downsample": "1",
            "blocks": "input,middle,output", "foreground_protection": 1.0, "seed": 0, "pairing": "off",
            "mask": ["mask", 0]}},
        "sample": {"class_type": "OCD_DualRateKSampler", "inputs": {
            "model": ["merge", 0], "seed": 1, "steps": 2, "cfg": 5.0, "sampler_name": "euler",
            "scheduler": "normal", "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["encode", 0],
            "denoise": 1.0, "mask": ["mask", 0], "background_step_ratio": 4.0, "blend_point": 0.25,
            "crop_padding": 1, "blend": "feathered"}},
        "decode": {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": ["ckpt", 2]}},
        "preview": {"class_type": "PreviewImage", "inputs": {"images": ["decode", 0]}},
    }


@pytest.fixture(scope="module")
def driver(server, tmp_path_factory):
    reason = browser.unavailable_reason()
    if reason:
        print(f"SKIPPED browser test: {reason}")
        pytest.skip(reason)
    browser.skip_settings(server.base)
    profile = tmp_path_factory.mktemp("chromium-profile-report")
    drv = browser.start_chromium(profile)
    drv.set_script_timeout(60)
    yield drv
    drv.quit()
    browser.clean_profile(profile)


def report_text(drv, node_type: str) -> str | None:
    return drv.execute_script(f"""
        const n = app.graph.findNodesByType('{node_type}')[0];
        const w = n && n.widgets && n.widgets.find(w => w.name === 'ocd_run_report');
        return w && w.element ? w.element.textContent : null;""")


def test_every_patch_and_sampler_node_shows_its_part_of_the_report(server, driver):
    drv = driver
    drv.get(server.url)
    browser.wait_for(drv, "return !!(window.app && app.graph && app.extensionManager !== undefined)", 120)
    browser.wait_for(drv, "return app.extensions?.some?.(e => e.name === 'OCD.RunReport')", 60)
    drv.execute_script("return app.loadApiJson(arguments[0], 'ocd_report_test.json')", workflow())
    widths = browser.wait_for(drv, """
        const types = ['OCD_CrossFrameAttention', 'OCD_TokenMerge', 'OCD_DualRateKSampler'];
        const nodes = types.map(t => app.graph.findNodesByType(t)[0]);
        if (nodes.some(n => !n)) return null;
        return Object.fromEntries(types.map((t, i) => [t, nodes[i].size[0]]));""", 60)
    known = set(server.get("/history"))
    drv.execute_script("app.queuePrompt(0, 1)")
    deadline, entry = time.monotonic() + 400, None
    while entry is None and time.monotonic() < deadline:
        entry = next((e for pid, e in server.get("/history").items()
                      if pid not in known and e.get("status", {}).get("completed") is not None), None)
        time.sleep(0.5)
    assert entry is not None and entry["status"]["status_str"] == "success", execution_error(entry or {})

    sampler = browser.wait_for(drv, "return arguments[0]", 5, 0.25, report_text(drv, "OCD_DualRateKSampler"))
    assert "foreground:" in sampler and "UNet evaluations" in sampler and "dual_rate:" in sampler
    merge = browser.wait_for(drv, """
        const n = app.graph.findNodesByType('OCD_TokenMerge')[0];
        const w = n.widgets && n.widgets.find(w => w.name === 'ocd_run_report');
        return w && w.element.textContent;""", 30)
    assert "merged input.1.0" in merge and "unmerged" in merge and "merge_ratio: 0.5" in merge
    cross = report_text(drv, "OCD_CrossFrameAttention")
    assert cross and "mode: full" in cross and "kv_pool_tokens" in cross
    # the text is drawn: the element is visible, inside the node, with a real size (the three
    # nodes moved into the view first: the frontend hides DOM widgets of nodes out of view)
    drv.execute_script("""
        ['OCD_CrossFrameAttention', 'OCD_TokenMerge', 'OCD_DualRateKSampler'].forEach((t, i) => {
            app.graph.findNodesByType(t)[0].pos = [40 + 440 * i, 80]; });
        app.canvas.ds.scale = 1; app.canvas.ds.offset = [0, 0]; app.graph.setDirtyCanvas(true, true);""")
    time.sleep(1.0)
    drv.save_screenshot(SHOT)
    shown = drv.execute_script("""
        return [...document.querySelectorAll('.ocd-run-report')].map(e => {
            const r = e.getBoundingClientRect(); return [r.width, r.height, getComputedStyle(e).display]; });""")
    assert len(shown) == 3 and all(w > 20 and h > 10 and d != "none" for w, h, d in shown), shown
    after = drv.execute_script("""
        const types = ['OCD_CrossFrameAttention', 'OCD_TokenMerge', 'OCD_DualRateKSampler'];
        return Object.fromEntries(types.map(t => [t, app.graph.findNodesByType(t)[0].size[0]]));""")
    assert after == widths  # the report never widens a node
