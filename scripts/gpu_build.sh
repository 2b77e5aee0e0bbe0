# Sourced by the GPU scripts (gpu_run.sh, gpu_stream.sh, gpu_train.sh) on the device machine: the
# environment of the CUDA build and `gpu_build TARGET...`, which configures build-gpu/ once (CUDA
# LibTorch from the machine's torch, Debian's headers from the carried .deps/, no OpenCV, Open3D
# or viewer) and builds the targets, logging to $OUT/configure.log and $OUT/build.log.
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export PATH=/usr/local/cuda/bin:$PATH
DEPS=$PWD/.deps/usr
export LD_LIBRARY_PATH=$DEPS/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}

# One line of an `eval` run's ground-truth metrics: print_eval_metrics METRICS_JSON NAME.
print_eval_metrics() {
  python3 - "$1" "$2" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))["sequences"][0]
print("%-40s AbsRel %.4f delta1 %.4f ATE %.4f m (%.2f%% of path) NC %.3f" % (sys.argv[2], s["depth_l1"]["abs_rel"], s["depth_l1"]["delta_1"],
      s["pose"]["ate_rmse"], s["pose"].get("ate_percent_of_path") or 0, (s.get("cloud") or {}).get("nc", float("nan"))))
PY
}

gpu_build() {
  local t0 prefix
  t0=$(date +%s)
  if [ ! -f build-gpu/build.ninja ]; then
    prefix=$(python3 -c "import torch;print(torch.utils.cmake_prefix_path)")
    # Debian 12's pybind11 (2.10) predates Python 3.12, the device's Python: the Python module is
    # built there with PyPI's pybind11 when scripts/gpu_prepare.sh unpacked it into .deps.
    local pybind=""
    if [ -d "$PWD/.deps/pybind11-pypi/pybind11/share/cmake/pybind11" ] &&
       python3 -c "import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)"; then
      pybind="-Dpybind11_DIR=$PWD/.deps/pybind11-pypi/pybind11/share/cmake/pybind11"
    fi
    cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DSTREAMRECON_TORCH_CUDA=ON \
      -DCMAKE_PREFIX_PATH="$prefix;$DEPS" -DCMAKE_CUDA_ARCHITECTURES=90a \
      -DOPENSSL_ROOT_DIR="$DEPS" -DCMAKE_CXX_FLAGS="-isystem $DEPS/include/x86_64-linux-gnu" \
      -DSTREAMRECON_OPENCV=OFF -DSTREAMRECON_OPEN3D=OFF -DSTREAMRECON_VIEWER=OFF -DSTREAMRECON_BENCHMARKS=OFF \
      -DSTREAMRECON_SHARED_DIR="$PWD/.gpu_fixtures" $pybind > "$OUT/configure.log" 2>&1 || { tail -40 "$OUT/configure.log"; return 1; }
  fi
  cmake --build build-gpu -j "$(nproc)" --target "$@" > "$OUT/build.log" 2>&1 \
    || { grep -E "error|Error" "$OUT/build.log" | head -40; return 1; }
  echo "build: $(( $(date +%s) - t0 )) s"
}
