"""Shared plumbing for benchmark scripts: machine description and docs/BENCHMARKS.md sections.

Each benchmark owns one section of docs/BENCHMARKS.md, delimited by
``<!-- BEGIN name -->`` / ``<!-- END name -->``, and rewrites only that section, so several
benchmarks can be re-run independently.
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
import shlex
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS_MD = REPO_ROOT / "docs" / "BENCHMARKS.md"


def machine_description(device: str = "cpu") -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    text = f"{os.cpu_count()} CPU cores ({cpu}), torch {torch.__version__}"
    try:
        import psutil

        text += f", {psutil.virtual_memory().total / 1024**3:.0f} GiB RAM"
    except ImportError:
        pass
    if device.startswith("cuda") and torch.cuda.is_available():
        text = f"{torch.cuda.get_device_name(0)}; " + text
    return text


def command_line() -> str:
    """The command that reproduces the current run, relative to the repository."""
    script = os.path.relpath(sys.argv[0], REPO_ROOT)
    return " ".join(["python", shlex.quote(script), *map(shlex.quote, sys.argv[1:])])


def today() -> str:
    return _dt.date.today().isoformat()


def markdown_table(header: list[str], rows: list[list]) -> str:
    def cell(v):
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_section(name: str, body: str, path: Path = BENCHMARKS_MD) -> None:
    """Replace (or append) the section ``name`` of docs/BENCHMARKS.md with ``body``."""
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"{begin}\n{body.strip()}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    tmp = path.with_suffix(".md.partial")
    tmp.write_text(text)
    tmp.replace(path)
