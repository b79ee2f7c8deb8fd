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
#include "engine/cpu/prefetch.h"
#include "engine/window_math.h"

namespace ipna {

namespace {
// The max-pool update: the first maximum wins (as PyTorch); a NaN wins and propagates.
template <typename T>
inline bool takes(T v, T best) {
  return v > best || (v != v && best == best);
}
}  // namespace

namespace {
// A max pool of d over single planes. Output columns whose whole window lies inside the input
// are swept row by row, tap by tap, with branch-free updates (a data-dependent branch per tap
// mispredicts on real activations); the border columns take the general per-output loop.
template <typename T>
class MaxPoolPlanes {
 public:
  explicit MaxPoolPlanes(const PoolDesc& d) : d_(d) {
    const Window& win = d.win;
    for (int ox = 0; ox < d.wo; ++ox) {
      int j0, j1;
      window_taps(ox, win.sw, win.pad_left, win.dw, win.kw, d.w, j0, j1);
      const bool full = j0 == 0 && j1 == win.kw;
      if (full && col_hi_ == col_lo_) col_lo_ = col_hi_ = ox;
      if (full && col_hi_ == ox) col_hi_ = ox + 1;
    }
  }
  // yp (and the argmax ap, unless null) from the input plane xp; best_row and at_row: d.wo each, scratch.
  void run(const T* xp, T* yp, int32_t* ap, T* best_row, int32_t* at_row) const {
    if (ap)
      run_planes<true>(xp, yp, ap, best_row, at_row);
    else
      run_planes<false>(xp, yp, ap, best_row, at_row);
  }

 private:
  // Without the argmax the sweep keeps no index per column (the loop then vectorises).
  template <bool kArgmax>
  void run_planes(const T* xp, T* yp, int32_t* ap, T* best_row, int32_t* at_row) const {
    const PoolDesc& d = d_;
    const Window& win = d.win;
    const int col_lo = col_lo_, col_hi = col_hi_;
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
        if constexpr (kArgmax) ap[oy * d.wo + ox] = at;
      };
      for (int ox = 0; ox < col_lo; ++ox) general(ox);
      for (int ox = col_hi; ox < d.wo; ++ox) general(ox);
      if (col_hi == col_lo || i0 == i1) {
        for (int ox = col_lo; ox < col_hi; ++ox) general(ox);
        continue;
      }
      T* best = best_row;
      int32_t* at = at_row;
      const int iy0 = oy * win.sh - win.pad_top + i0 * win.dh;
      const int x0 = col_lo * win.sw - win.pad_left;
      for (int ox = col_lo; ox < col_hi; ++ox) {
        const int idx = iy0 * d.w + x0 + (ox - col_lo) * win.sw;
        best[ox] = xp[idx];
        if constexpr (kArgmax) at[ox] = idx;
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
            if constexpr (kArgmax) at[ox] = t ? idx : at[ox];
          }
        }
      }
      std::copy(best + col_lo, best + col_hi, yp + oy * d.wo + col_lo);
      if constexpr (kArgmax) std::copy(at + col_lo, at + col_hi, ap + oy * d.wo + col_lo);
    }
  }

  PoolDesc d_;
  int col_lo_ = 0, col_hi_ = 0;
};
}  // namespace

template <typename T>
void CpuBackend<T>::maxpool_forward(const PoolDesc& d, const T* x, T* y, int32_t* argmax, int n) {
  const MaxPoolPlanes<T> pool(d);
  const int64_t planes = static_cast<int64_t>(n) * d.c;
#pragma omp parallel
  {
    std::vector<T> best_row(d.wo);
    std::vector<int32_t> at_row(d.wo);
#pragma omp for schedule(static)
    for (int64_t p = 0; p < planes; ++p)
      pool.run(x + p * d.h * d.w, y + p * d.ho * d.wo, argmax ? argmax + p * d.ho * d.wo : nullptr, best_row.data(),
               at_row.data());
  }
}

template <typename T>
void CpuBackend<T>::maxpool_difference_window(const PoolDesc& d, PlaneWindow in, PlaneWindow out, const T* base,
                                              bool clip_base, T lo, T hi, const T* change, T* y, int n) {
  // The pool of the window alone: the part `in` of the plane as its input, padded where the taps leave it
  // (they leave `in` only where they leave the plane).
  PoolDesc wd = d;
  wd.h = in.h;
  wd.w = in.w;
  wd.ho = out.h;
  wd.wo = out.w;
  wd.win.pad_top = in.r0 - (out.r0 * d.win.sh - d.win.pad_top);
  wd.win.pad_left = in.c0 - (out.c0 * d.win.sw - d.win.pad_left);
  const MaxPoolPlanes<T> pool(wd);
  const int64_t planes = static_cast<int64_t>(n) * d.c, in_count = static_cast<int64_t>(in.h) * in.w,
                out_count = static_cast<int64_t>(out.h) * out.w;
#pragma omp parallel
  {
    // One plane's window at the base point and at base + change, and the base's pool: staged in
    // cache, each input read from the store once although several outputs take it.
    std::vector<T> at_base(in_count), patched(in_count), base_pool(out_count), best_row(out.w);
    std::vector<int32_t> at_row(out.w);
#pragma omp for schedule(static)
    for (int64_t p = 0; p < planes; ++p) {
      const T* bp = base + p * d.h * d.w;
      const T* cp = change + p * in_count;
      for (int r = 0; r < in.h; ++r) {
        const T* b = bp + static_cast<int64_t>(in.r0 + r) * d.w + in.c0;
        if (p + cpu::kPlanesAhead < planes)
          cpu::prefetch_row(b + cpu::kPlanesAhead * static_cast<int64_t>(d.h) * d.w, in.w);
        T* at = at_base.data() + r * in.w;
        T* pt = patched.data() + r * in.w;
        for (int col = 0; col < in.w; ++col) {
          at[col] = clip_base ? std::min(std::max(b[col], lo), hi) : b[col];
          pt[col] = at[col] + cp[r * in.w + col];
        }
      }
      T* yp = y + p * out_count;
      pool.run(patched.data(), yp, nullptr, best_row.data(), at_row.data());
      pool.run(at_base.data(), base_pool.data(), nullptr, best_row.data(), at_row.data());
      for (int64_t k = 0; k < out_count; ++k) yp[k] -= base_pool[k];
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

#define IPNA_POOL(T)                                                                                                   \
  template void CpuBackend<T>::maxpool_forward(const PoolDesc&, const T*, T*, int32_t*, int);                          \
  template void CpuBackend<T>::maxpool_backward(const PoolDesc&, const int32_t*, const T*, T*, int, bool);             \
  template void CpuBackend<T>::avgpool_forward(const PoolDesc&, const T*, T*, int);                                    \
  template void CpuBackend<T>::avgpool_backward(const PoolDesc&, const T*, T*, int, bool);                             \
  template void CpuBackend<T>::maxpool_tangent(const PoolDesc&, const int32_t*, const T*, T*, int);                    \
  template void CpuBackend<T>::maxpool_difference_window(const PoolDesc&, PlaneWindow, PlaneWindow, const T*, bool, T, \
                                                         T, const T*, T*, int);                                        \
  template void CpuBackend<T>::maxpool_tangent_window(const PoolDesc&, const int32_t*, PlaneWindow, const T*,          \
                                                      PlaneWindow, T*, int);
IPNA_CPU_INSTANTIATE_BOTH(IPNA_POOL)

}  // namespace ipna
