// Conv2d on the CPU: forward and input-gradient backward. float32 goes to oneDNN
// (engine/cpu/onednn_conv.h), except convolutions with a handful of input
// channels per group (an RGB stem, LeNet), where oneDNN's 16-channel blocking
// wastes most of its lanes and im2col + GEMM is faster (3x for the input gradient
// of ResNet's stem); what follows is that path and the float64 reference.
// Dense and grouped convs go through im2col + GEMM per sample (a 1x1, stride 1,
// unpadded conv skips im2col: the sample already is the column matrix).
// Depthwise convs (groups == Cin) use direct loops: their GEMMs would have a
// single row and waste the BLAS.
// Layout: x [n, Cin, H, W], weight [Cout, Cin/groups, kh, kw], y [n, Cout, Ho, Wo];
// the column matrix is [Cin/groups * kh * kw, Ho * Wo].
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <type_traits>

#include "engine/cpu/cpu_backend.h"
#include "engine/cpu/instantiate.h"

namespace ipna {
namespace {

bool is_pointwise(const ConvDesc& d) {
  const Window& w = d.win;
  return w.kh == 1 && w.kw == 1 && w.sh == 1 && w.sw == 1 && w.pad_top == 0 && w.pad_left == 0 && w.pad_bottom == 0 &&
         w.pad_right == 0;
}
bool is_depthwise(const ConvDesc& d) { return d.groups == d.cin && d.groups > 1; }
bool use_onednn(const ConvDesc& d) { return d.cin / d.groups >= 8 || is_depthwise(d); }

// Output columns [lo, hi) whose input column ix = ix0 + ox*sw lies inside [0, w).
inline void valid_columns(int ix0, int sw, int w, int wo, int& lo, int& hi) {
  lo = ix0 >= 0 ? 0 : (-ix0 + sw - 1) / sw;
  hi = ix0 > w - 1 ? 0 : std::min(wo, (w - 1 - ix0) / sw + 1);
  lo = std::min(lo, wo);
  hi = std::max(hi, lo);
}

// col rows have stride ld (>= ho*wo), so several samples can share one
// column matrix side by side.
template <typename T>
void im2col(const T* x, int c, int h, int w, const Window& win, int ho, int wo, T* col, int64_t ld) {
  for (int ci = 0; ci < c; ++ci)
    for (int i = 0; i < win.kh; ++i)
      for (int j = 0; j < win.kw; ++j) {
        T* row = col + ((static_cast<int64_t>(ci) * win.kh + i) * win.kw + j) * ld;
        const T* plane = x + static_cast<int64_t>(ci) * h * w;
        const int ix0 = -win.pad_left + j * win.dw;
        int lo, hi;
        valid_columns(ix0, win.sw, w, wo, lo, hi);
        for (int oy = 0; oy < ho; ++oy) {
          int iy = oy * win.sh - win.pad_top + i * win.dh;
          T* out = row + oy * wo;
          if (iy < 0 || iy >= h) {
            std::memset(out, 0, sizeof(T) * wo);
            continue;
          }
          const T* src = plane + static_cast<int64_t>(iy) * w + ix0;
          for (int ox = 0; ox < lo; ++ox) out[ox] = T(0);
          if (win.sw == 1)
            std::memcpy(out + lo, src + lo, sizeof(T) * (hi - lo));
          else
            for (int ox = lo; ox < hi; ++ox) out[ox] = src[ox * win.sw];
          for (int ox = hi; ox < wo; ++ox) out[ox] = T(0);
        }
      }
}

// dx += scatter(col): the adjoint of im2col.
template <typename T>
void col2im_add(const T* col, int c, int h, int w, const Window& win, int ho, int wo, T* x, int64_t ld) {
  for (int ci = 0; ci < c; ++ci)
    for (int i = 0; i < win.kh; ++i)
      for (int j = 0; j < win.kw; ++j) {
        const T* row = col + ((static_cast<int64_t>(ci) * win.kh + i) * win.kw + j) * ld;
        T* plane = x + static_cast<int64_t>(ci) * h * w;
        const int ix0 = -win.pad_left + j * win.dw;
        int lo, hi;
        valid_columns(ix0, win.sw, w, wo, lo, hi);
        for (int oy = 0; oy < ho; ++oy) {
          int iy = oy * win.sh - win.pad_top + i * win.dh;
          if (iy < 0 || iy >= h) continue;
          T* dst = plane + static_cast<int64_t>(iy) * w + ix0;
          const T* in = row + oy * wo;
          if (win.sw == 1)
            for (int ox = lo; ox < hi; ++ox) dst[ox] += in[ox];
          else
            for (int ox = lo; ox < hi; ++ox) dst[ox * win.sw] += in[ox];
        }
      }
}

template <typename T>
void depthwise_forward(const ConvDesc& d, const T* weight, const T* bias, const T* x, T* y) {
  const Window& win = d.win;
  int mult = d.cout / d.cin;
  for (int co = 0; co < d.cout; ++co) {
    const T* plane = x + static_cast<int64_t>(co / mult) * d.h * d.w;
    const T* k = weight + static_cast<int64_t>(co) * win.kh * win.kw;
    T* out = y + static_cast<int64_t>(co) * d.ho * d.wo;
    T b = bias ? bias[co] : T(0);
    for (int oy = 0; oy < d.ho; ++oy)
      for (int ox = 0; ox < d.wo; ++ox) {
        T s = b;
        for (int i = 0; i < win.kh; ++i) {
          int iy = oy * win.sh - win.pad_top + i * win.dh;
          if (iy < 0 || iy >= d.h) continue;
          for (int j = 0; j < win.kw; ++j) {
            int ix = ox * win.sw - win.pad_left + j * win.dw;
            if (ix >= 0 && ix < d.w) s += k[i * win.kw + j] * plane[iy * d.w + ix];
          }
        }
        out[oy * d.wo + ox] = s;
      }
  }
}

template <typename T>
void depthwise_backward_data(const ConvDesc& d, const T* weight, const T* dy, T* dx) {
  const Window& win = d.win;
  int mult = d.cout / d.cin;
  for (int co = 0; co < d.cout; ++co) {
    T* plane = dx + static_cast<int64_t>(co / mult) * d.h * d.w;
    const T* k = weight + static_cast<int64_t>(co) * win.kh * win.kw;
    const T* g = dy + static_cast<int64_t>(co) * d.ho * d.wo;
    for (int oy = 0; oy < d.ho; ++oy)
      for (int ox = 0; ox < d.wo; ++ox) {
        T gv = g[oy * d.wo + ox];
        for (int i = 0; i < win.kh; ++i) {
          int iy = oy * win.sh - win.pad_top + i * win.dh;
          if (iy < 0 || iy >= d.h) continue;
          for (int j = 0; j < win.kw; ++j) {
            int ix = ox * win.sw - win.pad_left + j * win.dw;
            if (ix >= 0 && ix < d.w) plane[iy * d.w + ix] += k[i * win.kw + j] * gv;
          }
        }
      }
  }
}

// Sizes both directions derive from a ConvDesc.
struct ConvGeometry {
  int64_t in_size, plane_in, plane_out, out_size;  // per sample
  int cin_g, cout_g;                               // channels per group
  int k;                                           // rows of the column matrix
  bool pointwise;
  explicit ConvGeometry(const ConvDesc& d)
      : in_size(static_cast<int64_t>(d.cin) * d.h * d.w),
        plane_in(static_cast<int64_t>(d.h) * d.w),
        plane_out(static_cast<int64_t>(d.ho) * d.wo),
        out_size(d.cout * plane_out),
        cin_g(d.cin / d.groups),
        cout_g(d.cout / d.groups),
        k(cin_g * d.win.kh * d.win.kw),
        pointwise(is_pointwise(d)) {}
};

// Samples per GEMM: enough columns (samples x Ho*Wo) to keep the GEMM
// efficient on small late-layer planes (a 7x7 plane alone gives a 49-column
// GEMM), but at least one group per thread while the batch allows it.
constexpr int64_t kTargetColumns = 1024;
int samples_per_gemm(int n, int64_t plane_out) {
  // Inside a patch lane (engine/backend.h, run_concurrently) a nested region runs on one thread.
  const int threads = omp_in_parallel() ? 1 : std::max(1, omp_get_max_threads());
  const int fair = std::max(1, (n + threads - 1) / threads);
  return static_cast<int>(std::clamp<int64_t>(kTargetColumns / std::max<int64_t>(plane_out, 1), 1, fair));
}

// Runs body(first_sample, count) over groups of samples in parallel.
template <typename F>
void for_sample_groups(int n, int64_t plane_out, F&& body) {
  const int per = samples_per_gemm(n, plane_out);
  const int groups_of_samples = (n + per - 1) / per;
#pragma omp parallel for schedule(dynamic, 1)
  for (int gs = 0; gs < groups_of_samples; ++gs) body(gs * per, std::min(per, n - gs * per));
}

}  // namespace

// oneDNN's float32 convolutions run in NHWC (or blocked layouts) and reorder NCHW batches into it and
// back; ours are NCHW only.
template <typename T>
bool CpuBackend<T>::prefers_nhwc(const ConvDesc& d) const {
  if constexpr (std::is_same_v<T, float>) return use_onednn(d);
  return false;
}

template <typename T>
bool CpuBackend<T>::stores_bf16() const {
  // The CPU check matters only to a backend made without the factory, which refuses cpu/bf16 there.
  if constexpr (std::is_same_v<T, float>)
    return onednn_.math() == CpuMath::Bf16 && __builtin_cpu_supports("avx512bf16");
  return false;
}

template <typename T>
void CpuBackend<T>::conv2d_forward(const ConvDesc& d, const T* weight, const T* bias, const T* x, T* y, int n) {
  if constexpr (std::is_same_v<T, float>)
    if (use_onednn(d)) return onednn_.forward(d, weight, bias, x, y, n);
  refuse_nhwc(d);
  const ConvGeometry geo(d);
  if (is_depthwise(d)) {
#pragma omp parallel for schedule(static)
    for (int s = 0; s < n; ++s) depthwise_forward(d, weight, bias, x + s * geo.in_size, y + s * geo.out_size);
    return;
  }
  for_sample_groups(n, geo.plane_out, [&](int s0, int cnt) {
    const int64_t cols = cnt * geo.plane_out;
    // One sample: GEMM straight into y. Several: into scratch, then scattered.
    T* col =
        (geo.pointwise && cnt == 1) ? nullptr : cpu::scratch<T>(static_cast<size_t>(geo.k) * cols + geo.cout_g * cols);
    T* out = cnt == 1 ? nullptr : col + static_cast<int64_t>(geo.k) * cols;
    for (int g = 0; g < d.groups; ++g) {
      const T* b;
      if (geo.pointwise && cnt == 1) {
        b = x + s0 * geo.in_size + g * geo.cin_g * geo.plane_in;
      } else {
        for (int s = 0; s < cnt; ++s) {
          const T* xs = x + (s0 + s) * geo.in_size + g * geo.cin_g * geo.plane_in;
          if (geo.pointwise)
            for (int ci = 0; ci < geo.cin_g; ++ci)
              std::memcpy(col + ci * cols + s * geo.plane_out, xs + ci * geo.plane_in, sizeof(T) * geo.plane_out);
          else
            im2col(xs, geo.cin_g, d.h, d.w, d.win, d.ho, d.wo, col + s * geo.plane_out, cols);
        }
        b = col;
      }
      T* c = cnt == 1 ? y + s0 * geo.out_size + g * geo.cout_g * geo.plane_out : out;
      cpu::gemm<T>(false, false, geo.cout_g, static_cast<int>(cols), geo.k, T(1),
                   weight + static_cast<int64_t>(g) * geo.cout_g * geo.k, geo.k, b, static_cast<int>(cols), T(0), c,
                   static_cast<int>(cols));
      if (cnt > 1)
        for (int s = 0; s < cnt; ++s)
          for (int co = 0; co < geo.cout_g; ++co)
            std::memcpy(y + (s0 + s) * geo.out_size + (g * geo.cout_g + co) * geo.plane_out,
                        out + co * cols + s * geo.plane_out, sizeof(T) * geo.plane_out);
    }
    if (bias)
      for (int s = s0; s < s0 + cnt; ++s)
        for (int co = 0; co < d.cout; ++co) {
          T* p = y + s * geo.out_size + co * geo.plane_out;
          for (int64_t i = 0; i < geo.plane_out; ++i) p[i] += bias[co];
        }
  });
}

template <typename T>
void CpuBackend<T>::conv2d_backward_data(const ConvDesc& d, const T* weight, const T* dy, T* dx, int n,
                                         bool accumulate) {
  if constexpr (std::is_same_v<T, float>)
    if (use_onednn(d)) return onednn_.backward_data(d, weight, dy, dx, n, accumulate);
  refuse_nhwc(d);
  const ConvGeometry geo(d);
  if (is_depthwise(d)) {
#pragma omp parallel for schedule(static)
    for (int s = 0; s < n; ++s) {
      if (!accumulate) std::memset(dx + s * geo.in_size, 0, sizeof(T) * geo.in_size);
      depthwise_backward_data(d, weight, dy + s * geo.out_size, dx + s * geo.in_size);
    }
    return;
  }
  for_sample_groups(n, geo.plane_out, [&](int s0, int cnt) {
    const int64_t cols = cnt * geo.plane_out;
    if (!accumulate && !geo.pointwise) std::memset(dx + s0 * geo.in_size, 0, sizeof(T) * geo.in_size * cnt);
    // dcol [k x cols] = W^T dY; several samples first gather dY side by side.
    const bool direct = geo.pointwise && cnt == 1;
    T* dcol = direct ? nullptr : cpu::scratch<T>(static_cast<size_t>(geo.k) * cols + (cnt > 1 ? geo.cout_g * cols : 0));
    T* dyg = cnt > 1 ? dcol + static_cast<int64_t>(geo.k) * cols : nullptr;
    for (int g = 0; g < d.groups; ++g) {
      const T* wg = weight + static_cast<int64_t>(g) * geo.cout_g * geo.k;
      const T* a;
      if (cnt == 1) {
        a = dy + s0 * geo.out_size + g * geo.cout_g * geo.plane_out;
      } else {
        for (int s = 0; s < cnt; ++s)
          for (int co = 0; co < geo.cout_g; ++co)
            std::memcpy(dyg + co * cols + s * geo.plane_out,
                        dy + (s0 + s) * geo.out_size + (g * geo.cout_g + co) * geo.plane_out,
                        sizeof(T) * geo.plane_out);
        a = dyg;
      }
      if (direct) {
        cpu::gemm<T>(true, false, geo.k, static_cast<int>(cols), geo.cout_g, T(1), wg, geo.k, a, static_cast<int>(cols),
                     accumulate ? T(1) : T(0), dx + s0 * geo.in_size + g * geo.cin_g * geo.plane_in,
                     static_cast<int>(cols));
        continue;
      }
      cpu::gemm<T>(true, false, geo.k, static_cast<int>(cols), geo.cout_g, T(1), wg, geo.k, a, static_cast<int>(cols),
                   T(0), dcol, static_cast<int>(cols));
      for (int s = 0; s < cnt; ++s) {
        T* dxs = dx + (s0 + s) * geo.in_size + g * geo.cin_g * geo.plane_in;
        if (geo.pointwise) {
          for (int ci = 0; ci < geo.cin_g; ++ci) {
            T* dst = dxs + ci * geo.plane_in;
            const T* src = dcol + ci * cols + s * geo.plane_out;
            for (int64_t i = 0; i < geo.plane_out; ++i) dst[i] = accumulate ? dst[i] + src[i] : src[i];
          }
        } else {
          col2im_add(dcol + s * geo.plane_out, geo.cin_g, d.h, d.w, d.win, d.ho, d.wo, dxs, cols);
        }
      }
    }
  });
}

#define IPNA_CONV(T)                                                                                   \
  template bool CpuBackend<T>::prefers_nhwc(const ConvDesc&) const;                                    \
  template bool CpuBackend<T>::stores_bf16() const;                                                    \
  template void CpuBackend<T>::conv2d_forward(const ConvDesc&, const T*, const T*, const T*, T*, int); \
  template void CpuBackend<T>::conv2d_backward_data(const ConvDesc&, const T*, const T*, T*, int, bool);
IPNA_CPU_INSTANTIATE_BOTH(IPNA_CONV)

}  // namespace ipna
