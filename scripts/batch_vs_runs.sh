#!/usr/bin/env bash
# The resident model's saving, measured: N synthetic sequences reconstructed by one `batch` process
# against N separate `run` processes (same model, options and outputs). Prints a Markdown table of
# per-item and total times. Usage: scripts/batch_vs_runs.sh [N] [FRAMES] [extra run options...]
set -euo pipefail
N=${1:-20}
FRAMES=${2:-8}
shift 2 || true
BIN=${STREAMRECON:-build/app/streamrecon}
WORK=$(mktemp -d /tmp/batch_vs_runs.XXXXXX)
scenes=(walk orbit pan walk:outdoor orbit:outdoor)
{
  echo "name,synthetic,scene"
  for i in $(seq 1 "$N"); do echo "seq$i,$FRAMES,${scenes[$(( (i - 1) % ${#scenes[@]} ))]}"; done
} > "$WORK/items.csv"
t0=$(date +%s.%N)
"$BIN" batch "$WORK/items.csv" --out "$WORK/batch" --no-depth-maps "$@" > "$WORK/batch.log" 2>&1
t1=$(date +%s.%N)
for i in $(seq 1 "$N"); do
  scene=${scenes[$(( (i - 1) % ${#scenes[@]} ))]}
  s=$(date +%s.%N)
  "$BIN" run --synthetic "$FRAMES" --scene "$scene" --out "$WORK/runs/seq$i" --no-depth-maps "$@" > "$WORK/run$i.log" 2>&1
  e=$(date +%s.%N)
  awk "BEGIN{print $e - $s}" >> "$WORK/run_seconds.txt"
done
t2=$(date +%s.%N)
batch_total=$(awk "BEGIN{print $t1 - $t0}")
runs_total=$(awk "BEGIN{print $t2 - $t1}")
python3 - "$WORK" "$batch_total" "$runs_total" "$N" "$FRAMES" <<'PY'
import json, sys, statistics
work, batch_total, runs_total, n, frames = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
items = [json.loads(l) for l in open(f"{work}/batch/batch.jsonl")]
done = [r for r in items if r["status"] == "done"]
runs = [float(x) for x in open(f"{work}/run_seconds.txt")]
item_s = [r["seconds"] for r in done]
print(f"| | items | total s | per item s (median, min-max) |")
print(f"|---|---|---|---|")
print(f"| one `batch` process | {len(done)} of {n} | {batch_total:.1f} | {statistics.median(item_s):.2f} ({min(item_s):.2f}-{max(item_s):.2f}) |")
print(f"| {n} `run` processes | {len(runs)} | {runs_total:.1f} | {statistics.median(runs):.2f} ({min(runs):.2f}-{max(runs):.2f}) |")
print(f"\nSaved by the resident model: {runs_total - batch_total:.1f} s of {runs_total:.1f} s ({100 * (runs_total - batch_total) / runs_total:.0f}%), "
      f"{(runs_total - batch_total) / n:.2f} s per item; {frames} frames per item.")
PY
echo "(work folder: $WORK)"
