#!/usr/bin/env bash
# On the H200: the compression study (scripts/quality_study.sh) with the shipped model on the GPU,
# bf16 matrix work. The full-cache reference runs first; then one process per format runs its
# policies x budgets, side by side (the small model leaves the GPU and the CPUs mostly idle).
# Writes $OUT/quality/{study.csv,full/,<run>/metrics.json,<run>/frames_*.csv,<run>.log}; redraw
# the table and plots here with `bash scripts/quality_study.sh <that folder>` (every row is done).
# Usage: bash scripts/gpu_quality.sh [FRAMES] [SCENE]
set -uo pipefail
source "$(dirname "$0")/gpu_build.sh"
gpu_build streamrecon || exit 1
FRAMES=${1:-300}
SCENE=${2:-walk}
Q=$OUT/quality
export STREAMRECON_EXE=$PWD/build-gpu/app/streamrecon STUDY_ARGS="--dtype bfloat16"
t0=$(date +%s)
FULL_ONLY=1 bash scripts/quality_study.sh "$Q" "$FRAMES" "$SCENE" cuda > "$Q.full.log" 2>&1 \
  || { tail -5 "$Q.full.log"; exit 1; }
pids=()
for f in ${FORMATS:-bf16 kivi4 kivi2 oscar4 oscar2}; do
  mkdir -p "$Q-$f" && cp -r "$Q/full" "$Q-$f/" && head -2 "$Q/study.csv" > "$Q-$f/study.csv"
  FORMATS=$f bash scripts/quality_study.sh "$Q-$f" "$FRAMES" "$SCENE" cuda > "$Q-$f.log" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
for f in ${FORMATS:-bf16 kivi4 kivi2 oscar4 oscar2}; do
  tail -n +3 "$Q-$f/study.csv" >> "$Q/study.csv"
  (cd "$Q-$f" && for d in */; do [ "$d" = full/ ] || mv "$d" "${d%/}.log" "$Q/" 2>/dev/null; done)
  rm -rf "$Q-$f"
done
echo "quality study: $(( $(date +%s) - t0 )) s, $(( $(wc -l < "$Q/study.csv") - 2 )) configurations"
grep -h "\[study\]" "$Q"-*.log 2>/dev/null | sort | head -60
