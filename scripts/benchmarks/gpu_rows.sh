#!/usr/bin/env bash
# The GPU rows of `python -m ocd bench`, every pipeline, in one go: each pipeline's presets side
# by side (its section of rows, as docs/BENCHMARKS.md shows them, and its plot) and one log,
# all under one output folder. docs/ is never written: copy the rows there by hand once read.
#
#   bash scripts/benchmarks/gpu_rows.sh [--device cuda|cpu] [--tiny] [--out DIR]
#
#   --device  cuda (default) or cpu
#   --tiny    the smallest sizes that still run every pipeline and preset (a check that the
#             script works, 1-3 minutes on a 2-core CPU: tests/e2e/test_gpu_rows.py)
#   --out     the output folder (new or empty); default: a fresh .comfy/gpu_rows/<date>-<device>-XXXX
#
# Writes DIR/inversion.md, DIR/control.md, DIR/wan.md, DIR/wan_inversion.md (each under a temporary name first, renamed
# when its command has succeeded), their plots (DIR/e2e-*.png), the clips they ran on
# (DIR/clips/) and DIR/gpu_rows.log: the machine (nvidia-smi, torch and CUDA, CPU, memory), the
# date, the commit, and every command line with all it printed and its time. Stops at the first
# command that fails (non-zero exit).
#
# Full sizes (random weights at the real architectures; 'x' is frames x height x width):
# - inversion: SD1.5, 8 x 512x512, --steps 20, and the ocd preset again with --feature-reuse 3.
#   20 is the optimized and OCD templates' own count. Vanilla FateZero's own DDIM 50+50 does not
#   fit: its float32 attention record (40 recorded steps of the 32x32 layers, sparse-causal) would
#   be about 85 GiB on the GPU at this size (499 MiB measured at 4 x 56x128, times 2 frames x
#   (1024 / 112 tokens)^2), more than an 80 GB H100 holds beside the models; at 20 steps, about
#   35 GiB. So the vanilla row here runs DDIM 20+20: its speed-up column measures OCD's own parts,
#   not the step count (50 -> 20) the templates also change.
# - control: SD1.5 + ControlNet, 8 x 512x512, each template's own 50 steps, + --feature-reuse 3.
# - wan: Wan 2.1 1.3B's width at its 30 blocks (--depth 30), 33 x 480x832 (9 latent frames of
#   30x52 tokens: 14,040 tokens), each template's own 30 steps (denoise 0.7, CFG 6).
# - wan_inversion: the same model and clip, the Wan inversion templates (inversion up the flow to
#   0.8, then the edit; vanilla: Edit From Inversion, ocd: object merge + the dual-rate edit) at
#   --steps 20 (their own 30 would add ~1 min: 30 inversion calls + 30 CFG edit steps per row).
# The clips are bikes.mp4 cropped to those sizes (`bench --size` sets the width, the clip's
# aspect the height). Time on one H100, estimated (not measured: no GPU has been lent to this
# project's sessions yet), per pipeline = ComfyUI's start (~15 s) + its random models, built on the
# CPU (measured on 2 cores: SD1.5 32 s, its ControlNet 7 s, the 1.3B Wan 41 s; less on a GPU
# machine's 16) + each preset's one-step warm-up and timed run:
#   inversion ~1.5 min: 4 rows x (20 inversion + 20 CFG edit steps of a batch of 8 frames)
#   control   ~2 min:   3 rows x 50 CFG steps of UNet + ControlNet on 16 latents, full cross-frame
#                       attention over 8 x 4,096 tokens (~35 TFLOP a step)
#   wan       ~2.5 min: 4 rows, vanilla 30 steps of ~140 TFLOP (CFG batched), the others fewer tokens
#                       or steps; VAE (small random one), saliency and saving a few s per row
#   wan_inversion ~1.5 min: 2 rows, vanilla 20 inversion calls (no CFG) + 20 CFG edit steps, ocd fewer
# about 7.5 minutes in all, under 8. The log has every command's time: if a run goes over, lower the
# wan steps first (its largest share: add `--steps 20`, the CPU rows' count, to its command below).
#
# Tiny sizes (--tiny): --mini random models, SD1.5 2 x 64x64, Wan 5 x 64x64 (the smallest 4k+1
# above 1), 2 steps, the same commands otherwise.
#
# The host's python runs the commands ($OCD_HOST_DIR/venv, default .comfy/venv, built by
# scripts/setup_host.sh with CPU torch: for --device cuda install a CUDA build of torch there, or
# point OCD_BENCH_PYTHON at a python with CUDA torch and ComfyUI's requirements).
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
host=${OCD_HOST_DIR:-$repo/.comfy}
python=${OCD_BENCH_PYTHON:-$host/venv/bin/python}

usage() { sed -n '5,12p' "$0" | sed 's/^# \{0,1\}//'; }
device=cuda tiny=0 out=
while [ $# -gt 0 ]; do
  case $1 in
    --device) device=${2:-}; shift 2 || { echo "error: --device needs cuda or cpu" >&2; exit 2; } ;;
    --tiny) tiny=1; shift ;;
    --out) out=${2:-}; shift 2 || { echo "error: --out needs a folder" >&2; exit 2; } ;;
    -h|--help) usage; exit 0 ;;
    *) echo "error: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done
case $device in cuda|cpu) ;; *) echo "error: --device $device: cuda or cpu" >&2; exit 2 ;; esac
[ -x "$python" ] || { echo "error: no python at $python: run bash scripts/setup_host.sh" >&2; exit 2; }
if [ "$device" = cuda ] && ! "$python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "error: --device cuda: the torch of $python sees no GPU (install a CUDA build there, or --device cpu)" >&2
  exit 2
