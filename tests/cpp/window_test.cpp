// The inverse window (the queries that attend a key, found by bisection over
// the window rule) against its definition, a scan of every query's window:
// equal, and contiguous. Exhaustive over small groups, sampled over long ones.
// Also: the rule in int (as the CUDA kernels evaluate it) equals the rule in
// int64_t (the host's), windows, inverse windows and group lengths alike.
#include <nhood/window.hpp>

#include <cstdio>
#include <cstdlib>
#include <initializer_list>

namespace {

long checked = 0, failed = 0;

void check_axis(int64_t lg, int32_t k, int32_t s, bool causal, int64_t j_step) {
  nhood::AxisWindow a;
  a.length = lg, a.kernel = k, a.stride = s, a.causal = causal;
  for (int64_t j = 0; j < lg; j += j_step) {
    int64_t first = -1, last = -1;  // by definition: queries p whose window holds j
    for (int64_t p = 0; p < lg; ++p) {
      const nhood::IndexRange w = nhood::window_in_group(a, p, lg);
      if (j == 0) {
        const nhood::IndexRange w32 = nhood::window_in_group(a, int(p), int(lg));
        if (w32.begin != w.begin || w32.end != w.end) ++failed;
      }
      if (w.begin <= j && j < w.end) {
        if (first < 0) first = p;
        if (last >= 0 && last != p - 1) ++failed;  // not contiguous
        last = p;
      }
    }
    const nhood::IndexRange r = nhood::inverse_window_in_group(a, j, lg);
    const nhood::IndexRange r32 = nhood::inverse_window_in_group(a, int(j), int(lg));
    const bool ok = (first < 0 ? r.begin == r.end : (r.begin == first && r.end == last + 1)) &&
                    r32.begin == r.begin && r32.end == r.end;
    ++checked;
    if (!ok && failed++ < 5)
      std::printf("FAIL lg=%lld k=%d s=%d causal=%d j=%lld: got [%lld, %lld), want [%lld, %lld]\n", (long long)lg, k, s,
                  int(causal), (long long)j, (long long)r.begin, (long long)r.end, (long long)first, (long long)last);
  }
}

}  // namespace

int main() {
  for (int64_t lg = 1; lg <= 40; ++lg)
    for (int32_t k = 1; k <= lg; ++k)
      for (int32_t s = 1; s <= k; ++s)
        for (bool causal : {false, true}) check_axis(lg, k, s, causal, 1);
  for (int64_t lg : {1000, 4099})
    for (int32_t k : {7, 64, 999})
      for (int32_t s : {1, 3, 16})
        for (bool causal : {false, true})
          if (s <= k) check_axis(lg, k, s, causal, 37);  // stride <= kernel (problem validation)
  for (int32_t k : {2048, 2047})  // the 1-D anchor's kernel on its 32768-long axis
    for (int32_t s : {1, 5})
      for (bool causal : {false, true}) check_axis(32768, k, s, causal, 997);
  for (int64_t length : {1, 2, 39, 40, 32768})
    for (int32_t d = 1; d <= 9; ++d)
      for (int64_t g = 0; g < d && g < length; ++g) {
        nhood::AxisWindow a;
        a.length = length, a.dilation = d;
        ++checked;
        if (nhood::group_length(a, int(g)) != nhood::group_length(a, g)) ++failed;
      }
  std::printf("%ld inverse windows and group lengths checked, %ld failures\n", checked, failed);
  return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
