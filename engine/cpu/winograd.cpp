// Winograd F(2x2, 3x3): U = G g G^T per (out, in) channel pair, V = B^T d B
// per 4x4 input tile (tiles overlap by 2), M_xi = U_xi V_xi summed over input
// channels (16 GEMMs, xi the 4x4 position), y = A^T M A per tile. Layout of
// the transformed data: [16][channels][columns], columns = samples x tiles.
#include "engine/cpu/winograd.h"

#include <omp.h>

#include <algorithm>
#include <cstring>

#include "engine/cpu/cpu_backend.h"

namespace ipna::cpu {

bool winograd_applies(const ConvDesc& d) {
  const Window& w = d.win;
  return w.kh == 3 && w.kw == 3 && w.sh == 1 && w.sw == 1 && w.dh == 1 && w.dw == 1 && d.groups == 1 &&
         w.pad_top <= 2 && w.pad_left <= 2 && w.pad_bottom <= 2 && w.pad_right <= 2 && d.cin >= 8 && d.cout >= 8 &&
         d.ho >= 2 && d.wo >= 2;
}

template <typename T>
std::vector<T> winograd_weights(const T* g, int cout, int cin, bool flip) {
  const int out = flip ? cin : cout, in = flip ? cout : cin;
  std::vector<T> Uv(static_cast<size_t>(16) * out * in);
  T* U = Uv.data();
#pragma omp parallel for schedule(static)
  for (int o = 0; o < out; ++o)
    for (int i = 0; i < in; ++i) {
      T k[3][3];
      for (int a = 0; a < 3; ++a)
        for (int b = 0; b < 3; ++b)
          k[a][b] = flip ? g[((static_cast<int64_t>(i) * cin + o) * 3 + 2 - a) * 3 + 2 - b]
                         : g[((static_cast<int64_t>(o) * cin + i) * 3 + a) * 3 + b];
      T t[4][3];  // G k
      for (int b = 0; b < 3; ++b) {
        t[0][b] = k[0][b];
        t[1][b] = T(0.5) * (k[0][b] + k[1][b] + k[2][b]);
        t[2][b] = T(0.5) * (k[0][b] - k[1][b] + k[2][b]);
        t[3][b] = k[2][b];
      }
      for (int a = 0; a < 4; ++a) {  // (G k) G^T
        const T u[4] = {t[a][0], T(0.5) * (t[a][0] + t[a][1] + t[a][2]), T(0.5) * (t[a][0] - t[a][1] + t[a][2]),
                        t[a][2]};
        for (int b = 0; b < 4; ++b) U[(static_cast<int64_t>(a * 4 + b) * out + o) * in + i] = u[b];
      }
    }
  return Uv;
}

template <typename T>
void winograd_conv(const ConvDesc& d, const T* U, const T* bias, const T* x, T* y, int n, bool accumulate) {
  const int th = (d.ho + 1) / 2, tw = (d.wo + 1) / 2, tiles = th * tw;
  const int64_t in_plane = static_cast<int64_t>(d.h) * d.w, out_plane = static_cast<int64_t>(d.ho) * d.wo;
  const int threads = std::max(1, omp_get_max_threads());
  const int per = std::clamp(1024 / std::max(tiles, 1), 1, std::max(1, (n + threads - 1) / threads));
  const int groups = (n + per - 1) / per;
#pragma omp parallel for schedule(dynamic, 1)
  for (int gs = 0; gs < groups; ++gs) {
    const int s0 = gs * per, cnt = std::min(per, n - s0);
    const int64_t cols = static_cast<int64_t>(cnt) * tiles;
    T* V = scratch<T>(static_cast<size_t>(16) * (d.cin + d.cout) * cols);
    T* M = V + 16 * d.cin * cols;
    // Input transform, one tile row at a time so the loops run along the tiles
    // (contiguous in the columns of V): each padded input row is split into
    // its even and odd columns, t = v B per row from those, then B^T t down
    // the four rows.
    T* rows = scratch<T>(static_cast<size_t>(2) * (tw + 1) + 16 * tw, 1);
    T* __restrict pe = rows;           // padded columns 0, 2, 4, ...
    T* __restrict po = rows + tw + 1;  // padded columns 1, 3, 5, ...
    T* hrow = rows + 2 * (tw + 1);     // [4 rows][4 j][tw]
    for (int s = 0; s < cnt; ++s)
      for (int ci = 0; ci < d.cin; ++ci) {
        const T* plane = x + ((static_cast<int64_t>(s0 + s) * d.cin) + ci) * in_plane;
        for (int ty = 0; ty < th; ++ty) {
          for (int i = 0; i < 4; ++i) {
            const int r = 2 * ty - d.win.pad_top + i;
            if (r < 0 || r >= d.h) {
              std::fill(rows, rows + 2 * (tw + 1), T(0));
            } else {
              const T* src = plane + static_cast<int64_t>(r) * d.w;
              for (int k = 0; k <= tw; ++k) {
                const int ce = 2 * k - d.win.pad_left, co = ce + 1;
                pe[k] = (ce >= 0 && ce < d.w) ? src[ce] : T(0);
                po[k] = (co >= 0 && co < d.w) ? src[co] : T(0);
              }
            }
            T* __restrict h0 = hrow + (i * 4) * tw;
#pragma omp simd
            for (int tx = 0; tx < tw; ++tx) h0[tx] = pe[tx] - pe[tx + 1];
#pragma omp simd
            for (int tx = 0; tx < tw; ++tx) h0[tw + tx] = po[tx] + pe[tx + 1];
#pragma omp simd
            for (int tx = 0; tx < tw; ++tx) h0[2 * tw + tx] = pe[tx + 1] - po[tx];
#pragma omp simd
            for (int tx = 0; tx < tw; ++tx) h0[3 * tw + tx] = po[tx] - po[tx + 1];
          }
          const int64_t col0 = static_cast<int64_t>(s) * tiles + static_cast<int64_t>(ty) * tw;
          for (int j = 0; j < 4; ++j) {
            const T* __restrict r0 = hrow + (0 * 4 + j) * tw;
            const T* __restrict r1 = hrow + (1 * 4 + j) * tw;
            const T* __restrict r2 = hrow + (2 * 4 + j) * tw;
            const T* __restrict r3 = hrow + (3 * 4 + j) * tw;
            T* __restrict v0 = V + ((0 * 4 + j) * static_cast<int64_t>(d.cin) + ci) * cols + col0;
            T* __restrict v1 = V + ((1 * 4 + j) * static_cast<int64_t>(d.cin) + ci) * cols + col0;
            T* __restrict v2 = V + ((2 * 4 + j) * static_cast<int64_t>(d.cin) + ci) * cols + col0;
            T* __restrict v3 = V + ((3 * 4 + j) * static_cast<int64_t>(d.cin) + ci) * cols + col0;
#pragma omp simd
            for (int tx = 0; tx < tw; ++tx) {
              v0[tx] = r0[tx] - r2[tx];
              v1[tx] = r1[tx] + r2[tx];
              v2[tx] = r2[tx] - r1[tx];
              v3[tx] = r1[tx] - r3[tx];
            }
          }
        }
      }
    for (int xi = 0; xi < 16; ++xi)
      gemm<T>(false, false, d.cout, static_cast<int>(cols), d.cin, T(1), U + static_cast<int64_t>(xi) * d.cout * d.cin,
              d.cin, V + static_cast<int64_t>(xi) * d.cin * cols, static_cast<int>(cols), T(0),
              M + static_cast<int64_t>(xi) * d.cout * cols, static_cast<int>(cols));
    // Output transform along tile rows: A^T m down the rows, then m A per row.
    T* arow = scratch<T>(static_cast<size_t>(8) * tw + 4 * tw, 1);  // [2 rows][4 j][tw], then 2 x [2 tw]
    T* orow = arow + 8 * tw;
    for (int s = 0; s < cnt; ++s)
      for (int co = 0; co < d.cout; ++co) {
        T* out = y + ((static_cast<int64_t>(s0 + s) * d.cout) + co) * out_plane;
        const T b = bias ? bias[co] : T(0);
        for (int ty = 0; ty < th; ++ty) {
          const int64_t col0 = static_cast<int64_t>(s) * tiles + static_cast<int64_t>(ty) * tw;
          for (int j = 0; j < 4; ++j) {
            const T* __restrict m0 = M + ((0 * 4 + j) * static_cast<int64_t>(d.cout) + co) * cols + col0;
            const T* __restrict m1 = M + ((1 * 4 + j) * static_cast<int64_t>(d.cout) + co) * cols + col0;
            const T* __restrict m2 = M + ((2 * 4 + j) * static_cast<int64_t>(d.cout) + co) * cols + col0;
            const T* __restrict m3 = M + ((3 * 4 + j) * static_cast<int64_t>(d.cout) + co) * cols + col0;
            T* __restrict a0 = arow + (0 * 4 + j) * tw;
            T* __restrict a1 = arow + (1 * 4 + j) * tw;
#pragma omp simd
            for (int tx = 0; tx < tw; ++tx) {
              a0[tx] = m0[tx] + m1[tx] + m2[tx];
              a1[tx] = m1[tx] - m2[tx] - m3[tx];
            }
          }
          for (int i = 0; i < 2; ++i) {
            const T* __restrict a = arow + (i * 4) * tw;
            T* __restrict o = orow + i * 2 * tw;
            for (int tx = 0; tx < tw; ++tx) {
              o[2 * tx] = a[tx] + a[tw + tx] + a[2 * tw + tx] + b;
              o[2 * tx + 1] = a[tw + tx] - a[2 * tw + tx] - a[3 * tw + tx] + b;
            }
            const int r = 2 * ty + i;
            if (r >= d.ho) continue;
            T* dst = out + static_cast<int64_t>(r) * d.wo;
            if (accumulate)
              for (int c = 0; c < d.wo; ++c) dst[c] += o[c];
            else
              std::memcpy(dst, o, sizeof(T) * d.wo);
          }
        }
      }
  }
}

ConvDesc winograd_backward_geometry(const ConvDesc& d) {
  // dx = conv(dy, rot180(W) with in/out swapped), pads 2 - p: a forward conv from ho x wo to h x w.
  ConvDesc b;
  b.cin = d.cout;
  b.h = d.ho;
  b.w = d.wo;
  b.cout = d.cin;
  b.ho = d.h;
  b.wo = d.w;
  b.groups = 1;
  b.win = d.win;
  b.win.pad_top = 2 - d.win.pad_top;
  b.win.pad_left = 2 - d.win.pad_left;
  b.win.pad_bottom = 2 - d.win.pad_bottom;
  b.win.pad_right = 2 - d.win.pad_right;
  return b;
}

template std::vector<float> winograd_weights<float>(const float*, int, int, bool);
template std::vector<double> winograd_weights<double>(const double*, int, int, bool);
template void winograd_conv<float>(const ConvDesc&, const float*, const float*, const float*, float*, int, bool);
template void winograd_conv<double>(const ConvDesc&, const double*, const double*, const double*, double*, int, bool);

}  // namespace ipna::cpu
