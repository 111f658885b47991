"""Long clips in bounded memory (issue 21): each pipeline's OCD preset on 8, 16, 32 and 128
frames (Wan 9, 17, 33, 129), window by window as ``python -m ocd edit`` runs a clip longer than
a window, and the longest once more as one whole-clip run; time per frame, peak memory, the records a window holds and how
the windows join (the seam metric of ``python -m ocd bench``).

Every row is one ``python -m ocd bench --presets ocd`` in a process of its own (so one row's
memory never counts in another's), run one after the other; the section "Long clips" of
docs/BENCHMARKS.md is rewritten (``--no-write``: print only). Run it alone on the machine.

    python scripts/benchmarks/long_clips.py [--pipelines inversion,control,wan,wan_inversion]
        [--frames 8,16,32,128] [--size 128] [--steps 8] [--video FILE] [--no-write]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import report  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def bench_row(pipeline: str, frames: int, window: int | None, a) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rows.json"
        command = [sys.executable, "-m", "ocd", "bench", "--pipeline", pipeline, "--presets", "ocd",
                   "--random-weights", "--mini", "--frames", str(frames), "--size", str(a.size), "--steps",
                   str(a.steps), "--video", a.video, "--no-write", "--json", str(out)]
        if window is not None:
            command += ["--window", str(window)]
        print("$ python -m ocd " + " ".join(command[3:]), flush=True)
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=os.environ.copy())
        if done.returncode:
            raise SystemExit(f"failed: {done.stderr[-3000:]}")
        (row,) = json.loads(out.read_text())
        row["command"] = " ".join(command[3:])
        return row


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--pipelines", default="inversion,control,wan,wan_inversion")
    p.add_argument("--frames", default="8,16,32,128")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--video", default=str(REPO / ".comfy" / "testdata" / "bigbuckbunny.mp4"))
    p.add_argument("--no-write", action="store_true")
    a = p.parse_args()
    rows = []
    for pipeline in a.pipelines.split(","):
        results = {}
        # a Wan clip that fits one window is edited whole: 4k+1 frames (9, 17, 33, 129)
        wan = pipeline.startswith("wan")
        lengths = [f + 1 if wan and f % 4 == 0 else f for f in [int(f) for f in a.frames.split(",")]]
        for frames in lengths:  # the default windows (16 frames; Wan 32): a clip that fits one runs whole
            results[frames, "windows"] = bench_row(pipeline, frames, None, a)
        longest = max(lengths)
        results[longest, "whole clip"] = bench_row(pipeline, longest, 0, a)
        base = results[sorted(lengths)[1 if len(lengths) > 1 else 0], "windows"]  # 16 (Wan 17) frames
        for (frames, mode), r in results.items():
            per_frame = r["seconds"] / frames
            run = mode if r["windows"] > 1 or mode == "whole clip" else "whole clip (fits a window)"
            rows.append([pipeline, frames, run, r["windows"],
                         f"{r['seconds']:.1f}", f"{per_frame:.2f}", f"{per_frame / (base['seconds'] / base['frames']):.2f}x",
                         f"{r['peak_mib']:.0f}", f"{r['peak_mib'] / base['peak_mib']:.2f}x", f"{r['records_mib']:.1f}",
                         f"{r['overlap_disagreement']:.4f}" if "overlap_disagreement" in r else "-",
                         f"{r['seam_warping']:.4f} / {r['inside_warping']:.4f} ({r['seam_ratio']:.2f}x)"
                         if "seam_warping" in r else "-"])
        print(report.markdown_table(HEADER, rows[-len(results):]), flush=True)
    body = (f"## Long clips: windows in bounded memory (cpu, {a.size} px)\n\n"
            f"- command: `python scripts/benchmarks/long_clips.py {' '.join(sys.argv[1:])}` (each row: "
            f"`python -m ocd bench --pipeline P --presets ocd --random-weights --mini --frames F --size {a.size} "
            f"--steps {a.steps}` in a process of its own; `--window 0` for the whole-clip rows)\n"
            f"- machine: {report.machine_description('cpu')}\n- date: {report.today()}\n"
            f"- the OCD preset of each pipeline, random weights (mini SD1.5 UNet; a small Wan), the clip "
            f"{Path(a.video).name}; default windows: 16 frames (Wan 32) + 1 anchor, overlap 2 (Wan 4); the clip's "
            f"object mask made once by the template's Auto Saliency; wall time after a one-step warm-up (the "
            f"clip's mask, every window, assembling and writing the clip with its sound included); peak memory "
            f"above what was resident before the run (RSS high-water mark); ratios against the 16-frame row (Wan: 17, its clips that fit one window being 4k+1: 9, 17, 33, 129); "
            f"windows' disagreement: mean |difference| of two windows' edits of the frames they share (0..1); "
            f"seams: flow-warping error of consecutive frames at window boundaries / inside windows\n\n"
            + report.markdown_table(HEADER, rows) + "\n")
    print(body)
    if not a.no_write:
        report.write_section("long-clips", body)
    return 0


HEADER = ["pipeline", "frames", "run", "windows", "wall s", "s per frame", "per frame vs 16", "peak memory MiB",
          "peak vs 16", "records per window MiB", "windows' disagreement on shared frames",
          "warping at seams / inside"]

if __name__ == "__main__":
    sys.exit(main())
