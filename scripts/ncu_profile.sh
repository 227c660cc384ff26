#!/usr/bin/env bash
# ncu of the hopper forward and backward kernels on one bench case (CASE, default
# 2d): headline metrics and the SASS lines with the most warp-stall samples.
# Note: ncu leaves the GPU clocks at base afterwards; time nothing after it in the same lease.
set -uo pipefail
cd "$(dirname "$0")/.."
export NHOOD_CUDA_ARCHS=90a CMAKE_BUILD_PARALLEL_LEVEL=16
FLAGS="-O3 -DNDEBUG"
python3 -m pip install --no-build-isolation --no-deps -q --config-settings=cmake.build-type=RelWithDebInfo \
  "--config-settings=cmake.define.CMAKE_CXX_FLAGS_RELWITHDEBINFO=$FLAGS" \
  "--config-settings=cmake.define.CMAKE_CUDA_FLAGS_RELWITHDEBINFO=$FLAGS" . >/tmp/build.log 2>&1 || { tail -20 /tmp/build.log; exit 1; }
ncu --set full --import-source yes -k regex:"forward_kernel|backward_kernel" -c 2 -o /tmp/prof -f \
  python3 scripts/profile_case.py ${CASE:-2d} hopper --backward --reps 1 >/tmp/ncu.log 2>&1 || tail -20 /tmp/ncu.log
for k in forward_kernel backward_kernel; do
  echo "=================== $k"
  ncu --import /tmp/prof.ncu-rep --kernel-name regex:$k --page details --section SpeedOfLight --section WarpStateStats \
    --section SchedulerStats --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis 2>&1 \
    | grep -E "Duration|Throughput|Pipe|Issue|Eligible|Active Warps|Stall|Warp Cycles|Executed Ipc|L2 Hit|Mem Busy|Max Bandwidth|Shared" | head -40
  ncu --import /tmp/prof.ncu-rep --kernel-name regex:$k --page source --csv --print-source sass 2>/dev/null | python3 scripts/ncu_top.py 30
done
