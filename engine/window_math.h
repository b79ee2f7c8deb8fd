// Index arithmetic shared by the CPU ops and the CUDA kernels (host and
// device), so both backends agree on windows and on the Clip mask layout.
#pragma once
#include <cstdint>

#ifdef __CUDACC__
#define IPNA_HD __host__ __device__ inline
#else
#define IPNA_HD inline
#endif

namespace ipna {

// Kernel taps [lo, hi) of one axis whose input index o*s - pad + t*d lies in [0, size).
IPNA_HD void window_taps(int o, int s, int pad, int d, int k, int size, int& lo, int& hi) {
  const int start = o * s - pad;
  if (start >= size) {  // the whole window lies in the trailing padding
    lo = hi = 0;
    return;
  }
  lo = start >= 0 ? 0 : (-start + d - 1) / d;
  hi = start + (k - 1) * d < size ? k : (size - 1 - start) / d + 1;
  if (lo > k) lo = k;
  if (hi < lo) hi = lo;
}

// Clip masks: bit i of the flat batch index lives in 32-bit word i/32 at bit
// i%32; on little-endian machines that is bit i%64 of 64-bit word i/64, the
// layout the CPU backend writes. A warp's ballot fills one 32-bit word.
IPNA_HD int64_t mask_words64(int64_t count) { return (count + 63) / 64; }
IPNA_HD bool mask_bit(const uint32_t* mask, int64_t i) { return (mask[i >> 5] >> (i & 31)) & 1u; }

}  // namespace ipna
