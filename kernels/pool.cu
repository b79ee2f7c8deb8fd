// Pooling kernels. MaxPool forward keeps the argmax (flat index into the
// sample's input plane, the first maximum on ties as PyTorch); backward
// scatters with atomics since overlapping windows may pick the same input.
// AvgPool backward gathers per input element instead (deterministic).
#include <cmath>

#include "engine/window_math.h"
#include "kernels/kernels.h"
#include "kernels/launch.h"

namespace ipna::kernels {
namespace {

__global__ void maxpool_forward_kernel(PoolDesc d, int64_t total, const float* x, float* y, int32_t* argmax) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= total) return;
  const Window& w = d.win;
  const int ox = static_cast<int>(i % d.wo), oy = static_cast<int>((i / d.wo) % d.ho);
  const int64_t plane = i / (static_cast<int64_t>(d.ho) * d.wo);
  const float* xp = x + plane * d.h * d.w;
  int i0, i1, j0, j1;
  window_taps(oy, w.sh, w.pad_top, w.dh, w.kh, d.h, i0, i1);
  window_taps(ox, w.sw, w.pad_left, w.dw, w.kw, d.w, j0, j1);
  float best = -INFINITY;  // a window with no tap inside the input yields -inf, as on the CPU
  int32_t at = -1;
  for (int a = i0; a < i1; ++a) {
    const int iy = oy * w.sh - w.pad_top + a * w.dh;
    for (int b = j0; b < j1; ++b) {
      const int ix = ox * w.sw - w.pad_left + b * w.dw;
      const float v = xp[iy * d.w + ix];
      if (at < 0 || v > best || (v != v && best == best)) {
        best = v;
        at = iy * d.w + ix;
      }
    }
  }
  y[i] = best;
  if (argmax) argmax[i] = at;
}


__global__ void maxpool_backward_kernel(PoolDesc d, int64_t total, const int32_t* argmax, const float* dy, float* dx) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= total) return;
  const int64_t plane = i / (static_cast<int64_t>(d.ho) * d.wo);
  if (argmax[i] >= 0) atomicAdd(dx + plane * d.h * d.w + argmax[i], dy[i]);
}

__device__ int valid_count(const PoolDesc& d, int oy, int ox) {
  int i0, i1, j0, j1;
  window_taps(oy, d.win.sh, d.win.pad_top, d.win.dh, d.win.kh, d.h, i0, i1);
  window_taps(ox, d.win.sw, d.win.pad_left, d.win.dw, d.win.kw, d.w, j0, j1);
  return (i1 - i0) * (j1 - j0);
}

__global__ void avgpool_forward_kernel(PoolDesc d, int64_t total, const float* x, float* y) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= total) return;
  const Window& w = d.win;
  const int ox = static_cast<int>(i % d.wo), oy = static_cast<int>((i / d.wo) % d.ho);
  const float* xp = x + (i / (static_cast<int64_t>(d.ho) * d.wo)) * d.h * d.w;
  int i0, i1, j0, j1;
  window_taps(oy, w.sh, w.pad_top, w.dh, w.kh, d.h, i0, i1);
  window_taps(ox, w.sw, w.pad_left, w.dw, w.kw, d.w, j0, j1);
  float s = 0;
  for (int a = i0; a < i1; ++a)
    for (int b = j0; b < j1; ++b) s += xp[(oy * w.sh - w.pad_top + a * w.dh) * d.w + ox * w.sw - w.pad_left + b * w.dw];
  y[i] = s / static_cast<float>(w.count_include_pad ? w.kh * w.kw : (i1 - i0) * (j1 - j0));
}

// One thread per input element: sum the shares of every window covering it.
__global__ void avgpool_backward_kernel(PoolDesc d, int64_t total, const float* dy, float* dx, bool acc) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= total) return;
  const Window& w = d.win;
  const int ix = static_cast<int>(i % d.w), iy = static_cast<int>((i / d.w) % d.h);
  const float* g = dy + (i / (static_cast<int64_t>(d.h) * d.w)) * d.ho * d.wo;
  float s = 0;
  for (int a = 0; a < w.kh; ++a) {
    const int ny = iy + w.pad_top - a * w.dh;  // = oy * sh
    if (ny < 0 || ny % w.sh) continue;
    const int oy = ny / w.sh;
    if (oy >= d.ho) continue;
    for (int b = 0; b < w.kw; ++b) {
      const int nx = ix + w.pad_left - b * w.dw;
      if (nx < 0 || nx % w.sw) continue;
      const int ox = nx / w.sw;
      if (ox >= d.wo) continue;
      const int div = w.count_include_pad ? w.kh * w.kw : valid_count(d, oy, ox);
      s += g[oy * d.wo + ox] / static_cast<float>(div);
    }
  }
  dx[i] = acc ? dx[i] + s : s;
}
__global__ void maxpool_tangent_kernel(PoolDesc d, int64_t total, const int32_t* argmax, const float* tx, float* ty) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= total) return;
  const int64_t plane = i / (static_cast<int64_t>(d.ho) * d.wo);
  ty[i] = argmax[i] >= 0 ? tx[plane * d.h * d.w + argmax[i]] : 0.f;
}
// One thread per output of the window; the argmax (whole-plane) names an input position, read
// from the input window when it lies inside, else the tangent there is zero.
__global__ void maxpool_tangent_window_kernel(PoolDesc d, int64_t total, const int32_t* argmax, PlaneWindow in,
                                              const float* tx, PlaneWindow out, float* ty) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= total) return;
  const int64_t plane = i / (static_cast<int64_t>(out.h) * out.w);
  const int pos = static_cast<int>(i % (static_cast<int64_t>(out.h) * out.w));
  const int oy = out.r0 + pos / out.w, ox = out.c0 + pos % out.w;
  const int32_t a = argmax[plane * d.ho * d.wo + static_cast<int64_t>(oy) * d.wo + ox];
  float t = 0.f;
  if (a >= 0) {
    const int iy = a / d.w - in.r0, ix = a % d.w - in.c0;
    if (iy >= 0 && iy < in.h && ix >= 0 && ix < in.w) t = tx[(plane * in.h + iy) * in.w + ix];
  }
  ty[i] = t;
}

