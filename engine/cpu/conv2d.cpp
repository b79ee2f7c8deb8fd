// Conv2d on the CPU: forward and input-gradient backward.
// Dense and grouped convs go through im2col + GEMM per sample (a 1x1, stride 1,
// unpadded conv skips im2col: the sample already is the column matrix).
// Depthwise convs (groups == Cin) use direct loops: their GEMMs would have a
// single row and waste the BLAS.
// Layout: x [n, Cin, H, W], weight [Cout, Cin/groups, kh, kw], y [n, Cout, Ho, Wo];
// the column matrix is [Cin/groups * kh * kw, Ho * Wo].
#include <cstring>

#include "engine/cpu/cpu_backend.h"
#include "engine/cpu/instantiate.h"

namespace ipna {
namespace {

bool is_pointwise(const ConvDesc& d) {
  const Window& w = d.win;
  return w.kh == 1 && w.kw == 1 && w.sh == 1 && w.sw == 1 && w.pad_top == 0 && w.pad_left == 0 &&
         w.pad_bottom == 0 && w.pad_right == 0;
}
bool is_depthwise(const ConvDesc& d) { return d.groups == d.cin && d.groups > 1; }

template <typename T>
void im2col(const T* x, int c, int h, int w, const Window& win, int ho, int wo, T* col) {
  for (int ci = 0; ci < c; ++ci)
    for (int i = 0; i < win.kh; ++i)
      for (int j = 0; j < win.kw; ++j) {
        T* row = col + ((static_cast<int64_t>(ci) * win.kh + i) * win.kw + j) * ho * wo;
        const T* plane = x + static_cast<int64_t>(ci) * h * w;
        for (int oy = 0; oy < ho; ++oy) {
          int iy = oy * win.sh - win.pad_top + i * win.dh;
          T* out = row + oy * wo;
          if (iy < 0 || iy >= h) {
            std::memset(out, 0, sizeof(T) * wo);
            continue;
          }
          const T* src = plane + static_cast<int64_t>(iy) * w;
          int ix0 = -win.pad_left + j * win.dw;
          for (int ox = 0; ox < wo; ++ox) {
            int ix = ix0 + ox * win.sw;
            out[ox] = (ix >= 0 && ix < w) ? src[ix] : T(0);
          }
        }
      }
}

// dx += scatter(col): the adjoint of im2col.
template <typename T>
void col2im_add(const T* col, int c, int h, int w, const Window& win, int ho, int wo, T* x) {
  for (int ci = 0; ci < c; ++ci)
    for (int i = 0; i < win.kh; ++i)
      for (int j = 0; j < win.kw; ++j) {
        const T* row = col + ((static_cast<int64_t>(ci) * win.kh + i) * win.kw + j) * ho * wo;
        T* plane = x + static_cast<int64_t>(ci) * h * w;
        for (int oy = 0; oy < ho; ++oy) {
          int iy = oy * win.sh - win.pad_top + i * win.dh;
          if (iy < 0 || iy >= h) continue;
          T* dst = plane + static_cast<int64_t>(iy) * w;
          const T* in = row + oy * wo;
          int ix0 = -win.pad_left + j * win.dw;
          for (int ox = 0; ox < wo; ++ox) {
            int ix = ix0 + ox * win.sw;
            if (ix >= 0 && ix < w) dst[ix] += in[ox];
          }
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

}  // namespace

template <typename T>
void CpuBackend<T>::conv2d_forward(const ConvDesc& d, const T* weight, const T* bias, const T* x, T* y, int n) {
  const int64_t in_size = static_cast<int64_t>(d.cin) * d.h * d.w;
  const int64_t plane_out = static_cast<int64_t>(d.ho) * d.wo;
  const int64_t out_size = d.cout * plane_out;
  const int cin_g = d.cin / d.groups, cout_g = d.cout / d.groups;
  const int k = cin_g * d.win.kh * d.win.kw;
  const bool pointwise = is_pointwise(d), depthwise = is_depthwise(d);
#pragma omp parallel for schedule(dynamic, 1)
  for (int s = 0; s < n; ++s) {
    const T* xs = x + s * in_size;
    T* ys = y + s * out_size;
    if (depthwise) {
      depthwise_forward(d, weight, bias, xs, ys);
      continue;
    }
    T* col = pointwise ? nullptr : cpu::scratch<T>(static_cast<size_t>(k) * plane_out);
    for (int g = 0; g < d.groups; ++g) {
      const T* xg = xs + static_cast<int64_t>(g) * cin_g * d.h * d.w;
      const T* b = xg;
      if (!pointwise) {
        im2col(xg, cin_g, d.h, d.w, d.win, d.ho, d.wo, col);
        b = col;
      }
      cpu::gemm<T>(false, false, cout_g, static_cast<int>(plane_out), k, T(1),
                   weight + static_cast<int64_t>(g) * cout_g * k, k, b, static_cast<int>(plane_out), T(0),
                   ys + g * cout_g * plane_out, static_cast<int>(plane_out));
    }
    if (bias)
      for (int co = 0; co < d.cout; ++co) {
        T* p = ys + co * plane_out;
        for (int64_t i = 0; i < plane_out; ++i) p[i] += bias[co];
      }
  }
}

template <typename T>
void CpuBackend<T>::conv2d_backward_data(const ConvDesc& d, const T* weight, const T* dy, T* dx, int n,
                                         bool accumulate) {
  const int64_t in_size = static_cast<int64_t>(d.cin) * d.h * d.w;
  const int64_t plane_out = static_cast<int64_t>(d.ho) * d.wo;
  const int64_t out_size = d.cout * plane_out;
  const int cin_g = d.cin / d.groups, cout_g = d.cout / d.groups;
  const int k = cin_g * d.win.kh * d.win.kw;
  const bool pointwise = is_pointwise(d), depthwise = is_depthwise(d);
#pragma omp parallel for schedule(dynamic, 1)
  for (int s = 0; s < n; ++s) {
    T* dxs = dx + s * in_size;
    const T* dys = dy + s * out_size;
    if (!accumulate && !pointwise) std::memset(dxs, 0, sizeof(T) * in_size);
    if (depthwise) {
      depthwise_backward_data(d, weight, dys, dxs);
      continue;
    }
    T* dcol = pointwise ? nullptr : cpu::scratch<T>(static_cast<size_t>(k) * plane_out);
    for (int g = 0; g < d.groups; ++g) {
      const T* wg = weight + static_cast<int64_t>(g) * cout_g * k;
      const T* dyg = dys + g * cout_g * plane_out;
      T* dxg = dxs + static_cast<int64_t>(g) * cin_g * d.h * d.w;
      if (pointwise) {
        cpu::gemm<T>(true, false, k, static_cast<int>(plane_out), cout_g, T(1), wg, k, dyg,
                     static_cast<int>(plane_out), accumulate ? T(1) : T(0), dxg, static_cast<int>(plane_out));
      } else {
        cpu::gemm<T>(true, false, k, static_cast<int>(plane_out), cout_g, T(1), wg, k, dyg,
                     static_cast<int>(plane_out), T(0), dcol, static_cast<int>(plane_out));
        col2im_add(dcol, cin_g, d.h, d.w, d.win, d.ho, d.wo, dxg);
      }
    }
  }
}

#define IPNA_CONV(T)                                                                                             \
  template void CpuBackend<T>::conv2d_forward(const ConvDesc&, const T*, const T*, const T*, T*, int);         \
  template void CpuBackend<T>::conv2d_backward_data(const ConvDesc&, const T*, const T*, T*, int, bool);
IPNA_CPU_INSTANTIATE_BOTH(IPNA_CONV)

}  // namespace ipna
