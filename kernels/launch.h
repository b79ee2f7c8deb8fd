// Launching our kernels: one helper that sizes the grid, launches on the
// backend's stream and checks the launch, so no launch goes unchecked.
// Included by kernels/*.cu only (it uses the <<<>>> syntax).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

namespace ipna::kernels {

constexpr int kThreads = 256;

// Throws ipna::Error naming the call on a CUDA error.
void check(cudaError_t e, const char* what);

// One thread per index of [0, count).
template <typename Kernel, typename... Args>
void launch_1d(const char* name, int64_t count, cudaStream_t s, Kernel kernel, Args... args) {
  if (count <= 0) return;
  const int64_t blocks = (count + kThreads - 1) / kThreads;
  if (blocks > INT32_MAX) check(cudaErrorInvalidConfiguration, name);
  kernel<<<static_cast<unsigned>(blocks), kThreads, 0, s>>>(args...);
  check(cudaGetLastError(), name);
}

// An explicit grid (one block per sample, ...).
template <typename Kernel, typename... Args>
void launch(const char* name, unsigned blocks, unsigned threads, cudaStream_t s, Kernel kernel, Args... args) {
  if (blocks == 0) return;
  kernel<<<blocks, threads, 0, s>>>(args...);
  check(cudaGetLastError(), name);
}

}  // namespace ipna::kernels
