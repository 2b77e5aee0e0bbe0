#!/usr/bin/env bash
# Accuracy of the shipped default model on held-out synthetic sequences (scene seeds < 100000,
# which training never draws): every scene kind (walk/orbit/pan x room/outdoor) at the training
# size (224 wide) and at another size (308 wide), through `streamrecon eval` without --weights.
# Usage: bash scripts/eval_default_model.sh [OUT_DIR] [FRAMES] [SEED]   (needs jq)
# STREAMRECON_WEIGHTS=FILE evaluates another checkpoint instead of the shipped default; POSES=head
# scores the camera head's own poses instead of the default (tracked where the build has OpenCV).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
EXE="$ROOT/build/app/streamrecon"
OUT=${1:-eval_default}
FRAMES=${2:-24}
SEED=${3:-11}
mkdir -p "$OUT"
TABLE="$OUT/summary.md"
{
  echo "| scene | size | depth AbsRel (L1 scale) | δ<1.25 | AbsRel (per-frame median) | ATE (m) | path (m) | ATE % of path | RPE rot (deg) | Acc | Comp | NC |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
} > "$TABLE"
for size in 224 308; do
  for scene in walk orbit pan walk:outdoor orbit:outdoor pan:outdoor; do
    dir="$OUT/${scene/:/-}_$size"
    "$EXE" eval --dataset "synthetic:$scene" --frames "$FRAMES" --scene-seed "$SEED" --size "$size" ${STREAMRECON_WEIGHTS:+--weights "$STREAMRECON_WEIGHTS"} ${POSES:+--poses "$POSES"} --out "$dir" > "$dir.log" 2>&1 \
      || { echo "eval failed for $scene at $size (see $dir.log)" >&2; exit 1; }
    jq -r --arg scene "$scene" --arg size "$size" '.sequences[0] as $s | "| \($scene) | \(.model_input[0])x\(.model_input[1]) | \($s.depth_l1.abs_rel*10000|round/10000) | \($s.depth_l1.delta_1*1000|round/1000) | \($s.depth_median.abs_rel*10000|round/10000) | \($s.pose.ate_rmse*1000|round/1000) | \($s.pose.path_length*100|round/100) | \(if $s.pose.ate_percent_of_path then ($s.pose.ate_percent_of_path*10|round/10) else "-" end) | \($s.pose.rpe_rot_rmse_deg*100|round/100) | \($s.cloud.acc*1000|round/1000) | \($s.cloud.comp*1000|round/1000) | \($s.cloud.nc*1000|round/1000) |"' \
      "$dir/metrics.json" >> "$TABLE"
  done
done
cat "$TABLE"
