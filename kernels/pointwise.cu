// Pointwise kernels: Clip (ReLU, ReLU6) forward with the mask as one warp
// ballot per 32 elements and backward from it, Affine, Add, gradient
// accumulation, masks and biases, and the pad/crop pair for asymmetric padding.
#include <string>

#include "engine/error.h"
#include "engine/window_math.h"
#include "kernels/kernels.h"
#include "kernels/launch.h"

namespace ipna::kernels {

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw Error(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(e));
}

namespace {

__global__ void clip_forward_kernel(int64_t count, float lo, float hi, const float* x, float* y, uint32_t* mask) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const bool valid = i < count;
  const float v = valid ? x[i] : 0.f;
  const unsigned bits = __ballot_sync(0xffffffffu, valid && v > lo && v < hi);
  if (valid) y[i] = fminf(fmaxf(v, lo), hi) + (v != v ? v : 0.f);  // NaN propagates
  if (mask && (threadIdx.x & 31) == 0 && valid) mask[i >> 5] = bits;
}

__global__ void clip_backward_kernel(int64_t count, const uint32_t* mask, const float* dy, float* dx, bool acc) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= count) return;
  const float g = mask_bit(mask, i) ? dy[i] : 0.f;
  dx[i] = acc ? dx[i] + g : g;
}

// One thread per element of the window; the mask bit is the element's whole-plane index.
__global__ void clip_tangent_window_kernel(int64_t total, int h, int w, PlaneWindow win, const uint32_t* mask,
                                           const float* tx, float* ty) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= total) return;
  const int64_t plane = i / (static_cast<int64_t>(win.h) * win.w);
  const int pos = static_cast<int>(i % (static_cast<int64_t>(win.h) * win.w));
  const int64_t at = (plane * h + win.r0 + pos / win.w) * w + win.c0 + pos % win.w;
  ty[i] = mask_bit(mask, at) ? tx[i] : 0.f;
}

// One thread per element of the window; its base is the element at the same position of the whole plane.
__global__ void clip_difference_window_kernel(int64_t total, int h, int w, PlaneWindow win, float lo, float hi,
                                              const float* base, const float* change, float* y) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= total) return;
  const int64_t plane = i / (static_cast<int64_t>(win.h) * win.w);
  const int pos = static_cast<int>(i % (static_cast<int64_t>(win.h) * win.w));
  const float b = base[(plane * h + win.r0 + pos / win.w) * w + win.c0 + pos % win.w];
  const float v = b + change[i];
  // fminf/fmaxf drop a NaN; the sum carries it on, as clip_forward does.
  y[i] = (fminf(fmaxf(v, lo), hi) + (v != v ? v : 0.f)) - (fminf(fmaxf(b, lo), hi) + (b != b ? b : 0.f));
}

__global__ void affine_kernel(int c, int64_t plane, int64_t total, const float* scale, const float* shift,
                              const float* x, float* y) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= total) return;
  const int ch = static_cast<int>((i / plane) % c);
  y[i] = scale[ch] * x[i] + shift[ch];
}

__global__ void affine_backward_kernel(int c, int64_t plane, int64_t total, const float* scale, const float* dy,
                                       float* dx, bool acc) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= total) return;
  const float g = scale[(i / plane) % c] * dy[i];
  dx[i] = acc ? dx[i] + g : g;
}

__global__ void add_kernel(int64_t count, const float* a, const float* b, float* y) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < count) y[i] = a[i] + b[i];
}

__global__ void subtract_kernel(int64_t count, const float* a, const float* b, float* y) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < count) y[i] = a[i] - b[i];
}

__global__ void accumulate_kernel(int64_t count, const float* src, float* dst, bool acc) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < count) dst[i] = acc ? dst[i] + src[i] : src[i];
}

__global__ void scale_by_mask_kernel(int64_t per, int64_t total, const float* mask, float* x) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < total) x[i] *= mask[i % per];
}

__global__ void channel_bias_kernel(int c, int64_t plane, int64_t total, const float* bias, float* y) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < total) y[i] += bias[(i / plane) % c];
}

__global__ void row_bias_kernel(int out, int64_t total, const float* bias, float* y) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < total) y[i] = bias[i % out];
}

__global__ void pad2d_kernel(int64_t total, int h, int w, int top, int left, int hp, int wp, const float* x,
                             float* xp) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= total) return;
  const int col = static_cast<int>(i % wp), row = static_cast<int>((i / wp) % hp);
  const int64_t plane = i / (static_cast<int64_t>(hp) * wp);
  const int r = row - top, cc = col - left;
  xp[i] = (r >= 0 && r < h && cc >= 0 && cc < w) ? x[(plane * h + r) * w + cc] : 0.f;
}

