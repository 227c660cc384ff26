// Builds and validates a Problem from tensor shapes and window arguments.
#include <cmath>

#include "format.hpp"
#include "nhood/problem.hpp"

namespace nhood {

using detail::fail;
using detail::shape_string;

namespace {

void expect_ndim(const TensorView& t, const char* name, int ndim, const char* layout) {
  if (t.ndim != ndim)
    fail(ErrorKind::value, name, " must have ", ndim, " dimensions ", layout, ", got shape ",
         shape_string(t));
}

void expect_same_kind(const TensorView& t, const char* name, const TensorView& query) {
  if (t.dtype != query.dtype)
    fail(ErrorKind::type, name, " must have the dtype of query (", dtype_name(query.dtype), "), got ",
         dtype_name(t.dtype));
  if (t.device != query.device)
    fail(ErrorKind::value, name, " must be on the device of query (", detail::device_string(query.device),
         "), got ", detail::device_string(t.device));
}

}  // namespace

void validate_problem(const Problem& p) {
  if (p.rank < 1 || p.rank > kMaxRank) fail(ErrorKind::value, "rank must be 1, 2 or 3, got ", p.rank);
  if (p.batch < 0) fail(ErrorKind::value, "batch must be >= 0, got ", p.batch);
  if (p.heads < 1) fail(ErrorKind::value, "heads must be >= 1, got ", p.heads);
  if (p.heads_kv < 1) fail(ErrorKind::value, "heads_kv (key/value heads) must be >= 1, got ", p.heads_kv);
  if (p.heads % p.heads_kv != 0)
    fail(ErrorKind::value, "query heads (", p.heads, ") must be a multiple of key/value heads (", p.heads_kv,
         ")");
  if (p.head_dim < 1) fail(ErrorKind::value, "head_dim must be >= 1, got ", p.head_dim);
  if (p.head_dim_v < 1) fail(ErrorKind::value, "head_dim_v (value head dim) must be >= 1, got ", p.head_dim_v);
  if (p.n_additional < 0) fail(ErrorKind::value, "n_additional must be >= 0, got ", p.n_additional);
  if (!std::isfinite(p.scale)) fail(ErrorKind::value, "scale must be finite, got ", p.scale);
  for (int i = 0; i < p.rank; ++i) {
    const int64_t length = p.spatial[i];
    const int32_t k = p.kernel_size[i], s = p.stride[i], d = p.dilation[i];
    if (length < 1) fail(ErrorKind::value, "input size along spatial axis ", i, " must be >= 1, got ", length);
    if (k < 1) fail(ErrorKind::value, "kernel_size[", i, "] must be >= 1, got ", k);
    if (d < 1) fail(ErrorKind::value, "dilation[", i, "] must be >= 1, got ", d);
    if (s < 1) fail(ErrorKind::value, "stride[", i, "] must be >= 1, got ", s);
    if (s > k) fail(ErrorKind::value, "stride[", i, "] (", s, ") must be <= kernel_size[", i, "] (", k, ")");
    if (int64_t(k) * d > length)
      fail(ErrorKind::value, "kernel_size[", i, "] * dilation[", i, "] (", k, " * ", d, " = ", int64_t(k) * d,
           ") must be <= the input size along spatial axis ", i, " (", length, ")");
  }
}

Problem make_problem(const WindowArgs& w, const TensorView& q, const TensorView& k, const TensorView& v,
                     const TensorView* add_k) {
  if (w.rank < 1 || w.rank > kMaxRank) fail(ErrorKind::value, "rank must be 1, 2 or 3, got ", w.rank);
  const int r = w.rank;
  const int nd = r + 3;
  const char* layout = r == 1   ? "[batch, length, heads, head_dim]"
                       : r == 2 ? "[batch, height, width, heads, head_dim]"
                                : "[batch, depth, height, width, heads, head_dim]";
  expect_ndim(q, "query", nd, layout);
  expect_ndim(k, "key", nd, layout);
  expect_ndim(v, "value", nd, layout);
  expect_same_kind(k, "key", q);
  expect_same_kind(v, "value", q);
  for (int i = 0; i <= r; ++i) {
    if (k.shape[i] != q.shape[i])
      fail(ErrorKind::value, "key shape ", shape_string(k), " must match query shape ", shape_string(q),
           " in batch and spatial dimensions");
    if (v.shape[i] != q.shape[i])
      fail(ErrorKind::value, "value shape ", shape_string(v), " must match query shape ", shape_string(q),
           " in batch and spatial dimensions");
  }
  if (k.shape[r + 2] != q.shape[r + 2])
    fail(ErrorKind::value, "key head_dim (", k.shape[r + 2], ") must equal query head_dim (", q.shape[r + 2], ")");
  if (v.shape[r + 1] != k.shape[r + 1])
    fail(ErrorKind::value, "value heads (", v.shape[r + 1], ") must equal key heads (", k.shape[r + 1], ")");

  Problem p;
  p.rank = r;
  p.batch = q.shape[0];
  for (int i = 0; i < r; ++i) {
    p.spatial[i] = q.shape[1 + i];
    p.kernel_size[i] = w.kernel_size[i];
    p.stride[i] = w.stride[i];
    p.dilation[i] = w.dilation[i];
    p.is_causal[i] = w.is_causal[i];
  }
  p.heads = q.shape[r + 1];
  p.heads_kv = k.shape[r + 1];
  p.head_dim = q.shape[r + 2];
  p.head_dim_v = v.shape[r + 2];
  if (add_k != nullptr) {
    if (add_k->ndim != 4)
      fail(ErrorKind::value, "additional_keys must have 4 dimensions [batch, tokens, heads_kv, head_dim], got shape ",
           shape_string(*add_k));
    p.n_additional = add_k->shape[1];
  }
  if (p.head_dim < 1) fail(ErrorKind::value, "head_dim must be >= 1, got ", p.head_dim);
  p.scale = w.has_scale ? w.scale : 1.0 / std::sqrt(double(p.head_dim));
  validate_problem(p);
  return p;
}

}  // namespace nhood
