// nhood._core: a thin nanobind adapter over libnhood. It turns DLPack arrays
// into TensorViews and nhood::Error into Python exceptions; argument
// normalization lives in python/nhood, validation and kernels in libnhood.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "nhood/nhood.hpp"
#include "nhood/unfused.hpp"

namespace nb = nanobind;

namespace {

using Input = nb::ndarray<nb::ro>;  // any device, dtype, strides
using Output = nb::ndarray<>;       // writable
using Ints = std::tuple<int32_t, int32_t, int32_t>;
using Bools = std::tuple<bool, bool, bool>;

nhood::DType to_dtype(nb::dlpack::dtype dt, const char* name) {
  using code = nb::dlpack::dtype_code;
  if (dt.lanes == 1) {
    if (dt.code == uint8_t(code::Float) && dt.bits == 64) return nhood::DType::float64;
    if (dt.code == uint8_t(code::Float) && dt.bits == 32) return nhood::DType::float32;
    if (dt.code == uint8_t(code::Float) && dt.bits == 16) return nhood::DType::float16;
    if (dt.code == uint8_t(code::Bfloat) && dt.bits == 16) return nhood::DType::bfloat16;
  }
  throw nhood::Error(nhood::ErrorKind::type, std::string(name) +
                                                 " must have dtype float64, float32, float16 or bfloat16 (DLPack code " +
                                                 std::to_string(dt.code) + ", " + std::to_string(dt.bits) + " bits)");
}

template <typename Array>
nhood::TensorView to_view(const Array& a, const char* name) {
  nhood::TensorView v;
  if (a.ndim() > size_t(nhood::kMaxTensorDims))
    throw nhood::Error(nhood::ErrorKind::value,
                       std::string(name) + " has " + std::to_string(a.ndim()) + " dimensions; at most 6 are supported");
  v.data = const_cast<void*>(static_cast<const void*>(a.data()));
  v.dtype = to_dtype(a.dtype(), name);
  const int dev = a.device_type();
  if (dev == nb::device::cpu::value) {
    v.device = {nhood::DeviceKind::cpu, 0};
  } else if (dev == nb::device::cuda::value || dev == nb::device::cuda_managed::value) {
    v.device = {nhood::DeviceKind::cuda, a.device_id()};
  } else {
    throw nhood::Error(nhood::ErrorKind::value,
                       std::string(name) + " lives on an unsupported device (DLPack type " + std::to_string(dev) +
                           "); nhood runs on cpu and cuda");
  }
  v.ndim = int32_t(a.ndim());
  for (size_t i = 0; i < a.ndim(); ++i) {
    v.shape[i] = a.shape(i);
    v.strides[i] = a.stride(i);
  }
  return v;
}

// Holds views of optional arrays so their addresses stay valid for the call.
struct OptionalView {
  nhood::TensorView view;
  bool present = false;
  template <typename Array>
  OptionalView(const std::optional<Array>& a, const char* name) {
    if (a) {
      view = to_view(*a, name);
      present = true;
    }
  }
  const nhood::TensorView* get() const { return present ? &view : nullptr; }
};

nhood::WindowArgs window_args(int rank, const Ints& kernel, const Ints& stride, const Ints& dilation,
                              const Bools& causal, std::optional<double> scale) {
  nhood::WindowArgs w;
  w.rank = rank;
  const int32_t k[3] = {std::get<0>(kernel), std::get<1>(kernel), std::get<2>(kernel)};
  const int32_t s[3] = {std::get<0>(stride), std::get<1>(stride), std::get<2>(stride)};
  const int32_t d[3] = {std::get<0>(dilation), std::get<1>(dilation), std::get<2>(dilation)};
  const bool c[3] = {std::get<0>(causal), std::get<1>(causal), std::get<2>(causal)};
  for (int i = 0; i < 3; ++i) {
    w.kernel_size[i] = k[i];
    w.stride[i] = s[i];
    w.dilation[i] = d[i];
    w.is_causal[i] = c[i];
  }
  w.has_scale = scale.has_value();
  w.scale = scale.value_or(1.0);
  return w;
}

nhood::Options options(const std::string& backend, uintptr_t stream, bool deterministic) {
  nhood::Options o;
  o.backend = nhood::backend_from_name(backend.c_str());
  o.stream = reinterpret_cast<void*>(stream);
  o.deterministic = deterministic;
  return o;
}

void forward(const Input& q, const Input& k, const Input& v, const Output& out, const std::optional<Output>& lse,
             const std::optional<Input>& add_k, const std::optional<Input>& add_v, int rank, const Ints& kernel,
             const Ints& stride, const Ints& dilation, const Bools& causal, std::optional<double> scale,
             const std::string& backend, uintptr_t stream) {
  nhood::ForwardTensors t;
  t.query = to_view(q, "query");
  t.key = to_view(k, "key");
  t.value = to_view(v, "value");
  t.out = to_view(out, "out");
  const OptionalView lse_v(lse, "lse"), add_k_v(add_k, "additional_keys"), add_v_v(add_v, "additional_values");
  t.lse = lse_v.get();
  t.additional_keys = add_k_v.get();
  t.additional_values = add_v_v.get();
  const nhood::Problem problem =
      nhood::make_problem(window_args(rank, kernel, stride, dilation, causal, scale), t.query, t.key, t.value,
                          t.additional_keys);
  const nhood::Options o = options(backend, stream, false);
  nb::gil_scoped_release release;
  nhood::forward(problem, t, o);
}

void backward(const Input& q, const Input& k, const Input& v, const Input& out, const Input& lse, const Input& d_out,
              const Output& dq, const Output& dk, const Output& dv, const std::optional<Input>& add_k,
              const std::optional<Input>& add_v, const std::optional<Output>& d_add_k,
              const std::optional<Output>& d_add_v, int rank, const Ints& kernel, const Ints& stride,
              const Ints& dilation, const Bools& causal, std::optional<double> scale, const std::string& backend,
              uintptr_t stream, bool deterministic) {
  nhood::BackwardTensors t;
  t.query = to_view(q, "query");
  t.key = to_view(k, "key");
  t.value = to_view(v, "value");
  t.out = to_view(out, "out");
  t.lse = to_view(lse, "lse");
  t.d_out = to_view(d_out, "d_out");
  t.d_query = to_view(dq, "d_query");
  t.d_key = to_view(dk, "d_key");
  t.d_value = to_view(dv, "d_value");
  const OptionalView add_k_v(add_k, "additional_keys"), add_v_v(add_v, "additional_values"),
      d_add_k_v(d_add_k, "d_additional_keys"), d_add_v_v(d_add_v, "d_additional_values");
  t.additional_keys = add_k_v.get();
  t.additional_values = add_v_v.get();
  t.d_additional_keys = d_add_k_v.get();
  t.d_additional_values = d_add_v_v.get();
  const nhood::Problem problem =
      nhood::make_problem(window_args(rank, kernel, stride, dilation, causal, scale), t.query, t.key, t.value,
                          t.additional_keys);
  const nhood::Options o = options(backend, stream, deterministic);
  nb::gil_scoped_release release;
  nhood::backward(problem, t, o);
}

std::vector<std::string> backends(const std::string& device) {
  nhood::DeviceKind kind;
  if (device == "cpu") kind = nhood::DeviceKind::cpu;
  else if (device == "cuda") kind = nhood::DeviceKind::cuda;
  else throw nhood::Error(nhood::ErrorKind::value, "device must be 'cpu' or 'cuda', got '" + device + "'");
  std::vector<std::string> names;
  if (kind == nhood::DeviceKind::cuda && !nhood::cuda_available()) return names;
  for (nhood::Backend b : nhood::available_backends(kind)) names.emplace_back(nhood::backend_name(b));
  return names;
}

// ---- unfused QK/AV ops (nhood/unfused.hpp) -----------------------------------
namespace unfused {

nhood::WindowArgs window(int rank, const Ints& kernel, const Ints& stride, const Ints& dilation, const Bools& causal) {
  return window_args(rank, kernel, stride, dilation, causal, std::nullopt);
}

void qk_forward(const Input& q, const Input& k, const Output& weights, const std::optional<Input>& rpb,
                const std::optional<Input>& add_k, int rank, const Ints& kernel, const Ints& stride,
                const Ints& dilation, const Bools& causal, const std::string& backend, uintptr_t stream) {
  nhood::QKTensors t;
  t.query = to_view(q, "query");
  t.key = to_view(k, "key");
  t.weights = to_view(weights, "weights");
  const OptionalView rpb_v(rpb, "rpb"), add_k_v(add_k, "additional_keys");
  t.rpb = rpb_v.get();
  t.additional_keys = add_k_v.get();
  const nhood::Problem problem =
      nhood::make_qk_problem(window(rank, kernel, stride, dilation, causal), t.query, t.key, t.additional_keys);
  const nhood::Options o = options(backend, stream, false);
  nb::gil_scoped_release release;
  nhood::qk_forward(problem, t, o);
}

void qk_backward(const Input& q, const Input& k, const Input& d_weights, const Output& dq, const Output& dk,
                 const std::optional<Input>& add_k, const std::optional<Output>& d_add_k,
                 const std::optional<Output>& d_rpb, int rank, const Ints& kernel, const Ints& stride,
                 const Ints& dilation, const Bools& causal, const std::string& backend, uintptr_t stream,
                 bool deterministic) {
  nhood::QKBackwardTensors t;
  t.query = to_view(q, "query");
  t.key = to_view(k, "key");
  t.d_weights = to_view(d_weights, "d_weights");
  t.d_query = to_view(dq, "d_query");
  t.d_key = to_view(dk, "d_key");
  const OptionalView add_k_v(add_k, "additional_keys"), d_add_k_v(d_add_k, "d_additional_keys"),
      d_rpb_v(d_rpb, "d_rpb");
  t.additional_keys = add_k_v.get();
  t.d_additional_keys = d_add_k_v.get();
  t.d_rpb = d_rpb_v.get();
  const nhood::Problem problem =
      nhood::make_qk_problem(window(rank, kernel, stride, dilation, causal), t.query, t.key, t.additional_keys);
  const nhood::Options o = options(backend, stream, deterministic);
  nb::gil_scoped_release release;
  nhood::qk_backward(problem, t, o);
}

void av_forward(const Input& weights, const Input& v, const Output& out, const std::optional<Input>& add_v, int rank,
                const Ints& kernel, const Ints& stride, const Ints& dilation, const Bools& causal,
                const std::string& backend, uintptr_t stream) {
  nhood::AVTensors t;
  t.weights = to_view(weights, "weights");
  t.value = to_view(v, "value");
  t.out = to_view(out, "out");
  const OptionalView add_v_v(add_v, "additional_values");
  t.additional_values = add_v_v.get();
  const nhood::Problem problem =
      nhood::make_av_problem(window(rank, kernel, stride, dilation, causal), t.weights, t.value, t.additional_values);
  const nhood::Options o = options(backend, stream, false);
  nb::gil_scoped_release release;
  nhood::av_forward(problem, t, o);
}

void av_backward(const Input& weights, const Input& v, const Input& d_out, const Output& d_weights,
                 const Output& d_value, const std::optional<Input>& add_v, const std::optional<Output>& d_add_v,
                 int rank, const Ints& kernel, const Ints& stride, const Ints& dilation, const Bools& causal,
                 const std::string& backend, uintptr_t stream, bool deterministic) {
  nhood::AVBackwardTensors t;
  t.weights = to_view(weights, "weights");
  t.value = to_view(v, "value");
  t.d_out = to_view(d_out, "d_out");
  t.d_weights = to_view(d_weights, "d_weights");
  t.d_value = to_view(d_value, "d_value");
  const OptionalView add_v_v(add_v, "additional_values"), d_add_v_v(d_add_v, "d_additional_values");
  t.additional_values = add_v_v.get();
  t.d_additional_values = d_add_v_v.get();
  const nhood::Problem problem =
      nhood::make_av_problem(window(rank, kernel, stride, dilation, causal), t.weights, t.value, t.additional_values);
  const nhood::Options o = options(backend, stream, deterministic);
  nb::gil_scoped_release release;
  nhood::av_backward(problem, t, o);
}

void register_functions(nb::module_& m) {
  m.def("qk_forward", &qk_forward, nb::arg("query"), nb::arg("key"), nb::arg("weights"), nb::arg("rpb").none(),
        nb::arg("additional_keys").none(), nb::arg("rank"), nb::arg("kernel_size"), nb::arg("stride"),
        nb::arg("dilation"), nb::arg("is_causal"), nb::arg("backend"), nb::arg("stream"));
  m.def("qk_backward", &qk_backward, nb::arg("query"), nb::arg("key"), nb::arg("d_weights"), nb::arg("d_query"),
        nb::arg("d_key"), nb::arg("additional_keys").none(), nb::arg("d_additional_keys").none(),
        nb::arg("d_rpb").none(), nb::arg("rank"), nb::arg("kernel_size"), nb::arg("stride"), nb::arg("dilation"),
        nb::arg("is_causal"), nb::arg("backend"), nb::arg("stream"), nb::arg("deterministic"));
  m.def("av_forward", &av_forward, nb::arg("weights"), nb::arg("value"), nb::arg("out"),
        nb::arg("additional_values").none(), nb::arg("rank"), nb::arg("kernel_size"), nb::arg("stride"),
        nb::arg("dilation"), nb::arg("is_causal"), nb::arg("backend"), nb::arg("stream"));
  m.def("av_backward", &av_backward, nb::arg("weights"), nb::arg("value"), nb::arg("d_out"), nb::arg("d_weights"),
        nb::arg("d_value"), nb::arg("additional_values").none(), nb::arg("d_additional_values").none(),
        nb::arg("rank"), nb::arg("kernel_size"), nb::arg("stride"), nb::arg("dilation"), nb::arg("is_causal"),
        nb::arg("backend"), nb::arg("stream"), nb::arg("deterministic"));
}

}  // namespace unfused

}  // namespace

