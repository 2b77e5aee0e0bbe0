#!/usr/bin/env bash
# On the H200: builds `streamrecon` (GPU configuration) and runs `bench stream` with the 1B model
# (random weights) at 518x392; arguments are passed to `bench stream`. Results go to $OUT/stream.
set -uo pipefail
OUT=${OUT:-/tmp/out}
export PATH=/usr/local/cuda/bin:$PATH
DEPS=$PWD/.deps/usr
export LD_LIBRARY_PATH=$DEPS/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
TORCH_PREFIX=$(python3 -c "import torch;print(torch.utils.cmake_prefix_path)")
if [ ! -f build-gpu/build.ninja ]; then
  cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DSTREAMRECON_TORCH_CUDA=ON \
    -DCMAKE_PREFIX_PATH="$TORCH_PREFIX;$DEPS" -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DSTREAMRECON_OPENCV=OFF -DSTREAMRECON_OPEN3D=OFF -DSTREAMRECON_VIEWER=OFF \
    -DSTREAMRECON_SHARED_DIR="$PWD/.gpu_fixtures" > "$OUT/configure.log" 2>&1 || { tail -40 "$OUT/configure.log"; exit 1; }
fi
cmake --build build-gpu -j "$(nproc)" --target streamrecon > "$OUT/build.log" 2>&1 || { grep -E "error" "$OUT/build.log" | head -40; exit 1; }
./build-gpu/app/streamrecon bench stream --random-weights --config streamvggt-1b --device cuda --dtype bfloat16 \
  --size 518 --out "$OUT/stream" "$@" 2>&1
