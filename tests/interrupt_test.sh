#!/bin/sh
# Ctrl-C during `run`: the first SIGINT ends the input, the frames done are written (cloud,
# trajectory, cameras, run.json marked interrupted) and the exit code is 130; no temporary file is
# left. A second SIGINT aborts at once with 130. The same for `eval`: the metrics of the frames done
# are written, marked interrupted. (`view` under Xvfb: tests/viewer_test.sh.)
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
"$EXE" eval --random-weights --config parity-tiny --dataset synthetic --frames 100000 --size 70x56 --out "$W/eval" > "$W/eval.log" 2>&1 &
pid=$!
i=0
while ! grep -q "frame 6/" "$W/eval.log" && [ $i -lt 1200 ]; do sleep 0.1; i=$((i + 1)); done
grep -q "frame 6/" "$W/eval.log" || { kill -9 $pid; fail "eval: no frames after 120 s"; }
kill -INT $pid
wait $pid
rc=$?
[ $rc -eq 130 ] || fail "eval: exit code $rc after one SIGINT, wanted 130 ($(tail -3 "$W/eval.log"))"
grep -q '"interrupted": true' "$W/eval/metrics.json" || fail "eval: metrics.json missing or not marked interrupted"
eval_frames=$(grep -o '"frames": [0-9]*' "$W/eval/metrics.json" | head -1 | grep -o '[0-9]*')
[ "$eval_frames" -ge 6 ] && [ "$eval_frames" -lt 100000 ] || fail "eval: metrics.json says $eval_frames frames"
[ -s "$W/eval/metrics.md" ] || fail "eval: metrics.md missing"
echo "interrupt test passed: run wrote $frames frames and eval $eval_frames frames after one SIGINT; two SIGINTs abort with 130"
