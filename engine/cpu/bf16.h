// bf16 values as the CPU's cpu/bf16 stores them (Backend::stores_bf16): the upper half of a float32's
// bits, rounded to nearest even. Scalar conversions for loops the compiler vectorises or for tails; the
// AVX-512 ops convert 16 at a time themselves.
#pragma once
#include <bit>
#include <cstdint>

#include "engine/backend.h"

namespace ipna::cpu {

inline float from_bf16(Bf16Bits b) { return std::bit_cast<float>(static_cast<uint32_t>(b) << 16); }

// NaN stays NaN (its payload's high bits kept, the quiet bit set).
inline Bf16Bits to_bf16(float f) {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<Bf16Bits>((u >> 16) | 0x40u);
  return static_cast<Bf16Bits>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

}  // namespace ipna::cpu
