// Smooth activations and the product of two tensors on the CPU. An
// activation's forward also writes its derivative at x, which is all its
// backward needs (dx = dy * f'(x), done by mul_backward). Mul's backward needs
// both factors; the plan keeps copies of them.
#include <cmath>
#include <type_traits>

#include "engine/cpu/bf16.h"
#include "engine/cpu/cpu_backend.h"
#include "engine/cpu/instantiate.h"

namespace ipna {

namespace {

// f(v) and f'(v) in T's precision (std:: functions of float or double).
template <typename T>
inline T activate(ActivationFn f, T v, T alpha, T beta, T& d) {
  switch (f) {
    case ActivationFn::Sigmoid: {
      const T s = T(1) / (T(1) + std::exp(-v));
      d = s * (T(1) - s);
      return s;
    }
    case ActivationFn::Tanh: {
      const T t = std::tanh(v);
      d = T(1) - t * t;
      return t;
    }
    case ActivationFn::HardSigmoid: {
      const T z = alpha * v + beta;
      d = z > T(0) && z < T(1) ? alpha : T(0);
      return z < T(0) ? T(0) : (z > T(1) ? T(1) : z);
    }
    case ActivationFn::HardSwish: {  // PyTorch's derivative: 0 below -3, x/3 + 1/2 up to 3, 1 above
      d = v < T(-3) ? T(0) : (v <= T(3) ? v / T(3) + T(0.5) : T(1));
      const T h = v / T(6) + T(0.5);
      return v * (h < T(0) ? T(0) : (h > T(1) ? T(1) : h));
    }
    case ActivationFn::SiLU: {
      const T s = T(1) / (T(1) + std::exp(-v));
      d = s * (T(1) + v * (T(1) - s));
      return v * s;
    }
    case ActivationFn::GeluErf: {
      const T cdf = T(0.5) * (T(1) + std::erf(v * T(M_SQRT1_2)));
      d = cdf + v * std::exp(T(-0.5) * v * v) * T(0.5 * M_2_SQRTPI * M_SQRT1_2);
      return v * cdf;
    }
    case ActivationFn::GeluTanh: {
      const T k = T(M_SQRT2 * M_2_SQRTPI * 0.5), c = T(0.044715);
      const T t = std::tanh(k * (v + c * v * v * v));
      d = T(0.5) * (T(1) + t) + T(0.5) * v * (T(1) - t * t) * k * (T(1) + T(3) * c * v * v);
      return T(0.5) * v * (T(1) + t);
    }
    case ActivationFn::Erf:
      d = T(M_2_SQRTPI) * std::exp(-v * v);
      return std::erf(v);
  }
  d = T(0);
  return v;
}

}  // namespace

template <typename T>
void CpuBackend<T>::activation_forward(ActivationFn f, int64_t count, T alpha, T beta, const T* x, T* y,
                                       T* derivative) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < count; ++i) {
    T d;
    y[i] = activate(f, x[i], alpha, beta, d);  // x[i] is read before y[i] is written: y may alias x
    if (derivative) derivative[i] = d;
  }
}

template <typename T>
void CpuBackend<T>::activation_forward_bf16(ActivationFn f, int64_t count, T alpha, T beta, const Bf16Bits* x,
                                            Bf16Bits* y, T* derivative) {
  if constexpr (!std::is_same_v<T, float>) {
    Backend<T>::activation_forward_bf16(f, count, alpha, beta, x, y, derivative);
  } else {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < count; ++i) {
      T d;
      y[i] = cpu::to_bf16(activate(f, cpu::from_bf16(x[i]), alpha, beta, d));
      if (derivative) derivative[i] = d;
    }
  }
}

template <typename T>
void CpuBackend<T>::mul_forward(int n, int c, int64_t plane, bool b_per_channel, const T* a, const T* b, T* y,
                                bool accumulate) {
#pragma omp parallel for schedule(static)
  for (int64_t sc = 0; sc < static_cast<int64_t>(n) * c; ++sc) {
    const T* ai = a + sc * plane;
    T* yi = y + sc * plane;
    for (int64_t i = 0; i < plane; ++i) {
      const T v = ai[i] * (b_per_channel ? b[sc] : b[sc * plane + i]);
      yi[i] = accumulate ? yi[i] + v : v;
    }
  }
}

template <typename T>
void CpuBackend<T>::mul_backward(int n, int c, int64_t plane, bool b_per_channel, const T* a, const T* b, const T* dy,
                                 T* da, bool accumulate_a, T* db, bool accumulate_b) {
#pragma omp parallel for schedule(static)
  for (int64_t sc = 0; sc < static_cast<int64_t>(n) * c; ++sc) {
    const T* g = dy + sc * plane;
    // da before db: when a and b are one value, da and db are one buffer, written then added to.
    if (da) {
      T* d = da + sc * plane;
      if (b_per_channel) {
        const T gate = b[sc];
        for (int64_t i = 0; i < plane; ++i) d[i] = (accumulate_a ? d[i] : T(0)) + g[i] * gate;
      } else {
        const T* bi = b + sc * plane;
        for (int64_t i = 0; i < plane; ++i) d[i] = (accumulate_a ? d[i] : T(0)) + g[i] * bi[i];
      }
    }
    if (db) {
      const T* ai = a + sc * plane;
      if (b_per_channel) {
        T s = 0;
        for (int64_t i = 0; i < plane; ++i) s += g[i] * ai[i];
        db[sc] = (accumulate_b ? db[sc] : T(0)) + s;
      } else {
        T* d = db + sc * plane;
        for (int64_t i = 0; i < plane; ++i) d[i] = (accumulate_b ? d[i] : T(0)) + g[i] * ai[i];
      }
    }
  }
}

#define IPNA_ACTIVATION(T)                                                                                           \
  template void CpuBackend<T>::activation_forward(ActivationFn, int64_t, T, T, const T*, T*, T*);                    \
  template void CpuBackend<T>::activation_forward_bf16(ActivationFn, int64_t, T, T, const Bf16Bits*, Bf16Bits*, T*); \
  template void CpuBackend<T>::mul_forward(int, int, int64_t, bool, const T*, const T*, T*, bool);                   \
  template void CpuBackend<T>::mul_backward(int, int, int64_t, bool, const T*, const T*, const T*, T*, bool, T*, bool);
IPNA_CPU_INSTANTIATE_BOTH(IPNA_ACTIVATION)

}  // namespace ipna
