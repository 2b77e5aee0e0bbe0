source scripts/gpu_build.sh
gpu_build test_gpu_kernels streamrecon_kernel_bench streamrecon || exit 1
export STREAMRECON_SHARED_DIR=$PWD/.gpu_fixtures
./build-gpu/tests/test_gpu_kernels --gtest_filter='*Int8*:*GpuAttention*:*PagesInOnePass*:GpuModel.*:GpuCache.*' 2>&1 | grep -E "^\[  (FAILED|PASSED) |CUDA graphs vs eager|tests ran|Failure|Expected|Which is|error|int8|Int8Attention.*OK" | grep -v "^\[ info \] 8-bit attention" | head -40
ncsv() { python3 -c "
import csv,sys
for r in csv.DictReader(l for l in sys.stdin if l.startswith('\"')):
    n=r['Kernel Name']
    if any(x in n for x in ('cudnn','ExpandPages','Int8','Combine')): print('%-60s %s %s'%(n[:60],r['Metric Value'],r['Metric Unit']))
"; }
for T in 16384 32768 65536; do echo "ncu $T"; ncu --csv --clock-control none --cache-control none --metrics gpu__time_duration.sum ./build-gpu/kernels/streamrecon_kernel_bench --once --tokens $T 2>/dev/null | ncsv; done
./build-gpu/kernels/streamrecon_kernel_bench --tokens 16384 --tokens 32768 --tokens 65536 --append-format none 2>&1 | grep -E " sdpa|i8/v[05]a|i8\+q|\+i8|x8" | head -60
for run in "kivi4 530MB" "oscar2 310MB"; do set -- $run; for path in auto int8; do
./build-gpu/app/streamrecon bench stream --random-weights --config streamvggt-1b --device cuda --dtype bfloat16 --size 518 --out $OUT/stream_${1}_$path --policy xstream-page --format $1 --kv-budget $2 --frames 60 --cuda-graphs --bf16-heads --no-stage-timing --warmup 3 --attention-path $path > $OUT/stream_${1}_$path.log 2>&1
echo "== $1 $path"; grep -E "^\|" $OUT/stream_${1}_$path/summary.md | head -4
done; done
