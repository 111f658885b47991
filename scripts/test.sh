#!/usr/bin/env bash
# The whole test suite, from nothing: builds the host if needed, then runs unit,
# integration and end-to-end tests on the CPU. Extra arguments go to pytest.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
host=${OCD_HOST_DIR:-$repo/.comfy}
bash "$repo/scripts/setup_host.sh"
cd "$repo"
exec "$host/venv/bin/python" -m pytest -c "$repo/tests/pytest.ini" --rootdir "$repo/tests" "$@"
