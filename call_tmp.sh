source scripts/gpu_build.sh
gpu_build test_gpu_kernels streamrecon_kernel_bench streamrecon || exit 1
export STREAMRECON_SHARED_DIR=$PWD/.gpu_fixtures
./build-gpu/tests/test_gpu_kernels --gtest_filter='*Int8*:*PagesInOnePass*:GpuModel.CudaGraphs*' 2>&1 | grep -E "^\[  (FAILED|PASSED) |tests ran|Failure|Expected|Which is|error" | head -20
timeout 100 compute-sanitizer --tool racecheck ./build-gpu/tests/test_gpu_kernels --gtest_filter='GpuInt8Attention/*' 2>&1 | grep -E "RACECHECK SUMMARY|PASSED|FAILED" | head
timeout 100 compute-sanitizer --tool synccheck ./build-gpu/tests/test_gpu_kernels --gtest_filter='GpuInt8Attention/*:*PagesInOnePass*' 2>&1 | grep -E "ERROR SUMMARY|PASSED|FAILED" | head
ncsv() { python3 -c "
import csv,sys
for r in csv.DictReader(l for l in sys.stdin if l.startswith('\"')):
    n=r['Kernel Name']
    if any(x in n for x in ('cudnn','ExpandPages','Int8','Combine')): print('%-60s %s %s'%(n[:60],r['Metric Value'],r['Metric Unit']))
"; }
for i in 1 2; do for T in 16384 $([ $i = 1 ] && echo 32768 65536); do echo "ncu $T run $i"; ncu --csv --clock-control none --cache-control none --metrics gpu__time_duration.sum ./build-gpu/kernels/streamrecon_kernel_bench --once --tokens $T 2>/dev/null | ncsv; done; done
for i in 1 2; do echo "bench run $i"; ./build-gpu/kernels/streamrecon_kernel_bench --tokens 16384 --tokens 32768 --tokens 65536 --append-format none 2>&1 | grep -E " sdpa|i8/v5a|\+i8|x8" ; done
for run in "kivi4 530MB" "oscar2 310MB"; do set -- $run; for path in auto int8; do
./build-gpu/app/streamrecon bench stream --random-weights --config streamvggt-1b --device cuda --dtype bfloat16 --size 518 --out $OUT/s2000_${1}_$path --policy xstream-page --format $1 --kv-budget $2 --frames 2000 --cuda-graphs --bf16-heads --no-stage-timing --warmup 3 --attention-path $path > $OUT/s2000_${1}_$path.log 2>&1
echo "== $1 $path"; grep -E "^\| xstream" $OUT/s2000_${1}_$path/summary.md | head -4
done; done
