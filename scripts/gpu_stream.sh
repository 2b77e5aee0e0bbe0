#!/usr/bin/env bash
# On the H200: builds `streamrecon` (GPU configuration) and runs `bench stream` with the 1B model
# (random weights) at 518x392; arguments are passed to `bench stream`. Results go to $OUT/stream.
set -uo pipefail
source "$(dirname "$0")/gpu_build.sh"
gpu_build streamrecon || exit 1
./build-gpu/app/streamrecon bench stream --random-weights --config streamvggt-1b --device cuda --dtype bfloat16 \
  --size 518 --out "$OUT/stream" "$@" 2>&1
