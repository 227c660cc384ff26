// Description of one neighborhood attention problem, independent of where
// its tensors live.
#pragma once

#include <cstdint>

#include "nhood/types.hpp"
#include "nhood/window.hpp"

namespace nhood {

constexpr int kMaxRank = 3;

struct Problem {
  int32_t rank = 1;                     // spatial rank, 1..3
  int64_t batch = 1;
  int64_t spatial[kMaxRank] = {1, 1, 1};
  int32_t kernel_size[kMaxRank] = {1, 1, 1};
  int32_t stride[kMaxRank] = {1, 1, 1};
  int32_t dilation[kMaxRank] = {1, 1, 1};
  bool is_causal[kMaxRank] = {false, false, false};
  int64_t heads = 1;
  int64_t heads_kv = 1;
  int64_t head_dim = 1;
  int64_t head_dim_v = 1;
  int64_t n_additional = 0;  // extra key/value tokens every query attends
  double scale = 1.0;        // logits are scale * <q, k>

  int64_t tokens() const {
    int64_t n = 1;
    for (int i = 0; i < rank; ++i) n *= spatial[i];
    return n;
  }
  // Keys each query attends away from causal borders: prod(kernel) + n_additional.
  int64_t window_size() const {
    int64_t n = 1;
    for (int i = 0; i < rank; ++i) n *= kernel_size[i];
    return n + n_additional;
  }
  AxisWindow axis(int i) const {
    return {spatial[i], kernel_size[i], stride[i], dilation[i], is_causal[i]};
  }
};

// Window arguments as a caller gives them; shapes come from the tensors.
struct WindowArgs {
  int32_t rank = 1;
  int32_t kernel_size[kMaxRank] = {1, 1, 1};
  int32_t stride[kMaxRank] = {1, 1, 1};
  int32_t dilation[kMaxRank] = {1, 1, 1};
  bool is_causal[kMaxRank] = {false, false, false};
  bool has_scale = false;  // false: scale = head_dim ** -0.5
  double scale = 1.0;
};

// Reads batch, spatial shape, heads, head dims and the number of additional
// tokens off query [B, *spatial, H, D], key [B, *spatial, H_kv, D], value
// [B, *spatial, H_kv, D_v] and optional additional_keys [B, N_add, H_kv, D],
// then validates everything (throws nhood::Error naming argument and rule).
Problem make_problem(const WindowArgs& window, const TensorView& query, const TensorView& key,
                     const TensorView& value, const TensorView* additional_keys = nullptr);

// Throws nhood::Error if the problem itself is invalid (ranges, divisibility).
void validate_problem(const Problem& problem);

}  // namespace nhood
