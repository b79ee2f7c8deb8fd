// The secant rule's ops on the CPU (Backend::secant_slopes and the rest): a batch holds
// consecutive path points, and each sample's backward uses its nonlinearities' slopes over the
// step from the sample before it, so that a step's attributions sum to the step's change of F
// exactly. Sample i reads sample i - 1, so the loops run over samples 1..n-1 with sample 0 as
// the ordinary derivative's.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "engine/cpu/cpu_backend.h"
#include "engine/cpu/instantiate.h"

namespace ipna {

template <typename T>
void CpuBackend<T>::secant_slopes(int64_t per_sample, int n, const T* z, const T* y, T* slope, bool smooth) {
  // Below sqrt(eps) the quotient's rounding (eps |y| / |dz|) outgrows what the derivative at the
  // step's end misses (|f''| |dz| / 2).
  const T short_step = std::sqrt(std::numeric_limits<T>::epsilon());
  if (!smooth)
    for (int64_t j = 0; j < per_sample; ++j) slope[j] = y[j] == z[j] ? T(1) : T(0);
#pragma omp parallel for schedule(static)
  for (int64_t j = per_sample; j < n * per_sample; ++j) {
    const T dz = z[j] - z[j - per_sample], dy = y[j] - y[j - per_sample];
    if (smooth) {
      const T scale = std::max({T(1), std::abs(z[j]), std::abs(z[j - per_sample])});
      if (std::abs(dz) > short_step * scale) slope[j] = dy / dz;
    } else {
      slope[j] = dz != T(0) ? dy / dz : (y[j] == z[j] ? T(1) : T(0));
    }
  }
}

template <typename T>
void CpuBackend<T>::maxpool_secant_weights(const PoolDesc& d, const int32_t* argmax, const T* x, T* w, int n) {
  const int64_t out_plane = static_cast<int64_t>(d.ho) * d.wo, in_plane = static_cast<int64_t>(d.h) * d.w;
  const int64_t per_sample = d.c * out_plane;
  std::fill(w, w + per_sample, T(1));
#pragma omp parallel for schedule(static)
  for (int64_t p = d.c; p < static_cast<int64_t>(n) * d.c; ++p) {  // planes of samples 1..n-1
    const int32_t* b = argmax + p * out_plane;
    const int32_t* a = b - per_sample;
    const T* x1 = x + p * in_plane;
    const T* x0 = x1 - d.c * in_plane;
    T* wp = w + p * out_plane;
    for (int64_t o = 0; o < out_plane; ++o) {
      if (a[o] == b[o] || a[o] < 0 || b[o] < 0) {
        wp[o] = T(1);
        continue;
      }
      // a leads at the step's start, b at its end: a - b falls from a0 - b0 >= 0 to a1 - b1 <= 0.
      const T lead = x0[a[o]] - x0[b[o]], fall = lead - (x1[a[o]] - x1[b[o]]);
      wp[o] = fall > T(0) ? std::clamp(lead / fall, T(0), T(1)) : T(0.5);  // a tie throughout: either
    }
  }
}

template <typename T>
void CpuBackend<T>::maxpool_backward_secant(const PoolDesc& d, const int32_t* argmax, const T* w, const T* dy, T* dx,
                                            int n, bool accumulate) {
  const int64_t out_plane = static_cast<int64_t>(d.ho) * d.wo, in_plane = static_cast<int64_t>(d.h) * d.w;
  const int64_t per_sample = d.c * out_plane;
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < static_cast<int64_t>(n) * d.c; ++p) {
    T* dxp = dx + p * in_plane;
    if (!accumulate) std::memset(dxp, 0, sizeof(T) * in_plane);
    const int32_t* b = argmax + p * out_plane;
    const int32_t* a = p < d.c ? b : b - per_sample;
    const T* g = dy + p * out_plane;
    const T* wp = w + p * out_plane;
    for (int64_t o = 0; o < out_plane; ++o) {
      if (a[o] >= 0) dxp[a[o]] += wp[o] * g[o];
      if (b[o] >= 0) dxp[b[o]] += (T(1) - wp[o]) * g[o];
    }
  }
}

template <typename T>
void CpuBackend<T>::maxpool_tangent_secant(const PoolDesc& d, const int32_t* argmax, const T* w, const T* tx, T* ty,
                                           int n) {
  const int64_t out_plane = static_cast<int64_t>(d.ho) * d.wo, in_plane = static_cast<int64_t>(d.h) * d.w;
  const int64_t per_sample = d.c * out_plane;
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < static_cast<int64_t>(n) * d.c; ++p) {
    const T* t = tx + p * in_plane;
    const int32_t* b = argmax + p * out_plane;
    const int32_t* a = p < d.c ? b : b - per_sample;
    const T* wp = w + p * out_plane;
    T* y = ty + p * out_plane;
    for (int64_t o = 0; o < out_plane; ++o)
      y[o] = (a[o] >= 0 ? wp[o] * t[a[o]] : T(0)) + (b[o] >= 0 ? (T(1) - wp[o]) * t[b[o]] : T(0));
  }
}

template <typename T>
void CpuBackend<T>::pair_mean(int64_t per_sample, int n, T* v) {
  for (int i = n - 1; i >= 1; --i) {  // from the last, so that v_{i-1} is still the sample's own
    T* vi = v + i * per_sample;
    const T* prev = vi - per_sample;
#pragma omp parallel for schedule(static)
    for (int64_t j = 0; j < per_sample; ++j) vi[j] = T(0.5) * (prev[j] + vi[j]);
  }
}

#define IPNA_SECANT(T)                                                                                               \
  template void CpuBackend<T>::secant_slopes(int64_t, int, const T*, const T*, T*, bool);                            \
  template void CpuBackend<T>::maxpool_secant_weights(const PoolDesc&, const int32_t*, const T*, T*, int);           \
  template void CpuBackend<T>::maxpool_backward_secant(const PoolDesc&, const int32_t*, const T*, const T*, T*, int, \
                                                       bool);                                                        \
  template void CpuBackend<T>::maxpool_tangent_secant(const PoolDesc&, const int32_t*, const T*, const T*, T*, int); \
  template void CpuBackend<T>::pair_mean(int64_t, int, T*);
IPNA_CPU_INSTANTIATE_BOTH(IPNA_SECANT)

}  // namespace ipna
