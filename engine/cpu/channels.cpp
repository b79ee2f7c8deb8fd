// Channel-wise data movement on the CPU: Concat and Slice (copy_channels),
// ChannelShuffle, and the mean over channels. Forward and backward of each
// are the same copies with the roles of source and destination swapped.
#include <algorithm>
#include <cstring>
#include <type_traits>

#include "engine/cpu/cpu_backend.h"
#include "engine/cpu/instantiate.h"
#include "engine/cpu/prefetch.h"

namespace ipna {

template <typename T>
void CpuBackend<T>::copy_channels(int n, int64_t plane, int channels, const T* src, int src_c, int src_c0, T* dst,
                                  int dst_c, int dst_c0, bool accumulate) {
#pragma omp parallel for schedule(static)
  for (int64_t sk = 0; sk < static_cast<int64_t>(n) * channels; ++sk) {
    const int64_t s = sk / channels, k = sk % channels;
    const T* from = src + (s * src_c + src_c0 + k) * plane;
    T* to = dst + (s * dst_c + dst_c0 + k) * plane;
    if (accumulate)
      for (int64_t i = 0; i < plane; ++i) to[i] += from[i];
    else
      std::memcpy(to, from, sizeof(T) * plane);
  }
}

template <typename T>
void CpuBackend<T>::channel_shuffle(int n, int c, int64_t plane, const int32_t* perm, const T* x, T* y, bool inverse,
                                    bool accumulate) {
#pragma omp parallel for schedule(static)
  for (int64_t sk = 0; sk < static_cast<int64_t>(n) * c; ++sk) {
    const int64_t s = sk / c, k = sk % c;
    const T* from = x + (s * c + (inverse ? k : perm[k])) * plane;
    T* to = y + (s * c + (inverse ? perm[k] : k)) * plane;
    if (accumulate)
      for (int64_t i = 0; i < plane; ++i) to[i] += from[i];
    else
      std::memcpy(to, from, sizeof(T) * plane);
  }
}

template <typename T>
void CpuBackend<T>::channel_mean_forward(int n, int c, int64_t plane, const T* x, T* y) {
#pragma omp parallel for schedule(static)
  for (int s = 0; s < n; ++s) {
    T* out = y + s * plane;
    std::memset(out, 0, sizeof(T) * plane);
    for (int k = 0; k < c; ++k) {
      const T* xc = x + (static_cast<int64_t>(s) * c + k) * plane;
      for (int64_t i = 0; i < plane; ++i) out[i] += xc[i];
    }
    for (int64_t i = 0; i < plane; ++i) out[i] /= T(c);
  }
}

template <typename T>
void CpuBackend<T>::channel_mean_backward(int n, int c, int64_t plane, const T* dy, T* dx, bool accumulate) {
#pragma omp parallel for schedule(static)
  for (int64_t sk = 0; sk < static_cast<int64_t>(n) * c; ++sk) {
    const T* g = dy + (sk / c) * plane;
    T* d = dx + sk * plane;
    for (int64_t i = 0; i < plane; ++i) d[i] = (accumulate ? d[i] : T(0)) + g[i] / T(c);
  }
}

template <typename T>
void CpuBackend<T>::copy_window(int n, int channels, const T* src, int src_h, int src_w, int src_r, int src_c, T* dst,
                                int dst_h, int dst_w, int dst_r, int dst_c, int h, int w) {
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < static_cast<int64_t>(n) * channels; ++p) {
    const T* s = src + p * src_h * src_w;
    T* d = dst + p * dst_h * dst_w;
    const bool ahead = p + cpu::kPlanesAhead < static_cast<int64_t>(n) * channels;
    for (int r = 0; r < h; ++r) {
      const int sr = src_r + r;
      T* row = d + static_cast<int64_t>(dst_r + r) * dst_w + dst_c;
      if (sr < 0 || sr >= src_h) {
        std::memset(row, 0, sizeof(T) * w);
        continue;
      }
      // Columns c in [lo, hi) read inside the source plane; the others are zero.
      const int lo = std::clamp(-src_c, 0, w), hi = std::clamp(src_w - src_c, lo, w);
      if (ahead && hi > lo)
        cpu::prefetch_row(s + (cpu::kPlanesAhead * static_cast<int64_t>(src_h) + sr) * src_w + src_c + lo, hi - lo);
      std::fill(row, row + lo, T(0));
      std::copy(s + static_cast<int64_t>(sr) * src_w + src_c + lo, s + static_cast<int64_t>(sr) * src_w + src_c + hi,
                row + lo);
      std::fill(row + hi, row + w, T(0));
    }
  }
}

// oneDNN's reorder: its jit kernels took 0.2 to 0.8 ms where a plain loop over 16 x 16 tiles took 0.6 to
// 2 ms (ResNet-18's max-pool output at 112, 32 samples, both directions, 2 threads). Only float32
// plans keep values NHWC (prefers_nhwc), so float64 has none. The same reorder converts to and from bf16.
template <typename T>
void CpuBackend<T>::transpose_layout(int n, int c, int64_t plane, const T* src, T* dst, bool to_nhwc, bool nhwc_bf16,
                                     bool accumulate) {
  if constexpr (std::is_same_v<T, float>)
    onednn_.transpose(n, c, plane, src, dst, to_nhwc, nhwc_bf16, accumulate);
  else
    Backend<T>::transpose_layout(n, c, plane, src, dst, to_nhwc, nhwc_bf16, accumulate);
}

#define IPNA_CHANNELS(T)                                                                                     \
  template void CpuBackend<T>::transpose_layout(int, int, int64_t, const T*, T*, bool, bool, bool);          \
  template void CpuBackend<T>::copy_channels(int, int64_t, int, const T*, int, int, T*, int, int, bool);     \
  template void CpuBackend<T>::channel_shuffle(int, int, int64_t, const int32_t*, const T*, T*, bool, bool); \
  template void CpuBackend<T>::channel_mean_forward(int, int, int64_t, const T*, T*);                        \
  template void CpuBackend<T>::channel_mean_backward(int, int, int64_t, const T*, T*, bool);                 \
  template void CpuBackend<T>::copy_window(int, int, const T*, int, int, int, int, T*, int, int, int, int, int, int);
IPNA_CPU_INSTANTIATE_BOTH(IPNA_CHANNELS)

}  // namespace ipna
