// CUDA backend (float32): convolutions through cuDNN (algorithm found once per
// shape and batch size, per direction, and cached), GEMMs through cuBLAS,
// everything else our kernels in kernels/. All work is queued on one stream;
// copies to the host synchronise. fp32 mode keeps cuDNN and cuBLAS on FMA
// kernels and refuses cuDNN's FFT and Winograd algorithms (their float32 error
// is 1e-5..1e-4); tf32 (the default, as PyTorch does for convolutions) allows
// TF32 tensor cores. IPNA_CUDA_DEBUG=1 in the environment synchronises and
// checks for errors after every op, so a failure names the op (and, through
// GraphPlan, the graph node) that caused it.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <map>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "engine/device_options.h"

namespace ipna {

class CudaBackend final : public Backend<float> {
 public:
  explicit CudaBackend(const DeviceOptions& opt);
  ~CudaBackend() override;
  std::string name() const override;
  void* allocate(size_t bytes) override;
  void release(void* p) noexcept override;
  void copy_to_device(void* dst, const void* src, size_t bytes) override;
  void copy_to_host(void* dst, const void* src, size_t bytes) override;
  void copy_on_device(void* dst, const void* src, size_t bytes) override;
  void zero(void* dst, size_t bytes) override;
  size_t memory_available() const override;
  size_t default_memory_budget(size_t available) const override;
  void synchronize() override;
  double algorithm_search_seconds() const override { return search_seconds_; }
  // One stream: a grid's patch passes are many small launches in a row, which a batch of boxes cuts.
  int boxes_per_patch_pass() const override { return 8; }

  void conv2d_forward(const ConvDesc& d, const float* weight, const float* bias, const float* x, float* y,
                      int n) override;
  void conv2d_backward_data(const ConvDesc& d, const float* weight, const float* dy, float* dx, int n,
                            bool accumulate) override;
  void linear_forward(int in, int out, const float* weight, const float* bias, const float* x, float* y,
                      int n) override;
  void linear_backward_data(int in, int out, const float* weight, const float* dy, float* dx, int n,
                            bool accumulate) override;
  void affine_forward(int c, int64_t plane, const float* scale, const float* shift, const float* x, float* y,
                      int n) override;
  void affine_backward(int c, int64_t plane, const float* scale, const float* dy, float* dx, int n,
                       bool accumulate) override;
  void clip_forward(int64_t count, float lo, float hi, const float* x, float* y, uint64_t* mask) override;
  void clip_backward(int64_t count, const uint64_t* mask, const float* dy, float* dx, bool accumulate) override;
  void maxpool_forward(const PoolDesc& d, const float* x, float* y, int32_t* argmax, int n) override;
  void maxpool_backward(const PoolDesc& d, const int32_t* argmax, const float* dy, float* dx, int n,
                        bool accumulate) override;
  void avgpool_forward(const PoolDesc& d, const float* x, float* y, int n) override;
  void avgpool_backward(const PoolDesc& d, const float* dy, float* dx, int n, bool accumulate) override;
  void add_forward(int64_t count, const float* a, const float* b, float* y) override;
  void subtract(int64_t count, const float* a, const float* b, float* y) override;
  void accumulate(int64_t count, const float* src, float* dst, bool accumulate) override;
  void copy_channels(int n, int64_t plane, int channels, const float* src, int src_c, int src_c0, float* dst,
                     int dst_c, int dst_c0, bool accumulate) override;
  void mul_forward(int n, int c, int64_t plane, bool b_per_channel, const float* a, const float* b, float* y,
                   bool accumulate) override;
  void mul_backward(int n, int c, int64_t plane, bool b_per_channel, const float* a, const float* b, const float* dy,
                    float* da, bool accumulate_a, float* db, bool accumulate_b) override;
  void activation_forward(ActivationFn f, int64_t count, float alpha, float beta, const float* x, float* y,
                          float* derivative) override;
  void secant_slopes(int64_t per_sample, int n, const float* z, const float* y, float* slope, bool smooth) override;
  void maxpool_secant_weights(const PoolDesc& d, const int32_t* argmax, const float* x, float* w, int n) override;
  void maxpool_backward_secant(const PoolDesc& d, const int32_t* argmax, const float* w, const float* dy, float* dx,
                               int n, bool accumulate) override;
  void maxpool_tangent_secant(const PoolDesc& d, const int32_t* argmax, const float* w, const float* tx, float* ty,
                              int n) override;
  void pair_mean(int64_t per_sample, int n, float* v) override;
  void channel_mean_forward(int n, int c, int64_t plane, const float* x, float* y) override;
  void channel_mean_backward(int n, int c, int64_t plane, const float* dy, float* dx, bool accumulate) override;
  void layernorm_forward(int n, int c, int64_t plane, float eps, const float* gamma, const float* beta, const float* x,
                         float* y, float* xhat, float* rstd) override;
  void layernorm_backward(int n, int c, int64_t plane, const float* gamma, const float* xhat, const float* rstd,
                          const float* dy, float* dx, bool accumulate) override;
  void channel_shuffle(int n, int c, int64_t plane, const int32_t* perm, const float* x, float* y, bool inverse,
                       bool accumulate) override;
  void maxpool_tangent(const PoolDesc& d, const int32_t* argmax, const float* tx, float* ty, int n) override;
  void maxpool_tangent_window(const PoolDesc& d, const int32_t* argmax, PlaneWindow in, const float* tx,
                              PlaneWindow out, float* ty, int n) override;
  void maxpool_difference_window(const PoolDesc& d, PlaneWindow in, PlaneWindow out, const float* base, bool clip_base,
                                 float lo, float hi, const float* change, float* y, int n) override;
  void clip_tangent_window(int n, int c, int h, int w, PlaneWindow win, const uint64_t* mask, const float* tx,
                           float* ty) override;
  void clip_difference_window(int n, int c, int h, int w, PlaneWindow win, float lo, float hi, const float* base,
                              const float* change, float* y) override;
  void layernorm_tangent(int n, int c, int64_t plane, const float* gamma, const float* xhat, const float* rstd,
                         const float* tx, float* ty) override;
  void copy_window(int n, int channels, const float* src, int src_h, int src_w, int src_r, int src_c, float* dst,
                   int dst_h, int dst_w, int dst_r, int dst_c, int h, int w) override;
  void make_points(const Shape& shape, const float* x0, const float* d, const PointBatch& pts, float* out) override;
  void scale_by_mask(int64_t per_sample, int n, const float* mask, float* x) override;
  void target_forward_backward(TargetKind kind, int classes, int y, const float* logits, float* value,
                               float* dlogits, int n) override;
  void sum_batch(int64_t per_sample, int n, const float* x, const std::vector<double>& w, float* acc) override;
  void accumulate_path_product(int64_t per_sample, int n, const float* g, const float* a, const float* b,
                               float* acc) override;

