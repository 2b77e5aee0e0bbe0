#!/usr/bin/env bash
# `make sanitize` (part of `make test`): builds the given test programs with AddressSanitizer +
# UndefinedBehaviorSanitizer into build-asan/ and test_pipeline with ThreadSanitizer into
# build-tsan/ (CPU only, no viewer or benchmarks), then runs them; any report fails the run.
# LeakSanitizer is on; libtorch's own start-up allocations are suppressed (scripts/lsan.supp).
# Usage: bash scripts/sanitize.sh JOBS TEST...
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
JOBS=${1:-2}
shift
TESTS=("$@")
common=(-G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSTREAMRECON_CUDA=OFF -DSTREAMRECON_VIEWER=OFF -DSTREAMRECON_BENCHMARKS=OFF)
[ -f build-asan/build.ninja ] || cmake -S . -B build-asan "${common[@]}" -DSTREAMRECON_SANITIZE=address,undefined > /dev/null
[ -f build-tsan/build.ninja ] || cmake -S . -B build-tsan "${common[@]}" -DSTREAMRECON_SANITIZE=thread > /dev/null
echo "[sanitize] building ${TESTS[*]} with ASan+UBSan and test_pipeline with TSan"
cmake --build build-asan -j "$JOBS" --target "${TESTS[@]}" > build-asan/sanitize-build.log 2>&1 || { grep -E "error" build-asan/sanitize-build.log | head -20; exit 1; }
cmake --build build-tsan -j "$JOBS" --target test_pipeline > build-tsan/sanitize-build.log 2>&1 || { grep -E "error" build-tsan/sanitize-build.log | head -20; exit 1; }
export OMP_NUM_THREADS=1
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1
export LSAN_OPTIONS=suppressions=$ROOT/scripts/lsan.supp:print_suppressions=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1
status=0
for t in "${TESTS[@]}"; do
  options=$ASAN_OPTIONS
  # OpenCV's camera enumeration (libusb, and a plugin it unloads) keeps its device lists for the
  # process's life: leak checks stay on everywhere but in the frame-source tests that open cameras.
  [ "$t" = test_datasets ] && options=${ASAN_OPTIONS/detect_leaks=1/detect_leaks=0}
  if ASAN_OPTIONS=$options build-asan/tests/"$t" --gtest_brief=1 > "build-asan/$t.log" 2>&1; then
    echo "[sanitize] ASan+UBSan $t: $(grep -E '^\[  PASSED  \]' "build-asan/$t.log" | head -1)"
  else
    echo "[sanitize] ASan+UBSan $t FAILED:"; grep -E "ERROR|runtime error|FAILED|Failure" -A8 "build-asan/$t.log" | head -40; status=1
  fi
done
if build-tsan/tests/test_pipeline --gtest_brief=1 > build-tsan/test_pipeline.log 2>&1; then
  echo "[sanitize] TSan test_pipeline: $(grep -E '^\[  PASSED  \]' build-tsan/test_pipeline.log | head -1)"
else
  echo "[sanitize] TSan test_pipeline FAILED:"; grep -E "WARNING|FAILED|Failure" -A12 build-tsan/test_pipeline.log | head -40; status=1
fi
exit $status
