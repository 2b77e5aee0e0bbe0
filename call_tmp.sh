source scripts/gpu_build.sh
gpu_build test_gpu_kernels streamrecon_kernel_bench streamrecon || exit 1
export STREAMRECON_SHARED_DIR=$PWD/.gpu_fixtures
./build-gpu/tests/test_gpu_kernels --gtest_filter='*Int8*:*GpuAttention*:*PagesInOnePass*:GpuModel.*:GpuCache.*' 2>&1 | grep -E "^\[  (FAILED|PASSED) |CUDA graphs vs eager.*int8|tests ran|Failure|Expected|Which is|error|attention int8.*(full|cap)" | head -30
for tool in memcheck racecheck synccheck; do echo "$tool"; timeout 100 compute-sanitizer --tool $tool ./build-gpu/tests/test_gpu_kernels --gtest_filter='*GpuInt8Attention*:Int8Path/*' 2>&1 | grep -E "SUMMARY|PASSED|FAILED" | head -3; done
ncsv() { python3 -c "
import csv,sys
for r in csv.DictReader(l for l in sys.stdin if l.startswith('\"')):
    n=r['Kernel Name']
    if any(x in n for x in ('cudnn','ExpandPages','Int8','Combine')): print('%-60s %s %s'%(n[:60],r['Metric Value'],r['Metric Unit']))
"; }
for i in 1 2; do for T in 16384 $([ $i = 1 ] && echo 32768 65536); do echo "ncu $T run $i"; ncu --csv --clock-control none --cache-control none --metrics gpu__time_duration.sum ./build-gpu/kernels/streamrecon_kernel_bench --once --tokens $T 2>/dev/null | ncsv; done; done
for i in 1 2; do echo "bench run $i"; ./build-gpu/kernels/streamrecon_kernel_bench --tokens 16384 --tokens 32768 --tokens 65536 --append-format none 2>&1 | grep -E " sdpa|i8/v5a|\+i8|x8" ; done
for seq in walk:0 orbit:outdoor:11; do scene=${seq%:*} seed=${seq##*:}; for path in auto int8; do name=${scene/:/-}_${seed}_$path
timeout 60 ./build-gpu/app/streamrecon eval --dataset "synthetic:$scene" --scene-seed "$seed" --frames 24 --device cuda --dtype bfloat16 --bf16-heads --attention-path $path --out "$OUT/eval/$name" > "$OUT/eval_$name.log" 2>&1 || echo "eval $name failed"
print_eval_metrics "$OUT/eval/$name/metrics.json" "$name"; done; done
rm -rf $OUT/eval
