// Tensor-map encoding through the driver entry point (no -lcuda: the runtime
// hands out the driver function, so CPU-only users never load libcuda).
#include "tensor_maps.hpp"

#include <cuda_runtime_api.h>
#include <cudaTypedefs.h>

#include <cstdint>

#include "../common/check.cuh"

namespace nhood::hopper {

namespace {

PFN_cuTensorMapEncodeTiled_v12000 encode_fn() {
  static const PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult found{};
    NHOOD_CUDA_CHECK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault, &found));
    if (found != cudaDriverEntryPointSuccess || !f)
      throw Error(ErrorKind::runtime, "hopper backend: the CUDA driver has no cuTensorMapEncodeTiled (driver too old)");
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(f);
  }();
  return fn;
}

// A stride the copy engine can step: positive and a multiple of 16 bytes.
// A dimension of extent 1 is never stepped, so any stride describes it.
bool stride_ok(int64_t elems, int64_t extent) { return extent == 1 || (elems > 0 && (elems * 2) % 16 == 0); }

// type: a CU_TENSOR_MAP_DATA_TYPE of elem_bytes bytes.
CUtensorMap encode(void* data, CUtensorMapDataType type, int elem_bytes, int rank, const cuuint64_t* size,
                   const int64_t* elem_strides, const cuuint32_t* box, const cuuint32_t* traversal) {
  cuuint64_t strides[4];
  for (int i = 1; i < rank; ++i) strides[i - 1] = size[i] == 1 ? 16 : cuuint64_t(elem_strides[i - 1] * elem_bytes);
  CUtensorMap map;
  const CUresult r = encode_fn()(&map, type, cuuint32_t(rank), data, size, strides, box, traversal,
                                 CU_TENSOR_MAP_INTERLEAVE_NONE,
                                 CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                                 CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS)
    throw Error(ErrorKind::runtime, "hopper backend: cuTensorMapEncodeTiled failed with CUresult " + std::to_string(int(r)));
  return map;
}

}  // namespace

std::string tensor_map_unsupported(const detail::Operand& o, const detail::Params& p, int64_t heads, int64_t dim) {
  if (o.sd != 1) return "hopper needs unit-stride head dimensions (TMA rows)";
  if (heads > 1 && o.sh != dim) return "hopper needs heads packed next to the head dimension (stride of heads == head_dim)";
  if (reinterpret_cast<uintptr_t>(o.data) % 16) return "hopper needs 16-byte aligned q/k/v data";
  if (!stride_ok(o.sz, p.axis[2].length) || !stride_ok(o.sy, p.axis[1].length) || !stride_ok(o.sx, p.axis[0].length) ||
      !stride_ok(o.sb, p.batch))
    return "hopper needs positive token and batch strides that are multiples of 16 bytes";
  return {};
}

std::string tensor_map_unsupported(const detail::TokenOperand& o, const detail::Params& p, int64_t heads, int64_t dim) {
  if (!o.data) return {};
  if (o.sd != 1) return "hopper needs unit-stride head dimensions (TMA rows)";
  if (heads > 1 && o.sh != dim) return "hopper needs heads packed next to the head dimension (stride of heads == head_dim)";
  if (reinterpret_cast<uintptr_t>(o.data) % 16) return "hopper needs 16-byte aligned additional key/value data";
  if (!stride_ok(o.sn, p.n_additional) || !stride_ok(o.sb, p.batch))
    return "hopper needs positive additional-token and batch strides that are multiples of 16 bytes";
  return {};
}

namespace {

CUtensorMapDataType map_type(DType dtype) {
  return dtype == DType::float16 ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16;
}

// (H*D, Z, Y, X, B) with a box of `row` elements by box[] group positions.
CUtensorMap grid_map(void* data, CUtensorMapDataType type, int elem_bytes, const int64_t* strides,
                     const detail::Params& p, int64_t heads, int64_t dim, const int* box, int row) {
  const cuuint64_t size[5] = {cuuint64_t(heads * dim), cuuint64_t(p.axis[2].length), cuuint64_t(p.axis[1].length),
                              cuuint64_t(p.axis[0].length), cuuint64_t(p.batch)};
  const cuuint32_t boxd[5] = {cuuint32_t(row), cuuint32_t(box[2] * p.axis[2].dilation),
                              cuuint32_t(box[1] * p.axis[1].dilation), cuuint32_t(box[0] * p.axis[0].dilation), 1};
  const cuuint32_t traversal[5] = {1, cuuint32_t(p.axis[2].dilation), cuuint32_t(p.axis[1].dilation),
                                   cuuint32_t(p.axis[0].dilation), 1};
  return encode(data, type, elem_bytes, 5, size, strides, boxd, traversal);
}

}  // namespace

CUtensorMap token_tensor_map(const detail::Operand& o, const detail::Params& p, int64_t heads, int64_t dim,
                             const int* box) {
  const int64_t strides[4] = {o.sz, o.sy, o.sx, o.sb};
  return grid_map(o.data, map_type(p.dtype), 2, strides, p, heads, dim, box, 64);
}

CUtensorMap accum_tensor_map(float* data, const detail::Params& p, int64_t heads, int64_t dim, const int* box) {
  const int64_t sz = heads * dim, sy = sz * p.axis[2].length, sx = sy * p.axis[1].length, sb = sx * p.axis[0].length;
  const int64_t strides[4] = {sz, sy, sx, sb};
  return grid_map(data, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 4, strides, p, heads, dim, box, 32);
}

CUtensorMap extra_tensor_map(const detail::TokenOperand& o, const detail::Params& p, int64_t heads, int64_t dim,
                             int box_tokens) {
  const cuuint64_t size[3] = {cuuint64_t(heads * dim), cuuint64_t(p.n_additional), cuuint64_t(p.batch)};
  const int64_t strides[2] = {o.sn, o.sb};
  const cuuint32_t boxd[3] = {64, cuuint32_t(box_tokens), 1};
  const cuuint32_t traversal[3] = {1, 1, 1};
  return encode(o.data, map_type(p.dtype), 2, 3, size, strides, boxd, traversal);
}

}  // namespace nhood::hopper
