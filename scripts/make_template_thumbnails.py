"""Writes example_workflows/<name>.jpg: the thumbnail ComfyUI's template browser shows beside
each template (``/api/workflow_templates/<pack>/<name>.jpg``), a picture of the graph as the
template opens in a 1600x900 window of the real frontend (headless Chromium).

Needs the host (scripts/setup_host.sh) and Debian's chromium + chromium-driver:

    .comfy/venv/bin/python scripts/make_template_thumbnails.py
"""
from __future__ import annotations

import io
import json
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO_ROOT))  # append: the repo's nodes/ must not shadow ComfyUI's nodes

THUMBNAIL = (480, 270)


def main() -> None:
    from PIL import Image

    from tests.conftest import make_base_directory
    from tests.support import browser
    from tests.support.server import ComfyServer

    reason = browser.unavailable_reason()
    if reason:
        raise SystemExit(f"cannot make thumbnails: {reason}")
    with tempfile.TemporaryDirectory() as tmp:
        base = make_base_directory(Path(tmp) / "base", {})
        browser.skip_settings(base)
        server = ComfyServer(base).start()
        driver = browser.start_chromium(Path(tmp) / "profile")
        try:
            driver.set_window_size(1600, 900)
            driver.set_window_size(1600, 900 + 900 - driver.execute_script("return window.innerHeight"))
            driver.get(server.url)
            browser.wait_for(driver, "return !!(window.app && app.graph && app.canvas)", 120)
            for path in sorted((REPO_ROOT / "example_workflows").glob("*.json")):
                driver.execute_script("return app.loadGraphData(arguments[0], true, true, arguments[1])",
                                      json.loads(path.read_text()), path.stem)
                time.sleep(1.5)
                left, top, right, bottom = driver.execute_script(
                    "const r = app.canvas.canvas.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom];")
                shot = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
                shot = shot.crop((int(left) + 60, int(top) + 40, int(right), int(bottom)))  # past the sidebar
                shot.thumbnail((THUMBNAIL[0] * 2, THUMBNAIL[1] * 2))
                canvas = Image.new("RGB", THUMBNAIL, (24, 24, 24))
                shot.thumbnail(THUMBNAIL)
                canvas.paste(shot, ((THUMBNAIL[0] - shot.width) // 2, (THUMBNAIL[1] - shot.height) // 2))
                out = path.with_suffix(".jpg")
                canvas.save(out, "JPEG", quality=82, optimize=True)
                print(f"{out.relative_to(REPO_ROOT)}: {out.stat().st_size // 1024} KiB")
        finally:
            driver.quit()
            server.stop()


if __name__ == "__main__":
    main()
