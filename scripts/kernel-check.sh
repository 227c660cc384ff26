#!/usr/bin/env bash
# Tensor-core kernels on the GPU machine, one call: build+install (RelWithDebInfo
# with -O3: the image GCC lacks lto-wrapper), the kernel tests, a SASS summary
# of the hopper kernels, then python -m nhood.bench. Logs under $OUT; the
# bench table is printed last.
#   scripts/kernel-check.sh [bench args...]     (e.g. --quick --cases 2d,vision)
# Environment: TESTS (default "tests/test_hopper.py tests/test_fused.py"),
# SKIP_TESTS=1, SKIP_BENCH=1, BENCH_TIMEOUT (s), NHOOD_CUDA_ARCHS (default 90a).
# (Earlier sections of docs/performance.md call this script fused-check.sh.)
set -uo pipefail
cd "$(dirname "$0")/.."
export NHOOD_CUDA_ARCHS=${NHOOD_CUDA_ARCHS:-90a} PYTHONUNBUFFERED=1
LOG=${OUT:-/tmp/kernel-check}; mkdir -p "$LOG"
t0=$SECONDS
# A fresh build: a warm device machine keeps build/ between calls, and the
# synced sources can carry older timestamps than its objects (stale kernels).
rm -rf build
CMAKE_BUILD_PARALLEL_LEVEL=16 python3 -m pip install --no-build-isolation --no-deps --no-cache-dir -q \
  --config-settings=cmake.build-type=RelWithDebInfo \
  "--config-settings=cmake.define.CMAKE_CXX_FLAGS_RELWITHDEBINFO=-O3 -DNDEBUG" \
  "--config-settings=cmake.define.CMAKE_CUDA_FLAGS_RELWITHDEBINFO=-O3 -DNDEBUG" . >"$LOG/build.log" 2>&1 \
  || { tail -40 "$LOG/build.log"; exit 1; }
echo "build $((SECONDS - t0))s"
so=$(python3 -c "import nhood._core as m; print(m.__file__)")
if command -v cuobjdump >/dev/null; then
  cuobjdump -sass "$so" >"$LOG/sass.txt" 2>/dev/null
  echo "hopper SASS: $(grep -c HGMMA "$LOG/sass.txt") HGMMA, $(grep -c UTMALDG "$LOG/sass.txt") UTMALDG, $(grep -cE '\b(LDL|STL)\b' "$LOG/sass.txt") LDL/STL (whole module)"
  cuobjdump -res-usage "$so" 2>/dev/null | grep -A1 "hopper" | grep -oE "REG:[0-9]+|STACK:[0-9]+|SHARED:[0-9]+|LOCAL:[0-9]+" | paste -sd' ' | head -c 300; echo
fi
if [ "${SKIP_TESTS:-0}" != 1 ]; then
  timeout ${TEST_TIMEOUT:-300} python3 -m pytest -q -x -p no:cacheprovider ${TESTS:-tests/test_hopper.py tests/test_fused.py} \
    >"$LOG/test.log" 2>&1; echo "tests rc=$? $((SECONDS - t0))s"
  tail -30 "$LOG/test.log"
fi
if [ "${SKIP_BENCH:-0}" != 1 ]; then
  timeout ${BENCH_TIMEOUT:-360} python3 -m nhood.bench --json "$LOG/bench.json" "$@" >"$LOG/bench.log" 2>&1; echo "bench rc=$? $((SECONDS - t0))s"
  tail -45 "$LOG/bench.log"
fi
