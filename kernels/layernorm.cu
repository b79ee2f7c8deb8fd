// LayerNorm over the channels at each position: one thread per (sample,
// position), looping over the channels; neighbouring threads read
// neighbouring positions of a channel plane, so every access is coalesced.
#include "kernels/kernels.h"
#include "kernels/launch.h"

namespace ipna::kernels {
namespace {

__global__ void layernorm_kernel(int64_t total, int c, int64_t plane, float eps, const float* gamma,
                                 const float* beta, const float* x, float* y, float* xhat, float* rstd) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= total) return;
  const int64_t base = (i / plane) * c * plane + i % plane;
  float mean = 0.f, var = 0.f;
  for (int k = 0; k < c; ++k) mean += x[base + k * plane];
  mean /= static_cast<float>(c);
  for (int k = 0; k < c; ++k) {
    const float d = x[base + k * plane] - mean;
    var += d * d;
  }
  const float inv = rsqrtf(var / static_cast<float>(c) + eps);
  if (rstd) rstd[i] = inv;
  for (int k = 0; k < c; ++k) {
    const float h = (x[base + k * plane] - mean) * inv;
    if (xhat) xhat[base + k * plane] = h;
    y[base + k * plane] = h * gamma[k] + beta[k];
  }
}

__global__ void layernorm_backward_kernel(int64_t total, int c, int64_t plane, const float* gamma, const float* xhat,
                                          const float* rstd, const float* dy, float* dx, bool acc) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= total) return;
  const int64_t base = (i / plane) * c * plane + i % plane;
  float m1 = 0.f, m2 = 0.f;
  for (int k = 0; k < c; ++k) {
    const float g = dy[base + k * plane] * gamma[k];
    m1 += g;
    m2 += g * xhat[base + k * plane];
  }
  m1 /= static_cast<float>(c);
  m2 /= static_cast<float>(c);
  for (int k = 0; k < c; ++k) {
    const int64_t at = base + k * plane;
    const float v = rstd[i] * (dy[at] * gamma[k] - m1 - xhat[at] * m2);
    dx[at] = acc ? dx[at] + v : v;
  }
}

__global__ void layernorm_tangent_kernel(int64_t total, int c, int64_t plane, const float* gamma, const float* xhat,
                                         const float* rstd, const float* tx, float* ty) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= total) return;
  const int64_t base = (i / plane) * c * plane + i % plane;
  float m1 = 0.f, m2 = 0.f;
  for (int k = 0; k < c; ++k) {
    m1 += tx[base + k * plane];
    m2 += tx[base + k * plane] * xhat[base + k * plane];
  }
  m1 /= static_cast<float>(c);
  m2 /= static_cast<float>(c);
  for (int k = 0; k < c; ++k) {
    const int64_t at = base + k * plane;
    ty[at] = gamma[k] * rstd[i] * (tx[at] - m1 - xhat[at] * m2);
  }
}

}  // namespace

void layernorm_tangent(int n, int c, int64_t plane, const float* gamma, const float* xhat, const float* rstd,
                       const float* tx, float* ty, cudaStream_t s) {
  const int64_t total = static_cast<int64_t>(n) * plane;
  launch_1d("layernorm_tangent", total, s, layernorm_tangent_kernel, total, c, plane, gamma, xhat, rstd, tx, ty);
}

void layernorm_forward(int n, int c, int64_t plane, float eps, const float* gamma, const float* beta, const float* x,
                       float* y, float* xhat, float* rstd, cudaStream_t s) {
  const int64_t total = static_cast<int64_t>(n) * plane;
  launch_1d("layernorm_forward", total, s, layernorm_kernel, total, c, plane, eps, gamma, beta, x, y, xhat, rstd);
}

void layernorm_backward(int n, int c, int64_t plane, const float* gamma, const float* xhat, const float* rstd,
                        const float* dy, float* dx, bool accumulate, cudaStream_t s) {
  const int64_t total = static_cast<int64_t>(n) * plane;
  launch_1d("layernorm_backward", total, s, layernorm_backward_kernel, total, c, plane, gamma, xhat, rstd, dy, dx,
            accumulate);
}

}  // namespace ipna::kernels