__global__ void crop_add_kernel(int64_t total, int h, int w, int top, int left, int hp, int wp, const float* gp,
                                float* dx, bool acc) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= total) return;
  const int col = static_cast<int>(i % w), row = static_cast<int>((i / w) % h);
  const int64_t plane = i / (static_cast<int64_t>(h) * w);
  const float g = gp[(plane * hp + row + top) * wp + col + left];
  dx[i] = acc ? dx[i] + g : g;
}
}  // namespace

void clip_forward(int64_t count, float lo, float hi, const float* x, float* y, uint32_t* mask, cudaStream_t s) {
  launch_1d("clip_forward", count, s, clip_forward_kernel, count, lo, hi, x, y, mask);
}
void clip_tangent_window(int n, int c, int h, int w, PlaneWindow win, const uint32_t* mask, const float* tx, float* ty,
                         cudaStream_t s) {
  const int64_t total = static_cast<int64_t>(n) * c * win.h * win.w;
  launch_1d("clip_tangent_window", total, s, clip_tangent_window_kernel, total, h, w, win, mask, tx, ty);
}

void clip_difference_window(int n, int c, int h, int w, PlaneWindow win, float lo, float hi, const float* base,
                            const float* change, float* y, cudaStream_t s) {
  const int64_t total = static_cast<int64_t>(n) * c * win.h * win.w;
  launch_1d("clip_difference_window", total, s, clip_difference_window_kernel, total, h, w, win, lo, hi, base, change,
            y);
}

void clip_backward(int64_t count, const uint32_t* mask, const float* dy, float* dx, bool acc, cudaStream_t s) {
  launch_1d("clip_backward", count, s, clip_backward_kernel, count, mask, dy, dx, acc);
}
void affine_forward(int c, int64_t plane, int n, const float* scale, const float* shift, const float* x, float* y,
                    cudaStream_t s) {
  const int64_t total = static_cast<int64_t>(n) * c * plane;
  launch_1d("affine_forward", total, s, affine_kernel, c, plane, total, scale, shift, x, y);
}
void affine_backward(int c, int64_t plane, int n, const float* scale, const float* dy, float* dx, bool acc,
                     cudaStream_t s) {
  const int64_t total = static_cast<int64_t>(n) * c * plane;
  launch_1d("affine_backward", total, s, affine_backward_kernel, c, plane, total, scale, dy, dx, acc);
}
void add(int64_t count, const float* a, const float* b, float* y, cudaStream_t s) {
  launch_1d("add", count, s, add_kernel, count, a, b, y);
}
void subtract(int64_t count, const float* a, const float* b, float* y, cudaStream_t s) {
  launch_1d("subtract", count, s, subtract_kernel, count, a, b, y);
}
void accumulate(int64_t count, const float* src, float* dst, bool acc, cudaStream_t s) {
  if (src != dst || acc) launch_1d("accumulate", count, s, accumulate_kernel, count, src, dst, acc);
}
void scale_by_mask(int64_t per, int n, const float* mask, float* x, cudaStream_t s) {
  const int64_t total = per * n;
  launch_1d("scale_by_mask", total, s, scale_by_mask_kernel, per, total, mask, x);
}
void channel_bias(int c, int64_t plane, int n, const float* bias, float* y, cudaStream_t s) {
  const int64_t total = static_cast<int64_t>(n) * c * plane;
  launch_1d("channel_bias", total, s, channel_bias_kernel, c, plane, total, bias, y);
}
void row_bias(int out, int n, const float* bias, float* y, cudaStream_t s) {
  const int64_t total = static_cast<int64_t>(n) * out;
  launch_1d("row_bias", total, s, row_bias_kernel, out, total, bias, y);
}
void pad2d(int n, int c, int h, int w, int top, int left, int hp, int wp, const float* x, float* xp, cudaStream_t s) {
  const int64_t total = static_cast<int64_t>(n) * c * hp * wp;
  launch_1d("pad2d", total, s, pad2d_kernel, total, h, w, top, left, hp, wp, x, xp);
}
void crop_add(int n, int c, int h, int w, int top, int left, int hp, int wp, const float* gp, float* dx, bool acc,
              cudaStream_t s) {
  const int64_t total = static_cast<int64_t>(n) * c * h * w;
  launch_1d("crop_add", total, s, crop_add_kernel, total, h, w, top, left, hp, wp, gp, dx, acc);
}

}  // namespace ipna::kernels
