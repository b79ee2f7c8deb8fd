#include "engine/cpu/cpu_backend.h"

#include <cblas.h>
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <new>
#include <string>

#include "engine/error.h"

extern "C" void openblas_set_num_threads(int);

namespace ipna {

namespace cpu {
template <>
void gemm<float>(bool ta, bool tb, int m, int n, int k, float alpha, const float* a, int lda, const float* b, int ldb,
                 float beta, float* c, int ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b,
              ldb, beta, c, ldc);
}
template <>
void gemm<double>(bool ta, bool tb, int m, int n, int k, double alpha, const double* a, int lda, const double* b,
                  int ldb, double beta, double* c, int ldc) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b,
              ldb, beta, c, ldc);
}

template <typename T>
T* scratch(size_t count, int slot) {
  thread_local std::vector<T> buf[2];
  if (buf[slot].size() < count) buf[slot].resize(count);
  return buf[slot].data();
}
template float* scratch<float>(size_t, int);
template double* scratch<double>(size_t, int);
}  // namespace cpu

template <typename T>
CpuBackend<T>::CpuBackend(CpuMath math) : onednn_(math) {
  // Parallelism comes from OpenMP over samples; a threaded BLAS inside those
  // threads would oversubscribe the cores.
  openblas_set_num_threads(1);
}

template <typename T>
std::string CpuBackend<T>::name() const {
  if (sizeof(T) == 8) return "cpu (float64)";
  switch (onednn_.math()) {
    case CpuMath::Fp32:
      return "cpu (float32)";
    case CpuMath::Winograd:
      return "cpu (float32, Winograd 3x3 convolutions)";
    case CpuMath::Bf16:
      return "cpu (float32, bf16 convolutions and stored values)";
  }
  return "cpu";
}

template <typename T>
void* CpuBackend<T>::allocate(size_t bytes) {
  void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
  if (!p)
    throw Error("out of host memory allocating " + std::to_string(bytes >> 20) +
                " MiB (lower the memory budget or the chunk of steps)");
  return p;
}
template <typename T>
void CpuBackend<T>::release(void* p) noexcept {
  onednn_.forget(p);
  onednn_linear_.forget(p);
  std::free(p);
}
template <typename T>
void CpuBackend<T>::copy_to_device(void* dst, const void* src, size_t bytes) {
  std::memcpy(dst, src, bytes);
}
template <typename T>
void CpuBackend<T>::copy_to_host(void* dst, const void* src, size_t bytes) {
  std::memcpy(dst, src, bytes);
}
template <typename T>
void CpuBackend<T>::copy_on_device(void* dst, const void* src, size_t bytes) {
  std::memmove(dst, src, bytes);
}
template <typename T>
void CpuBackend<T>::zero(void* dst, size_t bytes) {
  std::memset(dst, 0, bytes);
}

template <typename T>
size_t CpuBackend<T>::memory_available() const {
  // MemAvailable from /proc/meminfo, else physical pages.
  std::ifstream f("/proc/meminfo");
  std::string key;
  size_t kb = 0;
  std::string unit;
  while (f >> key >> kb >> unit)
    if (key == "MemAvailable:") return kb * 1024;
  return static_cast<size_t>(sysconf(_SC_AVPHYS_PAGES)) * static_cast<size_t>(sysconf(_SC_PAGESIZE));
}

template <typename T>
int CpuBackend<T>::concurrent_lanes() const {
  return omp_in_parallel() ? 1 : std::max(1, omp_get_max_threads());
}

template <typename T>
void CpuBackend<T>::run_concurrently(int tasks, int lanes, const std::function<void(int task, int lane)>& run) {
  lanes = std::min({tasks, lanes, concurrent_lanes()});
  if (lanes <= 1) {
    for (int t = 0; t < tasks; ++t) run(t, 0);
    return;
  }
  // An exception may not leave an OpenMP region: the first is kept, the tasks after it skipped.
  std::exception_ptr failure;
  std::atomic<bool> failed{false};
#pragma omp parallel num_threads(lanes)
  {
    const int lane = omp_get_thread_num();
#pragma omp for schedule(dynamic, 1)
    for (int t = 0; t < tasks; ++t) {
      if (failed.load(std::memory_order_relaxed)) continue;
      try {
        run(t, lane);
      } catch (...) {
#pragma omp critical(ipna_lane_failure)
        if (!failure) failure = std::current_exception();
        failed = true;
      }
    }
  }
  if (failure) std::rethrow_exception(failure);
}

template class CpuBackend<float>;
template class CpuBackend<double>;

}  // namespace ipna
