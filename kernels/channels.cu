// Channel-wise data movement: Concat and Slice (copy_channels), ChannelShuffle
// (a bijection, so its inverse writes every element once, without atomics) and
// the mean over channels, one thread per output element.
#include "kernels/kernels.h"
#include "kernels/launch.h"

namespace ipna::kernels {
namespace {

__global__ void copy_channels_kernel(int64_t total, int64_t plane, int channels, const float* src, int src_c,
                                     int src_c0, float* dst, int dst_c, int dst_c0, bool acc) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= total) return;
  const int64_t p = i % plane, k = (i / plane) % channels, s = i / (plane * channels);
  const float v = src[(s * src_c + src_c0 + k) * plane + p];
  float& d = dst[(s * dst_c + dst_c0 + k) * plane + p];
  d = acc ? d + v : v;
}

__global__ void channel_shuffle_kernel(int64_t total, int64_t plane, int c, const int32_t* perm, const float* x,
                                       float* y, bool inverse, bool acc) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= total) return;
  const int64_t p = i % plane, k = (i / plane) % c, s = i / (plane * c);
  const int64_t from = (s * c + (inverse ? k : perm[k])) * plane + p, to = (s * c + (inverse ? perm[k] : k)) * plane + p;
  y[to] = acc ? y[to] + x[from] : x[from];
}

__global__ void channel_mean_kernel(int64_t total, int64_t plane, int c, const float* x, float* y) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= total) return;
  const int64_t p = i % plane, s = i / plane;
  float sum = 0.f;
  for (int k = 0; k < c; ++k) sum += x[(s * c + k) * plane + p];
  y[i] = sum / static_cast<float>(c);
}

__global__ void channel_mean_backward_kernel(int64_t total, int64_t plane, int c, const float* dy, float* dx,
                                             bool acc) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= total) return;
  const float g = dy[(i / (plane * c)) * plane + i % plane] / static_cast<float>(c);
  dx[i] = acc ? dx[i] + g : g;
}

__global__ void copy_window_kernel(int64_t total, const float* src, int src_h, int src_w, int src_r, int src_c,
                                   float* dst, int dst_h, int dst_w, int dst_r, int dst_c, int h, int w) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= total) return;
  const int c = static_cast<int>(i % w), r = static_cast<int>((i / w) % h);
  const int64_t p = i / (static_cast<int64_t>(w) * h);
  const int sr = src_r + r, sc = src_c + c;
  const bool inside = sr >= 0 && sr < src_h && sc >= 0 && sc < src_w;
  dst[(p * dst_h + dst_r + r) * dst_w + dst_c + c] =
      inside ? src[(p * src_h + sr) * static_cast<int64_t>(src_w) + sc] : 0.f;
}

}  // namespace

void copy_window(int n, int channels, const float* src, int src_h, int src_w, int src_r, int src_c, float* dst,
                 int dst_h, int dst_w, int dst_r, int dst_c, int h, int w, cudaStream_t s) {
  const int64_t total = static_cast<int64_t>(n) * channels * h * w;
  launch_1d("copy_window", total, s, copy_window_kernel, total, src, src_h, src_w, src_r, src_c, dst, dst_h, dst_w,
            dst_r, dst_c, h, w);
}

void copy_channels(int n, int64_t plane, int channels, const float* src, int src_c, int src_c0, float* dst, int dst_c,
                   int dst_c0, bool accumulate, cudaStream_t s) {
  const int64_t total = static_cast<int64_t>(n) * channels * plane;
  launch_1d("copy_channels", total, s, copy_channels_kernel, total, plane, channels, src, src_c, src_c0, dst, dst_c,
            dst_c0, accumulate);
}

void channel_shuffle(int n, int c, int64_t plane, const int32_t* perm, const float* x, float* y, bool inverse,
                     bool accumulate, cudaStream_t s) {
  const int64_t total = static_cast<int64_t>(n) * c * plane;
  launch_1d("channel_shuffle", total, s, channel_shuffle_kernel, total, plane, c, perm, x, y, inverse, accumulate);
}

void channel_mean_forward(int n, int c, int64_t plane, const float* x, float* y, cudaStream_t s) {
  const int64_t total = static_cast<int64_t>(n) * plane;
  launch_1d("channel_mean_forward", total, s, channel_mean_kernel, total, plane, c, x, y);
}

void channel_mean_backward(int n, int c, int64_t plane, const float* dy, float* dx, bool accumulate, cudaStream_t s) {
  const int64_t total = static_cast<int64_t>(n) * c * plane;
  launch_1d("channel_mean_backward", total, s, channel_mean_backward_kernel, total, plane, c, dy, dx, accumulate);
}

}  // namespace ipna::kernels
