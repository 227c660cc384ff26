// parallel_for over [0, n) on the host's cores. Threads come from a pool made
// once, so repeated small calls do not pay for thread creation.
#pragma once

#include <cstdint>
#include <functional>

namespace nhood::cpu {

// Number of worker threads: NHOOD_NUM_THREADS if set, else the hardware's.
int num_threads();

// Runs body(begin, end) over disjoint chunks covering [0, n). Chunks hold at
// least `grain` items. Exceptions in a chunk are rethrown on the caller.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& body);
// The same with about `chunks_per_thread` chunks per thread (the default
// above is 4); more chunks balance better when threads start late or
// tasks differ in cost, at one atomic increment per chunk.
void parallel_for(int64_t n, int64_t grain, int chunks_per_thread,
                  const std::function<void(int64_t, int64_t)>& body);

}  // namespace nhood::cpu
