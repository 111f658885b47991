"""``python -m ocd``: the templates run headless through ComfyUI's executor, in a process of
their own as a user runs them (random weights: a smoke run)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import comfy_host

REPO_ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def ocd(*args, timeout=600):
    env = {"OCD_HOST_DIR": str(comfy_host.host_dir()), "PATH": "/usr/bin:/bin", "HOME": str(Path.home())}
    return subprocess.run([sys.executable, "-m", "ocd", *args], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("pipeline, preset, evaluations", [("inversion", "ocd", 2 + 5), ("control", "vanilla", 2)])
def test_edit_runs_the_template_and_reports_the_run(tmp_path, test_videos, pipeline, preset, evaluations):
    from ocd.video.codec import probe_video

    out, report = tmp_path / "edited.mp4", tmp_path / "report.json"
    done = ocd("edit", str(test_videos["bikes.mp4"]), "--prompt", "a robot riding a bicycle", "--source-prompt",
               "a man riding a bicycle", "--pipeline", pipeline, "--preset", preset, "--random-weights",
               "--frames", "2", "--size", "128", "--steps", "2", "--out", str(out), "--report", str(report))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "the output is NOT an edit" in done.stderr  # said loudly
    assert "model evaluations" in done.stdout
    info = probe_video(str(out))
    assert (info.frame_count, info.width) == (2, 128)
    data = json.loads(report.read_text())
    assert data["seconds"] > 0 and data["peak_memory_mib"] > 0
    # inversion ocd: 2 inversion steps + the dual-rate edit (the crop's inversion 2, foreground 1,
    # background 1, joint 1); control vanilla: core's KSampler, 2 steps, reported by its patch
    assert data["unet_evaluations"] == evaluations
    nodes = {s["name"] for run in data["runs"] for s in run["nodes"].values()}
    assert "Cross-Frame Attention (OCD)" in nodes


def test_edit_with_feature_reuse_puts_the_node_after_the_checkpoint_and_reuses_the_steps_between(
        tmp_path, test_videos):
    """``--feature-reuse 2`` with 3 steps: step 0 and the last run fully, step 1 reuses; the
    template's own nodes all sample the reusing model (its report counts their evaluations)."""
    report = tmp_path / "report.json"
    done = ocd("edit", str(test_videos["bikes.mp4"]), "--prompt", "a robot riding a bicycle", "--pipeline",
               "control", "--preset", "vanilla", "--random-weights", "--frames", "2", "--size", "128",
               "--steps", "3", "--feature-reuse", "2", "--out", str(tmp_path / "edited.mp4"),
               "--report", str(report))
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads(report.read_text())
    reuse = [s["facts"] for run in data["runs"] for s in run["nodes"].values() if s["name"] == "Feature Reuse (OCD)"]
    assert len(reuse) == 1, data
    assert reuse[0]["reused_steps"] == [1]
    assert reuse[0]["reused_evaluations"] + reuse[0]["full_evaluations"] == data["unet_evaluations"] == 3


@pytest.mark.parametrize("args, message", [
    (["missing.mp4", "--prompt", "x", "--random-weights"], "video missing.mp4 not found"),
    (["{bikes}", "--prompt", "x", "--random-weights", "--size", "100"], "--size 100: must be a multiple of 8"),
    (["{bikes}", "--prompt", "x", "--pipeline", "control", "--preset", "optimized", "--random-weights"],
     "the control pipeline has vanilla, ocd"),
    (["{bikes}", "--prompt", "x"], "--checkpoint FILE is needed"),
    (["{bikes}", "--prompt", "x", "--pipeline", "wan"], "--diffusion-model FILE is needed"),
    (["{bikes}", "--prompt", "x", "--pipeline", "wan", "--random-weights", "--frames", "8"],
     "holds 4k+1 frames: give --frames 5 or 9, or --fit-frames cut"),
    (["{bikes}", "--prompt", "x", "--pipeline", "wan", "--random-weights", "--feature-reuse", "2"],
     "on Wan use --preset easycache"),
    (["{bikes}", "--prompt", "x", "--checkpoint", "nothing.safetensors"], "checkpoint nothing.safetensors not found"),
])
def test_bad_arguments_are_one_line_errors_before_any_model_loads(test_videos, args, message):
    args = [a.replace("{bikes}", str(test_videos["bikes.mp4"])) for a in args]
    done = ocd("edit", *args, timeout=120)
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, done.stderr[-2000:]


