#!/usr/bin/env bash
# fused backend on the GPU machine: build+install, tests/test_fused.py, then
# python -m nhood.bench (RelWithDebInfo with -O3: the image GCC lacks lto-wrapper); logs under $OUT, short table printed last.
#   scripts/fused-check.sh [bench args...]     (e.g. --quick --cases 2d,vision)
set -uo pipefail
cd "$(dirname "$0")/.."
export NHOOD_CUDA_ARCHS=${NHOOD_CUDA_ARCHS:-90a} PYTHONUNBUFFERED=1
LOG=${OUT:-/tmp/fused-check}; mkdir -p "$LOG"
t0=$SECONDS
CMAKE_BUILD_PARALLEL_LEVEL=16 python3 -m pip install --no-build-isolation --no-deps --no-cache-dir -q \
  --config-settings=cmake.build-type=RelWithDebInfo \
  "--config-settings=cmake.define.CMAKE_CXX_FLAGS_RELWITHDEBINFO=-O3 -DNDEBUG" \
  "--config-settings=cmake.define.CMAKE_CUDA_FLAGS_RELWITHDEBINFO=-O3 -DNDEBUG" . >"$LOG/build.log" 2>&1 \
  || { tail -40 "$LOG/build.log"; exit 1; }
echo "build $((SECONDS - t0))s"
if [ "${SKIP_TESTS:-0}" != 1 ]; then
  python3 -m pytest -q -x -p no:cacheprovider tests/test_fused.py >"$LOG/test.log" 2>&1; echo "tests rc=$? $((SECONDS - t0))s"
  tail -30 "$LOG/test.log"
fi
if [ "${SKIP_BENCH:-0}" != 1 ]; then
  timeout ${BENCH_TIMEOUT:-360} python3 -m nhood.bench --json "$LOG/bench.json" "$@" >"$LOG/bench.log" 2>&1; echo "bench rc=$? $((SECONDS - t0))s"
  tail -45 "$LOG/bench.log"
fi
