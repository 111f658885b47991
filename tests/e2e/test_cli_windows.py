"""``python -m ocd edit`` on a clip longer than a window: window by window in a process of its
own (random weights), the clip assembled with its sound, resumable after a kill, the output
there whole or not at all."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.e2e.test_cli import REPO_ROOT, ocd
from tests.support import comfy_host
from tests.support.media import correlation_at_best_lag, decode_mono

pytestmark = pytest.mark.e2e
FPS = 25.0
# the inversion pipeline (attention and merge records) on 14 frames of bigbuckbunny (sound):
# windows 0-6, 5-10 and 8-13 (the last two with the anchor frame 0 in front), 2 steps at 64 px
INVERSION = ["--prompt", "a robot rabbit", "--source-prompt", "a rabbit", "--pipeline", "inversion", "--preset",
             "ocd", "--random-weights", "--frames", "14", "--size", "64", "--steps", "2", "--window", "6",
             "--overlap", "2"]


def frames_of(path: Path) -> np.ndarray:
    from ocd.video import codec

    info = codec.probe_video(str(path))
    return codec.to_uint8_frames(codec.decode_frames(str(path), codec.select_frames(info), (info.width, info.height)))


def parts_of(out: Path) -> Path:
    return out.parent / f".{out.name}.ocd-parts"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, test_videos):
    """The windowed edit run once without interruption: (output, report, stderr)."""
    folder = tmp_path_factory.mktemp("windows")
    out, report = folder / "whole-run.mp4", folder / "report.json"
    done = ocd("edit", str(test_videos["bigbuckbunny.mp4"]), *INVERSION, "--out", str(out), "--report", str(report))
    assert done.returncode == 0, done.stderr[-3000:]
    return out, json.loads(report.read_text()), done.stderr


def test_a_long_clip_is_edited_window_by_window_with_its_sound_in_sync(uninterrupted, test_videos):
    out, report, stderr = uninterrupted
    assert [w["frames"] for w in report["windows"]] == [[0, 7], [5, 11], [8, 14]]
    assert [w["anchors"] for w in report["windows"]] == [0, 1, 1]
    for n in (1, 2, 3):  # progress per window
        assert f"window {n}/3" in stderr
    assert frames_of(out).shape == (14, 40, 64, 3)  # 64 px wide, 16:9
    assert not parts_of(out).exists()  # the parts are gone once the clip is written
    # the sound of the 14 frames, written in three pieces, in sync with the source's
    saved, rate = decode_mono(out)
    source, _ = decode_mono(test_videos["bigbuckbunny.mp4"])
    lag, corr = correlation_at_best_lag(source[:len(saved)], saved, 2400)
    assert abs(lag) <= 48 and corr > 0.9, (lag, corr)
    assert abs(len(saved) / rate - 14 / FPS) < 0.06


def test_every_window_holds_records_of_one_window_not_of_the_clip(uninterrupted):
    """The inversion's attention record (and every other record) is per window: the same size in
    every window of the same frame count, the run report says so."""
    _, report, _ = uninterrupted
    sizes = [w["records_mib"] for w in report["windows"]]
    attention = [s["Invert Latents (OCD): attention_record"] for s in sizes]
    assert attention[0] > 0 and len(set(attention)) == 1, sizes  # every window edits 7 frames
    assert all(w["peak_memory_mib"] > 0 and w["seconds"] > 0 for w in report["windows"])


def test_a_killed_run_resumes_to_the_same_clip_and_the_output_appears_only_when_complete(
        tmp_path, test_videos, uninterrupted):
    out = tmp_path / "resumed.mp4"
    args = [sys.executable, "-m", "ocd", "edit", str(test_videos["bigbuckbunny.mp4"]), *INVERSION, "--out", str(out)]
    env = {"OCD_HOST_DIR": str(comfy_host.host_dir()), "PATH": "/usr/bin:/bin", "HOME": str(Path.home())}
    process = subprocess.Popen(args, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    manifest = parts_of(out) / "manifest.json"
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if manifest.is_file() and json.loads(manifest.read_text())["done"]:
                break
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    done_before = json.loads(manifest.read_text())["done"]
    assert 1 <= len(done_before) < 3
    assert not out.exists() and not list(tmp_path.glob(".ocd-partial*"))  # nothing half-written

    again = ocd("edit", str(test_videos["bigbuckbunny.mp4"]), *INVERSION, "--out", str(out), timeout=120)
    assert again.returncode == 2 and "add --resume to continue it" in again.stderr, again.stderr[-2000:]
    other = ocd("edit", str(test_videos["bigbuckbunny.mp4"]), *INVERSION, "--seed", "7", "--out", str(out),
                "--resume", timeout=120)
    assert other.returncode == 2 and "belong to another edit (different graph)" in other.stderr, other.stderr[-2000:]

    resumed = ocd("edit", str(test_videos["bigbuckbunny.mp4"]), *INVERSION, "--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "window 1/3 (frames 0-6): done in an earlier run" in resumed.stderr
    reference, _, _ = uninterrupted
    np.testing.assert_array_equal(frames_of(out), frames_of(reference))
    assert decode_mono(out)[0].shape == decode_mono(reference)[0].shape


def test_a_wan_clip_of_any_length_is_edited_in_windows_of_4k_plus_1_frames(tmp_path, test_videos):
    """22 frames (not 4k+1) in Wan windows of 8 + the anchor = 9 frames each (4k+1): no cut, no padding."""
    out, report = tmp_path / "wan.mp4", tmp_path / "report.json"
    done = ocd("edit", str(test_videos["bikes.mp4"]), "--prompt", "x", "--pipeline", "wan", "--preset", "ocd",
               "--random-weights", "--frames", "22", "--size", "128", "--steps", "2", "--window", "8",
               "--overlap", "4", "--out", str(out), "--report", str(report))
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads(report.read_text())
    assert [w["frames"] for w in data["windows"]] == [[0, 9], [5, 13], [9, 17], [13, 21], [14, 22]]
    assert frames_of(out).shape[0] == 22
    bad = ocd("edit", str(test_videos["bikes.mp4"]), "--prompt", "x", "--pipeline", "wan", "--random-weights",
              "--frames", "22", "--window", "9", timeout=120)
    assert bad.returncode == 2 and "a window edits 10 frames" in bad.stderr and "--window 8" in bad.stderr


def test_anchors_make_windows_agree_where_independent_windows_leave_seams(tmp_path, test_videos):
    """The seam metric of ``bench`` on bigbuckbunny, FateZero's inversion edit (vanilla preset:
    sparse-causal cross-frame attention, every frame attends to the first): with the anchor
    frame, two windows' edits of the frames they share agree far better than those of
    independent windows (each its own first frame), and the clip's consecutive frames at the
    seams are no less consistent than inside the windows."""
    rows = {}
    for anchors in (1, 0):
        out = tmp_path / f"rows{anchors}.json"
        done = ocd("bench", "--pipeline", "inversion", "--presets", "vanilla", "--video",
                   str(test_videos["bigbuckbunny.mp4"]), "--random-weights", "--mini", "--frames", "20", "--size",
                   "64", "--steps", "3", "--window", "6", "--overlap", "2", "--anchors", str(anchors), "--no-write",
                   "--json", str(out), timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
        (rows[anchors],) = json.loads(out.read_text())
        assert rows[anchors]["windows"] == 5
        assert "warping at seams / inside" in done.stdout  # the seam columns of the bench table
    anchored, independent = rows[1], rows[0]
    assert anchored["overlap_disagreement"] < 0.6 * independent["overlap_disagreement"], (anchored, independent)
    assert anchored["seam_ratio"] < independent["seam_ratio"], (anchored, independent)
