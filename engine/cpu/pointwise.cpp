// Pointwise ops on the CPU: Clip (ReLU, ReLU6) with bit-packed masks, the
// per-channel Affine left over from a BatchNorm without a conv before it, the
// residual Add and gradient accumulation.
// Clip keeps one bit per element, set where lo < x < hi (the gradient passes
// there, as in PyTorch's relu/hardtanh backward). Threads own whole 64-element
// words so no two write the same mask word.
#include <immintrin.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <type_traits>

#include "engine/cpu/bf16.h"
#include "engine/cpu/cpu_backend.h"
#include "engine/cpu/instantiate.h"
#include "engine/cpu/prefetch.h"

namespace ipna {

namespace {
// Bit b of the result is set where lo < x[b] < hi, for 64 elements.
template <typename T>
inline uint64_t pack_inside(const T* x, T lo, T hi) {
  uint64_t bits = 0;
#ifdef __AVX2__
  if constexpr (std::is_same_v<T, float>) {
    const __m256 vlo = _mm256_set1_ps(lo), vhi = _mm256_set1_ps(hi);
    for (int b = 0; b < 64; b += 8) {
      __m256 v = _mm256_loadu_ps(x + b);
      __m256 in = _mm256_and_ps(_mm256_cmp_ps(v, vlo, _CMP_GT_OQ), _mm256_cmp_ps(v, vhi, _CMP_LT_OQ));
      bits |= static_cast<uint64_t>(static_cast<uint32_t>(_mm256_movemask_ps(in))) << b;
    }
    return bits;
  }
#endif
  for (int b = 0; b < 64; ++b) bits |= static_cast<uint64_t>(x[b] > lo && x[b] < hi) << b;
  return bits;
}
// v where bit 0 of `bits` is set, else +0, without a branch: a ReLU's mask is close to random,
// and a mispredicted branch per value cost more than the rest of the pass around it.
template <typename T>
inline T masked_by_bit(T v, uint64_t bits) {
  using U = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  return std::bit_cast<T>(std::bit_cast<U>(v) & (U(0) - static_cast<U>(bits & 1u)));
}

using cpu::from_bf16;
using cpu::to_bf16;

// The bf16 ops run only where cpu/bf16 runs, on CPUs with AVX-512 BF16 (the build targets AVX2): 16
// values a step, the Clip's mask bits straight from the comparisons. Scalar for the tails.
#define IPNA_AVX512_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

IPNA_AVX512_BF16 inline __m512 load_bf16(const Bf16Bits* p) {
  return _mm512_castsi512_ps(
      _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16));
}
IPNA_AVX512_BF16 inline void store_bf16(Bf16Bits* p, __m512 v) {
  const __m256bh rounded = _mm512_cvtneps_pbh(v);
  std::memcpy(p, &rounded, sizeof(rounded));  // a library template would take the vector outside the AVX target
}

// One mask word's values (count <= 64): y = clip(x), and the word's mask bits.
IPNA_AVX512_BF16 uint64_t clip_word_bf16(const Bf16Bits* x, Bf16Bits* y, int64_t count, float lo, float hi) {
  uint64_t bits = 0;
  int64_t i = 0;
  const __m512 vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi);
  for (; i + 16 <= count; i += 16) {
    const __m512 v = load_bf16(x + i);
    const __mmask16 in = _mm512_cmp_ps_mask(v, vlo, _CMP_GT_OQ) & _mm512_cmp_ps_mask(v, vhi, _CMP_LT_OQ);
    bits |= static_cast<uint64_t>(in) << i;
    store_bf16(y + i, _mm512_min_ps(_mm512_max_ps(v, vlo), vhi));
  }
  for (; i < count; ++i) {
    const float v = from_bf16(x[i]);
    bits |= static_cast<uint64_t>(v > lo && v < hi) << i;
    y[i] = to_bf16(std::min(std::max(v, lo), hi));
  }
  return bits;
}

IPNA_AVX512_BF16 void add_bf16(const Bf16Bits* a, const Bf16Bits* b, Bf16Bits* y, int64_t count) {
  int64_t i = 0;
  for (; i + 16 <= count; i += 16) store_bf16(y + i, _mm512_add_ps(load_bf16(a + i), load_bf16(b + i)));
  for (; i < count; ++i) y[i] = to_bf16(from_bf16(a[i]) + from_bf16(b[i]));
}

}  // namespace

