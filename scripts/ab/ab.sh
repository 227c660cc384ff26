#!/usr/bin/env bash
# Same-lease A/B of hopper kernel variants on a GPU machine (the method of
# docs/performance.md: machines differ by 5-7%, so only variants timed in one
# lease, interleaved, are compared). Each variant is the working tree overlaid
# with the files under exp/<var>/ (a mirror of repository paths; exp/ is a
# scratch folder, never committed); "<var>+det" times <var>'s build with
# deterministic=True. Builds the variants in parallel, runs TESTS on them and
# compute-sanitizer on MEMCHECK, then ROUNDS rounds of scripts/ab/time.py
# (one process per variant per round) and prints per-kernel medians.
#
#   VARS="var0 var1" TESTS="var1:tests/test_hopper.py" MEMCHECK="var1" ROUNDS=3 CASES=1d,2d,3d \
#     bash scripts/ab/ab.sh
# TIME_VARS (default VARS) names the builds that are timed: others are only
# built, for commands run after this script (e.g. instrumented variants).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUTD=${OUT:-/tmp/ab}; mkdir -p "$OUTD"
export NHOOD_CUDA_ARCHS=90a CMAKE_BUILD_PARALLEL_LEVEL=${PAR:-4} PYTHONUNBUFFERED=1
FLAGS="-O3 -DNDEBUG"  # RelWithDebInfo with Release's optimization (no LTO: see scripts/gpu-check.sh)
tar --exclude=./exp --exclude=./build -cf /tmp/ab-base.tar .
t0=$SECONDS
for V in $(printf '%s\n' $VARS | sed 's/+.*//' | sort -u); do
  rm -rf /tmp/ab-src-$V /tmp/ab-inst-$V /tmp/ab-build-$V; mkdir -p /tmp/ab-src-$V; tar -xf /tmp/ab-base.tar -C /tmp/ab-src-$V
  [ -d exp/$V ] && cp -r exp/$V/. /tmp/ab-src-$V/
  ( cd /tmp/ab-src-$V && python3 -m pip install --no-build-isolation --no-deps -q --target /tmp/ab-inst-$V \
      --config-settings=build-dir=/tmp/ab-build-$V --config-settings=cmake.build-type=RelWithDebInfo \
      "--config-settings=cmake.define.CMAKE_CXX_FLAGS_RELWITHDEBINFO=$FLAGS" \
      "--config-settings=cmake.define.CMAKE_CUDA_FLAGS_RELWITHDEBINFO=$FLAGS" . >"$OUTD/build-$V.log" 2>&1
    echo "build $V rc=$? $((SECONDS - t0))s" ) &
done
wait
for spec in ${TESTS:-}; do
  V=${spec%%:*}; T=${spec#*:}
  ( cd /tmp/ab-src-$V && PYTHONPATH=/tmp/ab-inst-$V python3 -m pytest -q -p no:cacheprovider ${T//,/ } 2>&1 | tail -n 4 | sed "s/^/test $V: /" )
done
for V in ${MEMCHECK:-}; do
  ( cd /tmp/ab-src-$V && PYTORCH_NO_CUDA_MEMORY_CACHING=1 PYTHONPATH=/tmp/ab-inst-$V compute-sanitizer --tool memcheck \
      --error-exitcode 1 python3 scripts/memcheck_cases.py hopper 2>&1 | tail -n 3 | sed "s/^/memcheck $V: /" )
done
for r in $(seq 1 ${ROUNDS:-3}); do
  for V in ${TIME_VARS:-$VARS}; do
    PYTHONPATH=/tmp/ab-inst-${V%%+*} python3 scripts/ab/time.py "$V" "$r" "${CASES:-1d,2d,3d}" >>"$OUTD/ab.jsonl" 2>>"$OUTD/ab.err" \
      || echo "time.py $V round $r failed"
  done
done
python3 scripts/ab/table.py "$OUTD/ab.jsonl"
