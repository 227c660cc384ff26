// The neighborhood window rule, in one place, for host and device code.
//
// Every backend (CPU reference, CPU fused, CUDA kernels) and every tiling
// helper derives its windows from `window_in_group`; nothing else in nhood
// restates the rule. Semantics follow NATTEN (DESIGN.md section 1).
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define NHOOD_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define NHOOD_HOST_DEVICE inline
#endif

namespace nhood {

// Window parameters of one spatial axis. Unit axes (used to express 1-D and
// 2-D problems as 3-D ones) have length 1 and kernel/stride/dilation 1.
struct AxisWindow {
  int64_t length = 1;
  int32_t kernel = 1;
  int32_t stride = 1;
  int32_t dilation = 1;
  bool causal = false;
};

// A half-open range [begin, end).
struct IndexRange {
  int64_t begin = 0;
  int64_t end = 0;
  NHOOD_HOST_DEVICE int64_t size() const { return end - begin; }
};

namespace detail {
template <class I>
NHOOD_HOST_DEVICE I min_of(I a, I b) { return a < b ? a : b; }
template <class I>
NHOOD_HOST_DEVICE I max_of(I a, I b) { return a > b ? a : b; }
NHOOD_HOST_DEVICE int64_t min64(int64_t a, int64_t b) { return min_of(a, b); }
NHOOD_HOST_DEVICE int64_t max64(int64_t a, int64_t b) { return max_of(a, b); }
}  // namespace detail

// Index type I of the rule's arithmetic: int64_t on the host; int in the
// box-tiled CUDA kernels, whose backends require axes shorter than 2^30 (so
// every intermediate fits): a 64-bit division is a ~70-instruction call on
// GPUs, and with it the per-row windows made most of those kernels'
// per-work-item code (docs/performance.md, hopper session 18). Both
// arguments must have the same type, so a mixed call does not compile.

// Number of positions in dilation group g (tokens g, g+d, g+2d, ...).
// Dilation and stride 1 are the common cases, skipped without dividing: on
// GPUs a 64-bit division is a ~70-instruction routine, and kernels evaluate
// windows per row (small-kernel problems spend much of a block's time here).
template <class I>
NHOOD_HOST_DEVICE I group_length(const AxisWindow& a, I g) {
  const I n = I(a.length) - g;
  return a.dilation == 1 ? n : (n + a.dilation - 1) / a.dilation;
}

// THE window rule. For a query at position p of a dilation group of length
// lg, the keys it attends are the group positions [begin, end). Both begin
// and end are non-decreasing in p; tiling code relies on that (the union of
// windows of consecutive queries is one contiguous range).
template <class I>
NHOOD_HOST_DEVICE IndexRange window_in_group(const AxisWindow& a, I p, I lg) {
  const I k = a.kernel;
  const I s = a.stride;
  const I first = s == 1 ? p : (p / s) * s;  // first position of p's stride group
  if (a.causal) {
    const I leader = detail::min_of<I>(first + s - 1, lg - 1);
    const I begin = detail::max_of<I>(leader - k + 1, 0);
    return {begin, detail::min_of<I>(p + 1, lg)};
  }
  const I left = k / 2;
  const I right = k - 1 - left;
  const I leader = detail::min_of<I>(first + s / 2, lg - 1);
  I begin = detail::max_of<I>(leader - left, 0);
  // Windows never shrink at the far border: they shift inward.
  if (leader + right >= lg) begin += lg - right - leader - 1;
  return {begin, begin + k};
}

// Window of token i along one axis, as token indices: the query attends
// tokens first + dilation * j for j in [0, count).
struct AxisNeighborhood {
  int64_t first = 0;
  int64_t count = 0;
  int64_t step = 1;
};

NHOOD_HOST_DEVICE AxisNeighborhood token_window(const AxisWindow& a, int64_t i) {
  const int64_t g = i % a.dilation;
  const IndexRange r = window_in_group(a, i / a.dilation, group_length(a, g));
  return {g + r.begin * a.dilation, r.size(), a.dilation};
}

// The queries of one dilation group that attend key position j of that group:
// a contiguous range of group positions, because window begin/end are
// monotone in the query position. Found by binary search over the rule.
template <class I>
NHOOD_HOST_DEVICE IndexRange inverse_window_in_group(const AxisWindow& a, I j, I lg) {
  // first p with window end > j
  I lo = 0, hi = lg;
  while (lo < hi) {
    const I mid = (lo + hi) / 2;
    if (window_in_group(a, mid, lg).end > j) hi = mid; else lo = mid + 1;
  }
  const I first = lo;
  // first p with window begin > j
  hi = lg;
  while (lo < hi) {
    const I mid = (lo + hi) / 2;
    if (window_in_group(a, mid, lg).begin > j) hi = mid; else lo = mid + 1;
  }
  return {first, lo};
}

// Inverse neighborhood of key token i along one axis, as token indices:
// queries first + dilation * j for j in [0, count).
NHOOD_HOST_DEVICE AxisNeighborhood token_inverse_window(const AxisWindow& a, int64_t i) {
  const int64_t g = i % a.dilation;
  const IndexRange r = inverse_window_in_group(a, i / a.dilation, group_length(a, g));
  return {g + r.begin * a.dilation, r.size(), a.dilation};
}

}  // namespace nhood
