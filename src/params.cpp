#include "params.hpp"

#include <vector>

#include "format.hpp"
#include "tensor_checks.hpp"

namespace nhood::detail {

Params problem_params(const Problem& p, DType dtype, Device device, bool deterministic) {
  validate_problem(p);
  Params out;
  out.dtype = dtype;
  out.device = device;
  out.batch = p.batch;
  out.heads = p.heads;
  out.heads_kv = p.heads_kv;
  out.head_dim = p.head_dim;
  out.head_dim_v = p.head_dim_v;
  out.n_additional = p.n_additional;
  for (int i = 0; i < p.rank; ++i) out.axis[i] = p.axis(i);
  out.scale = p.scale;
  out.deterministic = deterministic;
  return out;
}

namespace {

// Validates query/key/value and the additional tokens, shared by both passes.
void check_inputs(const Problem& p, const TensorView& q, const TensorView& k, const TensorView& v,
                  const TensorView* add_k, const TensorView* add_v) {
  const DType dt = q.dtype;
  const Device dev = q.device;
  check_tensor(q, "query", grid_shape(p, p.heads, p.head_dim), dt, dev, Access::read);
  check_tensor(k, "key", grid_shape(p, p.heads_kv, p.head_dim), dt, dev, Access::read);
  check_tensor(v, "value", grid_shape(p, p.heads_kv, p.head_dim_v), dt, dev, Access::read);
  if ((add_k == nullptr) != (add_v == nullptr))
    fail(ErrorKind::value, add_k ? "additional_keys were given without additional_values"
                                 : "additional_values were given without additional_keys");
  if (!add_k && p.n_additional != 0)
    fail(ErrorKind::value, "problem.n_additional is ", p.n_additional, " but no additional_keys were given");
  if (add_k) {
    check_tensor(*add_k, "additional_keys", {p.batch, p.n_additional, p.heads_kv, p.head_dim}, dt, dev, Access::read);
    check_tensor(*add_v, "additional_values", {p.batch, p.n_additional, p.heads_kv, p.head_dim_v}, dt, dev,
                 Access::read);
  }
}

}  // namespace

Params forward_params(const Problem& p, const ForwardTensors& t, const Options& options) {
  Params out = problem_params(p, t.query.dtype, t.query.device, options.deterministic);
  check_inputs(p, t.query, t.key, t.value, t.additional_keys, t.additional_values);
  const Device dev = t.query.device;
  check_tensor(t.out, "out", grid_shape(p, p.heads, p.head_dim_v), t.query.dtype, dev, Access::write);
  if (t.lse) check_tensor(*t.lse, "lse", grid_shape(p, p.heads, -1), DType::float32, dev, Access::write);
  out.q = grid_operand(t.query, p.rank);
  out.k = grid_operand(t.key, p.rank);
  out.v = grid_operand(t.value, p.rank);
  out.out = grid_operand(t.out, p.rank);
  if (t.lse) out.lse = grid_operand(*t.lse, p.rank);
  if (t.additional_keys) {
    out.add_k = token_operand(*t.additional_keys);
    out.add_v = token_operand(*t.additional_values);
  }
  return out;
}

Params backward_params(const Problem& p, const BackwardTensors& t, const Options& options) {
  Params out = problem_params(p, t.query.dtype, t.query.device, options.deterministic);
  check_inputs(p, t.query, t.key, t.value, t.additional_keys, t.additional_values);
  const DType dt = t.query.dtype;
  const Device dev = t.query.device;
  check_tensor(t.out, "out", grid_shape(p, p.heads, p.head_dim_v), dt, dev, Access::read);
  check_tensor(t.lse, "lse", grid_shape(p, p.heads, -1), DType::float32, dev, Access::read);
  check_tensor(t.d_out, "d_out", grid_shape(p, p.heads, p.head_dim_v), dt, dev, Access::read);
  check_tensor(t.d_query, "d_query", grid_shape(p, p.heads, p.head_dim), dt, dev, Access::write);
  check_tensor(t.d_key, "d_key", grid_shape(p, p.heads_kv, p.head_dim), dt, dev, Access::write);
  check_tensor(t.d_value, "d_value", grid_shape(p, p.heads_kv, p.head_dim_v), dt, dev, Access::write);
  if (t.additional_keys) {
    if (!t.d_additional_keys || !t.d_additional_values)
      fail(ErrorKind::value, "d_additional_keys and d_additional_values are required with additional keys/values");
    check_tensor(*t.d_additional_keys, "d_additional_keys", {p.batch, p.n_additional, p.heads_kv, p.head_dim}, dt,
                 dev, Access::write);
    check_tensor(*t.d_additional_values, "d_additional_values", {p.batch, p.n_additional, p.heads_kv, p.head_dim_v},
                 dt, dev, Access::write);
  }
  out.q = grid_operand(t.query, p.rank);
  out.k = grid_operand(t.key, p.rank);
  out.v = grid_operand(t.value, p.rank);
  out.out = grid_operand(t.out, p.rank);
  out.lse = grid_operand(t.lse, p.rank);
  out.d_out = grid_operand(t.d_out, p.rank);
  out.dq = grid_operand(t.d_query, p.rank);
  out.dk = grid_operand(t.d_key, p.rank);
  out.dv = grid_operand(t.d_value, p.rank);
  if (t.additional_keys) {
    out.add_k = token_operand(*t.additional_keys);
    out.add_v = token_operand(*t.additional_values);
    out.d_add_k = token_operand(*t.d_additional_keys);
    out.d_add_v = token_operand(*t.d_additional_values);
  }
  return out;
}

}  // namespace nhood::detail
