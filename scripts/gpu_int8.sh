#!/usr/bin/env bash
# On the H200: the 8-bit attention (kv_attention_int8.cu) in one call. Builds the GPU targets, runs
# its GPU tests with the other kernel, cache and model tests (TESTS= a gtest filter overrides),
# the kernel benchmark's attention table at T = TOKENS (INT8 Q K^T against cuDNN bf16 SDPA and the
# dequantize-once paths), then, unless STREAM=0, 60 frames of `bench stream` (1B config, random
# weights, 518x392, bf16, CUDA graphs, --bf16-heads) for bf16 1.75GB, kivi4 530MB and oscar2 310MB
# for each attention path of ATTENTION= (default: auto, the cache's default path) for the steady frame times; STREAM_VARIANTS=
# "plain fp8 serial" repeats them with --fp8-gemms and with --serial-maintenance. EVAL=1: the trained model with EVAL_VARIANTS (attention
# paths, or fp8 for --fp8-gemms; default "auto int8").
# Everything lands in $OUT/bundle.tgz (the device returns at most 8 files).
set -uo pipefail
source "$(dirname "$0")/gpu_build.sh"
TOKENS=${TOKENS:-"4096 16384 65536"}
TESTS=${TESTS:-'*GpuInt8Attention*:*GpuAttention*:GpuModel.*:GpuCache.*:GpuSlotCache.*:GpuScores.*:GpuDequantize.*:GpuFusedGlue.*:GpuPages.*'}
gpu_build test_gpu_kernels streamrecon_kernel_bench streamrecon || exit 1
timeout 240 ./build-gpu/tests/test_gpu_kernels --gtest_filter="$TESTS" > "$OUT/gpu_tests.log" 2>&1
echo "GPU tests: exit $?"
grep -E "^\[ (info|FAILED|PASSED) |^\[  (FAILED|PASSED) |Failure|Expected|Which|error" "$OUT/gpu_tests.log" \
  | grep -vE "attention (dequant|dequant-bucketed|fused) |attention over rows" | head -60
# shellcheck disable=SC2086
timeout 120 ./build-gpu/kernels/streamrecon_kernel_bench --tokens ${TOKENS// / --tokens } --append-format none \
  --json "$OUT/kernels.json" > "$OUT/kernels.log" 2>&1
echo "kernel bench: exit $?"
cat "$OUT/kernels.log"
if [ "${NCU:-0}" = 1 ]; then  # Nsight Compute on the first 8-bit attention variant at T = 16384
  timeout 120 ncu --kernel-name regex:Int8AttentionKernel --launch-skip 2 --launch-count 1 --section SpeedOfLight \
    --section SchedulerStats --section WarpStateStats --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
    --section Occupancy --section LaunchStats ./build-gpu/kernels/streamrecon_kernel_bench --tokens 16384 --append-format none \
    > "$OUT/ncu.log" 2>&1
  echo "ncu: exit $?"
  grep -vE "^\s*$|^==PROF==" "$OUT/ncu.log" | grep -E "Stall|Throughput|Issue|Eligible|Active Warps|Registers|Occupancy|Pipe|Duration|Bandwidth|Hit" | head -60
fi
if [ "${SASS:-0}" = 1 ]; then  # instruction mix of each kernel named in SASS_FUNCS (default: variant 0), whole function ($OUT/int8.sass)
  obj=$(find build-gpu -name 'kv_attention_int8.cu.o' | head -1)
  cuobjdump -sass "$obj" > "$OUT/int8.sass" 2>&1
  for fn in ${SASS_FUNCS:-ILi4ELi1ELi4E}; do
    echo "SASS mix of Int8AttentionKernel$fn:"
    awk -v fn="$fn" '/Function : /{f = index($0, "Int8AttentionKernel" fn) > 0} f' "$OUT/int8.sass" \
      | grep -oE "^\s+/\*[0-9a-f]+\*/\s+[@!A-Z0-9_.]+( [A-Z0-9_.]+)?" | awk '{print ($2 ~ /^@/) ? $3 : $2}' | sed 's/\..*//' \
      | sort | uniq -c | sort -rn | head -16 | tr '\n' ' '
    echo
  done
fi
if [ "${EVAL:-0}" = 1 ]; then  # the trained default model, bf16 attention against the 8-bit one
  mkdir -p "$OUT/eval"
  for seq in walk:0 orbit:outdoor:11; do
    scene=${seq%:*} seed=${seq##*:}
    for path in ${EVAL_VARIANTS:-auto int8}; do  # an attention path, or fp8: the default path with --fp8-gemms
      name=${scene/:/-}_${seed}_$path
      args=(--attention-path "$path")
      [ "$path" = fp8 ] && args=(--fp8-gemms)
      timeout 60 ./build-gpu/app/streamrecon eval --dataset "synthetic:$scene" --scene-seed "$seed" --frames 24 --device cuda \
        --dtype bfloat16 --bf16-heads "${args[@]}" --out "$OUT/eval/$name" > "$OUT/eval/$name.log" 2>&1 || echo "eval $name failed"
      print_eval_metrics "$OUT/eval/$name/metrics.json" "$name"
    done
  done
fi
if [ "${STREAM:-1}" = 1 ]; then
  for att in ${ATTENTION:-auto}; do  # attention paths, one set of runs each
    ATT=(--attention-path "$att")
    for variant in ${STREAM_VARIANTS:-plain}; do  # plain; fp8: with --fp8-gemms; serial: with --serial-maintenance
      EXTRA=()
      [ "$variant" = fp8 ] && EXTRA=(--fp8-gemms)
      [ "$variant" = serial ] && EXTRA=(--serial-maintenance)
      timeout 150 ./build-gpu/app/streamrecon bench stream --random-weights --config streamvggt-1b --device cuda --dtype bfloat16 \
        --size 518 --cuda-graphs --bf16-heads "${ATT[@]}" "${EXTRA[@]}" --frames 60 --warmup 3 --no-stage-timing \
        --run xstream,bf16,1.75GB --run xstream-page,kivi4,530MB --run xstream-page,oscar2,310MB --out "$OUT/steady_${att}_$variant" \
        > "$OUT/steady_${att}_$variant.log" 2>&1
      echo "bench $variant, attention $att (unprofiled): exit $?"
      grep -iE "error|ran as CUDA graphs" "$OUT/steady_${att}_$variant.log" | head -8
      cat "$OUT/steady_${att}_$variant/summary.md" 2>/dev/null
    done
  done
fi
cd "$OUT" && tar czf bundle.tgz ./*.log ./*.json steady_* eval 2>/dev/null; rm -rf steady_* eval
