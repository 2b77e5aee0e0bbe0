#!/bin/sh
# The viewer end to end under Xvfb: `streamrecon view` on synthetic frames with random weights
# writes a screenshot of the window size showing the point cloud (not only the camera frusta), and
# reports "points: N" with N > 0.
#   viewer_test.sh STREAMRECON HAVE_VIEWER PNG_CHECK WORK_DIR
# Exits 77 (ctest SKIP_RETURN_CODE) with a message when the viewer or xvfb-run is missing.
set -u
STREAMRECON=$1 HAVE_VIEWER=$2 PNG_CHECK=$3 WORK=$4
case "$HAVE_VIEWER" in
  ON|on|1|TRUE|true) ;;
  *) echo "SKIP: this build has no viewer (GLFW, OpenGL and libimgui-dev were not found)"; exit 77 ;;
esac
if ! command -v xvfb-run >/dev/null 2>&1; then
  echo "SKIP: xvfb-run not found (Debian package xvfb); the viewer needs a display"
  exit 77
fi
rm -rf "$WORK" && mkdir -p "$WORK" || exit 1
W=1280 H=800 PANEL=390
log="$WORK/view.log"
# Timeout: a hang must fail the test, not block ctest.
timeout 240 xvfb-run -a -s "-screen 0 ${W}x${H}x24" "$STREAMRECON" view --random-weights --config parity-tiny \
  --synthetic 6 --size 140x112 --width $W --height $H --conf-threshold 0 \
  --screenshot "$WORK/viewer.png" --exit-after-frames 6 >"$log" 2>&1
rc=$?
cat "$log"
if [ $rc -ne 0 ]; then echo "FAIL: streamrecon view exited with $rc"; exit 1; fi
points=$(sed -n 's/^points: \([0-9][0-9]*\)$/\1/p' "$log")
if [ -z "$points" ] || [ "$points" -le 0 ]; then
  echo "FAIL: expected 'points: N' with N > 0 in the output, found '${points}'"
  exit 1
fi
frames=$(sed -n 's/^frames: \([0-9][0-9]*\)$/\1/p' "$log")
if [ "${frames:-0}" -lt 6 ]; then echo "FAIL: expected at least 6 frames processed, found '${frames}'"; exit 1; fi
# The overlay colours of viewer/viewer.cc CameraLines (trajectory, newest frustum, older frusta):
# the check counts only pixels the cloud itself can have drawn.
"$PNG_CHECK" "$WORK/viewer.png" $W $H $PANEL 40e673 ff731a 8c9ec7 || exit 1
# Ctrl-C in the terminal closes the viewer like its close button: exit 130, the screenshot written.
timeout 240 xvfb-run -a -s "-screen 0 ${W}x${H}x24" sh -c "\"$STREAMRECON\" view --random-weights --config parity-tiny \
  --synthetic 100000 --size 140x112 --width $W --height $H --screenshot \"$WORK/interrupted.png\" > \"$WORK/view_int.log\" 2>&1 &
  pid=\$!; sleep 15; kill -INT \$pid; wait \$pid; echo \"exit \$?\" >> \"$WORK/view_int.log\""
cat "$WORK/view_int.log" | tail -4
grep -q "^exit 130$" "$WORK/view_int.log" || { echo "FAIL: streamrecon view did not exit 130 on SIGINT"; exit 1; }
[ -s "$WORK/interrupted.png" ] || { echo "FAIL: no screenshot written after SIGINT"; exit 1; }
echo "PASS: viewer screenshot ${W}x${H}, $points points, $frames frames; SIGINT closes the viewer with 130"
