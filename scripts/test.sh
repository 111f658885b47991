#!/usr/bin/env bash
# The whole test suite, from nothing: builds the host if needed, then runs unit,
# integration and end-to-end tests on the CPU. Extra arguments go to pytest.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
host=${OCD_HOST_DIR:-$repo/.comfy}
bash "$repo/scripts/setup_host.sh"
cd "$repo"
# Collect from tests/ unless a test path was given: collecting the repository root would make
# pytest import its __init__.py, which is ComfyUI's entry point to this pack.
has_path=0
for arg in "$@"; do [ -e "${arg%%::*}" ] && has_path=1; done
[ "$has_path" = 1 ] || set -- "$@" "$repo/tests"
exec "$host/venv/bin/python" -m pytest -c "$repo/tests/pytest.ini" --rootdir "$repo/tests" "$@"
