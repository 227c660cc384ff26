// TMA tensor maps over nhood's heads-last token grids (host side).
//
// A query/key/value operand [B, X, Y, Z, H, D] is described to the copy
// engine as a 5-D tensor (H*D, Z, Y, X, B), innermost first: folding heads
// into the row keeps one dimension free for the batch, so any rank of
// problem needs one map and no token permutation. A box is 64 elements of
// one head's row (128 bytes, the 128-byte swizzle span) by a box of tokens of
// one dilation group: the traversal stride of each spatial dimension is the
// dilation, so the copy engine gathers group positions directly.
// Additional tokens [B, N, H, D] are a 3-D tensor (H*D, N, B).
#pragma once

#include <cuda.h>

#include <string>

#include "nhood/detail/params.hpp"

namespace nhood::hopper {

// Empty if `o` (with `heads` heads of `dim` elements) can be read through a
// tensor map, else the rule it breaks.
std::string tensor_map_unsupported(const detail::Operand& o, const detail::Params& p, int64_t heads, int64_t dim);
std::string tensor_map_unsupported(const detail::TokenOperand& o, const detail::Params& p, int64_t heads, int64_t dim);

// box[a]: tokens per spatial axis a (x, y, z) in group positions.
CUtensorMap token_tensor_map(const detail::Operand& o, const detail::Params& p, int64_t heads, int64_t dim,
                             const int* box);
// A float32 [B, X, Y, Z, H, D] buffer (contiguous; the backward's dQ
// accumulator) for TMA reductions: boxes of 32 elements (128 bytes) of a row.
CUtensorMap accum_tensor_map(float* data, const detail::Params& p, int64_t heads, int64_t dim, const int* box);
CUtensorMap extra_tensor_map(const detail::TokenOperand& o, const detail::Params& p, int64_t heads, int64_t dim,
                             int box_tokens);

}  // namespace nhood::hopper
