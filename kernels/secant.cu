// The secant rule's kernels (Backend::secant_slopes and the rest, engine/backend.h), mirroring
// engine/cpu/secant.cpp: sample i of a batch of consecutive path points reads sample i - 1, and
// sample 0 keeps the ordinary derivative. The secant backward of MaxPool scatters into two
// inputs per output, with atomics as the ordinary one.
#include <cfloat>
#include <cmath>

#include "kernels/kernels.h"
#include "kernels/launch.h"

namespace ipna::kernels {
namespace {

__global__ void secant_slopes_kernel(int64_t per_sample, int64_t total, const float* z, const float* y, float* slope,
                                     bool smooth) {
  const int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (j >= total) return;
  if (j < per_sample) {
    if (!smooth) slope[j] = y[j] == z[j] ? 1.f : 0.f;
    return;
  }
  const float dz = z[j] - z[j - per_sample], dy = y[j] - y[j - per_sample];
  if (smooth) {
    const float scale = fmaxf(1.f, fmaxf(fabsf(z[j]), fabsf(z[j - per_sample])));
    if (fabsf(dz) > sqrtf(FLT_EPSILON) * scale) slope[j] = dy / dz;
  } else {
    slope[j] = dz != 0.f ? dy / dz : (y[j] == z[j] ? 1.f : 0.f);
  }
}

__global__ void maxpool_secant_weights_kernel(PoolDesc d, int64_t total, const int32_t* argmax, const float* x,
                                              float* w) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= total) return;
  const int64_t out_plane = static_cast<int64_t>(d.ho) * d.wo, per_sample = d.c * out_plane;
  if (i < per_sample) {
    w[i] = 1.f;
    return;
  }
  const int32_t a = argmax[i - per_sample], b = argmax[i];
  if (a == b || a < 0 || b < 0) {
    w[i] = 1.f;
    return;
  }
  const int64_t in_plane = static_cast<int64_t>(d.h) * d.w;
  const float* x1 = x + (i / out_plane) * in_plane;
  const float* x0 = x1 - d.c * in_plane;
  const float lead = x0[a] - x0[b], fall = lead - (x1[a] - x1[b]);
  w[i] = fall > 0.f ? fminf(fmaxf(lead / fall, 0.f), 1.f) : 0.5f;
}

__global__ void maxpool_backward_secant_kernel(PoolDesc d, int64_t total, const int32_t* argmax, const float* w,
                                               const float* dy, float* dx) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= total) return;
  const int64_t out_plane = static_cast<int64_t>(d.ho) * d.wo, per_sample = d.c * out_plane;
  float* dxp = dx + (i / out_plane) * d.h * d.w;
  const int32_t b = argmax[i], a = i < per_sample ? b : argmax[i - per_sample];
  if (a >= 0) atomicAdd(dxp + a, w[i] * dy[i]);
  if (b >= 0) atomicAdd(dxp + b, (1.f - w[i]) * dy[i]);
}

__global__ void maxpool_tangent_secant_kernel(PoolDesc d, int64_t total, const int32_t* argmax, const float* w,
                                              const float* tx, float* ty) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= total) return;
  const int64_t out_plane = static_cast<int64_t>(d.ho) * d.wo, per_sample = d.c * out_plane;
  const float* t = tx + (i / out_plane) * d.h * d.w;
  const int32_t b = argmax[i], a = i < per_sample ? b : argmax[i - per_sample];
  ty[i] = (a >= 0 ? w[i] * t[a] : 0.f) + (b >= 0 ? (1.f - w[i]) * t[b] : 0.f);
}

__global__ void pair_mean_kernel(int64_t per_sample, int64_t total, const float* v, float* out) {
  const int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (j >= total) return;
  out[j] = j < per_sample ? v[j] : 0.5f * (v[j - per_sample] + v[j]);
}

}  // namespace

void secant_slopes(int64_t per_sample, int n, const float* z, const float* y, float* slope, bool smooth,
                   cudaStream_t s) {
  const int64_t total = per_sample * n;
  launch_1d("secant_slopes", total, s, secant_slopes_kernel, per_sample, total, z, y, slope, smooth);
}
void maxpool_secant_weights(const PoolDesc& d, int n, const int32_t* argmax, const float* x, float* w, cudaStream_t s) {
  const int64_t total = static_cast<int64_t>(n) * d.c * d.ho * d.wo;
  launch_1d("maxpool_secant_weights", total, s, maxpool_secant_weights_kernel, d, total, argmax, x, w);
}
void maxpool_backward_secant(const PoolDesc& d, int n, const int32_t* argmax, const float* w, const float* dy,
                             float* dx, bool acc, cudaStream_t s) {
  if (!acc) check(cudaMemsetAsync(dx, 0, sizeof(float) * n * d.c * d.h * d.w, s), "maxpool_backward_secant memset");
  const int64_t total = static_cast<int64_t>(n) * d.c * d.ho * d.wo;
  launch_1d("maxpool_backward_secant", total, s, maxpool_backward_secant_kernel, d, total, argmax, w, dy, dx);
}
void maxpool_tangent_secant(const PoolDesc& d, int n, const int32_t* argmax, const float* w, const float* tx, float* ty,
                            cudaStream_t s) {
  const int64_t total = static_cast<int64_t>(n) * d.c * d.ho * d.wo;
  launch_1d("maxpool_tangent_secant", total, s, maxpool_tangent_secant_kernel, d, total, argmax, w, tx, ty);
}
void pair_mean(int64_t per_sample, int n, const float* v, float* out, cudaStream_t s) {
  const int64_t total = per_sample * n;
  launch_1d("pair_mean", total, s, pair_mean_kernel, per_sample, total, v, out);
}

}  // namespace ipna::kernels
