#!/usr/bin/env bash
# The compression study on the shipped model (docs/quality.md): one held-out synthetic stream
# (scene seed 11, never used in training) through `streamrecon eval` with the full cache and with
# every format x policy x budget, where the budgets are 1/2, 1/4, 1/8 and 1/16 of the full bf16
# cache's bytes at the end of the stream. Writes OUT/study.csv, OUT/study.md and OUT/study.png.
# Usage: bash scripts/quality_study.sh [OUT] [FRAMES] [SCENE] [DEVICE]   (needs jq, gnuplot)
# The grid can be narrowed: POLICIES="xstream-page" FORMATS="kivi2 oscar2" FRACTIONS="8" bash ...
# STUDY_ARGS adds eval options (e.g. "--dtype bfloat16" on the GPU); STREAMRECON_EXE picks the binary.
# POSES (default head): the cameras scored by ATE; docs/quality.md's tables use the camera head's
# poses, POSES=tracked scores the tracked ones (docs/training.md, "Tracked poses").
# Without jq the metrics are read with python3.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
EXE=${STREAMRECON_EXE:-$ROOT/build/app/streamrecon}
OUT=${1:-quality_out}
FRAMES=${2:-300}
SCENE=${3:-walk}
DEVICE=${4:-cpu}
SEED=11
mkdir -p "$OUT"
# shellcheck disable=SC2206
common=(eval --dataset "synthetic:$SCENE" --frames "$FRAMES" --scene-seed "$SEED" --device "$DEVICE" --max-points 50000 --poses "${POSES:-head}" ${STUDY_ARGS:-})
summary() {  # metrics.json -> "abs_rel,delta1,ate_percent,cache_bytes_peak"
  if command -v jq >/dev/null; then
    jq -r '.sequences[0] | "\(.depth_l1.abs_rel),\(.depth_l1.delta_1),\(.pose.ate_percent_of_path // "nan"),\(.cache_bytes_peak)"' "$1"
  else
    python3 -c 'import json, sys
s = json.load(open(sys.argv[1]))["sequences"][0]
ate = s["pose"].get("ate_percent_of_path")
print(",".join(str(x) for x in (s["depth_l1"]["abs_rel"], s["depth_l1"]["delta_1"], "nan" if ate is None else ate, s["cache_bytes_peak"])))' "$1"
  fi
}
# The reference is the full cache in FULL_FORMAT (default bf16, the GPU's unquantized storage; fp32
# on CPUs, whose bf16 matrix work is emulated and slow); the budgets are fractions of the full
# cache's bytes in bf16 either way (fp32 holds twice as many).
FULL_FORMAT=${FULL_FORMAT:-bf16}
if [ ! -f "$OUT/full/metrics.json" ]; then
  echo "[study] full cache ($FULL_FORMAT storage): $FRAMES frames of synthetic:$SCENE seed $SEED"
  "$EXE" "${common[@]}" --format "$FULL_FORMAT" --out "$OUT/full" > "$OUT/full.log" 2>&1 || { tail -5 "$OUT/full.log"; exit 1; }
fi
IFS=, read -r full_abs full_d1 full_ate full_bytes <<< "$(summary "$OUT/full/metrics.json")"
if [ "$FULL_FORMAT" = fp32 ]; then full_bytes=$(( full_bytes / 2 )); fi
if [ ! -f "$OUT/study.csv" ]; then
  echo "policy,format,fraction,budget_bytes,abs_rel,delta1,ate_percent,cache_bytes_peak,abs_rel_change" > "$OUT/study.csv"
  echo "none,$FULL_FORMAT,1,$full_bytes,$full_abs,$full_d1,$full_ate,$full_bytes,0" >> "$OUT/study.csv"
