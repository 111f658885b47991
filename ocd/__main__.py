"""``python -m ocd``: ``edit`` (ocd/comfy_cli.py; long clips window by window, ocd/comfy_windows.py)
and ``bench`` (ocd/comfy_bench.py).

The commands' modules depend one way (bench uses edit's pieces); this entry point is the only
module that knows both.
"""
import argparse
import sys

from . import comfy_bench, comfy_cli, comfy_windows
from .errors import OCDInputError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ocd", description="OCD video editing without the browser.")
    sub = p.add_subparsers(dest="command", required=True)
    comfy_cli.add_parser(sub)
    comfy_bench.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    a = parser().parse_args(argv)
    a.argv = argv[1:]
    try:
        if a.command == "bench":
            return comfy_bench.main(a)
        report = comfy_windows.edit(a)
    except (comfy_cli.UsageError, OCDInputError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"done in {report['seconds']:.1f} s, {report['unet_evaluations']} model evaluations, "
          f"peak memory {report['peak_memory_mib']:.0f} MiB" + (f": {report['output']}" if "output" in report else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
