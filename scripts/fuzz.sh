#!/usr/bin/env bash
# `make fuzz` (part of `make test`): builds the libFuzzer targets with clang into build-fuzz/
# (coverage + AddressSanitizer + UndefinedBehaviorSanitizer) and runs each target. Any crash,
# sanitizer report, leak, timeout (>10 s per input) or input needing more than 2 GB fails the run;
# the input is kept in build-fuzz/findings/.
#
# Two modes:
#   bash scripts/fuzz.sh runs:N [TARGET...]  N inputs per target from the committed seeds only
#       (tests/fuzz/corpus/<target>/), with a fixed mutation seed: bounded by work rather than by
#       time, and repeatable up to libFuzzer's coverage feedback (which can differ slightly
#       between builds), so a commit's CI result does not hinge on machine speed (make test);
#   bash scripts/fuzz.sh SECONDS [TARGET...]  exploration: SECONDS per target, from the seeds plus
#       what earlier runs on this machine found (build-fuzz/corpus/<target>/), random seed.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
BUDGET=${1:-runs:20000}
shift || true
TARGETS=("$@")
((${#TARGETS[@]})) || TARGETS=(fuzz_safetensors fuzz_pth fuzz_config fuzz_dataset_text fuzz_sizes)
BUILD=build-fuzz

if [ ! -f "$BUILD/build.ninja" ]; then
  CC=clang CXX=clang++ cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSTREAMRECON_FUZZ=ON \
    -DSTREAMRECON_TESTS=OFF -DSTREAMRECON_BENCHMARKS=OFF -DSTREAMRECON_CUDA=OFF -DSTREAMRECON_VIEWER=OFF \
    -DSTREAMRECON_OPENCV=OFF -DSTREAMRECON_OPEN3D=OFF > /dev/null
fi
echo "[fuzz] building ${TARGETS[*]}"
# A failed build shows the linker's own lines too ("undefined reference", "final link failed: No
# space left on device", a killed process carry no "error:") and the disk's free space, then is
# tried once more on one core: CI's only failure of this step (stop 28) was two parallel links
# against LibTorch, which passed on every other machine, and its log kept none of the reasons.
build_fuzzers() {
  cmake --build "$BUILD" -j "$1" --target "${TARGETS[@]}" > "$BUILD/fuzz-build.log" 2>&1 && return 0
  echo "[fuzz] the build failed on $1 core(s) ($BUILD/fuzz-build.log):"
  grep -aE "error|undefined|ld(\.lld)?:|No space|Killed|signal" "$BUILD/fuzz-build.log" | head -30
  df -h "$BUILD" | sed 's/^/[fuzz] /'
  free -g 2>/dev/null | sed 's/^/[fuzz] /'
  return 1
}
build_fuzzers "$(nproc)" || build_fuzzers 1 || exit 1

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export LSAN_OPTIONS=suppressions=$ROOT/scripts/lsan.supp:print_suppressions=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export OMP_NUM_THREADS=1
mkdir -p "$BUILD/findings"
status=0
for t in "${TARGETS[@]}"; do
  name=${t#fuzz_}
  log="$BUILD/$t.${BUDGET/:/-}.log"
  if [[ $BUDGET == runs:* ]]; then
    # A scratch corpus seeded with the committed seeds only (new inputs land there, not in the repo).
    corpus="$BUILD/ci-corpus/$name"
    rm -rf "$corpus" && mkdir -p "$corpus" && cp "tests/fuzz/corpus/$name"/* "$corpus/"
    limits=(-runs="${BUDGET#runs:}" -seed=1)
    seeds=()
    label="${BUDGET#runs:} runs (seed 1)"
  else
    corpus="$BUILD/corpus/$name"
    mkdir -p "$corpus"
    limits=(-max_total_time="$BUDGET")
    seeds=("tests/fuzz/corpus/$name")  # read, never written: new inputs go to the first folder
    label="${BUDGET}s"
  fi
  start=$(date +%s)
  if "$BUILD/tests/fuzz/$t" "${limits[@]}" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=2048 \
       -max_len=65536 -print_final_stats=1 -artifact_prefix="$BUILD/findings/$t-" \
       "$corpus" "${seeds[@]}" > "$log" 2>&1; then
    runs=$(grep -aoE "stat::number_of_executed_units: *[0-9]+" "$log" | grep -oE "[0-9]+$" || echo "?")
    cov=$(grep -aE "^#[0-9]+[[:space:]]*DONE" "$log" | grep -aoE "cov: [0-9]+ ft: [0-9]+ corp: [0-9]+" || true)
    echo "[fuzz] $t: $label, $runs inputs in $(( $(date +%s) - start )) s, $cov, no findings"
  else
    echo "[fuzz] $t FAILED (input kept in $BUILD/findings/):"
    grep -aE "ERROR|runtime error|SUMMARY|Test unit written|==[0-9]+==" "$log" | head -20
    status=1
  fi
done
exit $status
