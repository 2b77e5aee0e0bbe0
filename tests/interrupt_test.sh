#!/bin/sh
# Ctrl-C during `run`: the first SIGINT ends the input, the frames done are written (cloud,
# trajectory, cameras, run.json marked interrupted) and the exit code is 130; no temporary file is
# left. A second SIGINT aborts at once with 130.
# Usage: interrupt_test.sh STREAMRECON WORK_DIR
set -u
EXE=$1
W=$2
rm -rf "$W" && mkdir -p "$W"
fail() { echo "FAIL: $*"; exit 1; }
wait_for() {  # file, seconds
  i=0
  while [ ! -e "$1" ] && [ $i -lt $(($2 * 10)) ]; do sleep 0.1; i=$((i + 1)); done
  [ -e "$1" ]
}
"$EXE" run --random-weights --config parity-tiny --synthetic 100000 --size 70x56 --out "$W/one" > "$W/one.log" 2>&1 &
pid=$!
wait_for "$W/one/depth/depth_000005.png" 120 || { kill -9 $pid; fail "no frames after 120 s"; }
kill -INT $pid
wait $pid
rc=$?
[ $rc -eq 130 ] || fail "exit code $rc after one SIGINT, wanted 130 ($(tail -3 "$W/one.log"))"
for f in points.ply trajectory.txt cameras.json run.json; do [ -s "$W/one/$f" ] || fail "$f missing after the interrupt"; done
grep -q '"interrupted": true' "$W/one/run.json" || fail "run.json does not say interrupted"
frames=$(grep -o '"frames": [0-9]*' "$W/one/run.json" | grep -o '[0-9]*')
[ "$frames" -ge 6 ] && [ "$frames" -lt 100000 ] || fail "run.json says $frames frames"
[ "$(wc -l < "$W/one/trajectory.txt")" -ge 6 ] || fail "trajectory.txt has fewer than 6 poses"
if ls "$W/one" "$W/one/depth" | grep -q "tmp-"; then fail "temporary files left: $(ls "$W/one" | grep tmp-)"; fi
"$EXE" run --random-weights --config parity-tiny --synthetic 100000 --size 70x56 --out "$W/two" > "$W/two.log" 2>&1 &
pid=$!
wait_for "$W/two/depth/depth_000002.png" 120 || { kill -9 $pid; fail "no frames after 120 s (second run)"; }
kill -INT $pid
kill -INT $pid
wait $pid
rc=$?
[ $rc -eq 130 ] || fail "exit code $rc after two SIGINTs, wanted 130"
echo "interrupt test passed: $frames frames written after one SIGINT; two SIGINTs abort with 130"