template <typename T>
void CpuBackend<T>::clip_forward_bf16(int64_t count, T lo, T hi, const Bf16Bits* x, Bf16Bits* y, uint64_t* mask) {
  if constexpr (!std::is_same_v<T, float>) {
    Backend<T>::clip_forward_bf16(count, lo, hi, x, y, mask);
  } else {
    if (!stores_bf16()) Backend<T>::clip_forward_bf16(count, lo, hi, x, y, mask);
    const int64_t words = (count + 63) / 64;
#pragma omp parallel for schedule(static)
    for (int64_t wi = 0; wi < words; ++wi) {
      const int64_t begin = wi * 64;
      const uint64_t bits = clip_word_bf16(x + begin, y + begin, std::min<int64_t>(64, count - begin), lo, hi);
      if (mask) mask[wi] = bits;
    }
  }
}

template <typename T>
void CpuBackend<T>::add_forward_bf16(int64_t count, const Bf16Bits* a, const Bf16Bits* b, Bf16Bits* y) {
  if constexpr (!std::is_same_v<T, float>) {
    Backend<T>::add_forward_bf16(count, a, b, y);
  } else {
    if (!stores_bf16()) Backend<T>::add_forward_bf16(count, a, b, y);
    constexpr int64_t kBlock = 4096;
#pragma omp parallel for schedule(static)
    for (int64_t at = 0; at < count; at += kBlock) add_bf16(a + at, b + at, y + at, std::min(kBlock, count - at));
  }
}

template <typename T>
void CpuBackend<T>::clip_forward(int64_t count, T lo, T hi, const T* x, T* y, uint64_t* mask) {
  const int64_t words = (count + 63) / 64;
#pragma omp parallel for schedule(static)
  for (int64_t wi = 0; wi < words; ++wi) {
    const int64_t begin = wi * 64, end = std::min(count, begin + 64);
    if (mask) {
      if (end - begin == 64) {
        mask[wi] = pack_inside(x + begin, lo, hi);
      } else {
        uint64_t bits = 0;
        for (int64_t i = begin; i < end; ++i) bits |= static_cast<uint64_t>(x[i] > lo && x[i] < hi) << (i - begin);
        mask[wi] = bits;
      }
    }
    for (int64_t i = begin; i < end; ++i) y[i] = std::min(std::max(x[i], lo), hi);
  }
}

template <typename T>
void CpuBackend<T>::clip_backward(int64_t count, const uint64_t* mask, const T* dy, T* dx, bool accumulate) {
  const int64_t words = (count + 63) / 64;
#pragma omp parallel for schedule(static)
  for (int64_t wi = 0; wi < words; ++wi) {
    const uint64_t bits = mask[wi];
    const int64_t end = std::min(count, (wi + 1) * 64);
    for (int64_t i = wi * 64; i < end; ++i) {
      const T g = masked_by_bit(dy[i], bits >> (i - wi * 64));
      dx[i] = accumulate ? dx[i] + g : g;
    }
  }
}

template <typename T>
void CpuBackend<T>::clip_tangent_window(int n, int c, int h, int w, PlaneWindow win, const uint64_t* mask, const T* tx,
                                        T* ty) {
  const int64_t planes = static_cast<int64_t>(n) * c;
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < planes; ++p)
    for (int r = 0; r < win.h; ++r) {
      const int64_t at = (p * h + win.r0 + r) * w + win.c0;  // whole-plane index of the row's first element
      const T* t = tx + (p * win.h + r) * win.w;
      T* y = ty + (p * win.h + r) * win.w;
      // A word of mask bits at a time: the row's bits from `at` on, shifted down to bit 0.
      for (int col = 0; col < win.w;) {
        const int64_t i = at + col;
        const uint64_t bits = mask[i >> 6] >> (i & 63);
        const int take = std::min<int>(64 - static_cast<int>(i & 63), win.w - col);
        for (int k = 0; k < take; ++k) y[col + k] = masked_by_bit(t[col + k], bits >> k);
        col += take;
      }
    }
}

