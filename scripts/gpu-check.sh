#!/usr/bin/env bash
# One command for a GPU machine: build and install nhood with CUDA, run the GPU
# test suite on torch/CuPy/JAX arrays, run compute-sanitizer memcheck on small
# cases, and print a summary table LAST.
#
#   scripts/gpu-check.sh            (on the lent GPU: run tool, from the repo root)
#
# Environment: NHOOD_CUDA_ARCHS (default 90a, keeps the build fast), PYTHON
# (default python3), OUT (a folder for logs; default /tmp/nhood-gpu-check).
# Logs of all steps go to $OUT/gpu-check.log (one file: the device tool brings
# back at most 8 files). A kernel family adds its checks as one `step` line each.
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
export NHOOD_CUDA_ARCHS=${NHOOD_CUDA_ARCHS:-90a}
export PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # JAX would take 75% of the GPU from torch/CuPy tests
LOGDIR=${OUT:-/tmp/nhood-gpu-check}
mkdir -p "$LOGDIR"
LOG="$LOGDIR/gpu-check.log"
: >"$LOG"
SUMMARY=()
FAILED=0

# step NAME COMMAND...: runs COMMAND, logs it, records status and seconds.
step() {
  local name=$1; shift
  local t0=$SECONDS
  echo "===== $name: $*" | tee -a "$LOG"
  "$@" >"$LOGDIR/step.log" 2>&1
  local rc=$?
  cat "$LOGDIR/step.log" >>"$LOG"
  tail -n 25 "$LOGDIR/step.log"
  rm -f "$LOGDIR/step.log"
  local status=ok
  [ $rc -ne 0 ] && { status="FAIL(rc=$rc)"; FAILED=1; }
  SUMMARY+=("$(printf '%-28s %-12s %5ss' "$name" "$status" $((SECONDS - t0)))")
  return $rc
}

# Sanitizer runs: torch's caching allocator off, so out-of-bounds accesses hit unallocated memory.
memcheck() {
  PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck --error-exitcode 1 "$@"
}

step gpu-info nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
# RelWithDebInfo with Release's optimization flags: the image's GCC has no
# lto-wrapper, and nanobind turns on LTO for Release builds only.
FLAGS="-O3 -DNDEBUG"
# A fresh build: a warm device machine keeps build/ between calls, and the
# synced sources can carry older timestamps than its objects (stale kernels).
rm -rf build
step build-install "$PY" -m pip install --no-build-isolation --no-deps --no-cache-dir -q \
  --config-settings=cmake.build-type=RelWithDebInfo \
  "--config-settings=cmake.define.CMAKE_CXX_FLAGS_RELWITHDEBINFO=$FLAGS" \
  "--config-settings=cmake.define.CMAKE_CUDA_FLAGS_RELWITHDEBINFO=$FLAGS" . \
  || { echo "build failed: see $LOG"; printf '%s\n' "${SUMMARY[@]}"; exit 1; }
step import-check "$PY" -c "import nhood; print('cuda', nhood.cuda_available(), nhood.backends('cuda'))"

# ---- naive (cuda/naive) ----
step pytest-cuda "$PY" -m pytest -q -p no:cacheprovider --durations=5 tests/test_cuda.py
step memcheck-naive memcheck "$PY" scripts/memcheck_cases.py naive
step pytest-jax "$PY" -m pytest -q -p no:cacheprovider --durations=5 tests/test_jax.py  # nhood.jax FFI handlers on the GPU
# ---- fused (cuda/fused) ----
step pytest-fused "$PY" -m pytest -q -p no:cacheprovider tests/test_fused.py
step memcheck-fused memcheck "$PY" scripts/memcheck_cases.py fused
# ---- hopper (cuda/hopper, sm_90a) ----
step pytest-hopper "$PY" -m pytest -q -p no:cacheprovider tests/test_hopper.py
step memcheck-hopper memcheck "$PY" scripts/memcheck_cases.py hopper
# ---- unfused ops (cuda/gemm, cuda/naive/unfused_*) ----
step pytest-unfused "$PY" -m pytest -q -p no:cacheprovider tests/test_unfused.py tests/test_compat.py
step bench-unfused "$PY" -m nhood.bench_unfused --backward   # issue 6's gemm-vs-naive ratios

echo
echo "===== summary ($(date -u +%H:%M:%S) UTC, log: $LOG)"
printf '%-28s %-12s %6s\n' step status time
printf '%s\n' "${SUMMARY[@]}"
exit $FAILED
