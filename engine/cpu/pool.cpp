// MaxPool and AvgPool (GlobalAveragePool is AvgPool over the whole plane) on
// the CPU. MaxPool keeps, per output, the flat index into its input plane of
// the maximum (the first one on ties, as PyTorch) so backward scatters without
// the input. Padded positions never win a max; AvgPool divides by the whole
// window when count_include_pad, else by the positions inside the input.
#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

#include "engine/cpu/cpu_backend.h"
#include "engine/cpu/instantiate.h"
#include "engine/window_math.h"

namespace ipna {

namespace {
// The max-pool update: the first maximum wins (as PyTorch); a NaN wins and propagates.
template <typename T>
inline bool takes(T v, T best) {
  return v > best || (v != v && best == best);
}
}  // namespace

template <typename T>
void CpuBackend<T>::maxpool_forward(const PoolDesc& d, const T* x, T* y, int32_t* argmax, int n) {
  const Window& win = d.win;
  const int64_t planes = static_cast<int64_t>(n) * d.c;
  // Output columns whose whole window lies inside the input: there the row is swept tap by
  // tap with branch-free updates (a data-dependent branch per tap mispredicts on real
  // activations); the border columns take the general per-output loop.
  int col_lo = 0, col_hi = 0;
  for (int ox = 0; ox < d.wo; ++ox) {
    int j0, j1;
    window_taps(ox, win.sw, win.pad_left, win.dw, win.kw, d.w, j0, j1);
    const bool full = j0 == 0 && j1 == win.kw;
    if (full && col_hi == col_lo) col_lo = col_hi = ox;
    if (full && col_hi == ox) col_hi = ox + 1;
  }
#pragma omp parallel
  {
    std::vector<T> best_row(d.wo);
    std::vector<int32_t> at_row(d.wo);
#pragma omp for schedule(static)
    for (int64_t p = 0; p < planes; ++p) {
      const T* xp = x + p * d.h * d.w;
      T* yp = y + p * d.ho * d.wo;
      int32_t* ap = argmax ? argmax + p * d.ho * d.wo : nullptr;
      for (int oy = 0; oy < d.ho; ++oy) {
        int i0, i1;
        window_taps(oy, win.sh, win.pad_top, win.dh, win.kh, d.h, i0, i1);
        const auto general = [&](int ox) {
          int j0, j1;
          window_taps(ox, win.sw, win.pad_left, win.dw, win.kw, d.w, j0, j1);
          T best = -std::numeric_limits<T>::infinity();
          int32_t at = -1;
          for (int i = i0; i < i1; ++i) {
            const int iy = oy * win.sh - win.pad_top + i * win.dh;
            for (int j = j0; j < j1; ++j) {
              const int ix = ox * win.sw - win.pad_left + j * win.dw;
              const T v = xp[iy * d.w + ix];
              if (at < 0 || takes(v, best)) {
                best = v;
                at = iy * d.w + ix;
              }
            }
          }
          yp[oy * d.wo + ox] = best;
          if (ap) ap[oy * d.wo + ox] = at;
        };
        for (int ox = 0; ox < col_lo; ++ox) general(ox);
        for (int ox = col_hi; ox < d.wo; ++ox) general(ox);
        if (col_hi == col_lo || i0 == i1) {
          for (int ox = col_lo; ox < col_hi; ++ox) general(ox);
          continue;
        }
        T* best = best_row.data();
        int32_t* at = at_row.data();
        const int iy0 = oy * win.sh - win.pad_top + i0 * win.dh;
        const int x0 = col_lo * win.sw - win.pad_left;
        for (int ox = col_lo; ox < col_hi; ++ox) {
          const int idx = iy0 * d.w + x0 + (ox - col_lo) * win.sw;
          best[ox] = xp[idx];
          at[ox] = idx;
        }
        for (int i = i0; i < i1; ++i) {
          const int iy = oy * win.sh - win.pad_top + i * win.dh;
          for (int j = (i == i0 ? 1 : 0); j < win.kw; ++j) {
            const int base = iy * d.w + x0 + j * win.dw;
            for (int ox = col_lo; ox < col_hi; ++ox) {
              const int idx = base + (ox - col_lo) * win.sw;
              const T v = xp[idx];
              const bool t = takes(v, best[ox]);
              best[ox] = t ? v : best[ox];
              at[ox] = t ? idx : at[ox];
            }
          }
        }
        std::copy(best + col_lo, best + col_hi, yp + oy * d.wo + col_lo);
        if (ap) std::copy(at + col_lo, at + col_hi, ap + oy * d.wo + col_lo);
      }
    }
  }
}

template <typename T>
void CpuBackend<T>::maxpool_backward(const PoolDesc& d, const int32_t* argmax, const T* dy, T* dx, int n,
                                     bool accumulate) {
  const int64_t planes = static_cast<int64_t>(n) * d.c;
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < planes; ++p) {
    T* dxp = dx + p * d.h * d.w;
    if (!accumulate) std::memset(dxp, 0, sizeof(T) * d.h * d.w);
    const T* g = dy + p * d.ho * d.wo;
    const int32_t* ap = argmax + p * d.ho * d.wo;
    for (int i = 0; i < d.ho * d.wo; ++i)
      if (ap[i] >= 0) dxp[ap[i]] += g[i];
  }
}

