"""Headless Chromium (Debian's /usr/bin/chromium + /usr/bin/chromedriver) through Selenium,
for tests of the pack's frontend extensions against the real ComfyUI frontend."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1400,1000",
)


def unavailable_reason() -> str | None:
    """Why no browser test can run here, or None if it can."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if missing:
        return (f"{' and '.join(missing)} not installed (scripts/setup_host.sh installs Debian's chromium "
                "and chromium-driver with apt; it could not here)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed in the host venv (requirements-test.txt)"
    return None


def skip_settings(base: Path) -> None:
    """Skip the first-run templates dialog: ``Comfy.TutorialCompleted`` in the default user's
    settings, written only if the server has no settings file yet (the server is shared)."""
    settings = Path(base) / "user" / "default" / "comfy.settings.json"
    if not settings.exists():
        settings.parent.mkdir(parents=True, exist_ok=True)
        settings.write_text(json.dumps({"Comfy.TutorialCompleted": True}))


def start_chromium(user_data_dir: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={user_data_dir}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def wait_for(driver, script: str, timeout: float = 60.0, interval: float = 0.25, *args):
    """Poll a JS expression (``return ...``) until it is truthy; returns its value."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = driver.execute_script(script, *args)
        if last:
            return last
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout} s waiting for: {script} (last value {last!r})")


def console_log(driver) -> str:
    try:
        return "\n".join(e["message"] for e in driver.get_log("browser"))
    except Exception:  # not every driver keeps a log
        return ""


def clean_profile(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def session(base: Path, profile: Path):
    """A headless Chromium for the server whose base directory is ``base`` (first-run dialog
    skipped), with a fresh profile; skips the test, saying why, where none can run."""
    import pytest

    reason = unavailable_reason()
    if reason:
        print(f"SKIPPED browser test: {reason}")
        pytest.skip(reason)
    skip_settings(base)
    driver = start_chromium(profile)
    driver.set_script_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        clean_profile(profile)
