#!/usr/bin/env bash
# Builds the GPU targets on the H200 device machine and runs the GPU tests and the kernel benchmark.
# Expects (carried, git-ignored): .deps/ (Debian headers/libs: nlohmann-json, CLI11, spdlog, fmt,
# Eigen, GoogleTest) and .gpu_fixtures/fixtures/parity/ (the parity fixtures). Results go to $OUT.
set -uo pipefail
STEP=${1:-all}
source "$(dirname "$0")/gpu_build.sh"
{ nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv; git rev-parse HEAD 2>/dev/null; nproc; } | tee "$OUT/machine.txt"
if [ "$STEP" = python ]; then gpu_build streamrecon || exit 1
else gpu_build test_gpu_kernels test_kv_contract streamrecon_kernel_bench streamrecon || exit 1; fi
if [ "$STEP" = all ] || [ "$STEP" = test ]; then
  # Into files first, then the summary: a `| head` behind tee would end the tests early (SIGPIPE)
  # once their info lines outnumber its count.
  ./build-gpu/tests/test_kv_contract > "$OUT/kv_contract.log" 2>&1
  grep -E "^\[ (info|  FAILED|  PASSED|  SKIPPED) |Failure|Expected|actual|Which" "$OUT/kv_contract.log" | head -60
  ./build-gpu/tests/test_gpu_kernels > "$OUT/gpu_tests.log" 2>&1
  grep -E "^\[  (FAILED|PASSED|SKIPPED) |Failure|error|Expected|actual|Which" "$OUT/gpu_tests.log" | head -80
fi
if [ "$STEP" = all ] || [ "$STEP" = test ] || [ "$STEP" = python ]; then
  # The Python module (configured when pybind11 from .deps and the Python headers were found): its
  # pytest suite, CUDA half included, and the overhead of push() against the C++ step.
  if grep -q "streamrecon_python" build-gpu/build.ninja 2>/dev/null && cmake --build build-gpu --target streamrecon_python >> "$OUT/build.log" 2>&1; then
    export PYTHONPATH=$PWD/build-gpu/python:$PWD/.deps/python STREAMRECON_SHARED_DIR=${GPU_SHARED:-$PWD/.gpu_fixtures} STREAMRECON_EXE=$PWD/build-gpu/app/streamrecon
    python3 -m pytest -q -rs -p no:cacheprovider tests/python 2>&1 | tee "$OUT/python_tests.log" | tail -15
    python3 scripts/python_overhead.py --device cuda --frames 60 2>&1 | tee "$OUT/python_overhead.log"
    python3 scripts/python_overhead.py --device cuda --frames 60 --random-seed 0 --config streamvggt-1b --size 518 --dtype bfloat16 --cuda-graphs \
      --kv-budget 2GB 2>&1 | tee "$OUT/python_overhead_1b.log"
  else
    echo "python: the module is not configured or did not build (configure.log, build.log)"; grep -i python "$OUT/configure.log" | head
  fi
fi
if [ "$STEP" = all ] || [ "$STEP" = bench ]; then
  ./build-gpu/kernels/streamrecon_kernel_bench --json "$OUT/kernel_bench.json" 2>&1 | tee "$OUT/kernel_bench.log"
fi
