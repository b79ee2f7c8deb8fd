// LayerNorm over the channels at each position (ConvNeXt's LayerNorm in
// channels-last form is this op on the channels-first tensor), on the CPU.
// Forward keeps x_hat and 1/sigma per position; backward is
// dx = rstd * (g' - mean_c(g') - x_hat * mean_c(g' * x_hat)), g' = dy * gamma.
#include <cmath>
#include <vector>

#include "engine/cpu/cpu_backend.h"
#include "engine/cpu/instantiate.h"

namespace ipna {

template <typename T>
void CpuBackend<T>::layernorm_forward(int n, int c, int64_t plane, T eps, const T* gamma, const T* beta, const T* x,
                                      T* y, T* xhat, T* rstd) {
#pragma omp parallel for schedule(static)
  for (int s = 0; s < n; ++s) {
    const int64_t base = static_cast<int64_t>(s) * c * plane;
    T* mean = cpu::scratch<T>(2 * plane);
    T* inv = mean + plane;
    for (int64_t i = 0; i < 2 * plane; ++i) mean[i] = 0;
    for (int k = 0; k < c; ++k)
      for (int64_t i = 0; i < plane; ++i) mean[i] += x[base + k * plane + i];
    for (int64_t i = 0; i < plane; ++i) mean[i] /= T(c);
    for (int k = 0; k < c; ++k)
      for (int64_t i = 0; i < plane; ++i) {
        const T d = x[base + k * plane + i] - mean[i];
        inv[i] += d * d;
      }
    for (int64_t i = 0; i < plane; ++i) inv[i] = T(1) / std::sqrt(inv[i] / T(c) + eps);
    if (rstd)
      for (int64_t i = 0; i < plane; ++i) rstd[s * plane + i] = inv[i];
    for (int k = 0; k < c; ++k)  // x is read before y is written at each element: y may alias x
      for (int64_t i = 0; i < plane; ++i) {
        const int64_t at = base + k * plane + i;
        const T h = (x[at] - mean[i]) * inv[i];
        if (xhat) xhat[at] = h;
        y[at] = h * gamma[k] + beta[k];
      }
  }
}

template <typename T>
void CpuBackend<T>::layernorm_backward(int n, int c, int64_t plane, const T* gamma, const T* xhat, const T* rstd,
                                       const T* dy, T* dx, bool accumulate) {
#pragma omp parallel for schedule(static)
  for (int s = 0; s < n; ++s) {
    const int64_t base = static_cast<int64_t>(s) * c * plane;
    T* m1 = cpu::scratch<T>(2 * plane);
    T* m2 = m1 + plane;
    for (int64_t i = 0; i < 2 * plane; ++i) m1[i] = 0;
    for (int k = 0; k < c; ++k)
      for (int64_t i = 0; i < plane; ++i) {
        const T g = dy[base + k * plane + i] * gamma[k];
        m1[i] += g;
        m2[i] += g * xhat[base + k * plane + i];
      }
    for (int k = 0; k < c; ++k)
      for (int64_t i = 0; i < plane; ++i) {
        const int64_t at = base + k * plane + i;
        const T g = dy[at] * gamma[k];
        const T v = rstd[s * plane + i] * (g - m1[i] / T(c) - xhat[at] * m2[i] / T(c));
        dx[at] = accumulate ? dx[at] + v : v;
      }
  }
}

template <typename T>
void CpuBackend<T>::layernorm_tangent(int n, int c, int64_t plane, const T* gamma, const T* xhat, const T* rstd,
                                      const T* tx, T* ty) {
#pragma omp parallel for schedule(static)
  for (int s = 0; s < n; ++s) {
    const int64_t base = static_cast<int64_t>(s) * c * plane;
    T* m1 = cpu::scratch<T>(2 * plane);
    T* m2 = m1 + plane;
    for (int64_t i = 0; i < 2 * plane; ++i) m1[i] = 0;
    for (int k = 0; k < c; ++k)
      for (int64_t i = 0; i < plane; ++i) {
        m1[i] += tx[base + k * plane + i];
        m2[i] += tx[base + k * plane + i] * xhat[base + k * plane + i];
      }
    for (int k = 0; k < c; ++k)
      for (int64_t i = 0; i < plane; ++i) {
        const int64_t at = base + k * plane + i;
        ty[at] = gamma[k] * rstd[s * plane + i] * (tx[at] - m1[i] / T(c) - xhat[at] * m2[i] / T(c));
      }
  }
}

#define IPNA_LAYERNORM(T)                                                                                       \
  template void CpuBackend<T>::layernorm_forward(int, int, int64_t, T, const T*, const T*, const T*, T*, T*, T*); \
  template void CpuBackend<T>::layernorm_backward(int, int, int64_t, const T*, const T*, const T*, const T*, T*, bool); \
  template void CpuBackend<T>::layernorm_tangent(int, int, int64_t, const T*, const T*, const T*, const T*, T*);
IPNA_CPU_INSTANTIATE_BOTH(IPNA_LAYERNORM)

}  // namespace ipna
