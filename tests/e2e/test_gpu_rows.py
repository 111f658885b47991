"""scripts/benchmarks/gpu_rows.sh, the GPU rows of ``python -m ocd bench`` for every pipeline,
run at its tiny sizes on the CPU (mini random models, 2-5 frames of 64 px, 2 steps) so that it
cannot rot: its rows and its log land in the output folder, never in docs/."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ocd.pipelines import PIPELINES
from tests.support import comfy_host

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "benchmarks" / "gpu_rows.sh"
pytestmark = pytest.mark.e2e


def _docs_files() -> dict[str, bytes]:
    """docs/BENCHMARKS.md and the plots of docs/benchmarks/, by path."""
    paths = [REPO_ROOT / "docs" / "BENCHMARKS.md", *sorted((REPO_ROOT / "docs" / "benchmarks").glob("*"))]
    return {str(p.relative_to(REPO_ROOT)): p.read_bytes() for p in paths if p.is_file()}


def _table_rows(markdown: str) -> dict[str, list[str]]:
    """The cells of each table row, by its first cell (the preset)."""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in markdown.splitlines()
            if line.startswith("| ")]
    return {cells[0]: cells for cells in rows}


def test_gpu_rows_script_writes_every_pipelines_rows_and_a_log_and_leaves_docs_alone(tmp_path):
    docs_before = _docs_files()
    env = {"OCD_HOST_DIR": str(comfy_host.host_dir()), "PATH": "/usr/bin:/bin", "HOME": str(Path.home())}
    done = subprocess.run(["bash", str(SCRIPT), "--device", "cpu", "--tiny", "--out", str(tmp_path)], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert str(tmp_path) in done.stdout.strip().splitlines()[-1]  # says where the folder is, at the end
    assert _docs_files() == docs_before  # docs/BENCHMARKS.md (bytes) and its plots untouched

    log = (tmp_path / "gpu_rows.log").read_text()
    assert "device: cpu" in log and "date: " in log and "torch" in log
    for name, pipeline in PIPELINES.items():
        rows_file = tmp_path / f"{name}.md"
        assert rows_file.is_file(), sorted(p.name for p in tmp_path.iterdir())
        text = rows_file.read_text()
        assert f"## End to end: the {name} pipeline's presets (cpu, " in text
        assert f"python -m ocd bench --pipeline {name} --device cpu" in text and "partial" not in text
        rows = _table_rows(text)
        for preset in pipeline.presets:  # a row for every preset, with its time and evaluations
            assert preset in rows, (name, preset, text)
            assert float(rows[preset][1]) > 0 and rows[preset][2].endswith("x"), rows[preset]
        assert rows[pipeline.baseline][2] == "1.00x"
        # the command that made them, in the log with what it printed
        assert f"-m ocd bench --pipeline {name} --device cpu" in log
        assert f"{name}/{pipeline.baseline}: " in log
        assert list(tmp_path.glob(f"e2e-{name}-cpu-*.png")), "its plot goes beside the rows"
    assert not [p.name for p in tmp_path.iterdir() if "partial" in p.name]  # nothing half-written left
