#!/usr/bin/env bash
# On the H200, the 60 FPS issue's closing measurement in one call: builds the GPU targets, runs the
# GPU tests named by GPU_TESTS (a gtest filter; default: attention, cache, pages, scores, model),
# measures the default model's deviation with the heads in bf16 (`eval` on two held-out synthetic
# sequences in float32, bfloat16, and bfloat16 with --bf16-heads), then `bench stream` (1B config,
# random weights, 518x392, bf16, CUDA graphs, --bf16-heads) over FRAMES frames (default 2000) for
# bf16 1.75GB, kivi4 530MB and oscar2 310MB. Everything lands in $OUT/bundle.tgz.
set -uo pipefail
source "$(dirname "$0")/gpu_build.sh"
FRAMES=${FRAMES:-2000}
gpu_build test_gpu_kernels streamrecon || exit 1
# (the device's copy of the tree may carry an older .git than the tree itself: say so when they differ)
{ git rev-parse HEAD && { git diff --quiet HEAD -- . 2>/dev/null || echo "the tree differs from that commit's"; }; } > "$OUT/commit.txt" 2>/dev/null
timeout 150 ./build-gpu/tests/test_gpu_kernels --gtest_filter="${GPU_TESTS:-GpuAttention*:GpuCache.*:GpuPages.*:GpuScores.*:GpuModel.*:GpuSlotCache.*}" \
  > "$OUT/gpu_tests.log" 2>&1
echo "GPU tests: exit $?"
grep -E "^\[  (FAILED|PASSED) |Failure|Expected|Which|attention over rows" "$OUT/gpu_tests.log" | head -30
mkdir -p "$OUT/heads"
for seq in walk:0 orbit:outdoor:11; do
  scene=${seq%:*} seed=${seq##*:}
  for mode in "float32" "bfloat16" "bfloat16 --bf16-heads"; do
    name=${scene/:/-}_${seed}_$(echo "$mode" | tr -d ' -')
    # shellcheck disable=SC2086
    timeout 60 ./build-gpu/app/streamrecon eval --dataset "synthetic:$scene" --scene-seed "$seed" --frames 24 --device cuda \
      --dtype $mode --out "$OUT/heads/$name" > "$OUT/heads/$name.log" 2>&1 || echo "eval $name failed"
    print_eval_metrics "$OUT/heads/$name/metrics.json" "$name"
  done
done
timeout 420 ./build-gpu/app/streamrecon bench stream --random-weights --config streamvggt-1b --device cuda --dtype bfloat16 --size 518 \
  --cuda-graphs --bf16-heads --no-stage-timing --warmup 3 --frames "$FRAMES" --run xstream,bf16,1.75GB --run xstream-page,kivi4,530MB \
  --run xstream-page,oscar2,310MB --out "$OUT/stream" > "$OUT/stream.log" 2>&1
echo "bench stream: exit $?"
cat "$OUT/stream/summary.md" 2>/dev/null
cd "$OUT" && tar czf bundle.tgz stream heads ./*.log commit.txt 2>/dev/null && rm -rf stream heads
