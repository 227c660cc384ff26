// Public entry points: validate, lower to Params, dispatch.
#include "nhood/api.hpp"

#include "dispatch.hpp"
#include "params.hpp"

namespace nhood {

namespace {
bool is_empty(const detail::Params& p) { return p.batch == 0; }
}  // namespace

void forward(const Problem& problem, const ForwardTensors& tensors, const Options& options) {
  const detail::Params params = detail::forward_params(problem, tensors, options);
  const detail::BackendEntry& entry = detail::choose_backend(options.backend, params, false);
  if (is_empty(params)) return;
  entry.forward(params, options.stream);
}

void backward(const Problem& problem, const BackwardTensors& tensors, const Options& options) {
  const detail::Params params = detail::backward_params(problem, tensors, options);
  const detail::BackendEntry& entry = detail::choose_backend(options.backend, params, true);
  if (is_empty(params)) return;
  entry.backward(params, options.stream);
}

Backend select_backend(const Problem& problem, DType dtype, Device device, bool backward) {
  const detail::Params params = detail::problem_params(problem, dtype, device, false);
  return detail::choose_backend(Backend::automatic, params, backward).id;
}

std::vector<Backend> available_backends(DeviceKind device) {
  std::vector<Backend> out;
  for (const auto& entry : detail::backend_table())
    if (entry.device == device) out.push_back(entry.id);
  return out;
}

}  // namespace nhood
