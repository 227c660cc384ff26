// Entry points of libnhood: forward and backward on raw pointers.
//
// All tensors are heads-last with arbitrary element strides:
//   query [B, *spatial, H, D], key [B, *spatial, H_kv, D], value [B, *spatial, H_kv, D_v],
//   out [B, *spatial, H, D_v], lse float32 [B, *spatial, H],
//   additional keys/values [B, N_add, H_kv, D|D_v].
// `stream` is a cudaStream_t for CUDA tensors (nullptr: default stream) and
// ignored on the CPU. Calls never synchronize the device. Every argument is
// validated before anything is written; failures throw nhood::Error.
#pragma once

#include <vector>

#include "nhood/error.hpp"
#include "nhood/problem.hpp"
#include "nhood/types.hpp"

namespace nhood {

struct ForwardTensors {
  TensorView query, key, value, out;
  const TensorView* lse = nullptr;               // optional output
  const TensorView* additional_keys = nullptr;   // optional, with additional_values
  const TensorView* additional_values = nullptr;
};

struct BackwardTensors {
  TensorView query, key, value, out, lse, d_out;  // lse as written by forward
  TensorView d_query, d_key, d_value;             // outputs
  const TensorView* additional_keys = nullptr;
  const TensorView* additional_values = nullptr;
  const TensorView* d_additional_keys = nullptr;  // outputs, required with additional KV
  const TensorView* d_additional_values = nullptr;
};

struct Options {
  Backend backend = Backend::automatic;
  void* stream = nullptr;       // cudaStream_t
  bool deterministic = false;   // backward: no atomics whose order varies run to run
};

void forward(const Problem& problem, const ForwardTensors& tensors, const Options& options = {});
void backward(const Problem& problem, const BackwardTensors& tensors, const Options& options = {});

// The backend `automatic` resolves to for this problem on this device.
Backend select_backend(const Problem& problem, DType dtype, Device device, bool backward);
// Backends compiled into this build that run on `device` kind.
std::vector<Backend> available_backends(DeviceKind device);
bool cuda_available();  // compiled with CUDA and a device is present

}  // namespace nhood