 private:
  // cuDNN state for one convolution shape at one batch size. Each direction
  // has its own convolution descriptor, as each takes the math type of the
  // algorithm Find chose for it.
  struct ConvPlan {
    cudnnTensorDescriptor_t x = nullptr, y = nullptr;
    cudnnFilterDescriptor_t w = nullptr;
    cudnnConvolutionDescriptor_t fwd = nullptr, bwd = nullptr;
    cudnnConvolutionFwdAlgo_t fwd_algo{};
    cudnnConvolutionBwdDataAlgo_t bwd_algo{};
    size_t fwd_ws = 0, bwd_ws = 0;
    bool fwd_found = false, bwd_found = false;
    bool explicit_pad = false;  // asymmetric pads: padded copy of x, conv without pads
    int hp = 0, wp = 0;
  };
  ConvPlan& conv_plan(const ConvDesc& d, int n);
  void find_forward(ConvPlan& p);
  void find_backward_data(ConvPlan& p);
  void* scratch(int slot, size_t bytes);  // grow-only device buffers
  void after(const char* op);             // IPNA_CUDA_DEBUG: synchronise and check
  cudaStream_t stream_ = nullptr;
  cudnnHandle_t cudnn_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  DeviceOptions opt_;
  std::string device_name_;
  std::map<std::string, ConvPlan> conv_plans_;
  std::vector<std::pair<void*, size_t>> scratch_;
  std::map<void*, size_t> sizes_;  // live allocations, for the memory cap
  size_t allocated_ = 0;
  bool debug_sync_ = false;
  double search_seconds_ = 0;
};

std::unique_ptr<Backend<float>> make_cuda_backend(const DeviceOptions& opt);

}  // namespace ipna
