// CPU backend, float32 and float64. float32 convolutions and linear layers go to
// oneDNN, which threads them itself; everything else is ours. GEMMs go to OpenBLAS (single
// threaded per call); the batch of path points is spread over OpenMP threads,
// one sample per thread at a time, which keeps im2col parallel too. IPNA's patch
// passes run one box per thread instead (run_concurrently), their ops on one thread.
#pragma once
#include <vector>

#include "engine/backend.h"
#include "engine/cpu/onednn_conv.h"
#include "engine/cpu/onednn_linear.h"
#include "engine/device_options.h"

namespace ipna {

template <typename T>
class CpuBackend final : public Backend<T> {
 public:
  // math: how float32 convolutions compute (engine/device_options.h); float64 ignores it.
  explicit CpuBackend(CpuMath math = CpuMath::Fp32);
  std::string name() const override;
  void* allocate(size_t bytes) override;
  void release(void* p) noexcept override;
  void copy_to_device(void* dst, const void* src, size_t bytes) override;
  void copy_to_host(void* dst, const void* src, size_t bytes) override;
  void copy_on_device(void* dst, const void* src, size_t bytes) override;
  void zero(void* dst, size_t bytes) override;
  size_t memory_available() const override;
  // One lane per OpenMP thread: each lane's ops run single-threaded inside it (nested regions
  // are inactive, oneDNN runs inline there), so a lane's small cone-window launches pay no
  // barriers and the lanes keep every core busy.
  int concurrent_lanes() const override;
  void run_concurrently(int tasks, int lanes, const std::function<void(int task, int lane)>& run) override;

  bool prefers_nhwc(const ConvDesc& d) const override;
  // cpu/bf16: its convolutions read bf16 already, so the values between them may as well be stored so.
  bool stores_bf16() const override;
  void conv2d_forward(const ConvDesc& d, const T* weight, const T* bias, const T* x, T* y, int n) override;
  void conv2d_backward_data(const ConvDesc& d, const T* weight, const T* dy, T* dx, int n, bool accumulate) override;
  void linear_forward(int in, int out, const T* weight, const T* bias, const T* x, T* y, int n) override;
  void linear_backward_data(int in, int out, const T* weight, const T* dy, T* dx, int n, bool accumulate) override;
  void affine_forward(int c, int64_t plane, const T* scale, const T* shift, const T* x, T* y, int n) override;
  void affine_backward(int c, int64_t plane, const T* scale, const T* dy, T* dx, int n, bool accumulate) override;
  void clip_forward(int64_t count, T lo, T hi, const T* x, T* y, uint64_t* mask) override;
  void clip_backward(int64_t count, const uint64_t* mask, const T* dy, T* dx, bool accumulate) override;
  void maxpool_forward(const PoolDesc& d, const T* x, T* y, int32_t* argmax, int n) override;
  void maxpool_backward(const PoolDesc& d, const int32_t* argmax, const T* dy, T* dx, int n, bool accumulate) override;
  void avgpool_forward(const PoolDesc& d, const T* x, T* y, int n) override;
  void avgpool_backward(const PoolDesc& d, const T* dy, T* dx, int n, bool accumulate) override;
  void add_forward(int64_t count, const T* a, const T* b, T* y) override;
  void activation_forward_bf16(ActivationFn f, int64_t count, T alpha, T beta, const Bf16Bits* x, Bf16Bits* y,
                               T* derivative) override;
  void clip_forward_bf16(int64_t count, T lo, T hi, const Bf16Bits* x, Bf16Bits* y, uint64_t* mask) override;
  void add_forward_bf16(int64_t count, const Bf16Bits* a, const Bf16Bits* b, Bf16Bits* y) override;
  void subtract(int64_t count, const T* a, const T* b, T* y) override;
  void accumulate(int64_t count, const T* src, T* dst, bool accumulate) override;
  void copy_channels(int n, int64_t plane, int channels, const T* src, int src_c, int src_c0, T* dst, int dst_c,
                     int dst_c0, bool accumulate) override;
  void mul_forward(int n, int c, int64_t plane, bool b_per_channel, const T* a, const T* b, T* y,
                   bool accumulate) override;
  void mul_backward(int n, int c, int64_t plane, bool b_per_channel, const T* a, const T* b, const T* dy, T* da,
                    bool accumulate_a, T* db, bool accumulate_b) override;
  void activation_forward(ActivationFn f, int64_t count, T alpha, T beta, const T* x, T* y, T* derivative) override;
  void secant_slopes(int64_t per_sample, int n, const T* z, const T* y, T* slope, bool smooth) override;
  void maxpool_secant_weights(const PoolDesc& d, const int32_t* argmax, const T* x, T* w, int n) override;
  void maxpool_backward_secant(const PoolDesc& d, const int32_t* argmax, const T* w, const T* dy, T* dx, int n,
                               bool accumulate) override;
  void maxpool_tangent_secant(const PoolDesc& d, const int32_t* argmax, const T* w, const T* tx, T* ty, int n) override;
  void pair_mean(int64_t per_sample, int n, T* v) override;
  void channel_mean_forward(int n, int c, int64_t plane, const T* x, T* y) override;
  void channel_mean_backward(int n, int c, int64_t plane, const T* dy, T* dx, bool accumulate) override;
  void layernorm_forward(int n, int c, int64_t plane, T eps, const T* gamma, const T* beta, const T* x, T* y, T* xhat,
                         T* rstd) override;
  void layernorm_backward(int n, int c, int64_t plane, const T* gamma, const T* xhat, const T* rstd, const T* dy, T* dx,
                          bool accumulate) override;
  void channel_shuffle(int n, int c, int64_t plane, const int32_t* perm, const T* x, T* y, bool inverse,
                       bool accumulate) override;
  void transpose_layout(int n, int c, int64_t plane, const T* src, T* dst, bool to_nhwc, bool nhwc_bf16,
                        bool accumulate) override;
  void maxpool_tangent(const PoolDesc& d, const int32_t* argmax, const T* tx, T* ty, int n) override;
  void maxpool_tangent_window(const PoolDesc& d, const int32_t* argmax, PlaneWindow in, const T* tx, PlaneWindow out,
                              T* ty, int n) override;
  void maxpool_difference_window(const PoolDesc& d, PlaneWindow in, PlaneWindow out, const T* base, bool clip_base,
                                 T lo, T hi, const T* change, T* y, int n) override;
  void clip_tangent_window(int n, int c, int h, int w, PlaneWindow win, const uint64_t* mask, const T* tx,
                           T* ty) override;
  void clip_difference_window(int n, int c, int h, int w, PlaneWindow win, T lo, T hi, const T* base, const T* change,
                              T* y) override;
  void layernorm_tangent(int n, int c, int64_t plane, const T* gamma, const T* xhat, const T* rstd, const T* tx,
                         T* ty) override;
  void copy_window(int n, int channels, const T* src, int src_h, int src_w, int src_r, int src_c, T* dst, int dst_h,
                   int dst_w, int dst_r, int dst_c, int h, int w) override;

