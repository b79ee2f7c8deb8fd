// Smooth activations (forward writes f'(x) for backward) and the product of
// two tensors, the second of the same shape or one value per channel (a gate).
// The gate's gradient sums over the plane: one block per (sample, channel).
#include <cfloat>
#include <cmath>

#include "kernels/kernels.h"
#include "kernels/launch.h"

namespace ipna::kernels {
namespace {

__device__ float activate(ActivationFn f, float v, float alpha, float beta, float& d) {
  switch (f) {
    case ActivationFn::Sigmoid: {
      const float s = 1.f / (1.f + expf(-v));
      d = s * (1.f - s);
      return s;
    }
    case ActivationFn::Tanh: {
      const float t = tanhf(v);
      d = 1.f - t * t;
      return t;
    }
    case ActivationFn::HardSigmoid: {
      const float z = alpha * v + beta;
      d = z > 0.f && z < 1.f ? alpha : 0.f;
      return fminf(fmaxf(z, 0.f), 1.f);
    }
    case ActivationFn::HardSwish:
      d = v < -3.f ? 0.f : (v <= 3.f ? v / 3.f + 0.5f : 1.f);
      return v * fminf(fmaxf(v / 6.f + 0.5f, 0.f), 1.f);
    case ActivationFn::SiLU: {
      const float s = 1.f / (1.f + expf(-v));
      d = s * (1.f + v * (1.f - s));
      return v * s;
    }
    case ActivationFn::GeluErf: {
      const float cdf = 0.5f * (1.f + erff(v * 0.70710678118654752f));
      d = cdf + v * expf(-0.5f * v * v) * 0.39894228040143268f;
      return v * cdf;
    }
    case ActivationFn::GeluTanh: {
      const float k = 0.79788456080286536f, c = 0.044715f;
      const float t = tanhf(k * (v + c * v * v * v));
      d = 0.5f * (1.f + t) + 0.5f * v * (1.f - t * t) * k * (1.f + 3.f * c * v * v);
      return 0.5f * v * (1.f + t);
    }
    case ActivationFn::Erf:
      d = 1.12837916709551257f * expf(-v * v);
      return erff(v);
  }
  d = 0.f;
  return v;
}

__global__ void activation_kernel(ActivationFn f, int64_t count, float alpha, float beta, const float* x, float* y,
                                  float* deriv) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= count) return;
  float d;
  const float v = activate(f, x[i], alpha, beta, d);
  y[i] = v;
  if (deriv) deriv[i] = d;
}

__global__ void mul_kernel(int64_t total, int64_t plane, bool per_channel, const float* a, const float* b, float* y,
                           bool acc) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= total) return;
  const float v = a[i] * b[per_channel ? i / plane : i];
  y[i] = acc ? y[i] + v : v;
}

// out (+)= dy * f, f indexed per element or per channel.
__global__ void mul_grad_kernel(int64_t total, int64_t plane, bool per_channel, const float* f, const float* dy,
                                float* out, bool acc) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= total) return;
  const float g = dy[i] * f[per_channel ? i / plane : i];
  out[i] = acc ? out[i] + g : g;
}

// db[sc] (+)= sum over the plane of dy * a, one block per (sample, channel).
__global__ void gate_grad_kernel(int64_t plane, const float* a, const float* dy, float* db, bool acc) {
  const int64_t base = static_cast<int64_t>(blockIdx.x) * plane;
  float s = 0.f;
  for (int64_t p = threadIdx.x; p < plane; p += blockDim.x) s += dy[base + p] * a[base + p];
  __shared__ float part[32];
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = s;
  __syncthreads();
  if (threadIdx.x == 0) {
    float t = 0.f;
    for (int w = 0; w < (blockDim.x + 31) / 32; ++w) t += part[w];
    db[blockIdx.x] = acc ? db[blockIdx.x] + t : t;
  }
}

}  // namespace

void activation_forward(ActivationFn f, int64_t count, float alpha, float beta, const float* x, float* y,
                        float* derivative, cudaStream_t s) {
  launch_1d("activation_forward", count, s, activation_kernel, f, count, alpha, beta, x, y, derivative);
}

void mul_forward(int n, int c, int64_t plane, bool b_per_channel, const float* a, const float* b, float* y,
                 bool accumulate, cudaStream_t s) {
  const int64_t total = static_cast<int64_t>(n) * c * plane;
  launch_1d("mul_forward", total, s, mul_kernel, total, plane, b_per_channel, a, b, y, accumulate);
}

void mul_backward(int n, int c, int64_t plane, bool b_per_channel, const float* a, const float* b, const float* dy,
                  float* da, bool accumulate_a, float* db, bool accumulate_b, cudaStream_t s) {
  const int64_t total = static_cast<int64_t>(n) * c * plane;
  // da before db: when a and b are one value, da and db are one buffer.
  if (da) launch_1d("mul_backward (first factor)", total, s, mul_grad_kernel, total, plane, b_per_channel, b, dy, da,
                    accumulate_a);
  if (!db) return;
  if (b_per_channel)
    launch("mul_backward (gate)", static_cast<unsigned>(static_cast<int64_t>(n) * c), kThreads, s, gate_grad_kernel,
           plane, a, dy, db, accumulate_b);
  else
    launch_1d("mul_backward (second factor)", total, s, mul_grad_kernel, total, plane, false, a, dy, db, accumulate_b);
}

}  // namespace ipna::kernels
