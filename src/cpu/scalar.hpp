// Host-side element types and conversions. float16/bfloat16 are stored as
// their 16-bit patterns; arithmetic always happens in float or double.
#pragma once

#include <cstdint>
#include <cstring>

#include "nhood/types.hpp"

namespace nhood::cpu {

struct Half { uint16_t bits; };
struct BFloat16 { uint16_t bits; };

inline float bits_to_float(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
inline uint32_t float_to_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }

inline float to_float(Half h) {
  const uint32_t sign = uint32_t(h.bits & 0x8000u) << 16;
  const uint32_t exp = (h.bits >> 10) & 0x1fu;
  const uint32_t man = h.bits & 0x3ffu;
  if (exp == 0x1f) return bits_to_float(sign | 0x7f800000u | (man << 13));  // inf / nan
  if (exp == 0) {
    // zero or subnormal: man * 2^-24
    const float magnitude = float(man) * 5.9604644775390625e-8f;
    return sign ? -magnitude : magnitude;
  }
  return bits_to_float(sign | ((exp + 112) << 23) | (man << 13));
}

// Round to nearest even, as hardware conversions do.
inline Half to_half(float f) {
  const uint32_t u = float_to_bits(f);
  const uint16_t sign = uint16_t((u >> 16) & 0x8000u);
  const uint32_t abs = u & 0x7fffffffu;
  if (abs >= 0x7f800000u) return {uint16_t(sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0u))};
  if (abs >= 0x477ff000u) return {uint16_t(sign | 0x7c00u)};  // rounds to >= 65520: overflow to inf
  if (abs < 0x38800000u) {
    // subnormal half (or zero): value / 2^-24, rounded to nearest even
    const float scaled = bits_to_float(abs) * 16777216.0f;  // exact: power of two
    uint32_t q = uint32_t(scaled);
    const float rest = scaled - float(q);
    if (rest > 0.5f || (rest == 0.5f && (q & 1u))) ++q;
    return {uint16_t(sign | q)};
  }
  const uint32_t rounded = abs + 0xfffu + ((abs >> 13) & 1u);
  return {uint16_t(sign | ((rounded - 0x38000000u) >> 13))};
}

inline float to_float(BFloat16 b) { return bits_to_float(uint32_t(b.bits) << 16); }

inline BFloat16 to_bfloat16(float f) {
  const uint32_t u = float_to_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return {uint16_t((u >> 16) | 0x40u)};  // quiet nan
  return {uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16)};
}

// load<T>/store<T>: read and write one element of storage type T as a
// computation type (float or double).
template <typename T> inline double load(const T* p) { return double(*p); }
template <> inline double load<Half>(const Half* p) { return to_float(*p); }
template <> inline double load<BFloat16>(const BFloat16* p) { return to_float(*p); }

template <typename T> inline void store(T* p, double v) { *p = T(v); }
template <> inline void store<Half>(Half* p, double v) { *p = to_half(float(v)); }
template <> inline void store<BFloat16>(BFloat16* p, double v) { *p = to_bfloat16(float(v)); }

// Calls f(T{}) with the storage type of `dtype`; one switch for all CPU code.
template <typename F>
decltype(auto) visit_dtype(DType dtype, F&& f) {
  switch (dtype) {
    case DType::float64: return f(double{});
    case DType::float32: return f(float{});
    case DType::float16: return f(Half{});
    case DType::bfloat16: break;
  }
  return f(BFloat16{});
}

}  // namespace nhood::cpu
