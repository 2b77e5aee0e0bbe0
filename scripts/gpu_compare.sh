#!/usr/bin/env bash
# On the H200: `bench stream` of the working tree against an earlier commit, configuration by
# configuration, alternating the two builds (same machine, same minutes). The earlier source comes
# carried in .gpu_base/ (scripts/gpu_prepare_base.sh REV). Arguments: FRAMES RUN... (bench stream
# --run specs); REPEAT=N alternates the two builds N times per configuration. Results:
# $OUT/compare/{base,new}/<run>[.<i>]/ and $OUT/compare/summary.txt.
set -uo pipefail
FRAMES=${1:-300}
shift || true
RUNS=("$@")
[ ${#RUNS[@]} -gt 0 ] || RUNS=(xstream-page,oscar2,310MB xstream,bf16,1.75GB)
source "$(dirname "$0")/gpu_build.sh"
gpu_build streamrecon || exit 1
ROOT=$PWD
( cd .gpu_base && ln -sfn "$ROOT/.deps" .deps && ln -sfn "$ROOT/.gpu_fixtures" .gpu_fixtures && mkdir -p "$OUT/base_build" &&
  export OUT="$OUT/base_build" && source scripts/gpu_build.sh && gpu_build streamrecon ) || { echo "base build failed"; exit 1; }
mkdir -p "$OUT/compare"
REPEAT=${REPEAT:-1}
for run in "${RUNS[@]}"; do
  for i in $(seq 1 "$REPEAT"); do
  for side in base new; do
    bin=./build-gpu/app/streamrecon
    [ $side = base ] && bin=./.gpu_base/build-gpu/app/streamrecon
    $bin bench stream --random-weights --config streamvggt-1b --device cuda --dtype bfloat16 --size 518 --frames "$FRAMES" \
      --warmup 3 --cuda-graphs --no-stage-timing --run "$run" --out "$OUT/compare/$side/${run//,/_}.$i" > "$OUT/compare/$side.${run//,/_}.$i.log" 2>&1 \
      || { echo "$side $run failed"; tail -5 "$OUT/compare/$side.${run//,/_}.$i.log"; }
    echo "$side $run ($i): $(tail -n +3 "$OUT/compare/$side/${run//,/_}.$i/summary.md" | head -1)" | tee -a "$OUT/compare/summary.txt"
  done
  done
done
