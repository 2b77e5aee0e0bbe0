#!/usr/bin/env bash
# On the GPU device machine: builds `streamrecon` (CUDA configuration, unless build-gpu/ is already
# there), then trains the shipped model with `streamrecon train`, continuing from runs/NAME when a
# checkpoint is there (carried back from an earlier call, or left by one on the same machine).
# Usage: bash scripts/gpu_train.sh NAME [train options...]   (results in $OUT)
# Carry: .deps and .gpu_fixtures (scripts/gpu_prepare.sh) and runs/NAME when continuing.
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
NAME=${1:?run name}
shift
export PATH=/usr/local/cuda/bin:$PATH
DEPS=$PWD/.deps/usr
export LD_LIBRARY_PATH=$DEPS/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
TORCH_PREFIX=$(python3 -c "import torch;print(torch.utils.cmake_prefix_path)")
{ nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total --format=csv; nproc; } > "$OUT/machine.txt" 2>&1
t0=$(date +%s)
if [ ! -f build-gpu/build.ninja ]; then
  cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DSTREAMRECON_TORCH_CUDA=ON \
    -DCMAKE_PREFIX_PATH="$TORCH_PREFIX;$DEPS" -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DSTREAMRECON_OPENCV=OFF -DSTREAMRECON_OPEN3D=OFF -DSTREAMRECON_VIEWER=OFF -DSTREAMRECON_BENCHMARKS=OFF \
    -DSTREAMRECON_SHARED_DIR="$PWD/.gpu_fixtures" > "$OUT/configure.log" 2>&1 || { tail -40 "$OUT/configure.log"; exit 1; }
fi
cmake --build build-gpu -j "$(nproc)" --target streamrecon ${GPU_TRAIN_EXTRA_TARGETS:-} > "$OUT/build.log" 2>&1 \
  || { grep -E "error|Error" "$OUT/build.log" | head -40; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"
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