namespace {
// Number of window positions that fall inside the input.
inline int valid_count(const PoolDesc& d, int oy, int ox) {
  const Window& win = d.win;
  int cy = 0, cx = 0;
  for (int i = 0; i < win.kh; ++i) {
    int iy = oy * win.sh - win.pad_top + i * win.dh;
    cy += (iy >= 0 && iy < d.h);
  }
  for (int j = 0; j < win.kw; ++j) {
    int ix = ox * win.sw - win.pad_left + j * win.dw;
    cx += (ix >= 0 && ix < d.w);
  }
  return cy * cx;
}
}  // namespace

template <typename T>
void CpuBackend<T>::avgpool_forward(const PoolDesc& d, const T* x, T* y, int n) {
  const Window& win = d.win;
  const int64_t planes = static_cast<int64_t>(n) * d.c;
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < planes; ++p) {
    const T* xp = x + p * d.h * d.w;
    T* yp = y + p * d.ho * d.wo;
    for (int oy = 0; oy < d.ho; ++oy)
      for (int ox = 0; ox < d.wo; ++ox) {
        T s = 0;
        for (int i = 0; i < win.kh; ++i) {
          int iy = oy * win.sh - win.pad_top + i * win.dh;
          if (iy < 0 || iy >= d.h) continue;
          for (int j = 0; j < win.kw; ++j) {
            int ix = ox * win.sw - win.pad_left + j * win.dw;
            if (ix >= 0 && ix < d.w) s += xp[iy * d.w + ix];
          }
        }
        int div = win.count_include_pad ? win.kh * win.kw : valid_count(d, oy, ox);
        yp[oy * d.wo + ox] = s / T(div);
      }
  }
}

template <typename T>
void CpuBackend<T>::avgpool_backward(const PoolDesc& d, const T* dy, T* dx, int n, bool accumulate) {
  const Window& win = d.win;
  const int64_t planes = static_cast<int64_t>(n) * d.c;
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < planes; ++p) {
    T* dxp = dx + p * d.h * d.w;
    if (!accumulate) std::memset(dxp, 0, sizeof(T) * d.h * d.w);
    const T* g = dy + p * d.ho * d.wo;
    for (int oy = 0; oy < d.ho; ++oy)
      for (int ox = 0; ox < d.wo; ++ox) {
        int div = win.count_include_pad ? win.kh * win.kw : valid_count(d, oy, ox);
        T share = g[oy * d.wo + ox] / T(div);
        for (int i = 0; i < win.kh; ++i) {
          int iy = oy * win.sh - win.pad_top + i * win.dh;
          if (iy < 0 || iy >= d.h) continue;
          for (int j = 0; j < win.kw; ++j) {
            int ix = ox * win.sw - win.pad_left + j * win.dw;
            if (ix >= 0 && ix < d.w) dxp[iy * d.w + ix] += share;
          }
        }
      }
  }
}

template <typename T>
void CpuBackend<T>::maxpool_tangent(const PoolDesc& d, const int32_t* argmax, const T* tx, T* ty, int n) {
  const int64_t planes = static_cast<int64_t>(n) * d.c, out = static_cast<int64_t>(d.ho) * d.wo;
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < planes; ++p) {
    const T* t = tx + p * d.h * d.w;
    const int32_t* ap = argmax + p * out;
    T* y = ty + p * out;
    for (int64_t i = 0; i < out; ++i) y[i] = ap[i] >= 0 ? t[ap[i]] : T(0);
  }
}

template <typename T>
void CpuBackend<T>::maxpool_tangent_window(const PoolDesc& d, const int32_t* argmax, PlaneWindow in, const T* tx,
                                           PlaneWindow out, T* ty, int n) {
  const int64_t planes = static_cast<int64_t>(n) * d.c;
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < planes; ++p) {
    const int32_t* ap = argmax + p * d.ho * d.wo;
    const T* t = tx + p * in.h * in.w;
    T* y = ty + p * out.h * out.w;
    for (int r = 0; r < out.h; ++r)
      for (int c = 0; c < out.w; ++c) {
        const int32_t a = ap[(out.r0 + r) * d.wo + out.c0 + c];
        T v = T(0);
        if (a >= 0) {
          const int iy = a / d.w - in.r0, ix = a % d.w - in.c0;
          if (iy >= 0 && iy < in.h && ix >= 0 && ix < in.w) v = t[iy * in.w + ix];
        }
        y[r * out.w + c] = v;
      }
  }
}

#define IPNA_POOL(T)                                                                                      \
  template void CpuBackend<T>::maxpool_forward(const PoolDesc&, const T*, T*, int32_t*, int);             \
  template void CpuBackend<T>::maxpool_backward(const PoolDesc&, const int32_t*, const T*, T*, int, bool); \
  template void CpuBackend<T>::avgpool_forward(const PoolDesc&, const T*, T*, int);                       \
  template void CpuBackend<T>::avgpool_backward(const PoolDesc&, const T*, T*, int, bool);                \
  template void CpuBackend<T>::maxpool_tangent(const PoolDesc&, const int32_t*, const T*, T*, int);         \
  template void CpuBackend<T>::maxpool_tangent_window(const PoolDesc&, const int32_t*, PlaneWindow, const T*, \
                                                      PlaneWindow, T*, int);
IPNA_CPU_INSTANTIATE_BOTH(IPNA_POOL)

}  // namespace ipna
