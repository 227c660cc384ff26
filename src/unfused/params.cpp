#include "params.hpp"

#include <vector>

#include "../params.hpp"
#include "../tensor_checks.hpp"

namespace nhood::detail {

namespace {

int64_t window_columns(const Problem& p) { return p.window_size() - p.n_additional; }

std::vector<int64_t> bias_shape(const Problem& p) {
  std::vector<int64_t> s{p.heads};
  for (int i = 0; i < p.rank; ++i) s.push_back(2 * int64_t(p.kernel_size[i]) - 1);
  return s;
}

BiasOperand bias_operand(const TensorView& t, int rank) {
  BiasOperand o;
  o.data = t.data;
  o.sh = t.strides[0];
  int64_t* axes[3] = {&o.sx, &o.sy, &o.sz};
  for (int i = 0; i < rank; ++i) *axes[i] = t.strides[1 + i];
  return o;
}

// The checks both QK passes share: query, key, additional keys.
void check_qk_inputs(const Problem& p, const TensorView& q, const TensorView& k, const TensorView* add_k) {
  const DType dt = q.dtype;
  const Device dev = q.device;
  check_tensor(q, "query", grid_shape(p, p.heads, p.head_dim), dt, dev, Access::read);
  check_tensor(k, "key", grid_shape(p, p.heads_kv, p.head_dim), dt, dev, Access::read);
  if (!add_k && p.n_additional != 0)
    fail(ErrorKind::value, "problem.n_additional is ", p.n_additional, " but no additional_keys were given");
  if (add_k)
    check_tensor(*add_k, "additional_keys", {p.batch, p.n_additional, p.heads_kv, p.head_dim}, dt, dev, Access::read);
}

void check_av_inputs(const Problem& p, const TensorView& w, const TensorView& v, const TensorView* add_v) {
  const DType dt = w.dtype;
  const Device dev = w.device;
  check_tensor(w, "weights", grid_shape(p, p.heads, p.window_size()), dt, dev, Access::read);
  check_tensor(v, "value", grid_shape(p, p.heads_kv, p.head_dim_v), dt, dev, Access::read);
  if (!add_v && p.n_additional != 0)
    fail(ErrorKind::value, "problem.n_additional is ", p.n_additional, " but no additional_values were given");
  if (add_v)
    check_tensor(*add_v, "additional_values", {p.batch, p.n_additional, p.heads_kv, p.head_dim_v}, dt, dev,
                 Access::read);
}

void check_same_dims(const Problem& p) {
  if (p.head_dim != p.head_dim_v)
    fail(ErrorKind::value, "the unfused ops take one head dim: head_dim (", p.head_dim, ") != head_dim_v (",
         p.head_dim_v, ")");
}

}  // namespace

QKParams qk_forward_params(const Problem& p, const QKTensors& t, const Options& o) {
  QKParams out;
  out.shape = problem_params(p, t.query.dtype, t.query.device, o.deterministic);
  check_same_dims(p);
  out.n_window = window_columns(p);
  check_qk_inputs(p, t.query, t.key, t.additional_keys);
  check_tensor(t.weights, "weights", grid_shape(p, p.heads, p.window_size()), t.query.dtype, t.query.device,
               Access::write);
  if (t.rpb) check_tensor(*t.rpb, "rpb", bias_shape(p), t.query.dtype, t.query.device, Access::read);
  out.query = grid_operand(t.query, p.rank);
  out.key = grid_operand(t.key, p.rank);
  out.weights = grid_operand(t.weights, p.rank);
  if (t.additional_keys) out.add_k = token_operand(*t.additional_keys);
  if (t.rpb) out.rpb = bias_operand(*t.rpb, p.rank);
  return out;
}

QKParams qk_backward_params(const Problem& p, const QKBackwardTensors& t, const Options& o) {
  QKParams out;
  out.shape = problem_params(p, t.query.dtype, t.query.device, o.deterministic);
  check_same_dims(p);
  out.n_window = window_columns(p);
  const DType dt = t.query.dtype;
  const Device dev = t.query.device;
  check_qk_inputs(p, t.query, t.key, t.additional_keys);
  check_tensor(t.d_weights, "d_weights", grid_shape(p, p.heads, p.window_size()), dt, dev, Access::read);
  check_tensor(t.d_query, "d_query", grid_shape(p, p.heads, p.head_dim), dt, dev, Access::write);
  check_tensor(t.d_key, "d_key", grid_shape(p, p.heads_kv, p.head_dim), dt, dev, Access::write);
  if (t.additional_keys) {
    if (!t.d_additional_keys) fail(ErrorKind::value, "d_additional_keys is required with additional_keys");
    check_tensor(*t.d_additional_keys, "d_additional_keys", {p.batch, p.n_additional, p.heads_kv, p.head_dim}, dt,
                 dev, Access::write);
  }
  if (t.d_rpb) check_tensor(*t.d_rpb, "d_rpb", bias_shape(p), dt, dev, Access::write);
  out.query = grid_operand(t.query, p.rank);
  out.key = grid_operand(t.key, p.rank);
  out.d_weights = grid_operand(t.d_weights, p.rank);
  out.d_query = grid_operand(t.d_query, p.rank);
  out.d_key = grid_operand(t.d_key, p.rank);
  if (t.additional_keys) {
    out.add_k = token_operand(*t.additional_keys);
    out.d_add_k = token_operand(*t.d_additional_keys);
  }
  if (t.d_rpb) out.d_rpb = bias_operand(*t.d_rpb, p.rank);
  return out;
}

AVParams av_forward_params(const Problem& p, const AVTensors& t, const Options& o) {
  AVParams out;
  out.shape = problem_params(p, t.weights.dtype, t.weights.device, o.deterministic);
  check_same_dims(p);
  out.n_window = window_columns(p);
  check_av_inputs(p, t.weights, t.value, t.additional_values);
  check_tensor(t.out, "out", grid_shape(p, p.heads, p.head_dim_v), t.weights.dtype, t.weights.device,
               Access::write);
  out.weights = grid_operand(t.weights, p.rank);
  out.value = grid_operand(t.value, p.rank);
  out.out = grid_operand(t.out, p.rank);
  if (t.additional_values) out.add_v = token_operand(*t.additional_values);
  return out;
}

AVParams av_backward_params(const Problem& p, const AVBackwardTensors& t, const Options& o) {
  AVParams out;
  out.shape = problem_params(p, t.weights.dtype, t.weights.device, o.deterministic);
  check_same_dims(p);
  out.n_window = window_columns(p);
  const DType dt = t.weights.dtype;
  const Device dev = t.weights.device;
  check_av_inputs(p, t.weights, t.value, t.additional_values);
  check_tensor(t.d_out, "d_out", grid_shape(p, p.heads, p.head_dim_v), dt, dev, Access::read);
  check_tensor(t.d_weights, "d_weights", grid_shape(p, p.heads, p.window_size()), dt, dev, Access::write);
  check_tensor(t.d_value, "d_value", grid_shape(p, p.heads_kv, p.head_dim_v), dt, dev, Access::write);
  if (t.additional_values) {
    if (!t.d_additional_values) fail(ErrorKind::value, "d_additional_values is required with additional_values");
    check_tensor(*t.d_additional_values, "d_additional_values", {p.batch, p.n_additional, p.heads_kv, p.head_dim_v},
                 dt, dev, Access::write);
  }
  out.weights = grid_operand(t.weights, p.rank);
  out.value = grid_operand(t.value, p.rank);
  out.d_out = grid_operand(t.d_out, p.rank);
  out.d_weights = grid_operand(t.d_weights, p.rank);
  out.d_value = grid_operand(t.d_value, p.rank);
  if (t.additional_values) {
    out.add_v = token_operand(*t.additional_values);
    out.d_add_v = token_operand(*t.d_additional_values);
  }
  return out;
}

}  // namespace nhood::detail