template <typename T>
void CpuBackend<T>::clip_difference_window(int n, int c, int h, int w, PlaneWindow win, T lo, T hi, const T* base,
                                           const T* change, T* y) {
  const int64_t planes = static_cast<int64_t>(n) * c;
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < planes; ++p)
    for (int r = 0; r < win.h; ++r) {
      const T* b = base + (p * h + win.r0 + r) * w + win.c0;
      if (p + cpu::kPlanesAhead < planes) cpu::prefetch_row(b + cpu::kPlanesAhead * static_cast<int64_t>(h) * w, win.w);
      const T* d = change + (p * win.h + r) * win.w;
      T* out = y + (p * win.h + r) * win.w;
      for (int col = 0; col < win.w; ++col)
        out[col] = std::min(std::max(b[col] + d[col], lo), hi) - std::min(std::max(b[col], lo), hi);
    }
}

template <typename T>
void CpuBackend<T>::affine_forward(int c, int64_t plane, const T* scale, const T* shift, const T* x, T* y, int n) {
#pragma omp parallel for schedule(static)
  for (int64_t sc = 0; sc < static_cast<int64_t>(n) * c; ++sc) {
    const int ch = static_cast<int>(sc % c);
    const T* xi = x + sc * plane;
    T* yi = y + sc * plane;
    for (int64_t i = 0; i < plane; ++i) yi[i] = scale[ch] * xi[i] + shift[ch];
  }
}

template <typename T>
void CpuBackend<T>::affine_backward(int c, int64_t plane, const T* scale, const T* dy, T* dx, int n, bool accumulate) {
#pragma omp parallel for schedule(static)
  for (int64_t sc = 0; sc < static_cast<int64_t>(n) * c; ++sc) {
    const int ch = static_cast<int>(sc % c);
    const T* g = dy + sc * plane;
    T* d = dx + sc * plane;
    for (int64_t i = 0; i < plane; ++i) d[i] = (accumulate ? d[i] : T(0)) + scale[ch] * g[i];
  }
}

template <typename T>
void CpuBackend<T>::add_forward(int64_t count, const T* a, const T* b, T* y) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < count; ++i) y[i] = a[i] + b[i];
}

template <typename T>
void CpuBackend<T>::subtract(int64_t count, const T* a, const T* b, T* y) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < count; ++i) y[i] = a[i] - b[i];
}

template <typename T>
void CpuBackend<T>::accumulate(int64_t count, const T* src, T* dst, bool accumulate) {
  if (src == dst) {
    if (accumulate)
      for (int64_t i = 0; i < count; ++i) dst[i] += dst[i];
    return;
  }
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < count; ++i) dst[i] = accumulate ? dst[i] + src[i] : src[i];
}

template <typename T>
void CpuBackend<T>::scale_by_mask(int64_t per_sample, int n, const T* mask, T* x) {
#pragma omp parallel for schedule(static)
  for (int s = 0; s < n; ++s) {
    T* xs = x + s * per_sample;
    for (int64_t j = 0; j < per_sample; ++j) xs[j] *= mask[j];
  }
}

#define IPNA_POINTWISE(T)                                                                                             \
  template void CpuBackend<T>::clip_forward(int64_t, T, T, const T*, T*, uint64_t*);                                  \
  template void CpuBackend<T>::clip_backward(int64_t, const uint64_t*, const T*, T*, bool);                           \
  template void CpuBackend<T>::clip_tangent_window(int, int, int, int, PlaneWindow, const uint64_t*, const T*, T*);   \
  template void CpuBackend<T>::clip_difference_window(int, int, int, int, PlaneWindow, T, T, const T*, const T*, T*); \
  template void CpuBackend<T>::affine_forward(int, int64_t, const T*, const T*, const T*, T*, int);                   \
  template void CpuBackend<T>::affine_backward(int, int64_t, const T*, const T*, T*, int, bool);                      \
  template void CpuBackend<T>::add_forward(int64_t, const T*, const T*, T*);                                          \
  template void CpuBackend<T>::clip_forward_bf16(int64_t, T, T, const Bf16Bits*, Bf16Bits*, uint64_t*);               \
  template void CpuBackend<T>::add_forward_bf16(int64_t, const Bf16Bits*, const Bf16Bits*, Bf16Bits*);                \
  template void CpuBackend<T>::subtract(int64_t, const T*, const T*, T*);                                             \
  template void CpuBackend<T>::accumulate(int64_t, const T*, T*, bool);                                               \
  template void CpuBackend<T>::scale_by_mask(int64_t, int, const T*, T*);
IPNA_CPU_INSTANTIATE_BOTH(IPNA_POINTWISE)

}  // namespace ipna
