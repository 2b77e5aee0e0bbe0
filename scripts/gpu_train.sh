#!/usr/bin/env bash
# On the GPU device machine: builds `streamrecon` (CUDA configuration, unless build-gpu/ is already
# there), then trains the shipped model with `streamrecon train`, continuing from runs/NAME when a
# checkpoint is there (carried back from an earlier call, or left by one on the same machine).
# Usage: bash scripts/gpu_train.sh NAME [train options...]   (results in $OUT)
# Carry: .deps and .gpu_fixtures (scripts/gpu_prepare.sh) and runs/NAME when continuing.
set -uo pipefail
NAME=${1:?run name}
shift
source "$(dirname "$0")/gpu_build.sh"
{ nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total --format=csv; nproc; } > "$OUT/machine.txt" 2>&1
t0=$(date +%s)
# shellcheck disable=SC2086
gpu_build streamrecon ${GPU_TRAIN_EXTRA_TARGETS:-} || exit 1
if [ -n "${GPU_TRAIN_BEFORE:-}" ]; then bash -c "$GPU_TRAIN_BEFORE"; fi
RUN=runs/$NAME
mkdir -p "$RUN"
# A checkpoint carried back in pieces (the device returns files of at most 16 MiB): join them.
if ls "$RUN"/checkpoint.safetensors.part-* >/dev/null 2>&1; then
  cat "$RUN"/checkpoint.safetensors.part-* > "$RUN/checkpoint.safetensors" && rm -f "$RUN"/checkpoint.safetensors.part-*
fi
# Training gets what is left of GPU_TRAIN_SECONDS (default 540) after the build, less 40 s for the
# last evaluation, checkpoint and copies.
LEFT=$(( ${GPU_TRAIN_SECONDS:-540} - ($(date +%s) - t0) - 40 ))
echo "training for at most $LEFT s"
./build-gpu/app/streamrecon train --run "$RUN" --device cuda --time-limit "$LEFT" "$@" 2>&1 | tee "$OUT/train.log" | grep -vE "^\[.*step [0-9]+/[0-9]+ .*" | tail -5
grep -E "step [0-9]+/" "$OUT/train.log" | awk 'NR % 10 == 0' | tail -30
for f in log.csv eval.csv; do [ -f "$RUN/$f" ] && cp "$RUN/$f" "$OUT/"; done
split -b 15M -d "$RUN/checkpoint.safetensors" "$OUT/checkpoint.safetensors.part-"
if [ -n "${GPU_TRAIN_AFTER:-}" ]; then bash -c "$GPU_TRAIN_AFTER"; fi
ls -la "$OUT"