def test_bench_runs_the_presets_side_by_side(test_videos):
    """A smoke run of ``bench`` (mini random UNet, 2 frames at 64 px, 2 steps): every preset runs in one
    process and gets its row, timed against vanilla and compared with its frames."""
    done = ocd("bench", "--pipeline", "control", "--video", str(test_videos["bikes.mp4"]), "--random-weights",
               "--mini", "--frames", "2", "--size", "64", "--steps", "3", "--feature-reuse", "2", "--no-write",
               timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| vanilla") or line.startswith("| ocd")]
    assert len(rows) == 3, done.stdout
    vanilla, ocd_row, reuse_row = ([c.strip() for c in row.strip("|").split("|")] for row in rows)
    assert reuse_row[0] == "ocd + feature reuse (clock 2)" and reuse_row[2].endswith("x")
    # the ocd preset again with the reusing model: the middle one of 3 steps reused
    assert "against ocd:" in done.stdout and "of which 1 on reused steps" in done.stdout, done.stdout
    assert vanilla[2] == "1.00x" and vanilla[9] == "ref." and ocd_row[2].endswith("x")
    assert int(vanilla[3]) > 0 and int(ocd_row[3]) > 0  # UNet evaluations counted for both presets
    assert int(vanilla[5]) == 3 and float(vanilla[6]) > float(reuse_row[6])  # network calls; reuse runs fewer tokens
    assert float(ocd_row[9]) > 0  # PSNR in the object against vanilla


def test_wan_edit_keeps_the_sound_and_reports_the_ocd_nodes(tmp_path, test_videos):
    """``--pipeline wan --random-weights`` (a small random Wan, its VAE, the test text node for
    umt5-xxl) on a clip with sound: an mp4 of the loaded frames with the source's sound, the OCD
    preset's merge and object-token steps in the report."""
    from ocd.video.codec import probe_video
    from tests.support.media import decode_mono

    out, report = tmp_path / "wan.mp4", tmp_path / "report.json"
    done = ocd("edit", str(test_videos["bigbuckbunny.mp4"]), "--prompt", "a red rabbit", "--pipeline", "wan",
               "--preset", "ocd", "--random-weights", "--frames", "9", "--size", "256", "--steps", "6",
               "--out", str(out), "--report", str(report))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "the output is NOT an edit" in done.stderr
    info = probe_video(str(out))
    assert (info.frame_count, info.width) == (9, 256)
    sound, rate = decode_mono(out)
    assert abs(len(sound) / rate - 9 / 25.0) < 0.03 and abs(sound).max() > 0.01  # the source's sound, not silence
    data = json.loads(report.read_text())
    names = {s["name"]: s for run in data["runs"] for s in run["nodes"].values()}
    assert names["Dual-Rate KSampler (OCD)"]["facts"]["dual_rate"]["object_token_steps"]
    assert names["Object-Centric Token Merge (OCD)"]["merged_layers"]


@pytest.mark.parametrize("fit, saved", [("cut", 5), ("pad", 8)])
def test_wan_frames_that_are_not_4k_plus_1_are_cut_or_padded_as_asked(tmp_path, test_videos, fit, saved):
    from ocd.video.codec import probe_video

    out = tmp_path / f"{fit}.mp4"
    done = ocd("edit", str(test_videos["bikes.mp4"]), "--prompt", "x", "--pipeline", "wan", "--preset", "vanilla",
               "--random-weights", "--frames", "8", "--fit-frames", fit, "--size", "128", "--steps", "2",
               "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    assert ("editing the first 5" if fit == "cut" else "editing 9 (the last frame repeated 1 times)") in done.stderr
    assert probe_video(str(out)).frame_count == saved


def test_bench_runs_the_wan_presets_side_by_side(test_videos):
    done = ocd("bench", "--pipeline", "wan", "--video", str(test_videos["bikes.mp4"]), "--random-weights", "--mini",
               "--frames", "5", "--size", "256", "--steps", "8", "--no-write", timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {line.strip("|").split("|")[0].strip(): [c.strip() for c in line.strip("|").split("|")]
            for line in done.stdout.splitlines() if line.startswith("| ")}
    assert {"vanilla", "easycache", "ocd", "ocd+easycache"} <= set(rows), done.stdout
    assert rows["vanilla"][2] == "1.00x" and float(rows["ocd"][9]) > 0  # PSNR in the object against vanilla
    # network calls (cond and uncond batched: one per step) and the tokens their blocks ran
    assert int(rows["vanilla"][5]) == int(rows["ocd"][5]) == 8
    assert float(rows["ocd"][6]) < float(rows["vanilla"][6])