fi

if [ -z "$out" ]; then
  mkdir -p "$repo/.comfy/gpu_rows"
  out=$(mktemp -d "$repo/.comfy/gpu_rows/$(date +%Y%m%d-%H%M%S)-$device$([ "$tiny" = 1 ] && echo -tiny)-XXXX")
elif [ -e "$out" ] && [ -n "$(ls -A "$out")" ]; then
  echo "error: --out $out is not empty" >&2
  exit 2
fi
mkdir -p "$out/clips"
out=$(cd "$out" && pwd)
log=$out/gpu_rows.log
: > "$log"

finish() {
  local status=$?
  rm -f "$out"/.*.partial*
  if [ "$status" = 0 ]; then
    echo "gpu_rows: done in $SECONDS s; rows, plots and log in $out" | tee -a "$log"
  else
    echo "gpu_rows: FAILED (exit $status) after $SECONDS s; the log: $log" | tee -a "$log" >&2
  fi
}
trap finish EXIT

say() { echo "$*" | tee -a "$log"; }
run() {  # the command line, everything it prints and its time go to the log (and the terminal)
  local start=$SECONDS
  { printf '\n$'; printf ' %q' "$@"; printf '\n'; } | tee -a "$log"
  "$@" 2>&1 | tee -a "$log"
  say "(exit 0, $((SECONDS - start)) s)"
}

if [ "$tiny" = 1 ]; then
  sd=(2 64 64) wan=(5 64 64)  # frames, height, width
  models=(--random-weights --mini) wan_models=(--random-weights --mini)
  inversion_steps=(--steps 2) template_steps=(--steps 2) wan_inversion_steps=(--steps 2)
else
  sd=(8 512 512) wan=(33 480 832)
  models=(--random-weights) wan_models=(--random-weights --depth 30)
  inversion_steps=(--steps 20) template_steps=() wan_inversion_steps=(--steps 20)
fi
comfyui=()
[ -f "$host/ComfyUI/main.py" ] && comfyui=(--comfyui "$host/ComfyUI")
source_clip=$host/testdata/bikes.mp4

say "# scripts/benchmarks/gpu_rows.sh $([ "$tiny" = 1 ] && echo --tiny) (device: $device)"
say "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
changes=$(GIT_OPTIONAL_LOCKS=0 git -C "$repo" status --porcelain --untracked-files=no 2>/dev/null || true)
say "commit: $(git -C "$repo" rev-parse HEAD 2>/dev/null || echo unknown)${changes:+ (with uncommitted changes)}"
say "device: $device"
say "sizes (frames x height x width): inversion and control ${sd[0]} x ${sd[1]}x${sd[2]}, wan ${wan[0]} x ${wan[1]}x${wan[2]}"
say "cpu: $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ //') ($(nproc) cores)"
say "memory: $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo 2>/dev/null)"
if command -v nvidia-smi > /dev/null; then
  run nvidia-smi
else
  say "nvidia-smi: not found"
fi
cd "$repo"
run "$python" -c "import platform, torch
print('python', platform.python_version(), '| torch', torch.__version__, '| CUDA', torch.version.cuda,
      '| cuDNN', torch.backends.cudnn.version(), '| GPU available:', torch.cuda.is_available())
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f'GPU {i}: {p.name}, {p.total_memory / 2**30:.0f} GiB')"

clip() {  # clip PATH FRAMES HEIGHT WIDTH: the first FRAMES frames of bikes.mp4 cropped to HEIGHTxWIDTH
  [ -f "$1" ] || run "$python" -c "import sys
from ocd.video import codec
src, dst, frames, height, width = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])
info = codec.probe_video(src)
images = codec.decode_frames(src, codec.select_frames(info, frame_load_cap=frames), (width, height), 'crop')
codec.encode_video(codec.to_uint8_frames(images), dst, info.fps)" "$source_clip" "$@"
}

bench() {  # bench PIPELINE ARGS...: its rows into $out/PIPELINE.md, under a temporary name until done
  local pipeline=$1 partial=$out/.$1.md.partial
  shift
  printf '# %s rows of the %s pipeline\n\nWritten by scripts/benchmarks/gpu_rows.sh; everything the command printed: gpu_rows.log.\n' \
    "$device" "$pipeline" > "$partial"
  run "$python" -m ocd bench --pipeline "$pipeline" --device "$device" "$@" ${comfyui[@]+"${comfyui[@]}"} \
    --write "$partial"
  sed -i 's# --comfyui [^ `]*##; s# --write [^ `]*##' "$partial"  # the rows' command as a user types it
  mv "$partial" "$out/$pipeline.md"
}

sd_clip=$out/clips/bikes-${sd[0]}x${sd[1]}x${sd[2]}.mp4
wan_clip=$out/clips/bikes-${wan[0]}x${wan[1]}x${wan[2]}.mp4
clip "$sd_clip" "${sd[@]}"
clip "$wan_clip" "${wan[@]}"
bench inversion --video "$sd_clip" "${models[@]}" --frames "${sd[0]}" --size "${sd[2]}" "${inversion_steps[@]}" \
  --feature-reuse 3
bench control --video "$sd_clip" "${models[@]}" --frames "${sd[0]}" --size "${sd[2]}" \
  ${template_steps[@]+"${template_steps[@]}"} --feature-reuse 3
bench wan --video "$wan_clip" "${wan_models[@]}" --frames "${wan[0]}" --size "${wan[2]}" \
  ${template_steps[@]+"${template_steps[@]}"}
bench wan_inversion --video "$wan_clip" "${wan_models[@]}" --frames "${wan[0]}" --size "${wan[2]}" \
  "${wan_inversion_steps[@]}"
