#!/usr/bin/env bash
# Nsight Compute profile of the append kernel (variant 2) on the device machine: one launch per
# format at 65536 tokens, sections for throughput, occupancy, issue and stall reasons.
# Usage: scripts/gpu_ncu_append.sh [formats...]   (default: kivi4 oscar4; HPB=1|2|4, TOKENS=N)
# Needs the same carried .deps/ and .gpu_fixtures/ as gpu_run.sh (which it calls to build).
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
bash "$(dirname "$0")/gpu_run.sh" build > "$OUT/ncu_build.log" 2>&1 || { tail -30 "$OUT/ncu_build.log"; exit 1; }
formats=("$@")
[ ${#formats[@]} -eq 0 ] && formats=(kivi4 oscar4)
for f in "${formats[@]}"; do
  ncu --clock-control none -k regex:AppendPagesV2 -c 1 \
    --section SpeedOfLight --section Occupancy --section SchedulerStats --section WarpStateStats \
    --section LaunchStats --section InstructionStats --section MemoryWorkloadAnalysis \
    ./build-gpu/kernels/streamrecon_kernel_bench --append-only --append-tokens "${TOKENS:-65536}" \
    --append-format "$f" --append-hpb "${HPB:-1}" > "$OUT/ncu_${f}${TAG:-}.txt" 2>&1
  grep -E "Duration|Memory Throughput|DRAM Throughput|Compute \(SM\)|Achieved Occupancy|Theoretical Occupancy|Issue Slots Busy|No Eligible|Executed Instructions |Registers Per|Block Limit|Warp Cycles Per Issued|Stall" "$OUT/ncu_${f}${TAG:-}.txt" | sed "s/^/$f${TAG:-}: /" | head -40
done