fi
if [ -n "${FULL_ONLY:-}" ]; then exit 0; fi  # only the reference (scripts/gpu_quality.sh shards the rest)
for policy in ${POLICIES:-xstream xstream-page}; do
  for format in ${FORMATS:-bf16 kivi4 kivi2 oscar4 oscar2}; do
    for k in ${FRACTIONS:-2 4 8 16}; do
      budget=$(( full_bytes / k ))
      name="${policy}_${format}_1of${k}"
      if grep -q "^$policy,$format,$k," "$OUT/study.csv"; then continue; fi  # done in an earlier run
      if "$EXE" "${common[@]}" --policy "$policy" --format "$format" --kv-budget "$budget" --out "$OUT/$name" > "$OUT/$name.log" 2>&1; then
        IFS=, read -r a d e b <<< "$(summary "$OUT/$name/metrics.json")"
        change=$(awk -v a="$a" -v f="$full_abs" 'BEGIN { printf "%.4f", (a - f) / f }')
        echo "$policy,$format,$k,$budget,$a,$d,$e,$b,$change" >> "$OUT/study.csv"
        echo "[study] $name: AbsRel $a (change $change), delta1 $d, ATE $e % of path, peak cache $b bytes"
      else
        echo "$policy,$format,$k,$budget,nan,nan,nan,nan,nan" >> "$OUT/study.csv"
        echo "[study] $name failed: $(grep -m1 error "$OUT/$name.log" || tail -1 "$OUT/$name.log")"
      fi
    done
  done
done
# One order whatever order the cells finished in (scripts/gpu_quality.sh runs them at once): the
# full cache first ("none"), then policy, format and budget (1/2 before 1/16), so that the table
# reads in order and the plot's lines join each format's budgets from the largest to the smallest.
{ head -n 1 "$OUT/study.csv"; tail -n +2 "$OUT/study.csv" | sort -t, -k1,1 -k2,2 -k3,3n; } > "$OUT/study.csv.tmp"
mv "$OUT/study.csv.tmp" "$OUT/study.csv"
{
  echo "| policy | format | budget (of full) | budget bytes | AbsRel | AbsRel change vs full | δ<1.25 | ATE % of path | peak cache bytes |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
  tail -n +2 "$OUT/study.csv" | awk -F, '{ printf "| %s | %s | 1/%s | %s | %.4f | %+.2f%% | %.4f | %.1f | %s |\n", $1, $2, $3, $4, $5, 100 * $9, $6, $7, $8 }'
} > "$OUT/study.md"
if command -v gnuplot >/dev/null; then
  (cd "$OUT" && gnuplot -e "
    set datafile separator ','; set terminal pngcairo size 1100,460 noenhanced; set output 'study.png';
    set multiplot layout 1,2;
    set logscale x 2; set xlabel 'cache bytes held at the end (peak)'; set ylabel 'depth AbsRel (L1 scale)'; set grid; set key top right;
    full = system('awk -F, \"NR==2 {print \\\$5}\" study.csv') + 0;
    do for [p in 'xstream xstream-page'] {
      set title p.' (dashed: full cache)';
      plot for [f in 'bf16 kivi4 kivi2 oscar4 oscar2'] 'study.csv' using (strcol(1) eq p && strcol(2) eq f ? \$8 : 1/0):5 with linespoints title f, full with lines dt 2 lc rgb 'black' notitle
    };
    unset multiplot") || echo "[study] study.png not drawn (gnuplot needs at least two budgets per format for its log axis)"
fi
# Accuracy against frame index over the stream: the full cache and every configuration at 1/8.
if command -v gnuplot >/dev/null; then
  (cd "$OUT" && gnuplot -e "
    set datafile separator ','; set terminal pngcairo size 1100,760 noenhanced; set output 'study_frames.png';
    set multiplot layout 2,1; set grid; set key outside right; set xlabel 'frame';
    files = system('ls -d full *_1of8 2>/dev/null');
    set title 'depth AbsRel per frame (its own median scale)'; set ylabel 'AbsRel';
    plot for [d in files] sprintf('%s/frames_synthetic-$SCENE-seed$SEED.csv', d) every ::1 using 1:2 smooth unique with lines title d;
    set title 'camera-centre error after the sequence Sim(3) alignment (m)'; set ylabel 'm';
    plot for [d in files] sprintf('%s/frames_synthetic-$SCENE-seed$SEED.csv', d) every ::1 using 1:4 with lines title d;
    unset multiplot") || echo "[study] study_frames.png not drawn"
fi
cat "$OUT/study.md"
