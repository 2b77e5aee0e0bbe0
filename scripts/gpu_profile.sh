#!/usr/bin/env bash
# On the H200: the 60 FPS issue's before/after check in one call. Builds the GPU targets, runs the
# model and cache GPU tests (and the KV contract's CUDA instances), then `bench stream` (1B config,
# random weights, 518x392, bf16, CUDA graphs, --bf16-heads unless BF16_HEADS=0) over 60 frames for
# bf16 1.75GB, kivi4 530MB and oscar2 310MB: once with a Chrome trace of the last 4 frames each (no
# stage timing: it synchronises), once unprofiled (the steady frame times); then an eager trace
# of 2 bf16 frames without CUDA graphs (its kernels carry the operators that launched them, which
# graph replays do not) and 30 frames of oscar2 with stage timing.
# Everything lands in $OUT/bundle.tgz (the device returns at most 8 files). FRAMES=60 by default;
# GPU_TESTS: another gtest filter for the GPU tests.
set -uo pipefail
source "$(dirname "$0")/gpu_build.sh"
FRAMES=${FRAMES:-60}
gpu_build test_gpu_kernels test_kv_contract streamrecon || exit 1
# (the device's copy of the tree may carry an older .git than the tree itself: say so when they differ)
{ git rev-parse HEAD && { git diff --quiet HEAD -- . 2>/dev/null || echo "the tree differs from that commit's"; }; } > "$OUT/commit.txt" 2>/dev/null
EAGER=(./build-gpu/app/streamrecon bench stream --random-weights --config streamvggt-1b --device cuda --dtype bfloat16 --size 518)
BENCH=("${EAGER[@]}" --cuda-graphs)
timeout 150 ./build-gpu/tests/test_gpu_kernels --gtest_filter="${GPU_TESTS:-GpuModel.*:GpuCache.*:GpuSlotCache.*:GpuScores.*:GpuDequantize.*:GpuFusedGlue.*:GpuAttentionRows.*:GpuPages.*}" > "$OUT/gpu_tests.log" 2>&1
echo "GPU tests: exit $?"
timeout 120 ./build-gpu/tests/test_kv_contract --gtest_filter='*cuda*' > "$OUT/kv_contract.log" 2>&1
echo "KV contract on CUDA: exit $? ($(grep -c '^\[       OK' "$OUT/kv_contract.log") passed)"
grep -E "^\[ (info|  FAILED|  PASSED) |Failure|Expected|Which" "$OUT/gpu_tests.log" | head -30
HEADS=(--bf16-heads)
[ "${BF16_HEADS:-1}" = 1 ] || HEADS=()
RUNS=(--run xstream,bf16,1.75GB --run xstream-page,kivi4,530MB --run xstream-page,oscar2,310MB)
timeout 150 "${BENCH[@]}" "${HEADS[@]}" --frames "$FRAMES" --warmup 3 --no-stage-timing "${RUNS[@]}" \
  --profile "$OUT/prof/trace.json" --profile-frames 4 --out "$OUT/prof" > "$OUT/bench.log" 2>&1
echo "bench (profiled): exit $?"
grep -iE "graph captured|error" "$OUT/bench.log" | head -5
cat "$OUT/prof/summary.md" 2>/dev/null
timeout 120 "${BENCH[@]}" "${HEADS[@]}" --frames "$FRAMES" --warmup 3 --no-stage-timing "${RUNS[@]}" \
  --out "$OUT/steady" > "$OUT/steady.log" 2>&1
echo "bench (unprofiled): exit $?"
cat "$OUT/steady/summary.md" 2>/dev/null
timeout 90 "${EAGER[@]}" "${HEADS[@]}" --frames 24 --warmup 3 --no-stage-timing --run xstream,bf16,1.75GB \
  --profile "$OUT/eager/trace.json" --profile-frames 2 --out "$OUT/eager" > "$OUT/eager.log" 2>&1
echo "bench (eager, profiled): exit $?"
timeout 60 "${BENCH[@]}" --frames 30 --run xstream-page,oscar2,310MB --out "$OUT/stages" > "$OUT/stages.log" 2>&1
echo "bench (stage timing): exit $?"
cat "$OUT/stages/summary.md" 2>/dev/null
cd "$OUT" && tar czf bundle.tgz prof steady eager stages ./*.log commit.txt 2>/dev/null && rm -rf prof steady eager stages
