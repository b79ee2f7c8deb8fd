// Attribution kernels: path and patch points built on the device from x', d
// and the boxes; the target (softmax probability or logit) with its gradient,
// one block per sample; and the step-sum accumulations of IG and of
// g * (h_a - h_b) (conductance, every IPNA box), one thread per neuron
// looping over the chunk so the sums stay in registers.
#include <cfloat>

#include "kernels/kernels.h"
#include "kernels/launch.h"

namespace ipna::kernels {
namespace {

__global__ void make_points_kernel(int c, int h, int w, int64_t total, const float* x0, const float* d,
                                   const float* k, const float* scale, const int* box_index, const DeviceBox* boxes,
                                   float* out) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= total) return;
  const int64_t per = static_cast<int64_t>(c) * h * w;
  const int b = static_cast<int>(i / per);
  const int64_t j = i % per;
  float v = x0[j] + k[b] * d[j];
  const int bi = box_index ? box_index[b] : -1;
  if (bi >= 0) {
    const int col = static_cast<int>(j % w), row = static_cast<int>((j / w) % h);
    const DeviceBox bx = boxes[bi];
    if (row >= bx.r0 && row < bx.r1 && col >= bx.c0 && col < bx.c1) v += scale ? scale[b] * d[j] : d[j];
  }
  out[i] = v;
}

__device__ float block_reduce(float v, bool is_max) {
  __shared__ float part[32];
  for (int o = 16; o > 0; o >>= 1) {
    const float u = __shfl_xor_sync(0xffffffffu, v, o);
    v = is_max ? fmaxf(v, u) : v + u;
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) part[warp] = v;
  __syncthreads();
  const int warps = (blockDim.x + 31) >> 5;
  v = threadIdx.x < warps ? part[threadIdx.x] : (is_max ? -FLT_MAX : 0.f);
  if (warp == 0)
    for (int o = 16; o > 0; o >>= 1) {
      const float u = __shfl_xor_sync(0xffffffffu, v, o);
      v = is_max ? fmaxf(v, u) : v + u;
    }
  __shared__ float result;
  if (threadIdx.x == 0) result = v;
  __syncthreads();
  return result;
}

__global__ void target_kernel(bool logit, int classes, int y, const float* logits, float* value, float* dlogits) {
  const float* z = logits + static_cast<int64_t>(blockIdx.x) * classes;
  float* g = dlogits + static_cast<int64_t>(blockIdx.x) * classes;
  if (logit) {
    for (int i = threadIdx.x; i < classes; i += blockDim.x) g[i] = i == y ? 1.f : 0.f;
    if (threadIdx.x == 0) value[blockIdx.x] = z[y];
    return;
  }
  float m = -FLT_MAX;
  for (int i = threadIdx.x; i < classes; i += blockDim.x) m = fmaxf(m, z[i]);
  m = block_reduce(m, true);
  float s = 0;
  for (int i = threadIdx.x; i < classes; i += blockDim.x) s += expf(z[i] - m);
  s = block_reduce(s, false);
  const float py = expf(z[y] - m) / s;
  for (int i = threadIdx.x; i < classes; i += blockDim.x) g[i] = py * ((i == y ? 1.f : 0.f) - expf(z[i] - m) / s);
  if (threadIdx.x == 0) value[blockIdx.x] = py;
}

__global__ void sum_batch_kernel(int64_t per, int n, const float* x, const float* w, float* acc) {
  const int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (j >= per) return;
  float s = 0;
  if (w)
    for (int b = 0; b < n; ++b) s += w[b] * x[b * per + j];
  else
    for (int b = 0; b < n; ++b) s += x[b * per + j];
  acc[j] += s;
}

__global__ void path_product_kernel(int64_t per, int n, const float* g, const float* a, const float* b, float* acc) {
  const int64_t j = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (j >= per) return;
  float s = 0;
  for (int i = 0; i < n; ++i) {
    const int64_t at = i * per + j;
    s += g[at] * (b ? a[at] - b[at] : a[at]);
  }
  acc[j] += s;
}
}  // namespace

void make_points(int c, int h, int w, int n, const float* x0, const float* d, const float* k, const float* scale,
                 const int* box_index, const DeviceBox* boxes, float* out, cudaStream_t s) {
  const int64_t total = static_cast<int64_t>(n) * c * h * w;
  launch_1d("make_points", total, s, make_points_kernel, c, h, w, total, x0, d, k, scale, box_index, boxes, out);
}
void target_forward_backward(bool logit, int classes, int y, int n, const float* logits, float* value, float* dlogits,
                             cudaStream_t s) {
  launch("target_forward_backward", static_cast<unsigned>(n), kThreads, s, target_kernel, logit, classes, y, logits,
         value, dlogits);
}
void sum_batch(int64_t per, int n, const float* x, const float* w, float* acc, cudaStream_t s) {
  launch_1d("sum_batch", per, s, sum_batch_kernel, per, n, x, w, acc);
}
void accumulate_path_product(int64_t per, int n, const float* g, const float* a, const float* b, float* acc,
                             cudaStream_t s) {
  launch_1d("accumulate_path_product", per, s, path_product_kernel, per, n, g, a, b, acc);
}

}  // namespace ipna::kernels
