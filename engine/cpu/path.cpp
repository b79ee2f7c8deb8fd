// Attribution kernels on the CPU: building path and patch points, the target
// (softmax probability or logit) with its gradient, and the accumulations of
// IG (sum of input gradients) and of g * (h_a - h_b) for conductance and IPNA.
#include <algorithm>
#include <cmath>

#include "engine/cpu/cpu_backend.h"
#include "engine/cpu/instantiate.h"

namespace ipna {

template <typename T>
void CpuBackend<T>::make_points(const Shape& shape, const T* x0, const T* d, const PointBatch& pts, T* out) {
  const int64_t per = shape.numel();
  const int64_t c = shape.channels(), h = shape.height(), w = shape.width();
  const int n = static_cast<int>(pts.k.size());
#pragma omp parallel for schedule(static)
  for (int b = 0; b < n; ++b) {
    T* o = out + b * per;
    const T k = static_cast<T>(pts.k[b]);
    for (int64_t j = 0; j < per; ++j) o[j] = x0[j] + k * d[j];
    int bi = pts.box_index.empty() ? -1 : pts.box_index[b];
    if (bi < 0) continue;
    const Box& box = pts.boxes[bi];
    const bool scaled = !pts.patch_scale.empty();
    const T s = scaled ? static_cast<T>(pts.patch_scale[b]) : T(1);
    for (int64_t ch = 0; ch < c; ++ch)
      for (int64_t r = box.r0; r < box.r1; ++r)
        for (int64_t col = box.c0; col < box.c1; ++col) {
          int64_t j = (ch * h + r) * w + col;
          o[j] += scaled ? s * d[j] : d[j];
        }
  }
}

template <typename T>
void CpuBackend<T>::target_forward_backward(TargetKind kind, int classes, int y, const T* logits, T* value,
                                            T* dlogits, int n) {
  for (int b = 0; b < n; ++b) {
    const T* z = logits + static_cast<int64_t>(b) * classes;
    T* g = dlogits + static_cast<int64_t>(b) * classes;
    if (kind == TargetKind::Logit) {
      std::fill(g, g + classes, T(0));
      g[y] = T(1);
      value[b] = z[y];
      continue;
    }
    T zmax = *std::max_element(z, z + classes);
    T sum = 0;
    for (int i = 0; i < classes; ++i) sum += std::exp(z[i] - zmax);
    const T py = std::exp(z[y] - zmax) / sum;
    for (int i = 0; i < classes; ++i) {
      T pi = std::exp(z[i] - zmax) / sum;
      g[i] = py * ((i == y ? T(1) : T(0)) - pi);
    }
    value[b] = py;
  }
}

// The sums over the batch run over blocks of positions, each sample's block added in turn into a local
// block of sums: contiguous, vectorised reads, where a sum per position read the n samples n planes apart.
// Every position's sum still adds its samples in order and then into acc, so the results are the same.
constexpr int64_t kSumBlock = 512;

template <typename T>
void CpuBackend<T>::sum_batch(int64_t per_sample, int n, const T* x, const std::vector<double>& w, T* acc) {
  const std::vector<T> wt(w.begin(), w.end());
#pragma omp parallel for schedule(static)
  for (int64_t j0 = 0; j0 < per_sample; j0 += kSumBlock) {
    const int64_t len = std::min(kSumBlock, per_sample - j0);
    T s[kSumBlock] = {};
    for (int b = 0; b < n; ++b) {
      const T* xb = x + b * per_sample + j0;
      if (wt.empty())
        for (int64_t k = 0; k < len; ++k) s[k] += xb[k];
      else
        for (int64_t k = 0; k < len; ++k) s[k] += wt[b] * xb[k];
    }
    for (int64_t k = 0; k < len; ++k) acc[j0 + k] += s[k];
  }
}

template <typename T>
void CpuBackend<T>::accumulate_path_product(int64_t per_sample, int n, const T* g, const T* a, const T* b, T* acc) {
#pragma omp parallel for schedule(static)
  for (int64_t j0 = 0; j0 < per_sample; j0 += kSumBlock) {
    const int64_t len = std::min(kSumBlock, per_sample - j0);
    T s[kSumBlock] = {};
    for (int i = 0; i < n; ++i) {
      const int64_t at = i * per_sample + j0;
      if (b)
        for (int64_t k = 0; k < len; ++k) s[k] += g[at + k] * (a[at + k] - b[at + k]);
      else
        for (int64_t k = 0; k < len; ++k) s[k] += g[at + k] * a[at + k];
    }
    for (int64_t k = 0; k < len; ++k) acc[j0 + k] += s[k];
  }
}

#define IPNA_PATH(T)                                                                                            \
  template void CpuBackend<T>::make_points(const Shape&, const T*, const T*, const PointBatch&, T*);            \
  template void CpuBackend<T>::target_forward_backward(TargetKind, int, int, const T*, T*, T*, int);            \
  template void CpuBackend<T>::sum_batch(int64_t, int, const T*, const std::vector<double>&, T*);                                           \
  template void CpuBackend<T>::accumulate_path_product(int64_t, int, const T*, const T*, const T*, T*);
IPNA_CPU_INSTANTIATE_BOTH(IPNA_PATH)

}  // namespace ipna