// One thread per output of the window: both maxima over the taps inside the input plane, at the
// base point and at base + change (the change read on the input window `in`), the first maximum
// winning and a NaN propagating, as in maxpool_forward_kernel.
__global__ void maxpool_difference_window_kernel(PoolDesc d, int64_t total, PlaneWindow in, PlaneWindow out,
                                                 const float* base, bool clip_base, float lo, float hi,
                                                 const float* change, float* y) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= total) return;
  const Window& w = d.win;
  const int64_t plane = i / (static_cast<int64_t>(out.h) * out.w);
  const int pos = static_cast<int>(i % (static_cast<int64_t>(out.h) * out.w));
  const int oy = out.r0 + pos / out.w, ox = out.c0 + pos % out.w;
  const float* bp = base + plane * d.h * d.w;
  const float* cp = change + plane * in.h * in.w;
  int i0, i1, j0, j1;
  window_taps(oy, w.sh, w.pad_top, w.dh, w.kh, d.h, i0, i1);
  window_taps(ox, w.sw, w.pad_left, w.dw, w.kw, d.w, j0, j1);
  float best_base = -INFINITY, best_patched = -INFINITY;
  bool first = true;
  for (int a = i0; a < i1; ++a) {
    const int iy = oy * w.sh - w.pad_top + a * w.dh;
    for (int b = j0; b < j1; ++b) {
      const int ix = ox * w.sw - w.pad_left + b * w.dw;
      float v = bp[iy * d.w + ix];
      if (clip_base) v = fminf(fmaxf(v, lo), hi) + (v != v ? v : 0.f);  // as clip_forward_kernel
      const float p = v + cp[(iy - in.r0) * in.w + ix - in.c0];
      if (first || v > best_base || (v != v && best_base == best_base)) best_base = v;
      if (first || p > best_patched || (p != p && best_patched == best_patched)) best_patched = p;
      first = false;
    }
  }
  y[i] = best_patched - best_base;
}
}  // namespace

void maxpool_difference_window(const PoolDesc& d, int n, PlaneWindow in, PlaneWindow out, const float* base,
                               bool clip_base, float lo, float hi, const float* change, float* y, cudaStream_t s) {
  const int64_t total = static_cast<int64_t>(n) * d.c * out.h * out.w;
  launch_1d("maxpool_difference_window", total, s, maxpool_difference_window_kernel, d, total, in, out, base, clip_base,
            lo, hi, change, y);
}

void maxpool_tangent_window(const PoolDesc& d, int n, const int32_t* argmax, PlaneWindow in, const float* tx,
                            PlaneWindow out, float* ty, cudaStream_t s) {
  const int64_t total = static_cast<int64_t>(n) * d.c * out.h * out.w;
  launch_1d("maxpool_tangent_window", total, s, maxpool_tangent_window_kernel, d, total, argmax, in, tx, out, ty);
}

void maxpool_tangent(const PoolDesc& d, int n, const int32_t* argmax, const float* tx, float* ty, cudaStream_t s) {
  const int64_t total = static_cast<int64_t>(n) * d.c * d.ho * d.wo;
  launch_1d("maxpool_tangent", total, s, maxpool_tangent_kernel, d, total, argmax, tx, ty);
}

void maxpool_forward(const PoolDesc& d, int n, const float* x, float* y, int32_t* argmax, cudaStream_t s) {
  const int64_t total = static_cast<int64_t>(n) * d.c * d.ho * d.wo;
  launch_1d("maxpool_forward", total, s, maxpool_forward_kernel, d, total, x, y, argmax);
}
void maxpool_backward(const PoolDesc& d, int n, const int32_t* argmax, const float* dy, float* dx, bool acc,
                      cudaStream_t s) {
  const int64_t in_total = static_cast<int64_t>(n) * d.c * d.h * d.w;
  if (!acc) check(cudaMemsetAsync(dx, 0, sizeof(float) * in_total, s), "maxpool_backward memset");
  const int64_t total = static_cast<int64_t>(n) * d.c * d.ho * d.wo;
  launch_1d("maxpool_backward", total, s, maxpool_backward_kernel, d, total, argmax, dy, dx);
}
void avgpool_forward(const PoolDesc& d, int n, const float* x, float* y, cudaStream_t s) {
  const int64_t total = static_cast<int64_t>(n) * d.c * d.ho * d.wo;
  launch_1d("avgpool_forward", total, s, avgpool_forward_kernel, d, total, x, y);
}
void avgpool_backward(const PoolDesc& d, int n, const float* dy, float* dx, bool acc, cudaStream_t s) {
  const int64_t total = static_cast<int64_t>(n) * d.c * d.h * d.w;
  launch_1d("avgpool_backward", total, s, avgpool_backward_kernel, d, total, dy, dx, acc);
}

}  // namespace ipna::kernels
