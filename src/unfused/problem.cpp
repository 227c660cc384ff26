// Problems of the unfused QK/AV ops, read off tensor shapes.
#include <string>

#include "../format.hpp"
#include "nhood/unfused.hpp"

namespace nhood {

using detail::fail;
using detail::shape_string;

namespace {

std::string grid_layout(int rank, const char* last) {
  const char* axes = rank == 1 ? "length" : rank == 2 ? "height, width" : "depth, height, width";
  return std::string("[batch, ") + axes + ", heads, " + last + "]";
}

void expect_grid(const TensorView& t, const char* name, int rank, const char* last) {
  if (t.ndim != rank + 3)
    fail(ErrorKind::value, name, " must have ", rank + 3, " dimensions ", grid_layout(rank, last), ", got shape ",
         shape_string(t));
}

void expect_like(const TensorView& t, const char* name, const TensorView& first, const char* first_name) {
  if (t.dtype != first.dtype)
    fail(ErrorKind::type, name, " must have the dtype of ", first_name, " (", dtype_name(first.dtype), "), got ",
         dtype_name(t.dtype));
  if (t.device != first.device)
    fail(ErrorKind::value, name, " must be on the device of ", first_name, " (", detail::device_string(first.device),
         "), got ", detail::device_string(t.device));
}

void expect_same_grid(const TensorView& t, const char* name, const TensorView& first, const char* first_name,
                      int rank) {
  for (int i = 0; i <= rank; ++i)
    if (t.shape[i] != first.shape[i])
      fail(ErrorKind::value, name, " shape ", shape_string(t), " must match ", first_name, " shape ",
           shape_string(first), " in batch and spatial dimensions");
}

int64_t additional_tokens(const TensorView* t, const char* name, const char* last) {
  if (t == nullptr) return 0;
  if (t->ndim != 4)
    fail(ErrorKind::value, name, " must have 4 dimensions [batch, tokens, heads_kv, ", last, "], got shape ",
         shape_string(*t));
  return t->shape[1];
}

// The window part of a Problem, shared by both ops.
Problem window_problem(const WindowArgs& w, const TensorView& grid) {
  Problem p;
  p.rank = w.rank;
  p.batch = grid.shape[0];
  for (int i = 0; i < w.rank; ++i) {
    p.spatial[i] = grid.shape[1 + i];
    p.kernel_size[i] = w.kernel_size[i];
    p.stride[i] = w.stride[i];
    p.dilation[i] = w.dilation[i];
    p.is_causal[i] = w.is_causal[i];
  }
  p.scale = 1.0;  // unused by the unfused ops
  return p;
}

void check_rank(const WindowArgs& w) {
  if (w.rank < 1 || w.rank > kMaxRank) fail(ErrorKind::value, "rank must be 1, 2 or 3, got ", w.rank);
}

}  // namespace

Problem make_qk_problem(const WindowArgs& w, const TensorView& q, const TensorView& k, const TensorView* add_k) {
  check_rank(w);
  const int r = w.rank;
  expect_grid(q, "query", r, "head_dim");
  expect_grid(k, "key", r, "head_dim");
  expect_like(k, "key", q, "query");
  expect_same_grid(k, "key", q, "query", r);
  if (k.shape[r + 2] != q.shape[r + 2])
    fail(ErrorKind::value, "key head_dim (", k.shape[r + 2], ") must equal query head_dim (", q.shape[r + 2], ")");
  Problem p = window_problem(w, q);
  p.heads = q.shape[r + 1];
  p.heads_kv = k.shape[r + 1];
  p.head_dim = p.head_dim_v = q.shape[r + 2];
  p.n_additional = additional_tokens(add_k, "additional_keys", "head_dim");
  validate_problem(p);
  return p;
}

Problem make_av_problem(const WindowArgs& w, const TensorView& weights, const TensorView& v,
                        const TensorView* add_v) {
  check_rank(w);
  const int r = w.rank;
  expect_grid(weights, "weights", r, "prod(kernel_size) + n_additional");
  expect_grid(v, "value", r, "head_dim");
  expect_like(v, "value", weights, "weights");
  expect_same_grid(v, "value", weights, "weights", r);
  Problem p = window_problem(w, weights);
  p.heads = weights.shape[r + 1];
  p.heads_kv = v.shape[r + 1];
  p.head_dim = p.head_dim_v = v.shape[r + 2];
  p.n_additional = additional_tokens(add_v, "additional_values", "head_dim");
  validate_problem(p);
  const int64_t columns = p.window_size();
  if (weights.shape[r + 2] != columns)
    fail(ErrorKind::value, "weights must have prod(kernel_size) + n_additional = ", columns,
         " columns in the last dimension, got ", weights.shape[r + 2]);
  return p;
}

}  // namespace nhood
