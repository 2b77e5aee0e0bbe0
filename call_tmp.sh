set -x
source scripts/gpu_build.sh
gpu_build test_gpu_kernels streamrecon_kernel_bench || exit 1
export STREAMRECON_SHARED_DIR=$PWD/.gpu_fixtures
./build-gpu/tests/test_gpu_kernels --gtest_filter='*Int8*:*GpuAttention*:GpuDequantize*:*PagesInOnePass*' 2>&1 | grep -E "^\[  (FAILED|PASSED) |^\[ info \] 8-bit attention over .*(4000|every)|tests ran|Failure|Expected|Which is|error" | head -60
timeout 150 compute-sanitizer --tool memcheck ./build-gpu/tests/test_gpu_kernels --gtest_filter='*PagesInOnePass*:GpuInt8Attention/*:*Int8Path*' 2>&1 | grep -E "ERROR SUMMARY|PASSED|FAILED" | head
timeout 60 compute-sanitizer --tool racecheck ./build-gpu/tests/test_gpu_kernels --gtest_filter='*PagesInOnePass*' 2>&1 | grep -E "RACECHECK SUMMARY|PASSED|FAILED" | head
timeout 60 compute-sanitizer --tool synccheck ./build-gpu/tests/test_gpu_kernels --gtest_filter='*PagesInOnePass*' 2>&1 | grep -E "ERROR SUMMARY|PASSED|FAILED" | head
./build-gpu/kernels/streamrecon_kernel_bench --tokens 16384 --tokens 32768 --tokens 65536 --append-format none 2>&1 | grep -E "sdpa|i8|x8|tokens" | head -60
for T in 16384 32768; do
ncu --clock-control none --cache-control none --metrics gpu__time_duration.sum ./build-gpu/kernels/streamrecon_kernel_bench --once --tokens $T 2>&1 | grep -E "^  [A-Za-z_].*\(|gpu__time_duration" | paste - - | sed -E 's/ +/ /g' | cut -c1-160
done
