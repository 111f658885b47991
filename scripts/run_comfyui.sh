#!/usr/bin/env bash
# Starts ComfyUI (http://127.0.0.1:8188 unless OCD_PORT is set) with this pack loaded,
# building the host first if needed. Models, inputs and outputs live in
# $OCD_HOST_DIR/base (default .comfy/base): put your checkpoints in base/models/checkpoints.
# Extra arguments go to ComfyUI's main.py.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
host=${OCD_HOST_DIR:-$repo/.comfy}
bash "$repo/scripts/setup_host.sh"
host=$(cd "$host" && pwd)
base=$host/base
mkdir -p "$base"/{input,output,temp,custom_nodes,models/checkpoints,user/default}
ln -sfn "$repo" "$base/custom_nodes/comfyui-ocd"
# sample clips to try the example workflows with (copies: the input folder refuses symlinks out)
for clip in bikes.mp4 carphone_pristine.mp4; do
  [ -f "$base/input/$clip" ] || cp "$host/testdata/$clip" "$base/input/$clip"
done
settings=$base/user/default/comfy.settings.json
[ -f "$settings" ] || echo '{"Comfy.TutorialCompleted": true}' > "$settings"
device_args=(--cpu)
if "$host/venv/bin/python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  device_args=()
fi
cd "$host/ComfyUI"
exec "$host/venv/bin/python" main.py "${device_args[@]}" --listen 127.0.0.1 --port "${OCD_PORT:-8188}" \
  --disable-auto-launch --disable-api-nodes --base-directory "$base" \
  --database-url "sqlite:///$base/user/comfyui.db" "$@"