  void make_points(const Shape& shape, const T* x0, const T* d, const PointBatch& pts, T* out) override;
  void scale_by_mask(int64_t per_sample, int n, const T* mask, T* x) override;
  void target_forward_backward(TargetKind kind, int classes, int y, const T* logits, T* value, T* dlogits,
                               int n) override;
  void sum_batch(int64_t per_sample, int n, const T* x, const std::vector<double>& w, T* acc) override;
  void accumulate_path_product(int64_t per_sample, int n, const T* g, const T* a, const T* b, T* acc) override;

 private:
  // float32 convolutions (primitives and reordered weights, dropped with their buffers).
  cpu::OnednnConvolutions onednn_;
  // float32 linear layers (primitives and reordered weights, dropped with their buffers).
  cpu::OnednnLinear onednn_linear_;
};

namespace cpu {
// Row-major C[m x n] = alpha * op(A) * op(B) + beta * C through OpenBLAS.
template <typename T>
void gemm(bool trans_a, bool trans_b, int m, int n, int k, T alpha, const T* a, int lda, const T* b, int ldb, T beta,
          T* c, int ldc);
// Linear layers through OpenBLAS, one single-threaded GEMM per thread's block of rows: the
// float64 path (float32 runs on oneDNN; bench/bench_linear.cpp compares the two).
template <typename T>
void blas_linear_forward(int in, int out, const T* weight, const T* bias, const T* x, T* y, int n);
template <typename T>
void blas_linear_backward_data(int in, int out, const T* weight, const T* dy, T* dx, int n, bool accumulate);
// Per-thread scratch that only grows, so the step loop does not allocate.
// Slots keep buffers that must coexist apart (slot 1: data a call shares
// with its worker threads, which use slot 0 for their own).
template <typename T>
T* scratch(size_t count, int slot = 0);
}  // namespace cpu

}  // namespace ipna
