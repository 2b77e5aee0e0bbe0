#!/usr/bin/env bash
# Shows that the strengthened tests catch what they guard: for each planted fault in
# tests/planted_faults/*.patch (a header names the build target and the test command), applies it,
# rebuilds the target in BUILD_DIR, runs the test, which must FAIL, then reverts the patch and
# rebuilds. Prints one line per fault and the failing assertions; exits 1 if a fault went
# unnoticed. Run from a clean tree (it refuses otherwise, so that no fault can be left behind).
# Usage: bash scripts/planted_faults.sh [BUILD_DIR] [NAME...]     (default: build, every fault but gpu_*)
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
BUILD=${1:-build}
shift || true
NAMES=("$@")
if ((${#NAMES[@]} == 0)); then
  for p in tests/planted_faults/*.patch; do
    n=$(basename "$p" .patch)
    [[ $n == gpu_* ]] || NAMES+=("$n")
  done
fi
git diff --quiet -- core models app datasets kernels viewer || { echo "planted_faults: the tree has changes in the sources; commit or stash them first" >&2; exit 2; }
status=0
for n in "${NAMES[@]}"; do
  patch=tests/planted_faults/$n.patch
  target=$(sed -n 's/^# target: //p' "$patch")
  test=$(sed -n 's/^# test: //p' "$patch")
  git apply "$patch" || { echo "[$n] does not apply"; status=1; continue; }
  trap 'git apply -R "$patch"' EXIT
  if ! cmake --build "$BUILD" --target "$target" > "$BUILD/planted-$n.build.log" 2>&1; then
    echo "[$n] the build failed (see $BUILD/planted-$n.build.log)"; status=1
  else
    (cd "$BUILD" && OMP_NUM_THREADS=1 eval "$test") > "$BUILD/planted-$n.log" 2>&1
    rc=$?
    if [ $rc -ne 0 ]; then
      echo "[$n] caught: '$test' failed (exit $rc):"
      grep -E "Failure|Expected|Which is|FAIL |error:|actual|  [A-Za-z_]+ *=|^\[  FAILED  \]" "$BUILD/planted-$n.log" | grep -v -e "listed below" -e "-- PASS" | head -12 | sed 's/^/    /'
    else
      echo "[$n] NOT caught: '$test' passed with the fault in place"; status=1
    fi
  fi
  git apply -R "$patch"
  trap - EXIT
done
echo "[planted] rebuilding the unpatched targets"
cmake --build "$BUILD" > /dev/null 2>&1 || { echo "rebuild failed"; status=1; }
exit $status
