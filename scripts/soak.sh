#!/usr/bin/env bash
# The long-run soak of docs/reliability.md: FRAMES frames (default 10000) through `streamrecon run`
# on the CPU (the shipped model at 112x84, a bounded cache, the cloud on a 5 cm voxel grid kept under
# 50,000 points, as every stream's memory must be bounded), sampling the
# process's resident memory, open files and threads every second into OUT/soak.csv and drawing
# OUT/soak.png. Prints whether RSS stayed within 1% after warm-up (the first 10% of the run) and
# whether files and threads grew. Usage: bash scripts/soak.sh [OUT] [FRAMES]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT=${1:-soak_out}
FRAMES=${2:-10000}
mkdir -p "$OUT"
OMP_NUM_THREADS=1 "$ROOT/build/app/streamrecon" run --synthetic "$FRAMES" --size 112x84 \
  --policy xstream --format kivi4 --kv-budget 2MiB --no-depth-maps --stride 4 --voxel-size 0.05 --max-points 50000 --out "$OUT/run" > "$OUT/run.log" 2>&1 &
pid=$!
echo "seconds,frames,rss_kib,open_files,threads" > "$OUT/soak.csv"
start=$(date +%s)
while kill -0 "$pid" 2>/dev/null; do
  rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo "")
  threads=$(awk '/^Threads/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo "")
  files=$(ls "/proc/$pid/fd" 2>/dev/null | wc -l)
  frames=$(grep -c "^\[.*\] frame " "$OUT/run.log" || true)
  [ -n "$rss" ] && echo "$(( $(date +%s) - start )),$frames,$rss,$files,$threads" >> "$OUT/soak.csv"
  sleep 1
done
wait "$pid" || { echo "run failed:"; tail -5 "$OUT/run.log"; exit 1; }
# After warm-up: RSS spread relative to its mean, and growth of files and threads.
awk -F, -v frames="$FRAMES" 'NR > 1 && $2 >= frames / 10 {
    n++; s += $3; if (min == "" || $3 < min) min = $3; if ($3 > max) max = $3;
    if (f0 == "") { f0 = $4; t0 = $5 } f1 = $4; t1 = $5 }
  END { mean = s / n; printf "after warm-up: %d samples, RSS %.1f MiB mean, min %.1f, max %.1f (spread %.2f%% of the mean); open files %d -> %d; threads %d -> %d\n",
        n, mean / 1024, min / 1024, max / 1024, 100 * (max - min) / mean, f0, f1, t0, t1 }' "$OUT/soak.csv" | tee "$OUT/summary.txt"
if command -v gnuplot >/dev/null; then
  (cd "$OUT" && gnuplot -e "set datafile separator ','; set terminal pngcairo size 1000,420 noenhanced; set output 'soak.png';
    set title 'run: $FRAMES frames, recon-small 112x84, kivi4 cache under 2 MiB, cloud under 50k points';
    set xlabel 'frames done'; set ylabel 'resident memory (MiB)'; set y2label 'open files, threads'; set y2tics; set grid;
    plot 'soak.csv' every ::1 using 2:(\$3/1024) with lines lw 2 title 'RSS', '' every ::1 using 2:4 axes x1y2 with lines title 'open files',
         '' every ::1 using 2:5 axes x1y2 with lines title 'threads'")
fi
