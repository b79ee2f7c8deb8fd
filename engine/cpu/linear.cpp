// Linear (Gemm / MatMul) on the CPU: x [n, in], weight [out, in], y [n, out].
// float32 goes to oneDNN (engine/cpu/onednn_linear.h); float64, the reference,
// splits the batch into one row block per thread, each a single-threaded GEMM.
#include <omp.h>

#include <algorithm>
#include <type_traits>

#include "engine/cpu/cpu_backend.h"
#include "engine/cpu/instantiate.h"

namespace ipna {

namespace {
template <typename F>
void for_row_blocks(int n, F&& body) {
#pragma omp parallel
  {
    const int nt = omp_get_num_threads(), t = omp_get_thread_num();
    const int per = (n + nt - 1) / nt;
    const int r0 = std::min(n, t * per), r1 = std::min(n, r0 + per);
    if (r1 > r0) body(r0, r1);
  }
}
}  // namespace

namespace cpu {
template <typename T>
void blas_linear_forward(int in, int out, const T* weight, const T* bias, const T* x, T* y, int n) {
  for_row_blocks(n, [&](int r0, int r1) {
    T* yb = y + static_cast<int64_t>(r0) * out;
    if (bias)
      for (int r = r0; r < r1; ++r) std::copy(bias, bias + out, y + static_cast<int64_t>(r) * out);
    gemm<T>(false, true, r1 - r0, out, in, T(1), x + static_cast<int64_t>(r0) * in, in, weight, in,
            bias ? T(1) : T(0), yb, out);
  });
}

template <typename T>
void blas_linear_backward_data(int in, int out, const T* weight, const T* dy, T* dx, int n, bool accumulate) {
  for_row_blocks(n, [&](int r0, int r1) {
    gemm<T>(false, false, r1 - r0, in, out, T(1), dy + static_cast<int64_t>(r0) * out, out, weight, in,
            accumulate ? T(1) : T(0), dx + static_cast<int64_t>(r0) * in, in);
  });
}
template void blas_linear_forward<float>(int, int, const float*, const float*, const float*, float*, int);
template void blas_linear_forward<double>(int, int, const double*, const double*, const double*, double*, int);
template void blas_linear_backward_data<float>(int, int, const float*, const float*, float*, int, bool);
template void blas_linear_backward_data<double>(int, int, const double*, const double*, double*, int, bool);
}  // namespace cpu

template <typename T>
void CpuBackend<T>::linear_forward(int in, int out, const T* weight, const T* bias, const T* x, T* y, int n) {
  if constexpr (std::is_same_v<T, float>)
    onednn_linear_.forward(in, out, weight, bias, x, y, n);
  else
    cpu::blas_linear_forward(in, out, weight, bias, x, y, n);
}

template <typename T>
void CpuBackend<T>::linear_backward_data(int in, int out, const T* weight, const T* dy, T* dx, int n,
                                         bool accumulate) {
  if constexpr (std::is_same_v<T, float>)
    onednn_linear_.backward_data(in, out, weight, dy, dx, n, accumulate);
  else
    cpu::blas_linear_backward_data(in, out, weight, dy, dx, n, accumulate);
}

#define IPNA_LINEAR(T)                                                                                    \
  template void CpuBackend<T>::linear_forward(int, int, const T*, const T*, const T*, T*, int);           \
  template void CpuBackend<T>::linear_backward_data(int, int, const T*, const T*, T*, int, bool);
IPNA_CPU_INSTANTIATE_BOTH(IPNA_LINEAR)

}  // namespace ipna
