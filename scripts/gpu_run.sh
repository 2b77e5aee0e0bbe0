#!/usr/bin/env bash
# Builds the GPU targets on the H200 device machine and runs the GPU tests and the kernel benchmark.
# Expects (carried, git-ignored): .deps/ (Debian headers/libs: nlohmann-json, CLI11, spdlog, fmt,
# Eigen, GoogleTest) and .gpu_fixtures/fixtures/parity/ (the parity fixtures). Results go to $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
STEP=${1:-all}
export PATH=/usr/local/cuda/bin:$PATH
DEPS=$PWD/.deps/usr
export LD_LIBRARY_PATH=$DEPS/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
TORCH_PREFIX=$(python3 -c "import torch;print(torch.utils.cmake_prefix_path)")
{ nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv; git rev-parse HEAD 2>/dev/null; nproc; } | tee "$OUT/machine.txt"
t0=$(date +%s)
if [ ! -f build-gpu/build.ninja ]; then
  cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DSTREAMRECON_TORCH_CUDA=ON \
    -DCMAKE_PREFIX_PATH="$TORCH_PREFIX;$DEPS" -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DSTREAMRECON_OPENCV=OFF -DSTREAMRECON_OPEN3D=OFF -DSTREAMRECON_VIEWER=OFF -DSTREAMRECON_BENCHMARKS=OFF \
    -DSTREAMRECON_SHARED_DIR="$PWD/.gpu_fixtures" > "$OUT/configure.log" 2>&1 || { tail -40 "$OUT/configure.log"; exit 1; }
fi
cmake --build build-gpu -j "$(nproc)" --target test_gpu_kernels streamrecon_kernel_bench streamrecon > "$OUT/build.log" 2>&1 \
  || { grep -E "error|Error" "$OUT/build.log" | head -40; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"
if [ "$STEP" = all ] || [ "$STEP" = test ]; then
  ./build-gpu/tests/test_gpu_kernels 2>&1 | tee "$OUT/gpu_tests.log" | grep -E "^\[ (info|  FAILED|  PASSED|  SKIPPED) |Failure|error|Expected|actual|Which" | head -80
fi
if [ "$STEP" = all ] || [ "$STEP" = bench ]; then
  ./build-gpu/kernels/streamrecon_kernel_bench --json "$OUT/kernel_bench.json" 2>&1 | tee "$OUT/kernel_bench.log"
fi