NB_MODULE(_core, m) {
  m.doc() = "nhood native core (libnhood bindings)";
  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const nhood::Error& e) {
      PyObject* type = e.kind() == nhood::ErrorKind::type    ? PyExc_TypeError
                       : e.kind() == nhood::ErrorKind::value ? PyExc_ValueError
                                                             : PyExc_RuntimeError;
      PyErr_SetString(type, e.what());
    }
  });
  m.def("forward", &forward, nb::arg("query"), nb::arg("key"), nb::arg("value"), nb::arg("out"),
        nb::arg("lse").none(), nb::arg("additional_keys").none(), nb::arg("additional_values").none(),
        nb::arg("rank"), nb::arg("kernel_size"), nb::arg("stride"), nb::arg("dilation"), nb::arg("is_causal"),
        nb::arg("scale").none(), nb::arg("backend"), nb::arg("stream"));
  m.def("backward", &backward, nb::arg("query"), nb::arg("key"), nb::arg("value"), nb::arg("out"), nb::arg("lse"),
        nb::arg("d_out"), nb::arg("d_query"), nb::arg("d_key"), nb::arg("d_value"),
        nb::arg("additional_keys").none(), nb::arg("additional_values").none(),
        nb::arg("d_additional_keys").none(), nb::arg("d_additional_values").none(), nb::arg("rank"),
        nb::arg("kernel_size"), nb::arg("stride"), nb::arg("dilation"), nb::arg("is_causal"),
        nb::arg("scale").none(), nb::arg("backend"), nb::arg("stream"), nb::arg("deterministic"));
  m.def("backends", &backends, nb::arg("device"), "Backends compiled in that can run on 'cpu' or 'cuda'.");
  m.def("cuda_available", &nhood::cuda_available, "True if CUDA kernels are compiled in and a GPU is present.");
  m.attr("with_cuda") =
#ifdef NHOOD_WITH_CUDA
      true;
#else
      false;
#endif
  unfused::register_functions(m);  // qk_forward, qk_backward, av_forward, av_backward
}
