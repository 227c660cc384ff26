// The unfused neighborhood attention ops: QK (attention weights) and AV
// (weighted sum of values), with relative positional bias (RPB), and their
// backward passes. They expose the attention weights that the fused
// forward/backward keep on chip, with NATTEN (<= 0.17) semantics.
//
// Layout is heads-last like the fused API:
//   query   [B, *spatial, H, D]      key   [B, *spatial, H_kv, D]
//   weights [B, *spatial, H, prod(kernel_size) + N_add]
//   value   [B, *spatial, H_kv, D_v] out   [B, *spatial, H, D_v]
//   additional keys/values [B, N_add, H_kv, D|D_v]
//   rpb     [H, 2*K0-1 (, 2*K1-1 (, 2*K2-1))]  (one axis per spatial axis)
//
// QK: weights[..., c] = <query, key_c> (+ rpb) -- raw dot products: no scale
// and no softmax (the caller scales query, as NATTEN's legacy ops expect).
// Column order: the key at window offsets (i0, i1, i2) (its index inside the
// window box along each axis, window first = 0) is column (i0*K1 + i1)*K2 + i2;
// the additional tokens follow in order, columns prod(K) .. prod(K)+N_add-1.
// Windows with fewer than prod(K) keys (causal axes near the start) leave
// columns with i_a >= window count along some axis unused: QK writes -inf
// there (softmax gives 0), AV never reads them, AV's backward writes 0 to
// their d_weights and QK's backward ignores their d_weights.
//
// RPB: the key at group offset r_a = (key_a - query_a) / dilation_a from the
// query (along each axis) adds rpb[h, r_0 + K0-1, r_1 + K1-1, r_2 + K2-1].
// This equals NATTEN's `pb_start + ki` indexing for every configuration
// NATTEN <= 0.17 supported (odd kernels, non-causal, stride 1, any dilation)
// and extends it to even kernels, stride and causal axes (|r_a| <= K_a - 1
// always holds, so the index is in range). Additional tokens get no bias.
#pragma once

#include "nhood/api.hpp"
#include "nhood/problem.hpp"
#include "nhood/types.hpp"

namespace nhood {

struct QKTensors {
  TensorView query, key, weights;                // weights: output
  const TensorView* rpb = nullptr;               // optional
  const TensorView* additional_keys = nullptr;   // optional
};

struct QKBackwardTensors {
  TensorView query, key, d_weights;              // inputs
  TensorView d_query, d_key;                     // outputs
  const TensorView* additional_keys = nullptr;
  const TensorView* d_additional_keys = nullptr; // output, required with additional keys
  const TensorView* d_rpb = nullptr;             // output, optional (gradient of the bias)
};

struct AVTensors {
  TensorView weights, value, out;                // out: output
  const TensorView* additional_values = nullptr;
};

struct AVBackwardTensors {
  TensorView weights, value, d_out;              // inputs
  TensorView d_weights, d_value;                 // outputs
  const TensorView* additional_values = nullptr;
  const TensorView* d_additional_values = nullptr;  // output, required with additional values
};

// Problems of the unfused ops, read off tensor shapes and validated. QK: heads,
// head_dim from query, heads_kv from key, n_additional from additional_keys
// (head_dim_v = head_dim). AV: heads from weights, heads_kv and head_dim(_v)
// from value, n_additional from additional_values; weights must have
// prod(kernel_size) + n_additional columns. `scale` is not used by these ops.
Problem make_qk_problem(const WindowArgs& window, const TensorView& query, const TensorView& key,
                        const TensorView* additional_keys = nullptr);
Problem make_av_problem(const WindowArgs& window, const TensorView& weights, const TensorView& value,
                        const TensorView* additional_values = nullptr);

// Options::deterministic is honoured by every backend (the CPU reference is
// always deterministic). Backends: reference (CPU), naive and gemm (CUDA).
void qk_forward(const Problem& problem, const QKTensors& tensors, const Options& options = {});
void qk_backward(const Problem& problem, const QKBackwardTensors& tensors, const Options& options = {});
void av_forward(const Problem& problem, const AVTensors& tensors, const Options& options = {});
void av_backward(const Problem& problem, const AVBackwardTensors& tensors, const Options& options = {});

}  // namespace nhood
