#!/usr/bin/env bash
# Depth accuracy of one or more checkpoints on many held-out synthetic sequences, several `eval`s
# at a time: every scene kind (walk/orbit/pan x room/outdoor) at each size, for each seed.
# Each sequence is scored with every checkpoint, so the means compare the same sequences.
# Depth does not depend on the poses, so the camera head's poses are used (no tracker) and the
# point-cloud metrics run on few points: this is the fast way to compare checkpoints; the full
# metrics of one checkpoint come from eval_default_model.sh.
#
# Usage: bash scripts/eval_depth_many.sh OUT_DIR "SEEDS" "SIZES" NAME=WEIGHTS [NAME=WEIGHTS...]
#   e.g. bash scripts/eval_depth_many.sh /tmp/many "11 23 $(seq 200 239)" "224 308" \
#          shipped=models/recon_small.safetensors new=runs/x/export.safetensors
# Environment: DEVICE (cpu, cuda; default auto), JOBS (evals at a time; default: cores / 2),
# DEADLINE (seconds after which no new sequence starts; default none), STREAMRECON_BIN.
# Writes OUT_DIR/results.txt (name seed size scene abs_rel delta_1, one line per eval) and prints
# the means over the sequences that every checkpoint finished. Needs jq.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
[ $# -ge 4 ] || { sed -n 2,15p "$0" >&2; exit 2; }
OUT=$1 SEEDS=$2 SIZES=$3; shift 3
EXE=${STREAMRECON_BIN:-$ROOT/build/app/streamrecon}
[ -x "$EXE" ] || { echo "no streamrecon binary at $EXE (build first, or set STREAMRECON_BIN)" >&2; exit 1; }
command -v jq > /dev/null || { echo "jq is needed (apt-get install jq)" >&2; exit 1; }
for m in "$@"; do
  [[ $m == *=* ]] || { echo "expected NAME=WEIGHTS, found '$m'" >&2; exit 2; }
  [ -f "${m#*=}" ] || { echo "weights file not found: ${m#*=} (for '$m')" >&2; exit 1; }
done
CORES=$(nproc)
JOBS=${JOBS:-$(( CORES > 3 ? CORES / 2 : 1 ))}
# Each eval gets its share of the cores: many torch processes with a thread per core each
# run ten times slower than this (measured on the GPU machine, perf.md call 183).
export OMP_NUM_THREADS=$(( CORES / JOBS > 0 ? CORES / JOBS : 1 ))
mkdir -p "$OUT/runs"
: > "$OUT/results.txt"
printf '%s\n' "$@" > "$OUT/models.txt"
export EXE OUT DEVICE=${DEVICE:-auto} START=$(date +%s) DEADLINE=${DEADLINE:-0}

one_sequence() {  # seed size scene
  if [ "$DEADLINE" -gt 0 ] && [ $(( $(date +%s) - START )) -gt "$DEADLINE" ]; then return 0; fi
  local name weights dir
  while IFS= read -r m; do
    name=${m%%=*} weights=${m#*=}
    dir="$OUT/runs/${name}_$1_$2_${3/:/-}"
    if ! "$EXE" eval --dataset "synthetic:$3" --frames 24 --scene-seed "$1" --size "$2" --weights "$weights" \
        --poses head --device "$DEVICE" --max-points 2000 --out "$dir" > "$dir.log" 2>&1; then
      echo "eval failed: $name seed $1 size $2 $3 (see $dir.log)" >&2
      continue
    fi
    jq -r --arg n "$name" --arg s "$1" --arg z "$2" --arg c "$3" \
      '.sequences[0].depth_l1 | "\($n) \($s) \($z) \($c) \(.abs_rel) \(.delta_1)"' "$dir/metrics.json" >> "$OUT/results.txt" \
      || echo "unreadable metrics: $dir/metrics.json" >&2
  done < "$OUT/models.txt"
  return 0  # one failed sequence is reported above; it must not stop xargs and the means
}
export -f one_sequence

for seed in $SEEDS; do for size in $SIZES; do
  for scene in walk orbit pan walk:outdoor orbit:outdoor pan:outdoor; do echo "$seed $size $scene"; done
done; done > "$OUT/jobs.txt"
echo "$(wc -l < "$OUT/jobs.txt") sequences x $# checkpoints, $JOBS at a time, $OMP_NUM_THREADS threads each"
xargs -P "$JOBS" -L 1 bash -c 'one_sequence "$0" "$1" "$2"' < "$OUT/jobs.txt"
echo "finished after $(( $(date +%s) - START )) s"

# Means per size (and per scene kind) over the sequences that every checkpoint finished.
awk -v nm="$#" '
  { key = $2 " " $3 " " $4; a[$1, key] = $5; d[$1, key] = $6; n[key]++; if (!($1 in seen)) { seen[$1] = 1; names[++k] = $1 } }
  END {
    for (key in n) if (n[key] == nm) { split(key, f, " "); for (i = 1; i <= k; i++) {
      g = "size " f[2]; sa[g, i] += a[names[i], key]; sd[g, i] += d[names[i], key]; c[g]++
      g = "size " f[2] ", " f[3]; sa[g, i] += a[names[i], key]; sd[g, i] += d[names[i], key]; c[g]++ } }
    for (g in c) { line = sprintf("%-28s %4d sequences", g, c[g] / k)
      for (i = 1; i <= k; i++) line = line sprintf("   %s AbsRel %.4f d<1.25 %.3f", names[i], sa[g, i] / (c[g] / k), sd[g, i] / (c[g] / k))
      print line } }' "$OUT/results.txt" | sort
