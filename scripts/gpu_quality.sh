#!/usr/bin/env bash
# On the H200: the compression study (scripts/quality_study.sh) with the shipped model on the GPU,
# bf16 matrix work. The full-cache reference runs first (or is taken from FULL_FROM, a folder
# holding an earlier full/metrics.json); then every configuration (policy x format x budget) runs
# in its own process, JOBS at a time (default 25: the small model leaves the GPU mostly idle and
# each process is mostly its CPU side). POLICIES, FORMATS and FRACTIONS narrow the grid as in
# quality_study.sh. Writes $OUT/quality/{study.csv,full/,<run>/,<run>.log}; redraw the table and
# plots here with `bash scripts/quality_study.sh <that folder>` once every row is there.
# Usage: bash scripts/gpu_quality.sh [FRAMES] [SCENE]
set -uo pipefail
source "$(dirname "$0")/gpu_build.sh"
gpu_build streamrecon || exit 1
FRAMES=${1:-300}
SCENE=${2:-walk}
Q=$OUT/quality
mkdir -p "$Q"
export STREAMRECON_EXE=$PWD/build-gpu/app/streamrecon STUDY_ARGS="--dtype bfloat16"
t0=$(date +%s)
if [ -n "${FULL_FROM:-}" ]; then cp -r "$FULL_FROM/full" "$Q/"; fi
FULL_ONLY=1 bash scripts/quality_study.sh "$Q" "$FRAMES" "$SCENE" cuda > "$Q.full.log" 2>&1 \
  || { tail -5 "$Q.full.log"; exit 1; }
shards=()
for p in ${POLICIES:-xstream xstream-page}; do
  for f in ${FORMATS:-bf16 kivi4 kivi2 oscar4 oscar2}; do
    for k in ${FRACTIONS:-2 4 8 16}; do
      while [ "$(jobs -rp | wc -l)" -ge "${JOBS:-25}" ]; do sleep 1; done
      s="$Q-$p-$f-$k"
      mkdir -p "$s" && cp -r "$Q/full" "$s/" && head -2 "$Q/study.csv" > "$s/study.csv"
      POLICIES=$p FORMATS=$f FRACTIONS=$k bash scripts/quality_study.sh "$s" "$FRAMES" "$SCENE" cuda > "$s.log" 2>&1 &
      shards+=("$s")
    done
  done
done
wait
for s in "${shards[@]}"; do
  tail -n +3 "$s/study.csv" >> "$Q/study.csv"
  (cd "$s" && for d in */; do [ "$d" = full/ ] || mv "$d" "${d%/}.log" "$Q/" 2>/dev/null; done)
  rm -rf "$s" "$s.log"
done
echo "quality study: $(( $(date +%s) - t0 )) s, $(( $(wc -l < "$Q/study.csv") - 2 )) configurations"
tail -n +3 "$Q/study.csv"
