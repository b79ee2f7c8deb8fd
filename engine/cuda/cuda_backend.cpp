#include "engine/cuda/cuda_backend.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <vector>

#include "engine/error.h"
#include "kernels/kernels.h"

namespace ipna {

namespace {
void ck(cudaError_t e, const char* what) { kernels::check(e, what); }
void ck(cudnnStatus_t e, const char* what) {
  if (e != CUDNN_STATUS_SUCCESS) throw Error(std::string("cuDNN error in ") + what + ": " + cudnnGetErrorString(e));
}
void ck(cublasStatus_t e, const char* what) {
  if (e != CUBLAS_STATUS_SUCCESS) throw Error(std::string("cuBLAS error in ") + what + ": status " + std::to_string(e));
}
// cuDNN's FFT and Winograd algorithms trade float32 accuracy (errors of 1e-5..1e-4) for speed.
bool exact_fp32(cudnnConvolutionFwdAlgo_t a) {
  return a != CUDNN_CONVOLUTION_FWD_ALGO_FFT && a != CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING &&
         a != CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD && a != CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED;
}
bool exact_fp32(cudnnConvolutionBwdDataAlgo_t a) {
  return a != CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT && a != CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT_TILING &&
         a != CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD && a != CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD_NONFUSED;
}
// The fastest of cuDNN's timed (algorithm, math type) results whose workspace
// fits `limit`; in strict fp32 only FMA-math results of exact algorithms.
template <typename Perf>
const Perf& pick_algorithm(const std::vector<Perf>& perf, int got, size_t limit, bool strict, const char* what) {
  for (int i = 0; i < got; ++i) {
    const Perf& p = perf[i];
    if (p.status != CUDNN_STATUS_SUCCESS || p.memory > limit) continue;
    if (strict && (p.mathType != CUDNN_FMA_MATH || !exact_fp32(p.algo))) continue;
    return p;
  }
  throw Error(std::string("cuDNN found no ") + what + " algorithm" + (strict ? " with exact fp32 (FMA) math" : "") +
              " whose workspace fits in " + std::to_string(limit >> 20) + " MiB");
}
}  // namespace

CudaBackend::CudaBackend(const DeviceOptions& opt) : opt_(opt) {
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0)
    throw Error("no CUDA device available (" + std::string(e != cudaSuccess ? cudaGetErrorString(e) : "0 devices") +
                "); use the cpu device");
  if (opt.index < 0 || opt.index >= count)
    throw Error("CUDA device " + std::to_string(opt.index) + " does not exist (" + std::to_string(count) + " present)");
  if (opt.math == GpuMath::Bf16)
    throw Error("bf16 storage is not implemented in the CUDA backend yet; use /tf32 (default) or /fp32");
  const char* debug = std::getenv("IPNA_CUDA_DEBUG");
  debug_sync_ = debug && *debug && std::string(debug) != "0";
  ck(cudaSetDevice(opt.index), "cudaSetDevice");
  cudaDeviceProp prop{};
  ck(cudaGetDeviceProperties(&prop, opt.index), "cudaGetDeviceProperties");
  device_name_ = std::string("cuda:") + std::to_string(opt.index) + " (" + prop.name + ", " +
                 (opt.math == GpuMath::Fp32 ? "fp32" : "tf32") + ")";
  ck(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
  ck(cudnnCreate(&cudnn_), "cudnnCreate");
  ck(cudnnSetStream(cudnn_, stream_), "cudnnSetStream");
  ck(cublasCreate(&cublas_), "cublasCreate");
  ck(cublasSetStream(cublas_, stream_), "cublasSetStream");
  ck(cublasSetMathMode(cublas_, opt.math == GpuMath::Fp32 ? CUBLAS_PEDANTIC_MATH : CUBLAS_TF32_TENSOR_OP_MATH),
     "cublasSetMathMode");
}

CudaBackend::~CudaBackend() {
  for (auto& [key, p] : conv_plans_) {
    cudnnDestroyTensorDescriptor(p.x);
    cudnnDestroyTensorDescriptor(p.y);
    cudnnDestroyFilterDescriptor(p.w);
    cudnnDestroyConvolutionDescriptor(p.fwd);
    cudnnDestroyConvolutionDescriptor(p.bwd);
  }
  for (auto& [ptr, bytes] : scratch_) release(ptr);
  if (cublas_) cublasDestroy(cublas_);
  if (cudnn_) cudnnDestroy(cudnn_);
  if (stream_) cudaStreamDestroy(stream_);
}

std::string CudaBackend::name() const { return device_name_; }

void* CudaBackend::allocate(size_t bytes) {
  if (opt_.memory_cap && allocated_ + bytes > opt_.memory_cap)
    throw Error("GPU memory cap of " + std::to_string(opt_.memory_cap >> 20) + " MiB exceeded allocating " +
                std::to_string(bytes >> 20) + " MiB (lower the memory budget or the chunk of steps)");
  void* p = nullptr;
  if (cudaMalloc(&p, std::max<size_t>(bytes, 1)) != cudaSuccess) {
    cudaGetLastError();
    throw Error("out of GPU memory allocating " + std::to_string(bytes >> 20) + " MiB on " + device_name_ +
                " (lower the memory budget or the chunk of steps)");
  }
  allocated_ += bytes;
  sizes_[p] = bytes;
  return p;
}

void CudaBackend::release(void* p) noexcept {
  if (!p) return;
  auto it = sizes_.find(p);
  if (it != sizes_.end()) {
    allocated_ -= it->second;
    sizes_.erase(it);
  }
  cudaFree(p);
}

void CudaBackend::copy_to_device(void* dst, const void* src, size_t bytes) {
  ck(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_), "copy to device");
  ck(cudaStreamSynchronize(stream_), "copy to device");  // src may be a temporary
}
void CudaBackend::copy_to_host(void* dst, const void* src, size_t bytes) {
  ck(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_), "copy to host");
  ck(cudaStreamSynchronize(stream_), "copy to host");
}
void CudaBackend::copy_on_device(void* dst, const void* src, size_t bytes) {
  ck(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_), "copy on device");
}
void CudaBackend::zero(void* dst, size_t bytes) { ck(cudaMemsetAsync(dst, 0, bytes, stream_), "memset"); }

size_t CudaBackend::memory_available() const {
  size_t free_b = 0, total_b = 0;
  ck(cudaMemGetInfo(&free_b, &total_b), "cudaMemGetInfo");
  if (opt_.memory_cap) free_b = std::min(free_b, opt_.memory_cap > allocated_ ? opt_.memory_cap - allocated_ : 0);
  return free_b;
}
size_t CudaBackend::default_memory_budget(size_t available) const { return available / 10 * 7; }
void CudaBackend::synchronize() { ck(cudaStreamSynchronize(stream_), "synchronize"); }

void CudaBackend::after(const char* op) {
  if (!debug_sync_) return;
  ck(cudaStreamSynchronize(stream_), op);
  ck(cudaGetLastError(), op);
}

void* CudaBackend::scratch(int slot, size_t bytes) {
  if (static_cast<int>(scratch_.size()) <= slot) scratch_.resize(slot + 1, {nullptr, 0});
  auto& [ptr, size] = scratch_[slot];
  if (size < bytes) {
    if (ptr) {
      ck(cudaStreamSynchronize(stream_), "scratch");  // queued work may still read it
      void* old = ptr;
      ptr = nullptr;  // cleared first: if the allocation below throws, nothing frees `old` twice
      size = 0;
      release(old);
    }
    ptr = allocate(bytes);
    size = bytes;
  }
  return ptr;
}

CudaBackend::ConvPlan& CudaBackend::conv_plan(const ConvDesc& d, int n) {
  const Window& w = d.win;
  std::ostringstream key;
  key << n << ' ' << d.cin << ' ' << d.h << ' ' << d.w << ' ' << d.cout << ' ' << d.groups << ' ' << w.kh << ' '
      << w.kw << ' ' << w.sh << ' ' << w.sw << ' ' << w.pad_top << ' ' << w.pad_left << ' ' << w.pad_bottom << ' '
      << w.pad_right << ' ' << w.dh << ' ' << w.dw;
  auto it = conv_plans_.find(key.str());
  if (it != conv_plans_.end()) return it->second;
  ConvPlan p;
  p.explicit_pad = w.pad_top != w.pad_bottom || w.pad_left != w.pad_right;
  p.hp = d.h + (p.explicit_pad ? w.pad_top + w.pad_bottom : 0);
  p.wp = d.w + (p.explicit_pad ? w.pad_left + w.pad_right : 0);
  ck(cudnnCreateTensorDescriptor(&p.x), "tensor descriptor");
  ck(cudnnCreateTensorDescriptor(&p.y), "tensor descriptor");
  ck(cudnnCreateFilterDescriptor(&p.w), "filter descriptor");
  ck(cudnnCreateConvolutionDescriptor(&p.fwd), "convolution descriptor");
  ck(cudnnCreateConvolutionDescriptor(&p.bwd), "convolution descriptor");
  ck(cudnnSetTensor4dDescriptor(p.x, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, n, d.cin, p.hp, p.wp), "x descriptor");
  ck(cudnnSetTensor4dDescriptor(p.y, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, n, d.cout, d.ho, d.wo), "y descriptor");
  ck(cudnnSetFilter4dDescriptor(p.w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, d.cout, d.cin / d.groups, w.kh, w.kw),
     "filter descriptor");
  for (cudnnConvolutionDescriptor_t c : {p.fwd, p.bwd}) {
    ck(cudnnSetConvolution2dDescriptor(c, p.explicit_pad ? 0 : w.pad_top, p.explicit_pad ? 0 : w.pad_left, w.sh, w.sw,
                                       w.dh, w.dw, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT),
       "convolution descriptor");
    ck(cudnnSetConvolutionGroupCount(c, d.groups), "group count");
    ck(cudnnSetConvolutionMathType(c, opt_.math == GpuMath::Fp32 ? CUDNN_FMA_MATH : CUDNN_TENSOR_OP_MATH), "math type");
  }
  return conv_plans_.emplace(key.str(), p).first->second;
}

// Timed once per shape and batch size; the queue is drained first so queued
// work does not distort cuDNN's timings. The winner's math type is set on the
// direction's descriptor.
void CudaBackend::find_forward(ConvPlan& p) {
  const auto t0 = std::chrono::steady_clock::now();
  ck(cudaStreamSynchronize(stream_), "find forward algorithm");
  int count = 0;
  ck(cudnnGetConvolutionForwardAlgorithmMaxCount(cudnn_, &count), "forward algorithm count");
  std::vector<cudnnConvolutionFwdAlgoPerf_t> perf(std::max(count, 1));
  int got = 0;
  ck(cudnnFindConvolutionForwardAlgorithm(cudnn_, p.x, p.w, p.fwd, p.y, count, &got, perf.data()),
     "find forward algorithm");
  const auto& best = pick_algorithm(perf, got, memory_available() / 4, opt_.math == GpuMath::Fp32, "convolution forward");
  p.fwd_algo = best.algo;
  p.fwd_ws = best.memory;
  ck(cudnnSetConvolutionMathType(p.fwd, best.mathType), "math type");
  p.fwd_found = true;
  search_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void CudaBackend::find_backward_data(ConvPlan& p) {
  const auto t0 = std::chrono::steady_clock::now();
  ck(cudaStreamSynchronize(stream_), "find backward-data algorithm");
  int count = 0;
  ck(cudnnGetConvolutionBackwardDataAlgorithmMaxCount(cudnn_, &count), "backward-data algorithm count");
  std::vector<cudnnConvolutionBwdDataAlgoPerf_t> perf(std::max(count, 1));
  int got = 0;
  ck(cudnnFindConvolutionBackwardDataAlgorithm(cudnn_, p.w, p.y, p.bwd, p.x, count, &got, perf.data()),
     "find backward-data algorithm");
  const auto& best =
      pick_algorithm(perf, got, memory_available() / 4, opt_.math == GpuMath::Fp32, "convolution backward-data");
  p.bwd_algo = best.algo;
  p.bwd_ws = best.memory;
  ck(cudnnSetConvolutionMathType(p.bwd, best.mathType), "math type");
  p.bwd_found = true;
  search_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Scratch slots: 0 conv workspace, 1 padded input / gradient, 2 point metadata.
void CudaBackend::conv2d_forward(const ConvDesc& d, const float* weight, const float* bias, const float* x, float* y,
                                 int n) {
  refuse_nhwc(d);
  ConvPlan& p = conv_plan(d, n);
  const float* xin = x;
  if (p.explicit_pad) {
    float* xp = static_cast<float*>(scratch(1, sizeof(float) * n * d.cin * p.hp * p.wp));
    kernels::pad2d(n, d.cin, d.h, d.w, d.win.pad_top, d.win.pad_left, p.hp, p.wp, x, xp, stream_);
    xin = xp;
  }
  if (!p.fwd_found) find_forward(p);
  void* ws = p.fwd_ws ? scratch(0, p.fwd_ws) : nullptr;
  const float one = 1.f, zero = 0.f;
  ck(cudnnConvolutionForward(cudnn_, &one, p.x, xin, p.w, weight, p.fwd, p.fwd_algo, ws, p.fwd_ws, &zero, p.y, y),
     "convolution forward");
  if (bias) kernels::channel_bias(d.cout, static_cast<int64_t>(d.ho) * d.wo, n, bias, y, stream_);
  after("conv2d_forward");
}

void CudaBackend::conv2d_backward_data(const ConvDesc& d, const float* weight, const float* dy, float* dx, int n,
                                       bool accumulate) {
  refuse_nhwc(d);
  ConvPlan& p = conv_plan(d, n);
  if (!p.bwd_found) find_backward_data(p);
  void* ws = p.bwd_ws ? scratch(0, p.bwd_ws) : nullptr;
  const float one = 1.f, zero = 0.f, beta = accumulate ? 1.f : 0.f;
  if (!p.explicit_pad) {
    ck(cudnnConvolutionBackwardData(cudnn_, &one, p.w, weight, p.y, dy, p.bwd, p.bwd_algo, ws, p.bwd_ws, &beta, p.x,
                                    dx),
       "convolution backward data");
    after("conv2d_backward_data");
    return;
  }
  float* gp = static_cast<float*>(scratch(1, sizeof(float) * n * d.cin * p.hp * p.wp));
  ck(cudnnConvolutionBackwardData(cudnn_, &one, p.w, weight, p.y, dy, p.bwd, p.bwd_algo, ws, p.bwd_ws, &zero, p.x, gp),
     "convolution backward data");
  kernels::crop_add(n, d.cin, d.h, d.w, d.win.pad_top, d.win.pad_left, p.hp, p.wp, gp, dx, accumulate, stream_);
  after("conv2d_backward_data");
}

// Row-major y[n x out] = x[n x in] W^T (+ b) is column-major y^T = W x^T with W
// read as its column-major transpose.
void CudaBackend::linear_forward(int in, int out, const float* weight, const float* bias, const float* x, float* y,
                                 int n) {
  float beta = 0.f;
  if (bias) {
    kernels::row_bias(out, n, bias, y, stream_);
    beta = 1.f;
  }
  const float one = 1.f;
  ck(cublasSgemm(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, out, n, in, &one, weight, in, x, in, &beta, y, out), "linear forward");
  after("linear_forward");
}

void CudaBackend::linear_backward_data(int in, int out, const float* weight, const float* dy, float* dx, int n,
                                       bool accumulate) {
  const float one = 1.f, beta = accumulate ? 1.f : 0.f;
  ck(cublasSgemm(cublas_, CUBLAS_OP_N, CUBLAS_OP_N, in, n, out, &one, weight, in, dy, out, &beta, dx, in),
     "linear backward data");
  after("linear_backward_data");
}

void CudaBackend::affine_forward(int c, int64_t plane, const float* scale, const float* shift, const float* x, float* y,
                                 int n) {
  kernels::affine_forward(c, plane, n, scale, shift, x, y, stream_);
  after("affine_forward");
}
void CudaBackend::affine_backward(int c, int64_t plane, const float* scale, const float* dy, float* dx, int n,
                                  bool accumulate) {
  kernels::affine_backward(c, plane, n, scale, dy, dx, accumulate, stream_);
  after("affine_backward");
}
void CudaBackend::clip_forward(int64_t count, float lo, float hi, const float* x, float* y, uint64_t* mask) {
  kernels::clip_forward(count, lo, hi, x, y, reinterpret_cast<uint32_t*>(mask), stream_);
  after("clip_forward");
}
void CudaBackend::clip_backward(int64_t count, const uint64_t* mask, const float* dy, float* dx, bool accumulate) {
  kernels::clip_backward(count, reinterpret_cast<const uint32_t*>(mask), dy, dx, accumulate, stream_);
  after("clip_backward");
}
void CudaBackend::maxpool_forward(const PoolDesc& d, const float* x, float* y, int32_t* argmax, int n) {
  kernels::maxpool_forward(d, n, x, y, argmax, stream_);
  after("maxpool_forward");
}
void CudaBackend::maxpool_backward(const PoolDesc& d, const int32_t* argmax, const float* dy, float* dx, int n,
                                   bool accumulate) {
  kernels::maxpool_backward(d, n, argmax, dy, dx, accumulate, stream_);
  after("maxpool_backward");
}
void CudaBackend::avgpool_forward(const PoolDesc& d, const float* x, float* y, int n) {
  kernels::avgpool_forward(d, n, x, y, stream_);
  after("avgpool_forward");
}
void CudaBackend::avgpool_backward(const PoolDesc& d, const float* dy, float* dx, int n, bool accumulate) {
  kernels::avgpool_backward(d, n, dy, dx, accumulate, stream_);
  after("avgpool_backward");
}
void CudaBackend::add_forward(int64_t count, const float* a, const float* b, float* y) {
  kernels::add(count, a, b, y, stream_);
  after("add_forward");
}
void CudaBackend::subtract(int64_t count, const float* a, const float* b, float* y) {
  kernels::subtract(count, a, b, y, stream_);
  after("subtract");
}
void CudaBackend::accumulate(int64_t count, const float* src, float* dst, bool accumulate) {
  kernels::accumulate(count, src, dst, accumulate, stream_);
  after("accumulate");
}

void CudaBackend::copy_channels(int n, int64_t plane, int channels, const float* src, int src_c, int src_c0,
                                float* dst, int dst_c, int dst_c0, bool accumulate) {
  kernels::copy_channels(n, plane, channels, src, src_c, src_c0, dst, dst_c, dst_c0, accumulate, stream_);
  after("copy_channels");
}
void CudaBackend::mul_forward(int n, int c, int64_t plane, bool b_per_channel, const float* a, const float* b,
                              float* y, bool accumulate) {
  kernels::mul_forward(n, c, plane, b_per_channel, a, b, y, accumulate, stream_);
  after("mul_forward");
}
void CudaBackend::mul_backward(int n, int c, int64_t plane, bool b_per_channel, const float* a, const float* b,
                               const float* dy, float* da, bool accumulate_a, float* db, bool accumulate_b) {
  kernels::mul_backward(n, c, plane, b_per_channel, a, b, dy, da, accumulate_a, db, accumulate_b, stream_);
  after("mul_backward");
}
void CudaBackend::activation_forward(ActivationFn f, int64_t count, float alpha, float beta, const float* x, float* y,
                                     float* derivative) {
  kernels::activation_forward(f, count, alpha, beta, x, y, derivative, stream_);
  after("activation_forward");
}
void CudaBackend::secant_slopes(int64_t per_sample, int n, const float* z, const float* y, float* slope, bool smooth) {
  kernels::secant_slopes(per_sample, n, z, y, slope, smooth, stream_);
  after("secant_slopes");
}
void CudaBackend::maxpool_secant_weights(const PoolDesc& d, const int32_t* argmax, const float* x, float* w, int n) {
  kernels::maxpool_secant_weights(d, n, argmax, x, w, stream_);
  after("maxpool_secant_weights");
}
void CudaBackend::maxpool_backward_secant(const PoolDesc& d, const int32_t* argmax, const float* w, const float* dy,
                                          float* dx, int n, bool accumulate) {
  kernels::maxpool_backward_secant(d, n, argmax, w, dy, dx, accumulate, stream_);
  after("maxpool_backward_secant");
}
void CudaBackend::maxpool_tangent_secant(const PoolDesc& d, const int32_t* argmax, const float* w, const float* tx,
                                         float* ty, int n) {
  kernels::maxpool_tangent_secant(d, n, argmax, w, tx, ty, stream_);
  after("maxpool_tangent_secant");
}
void CudaBackend::pair_mean(int64_t per_sample, int n, float* v) {
  const size_t bytes = sizeof(float) * per_sample * n;
  auto* means = static_cast<float*>(scratch(1, bytes));  // each sample reads the one before: not in place
  kernels::pair_mean(per_sample, n, v, means, stream_);
  copy_on_device(v, means, bytes);
  after("pair_mean");
}
void CudaBackend::channel_mean_forward(int n, int c, int64_t plane, const float* x, float* y) {
  kernels::channel_mean_forward(n, c, plane, x, y, stream_);
  after("channel_mean_forward");
}
void CudaBackend::channel_mean_backward(int n, int c, int64_t plane, const float* dy, float* dx, bool accumulate) {
  kernels::channel_mean_backward(n, c, plane, dy, dx, accumulate, stream_);
  after("channel_mean_backward");
}
void CudaBackend::layernorm_forward(int n, int c, int64_t plane, float eps, const float* gamma, const float* beta,
                                    const float* x, float* y, float* xhat, float* rstd) {
  kernels::layernorm_forward(n, c, plane, eps, gamma, beta, x, y, xhat, rstd, stream_);
  after("layernorm_forward");
}
void CudaBackend::layernorm_backward(int n, int c, int64_t plane, const float* gamma, const float* xhat,
                                     const float* rstd, const float* dy, float* dx, bool accumulate) {
  kernels::layernorm_backward(n, c, plane, gamma, xhat, rstd, dy, dx, accumulate, stream_);
  after("layernorm_backward");
}
void CudaBackend::channel_shuffle(int n, int c, int64_t plane, const int32_t* perm, const float* x, float* y,
                                  bool inverse, bool accumulate) {
  kernels::channel_shuffle(n, c, plane, perm, x, y, inverse, accumulate, stream_);
  after("channel_shuffle");
}

void CudaBackend::maxpool_tangent(const PoolDesc& d, const int32_t* argmax, const float* tx, float* ty, int n) {
  kernels::maxpool_tangent(d, n, argmax, tx, ty, stream_);
  after("maxpool_tangent");
}
void CudaBackend::maxpool_tangent_window(const PoolDesc& d, const int32_t* argmax, PlaneWindow in, const float* tx,
                                         PlaneWindow out, float* ty, int n) {
  kernels::maxpool_tangent_window(d, n, argmax, in, tx, out, ty, stream_);
  after("maxpool_tangent_window");
}
void CudaBackend::maxpool_difference_window(const PoolDesc& d, PlaneWindow in, PlaneWindow out, const float* base,
                                            bool clip_base, float lo, float hi, const float* change, float* y, int n) {
  kernels::maxpool_difference_window(d, n, in, out, base, clip_base, lo, hi, change, y, stream_);
  after("maxpool_difference_window");
}
void CudaBackend::clip_tangent_window(int n, int c, int h, int w, PlaneWindow win, const uint64_t* mask,
                                      const float* tx, float* ty) {
  kernels::clip_tangent_window(n, c, h, w, win, reinterpret_cast<const uint32_t*>(mask), tx, ty, stream_);
  after("clip_tangent_window");
}
void CudaBackend::clip_difference_window(int n, int c, int h, int w, PlaneWindow win, float lo, float hi,
                                         const float* base, const float* change, float* y) {
  kernels::clip_difference_window(n, c, h, w, win, lo, hi, base, change, y, stream_);
  after("clip_difference_window");
}
void CudaBackend::layernorm_tangent(int n, int c, int64_t plane, const float* gamma, const float* xhat,
                                    const float* rstd, const float* tx, float* ty) {
  kernels::layernorm_tangent(n, c, plane, gamma, xhat, rstd, tx, ty, stream_);
  after("layernorm_tangent");
}
void CudaBackend::copy_window(int n, int channels, const float* src, int src_h, int src_w, int src_r, int src_c,
                              float* dst, int dst_h, int dst_w, int dst_r, int dst_c, int h, int w) {
  kernels::copy_window(n, channels, src, src_h, src_w, src_r, src_c, dst, dst_h, dst_w, dst_r, dst_c, h, w, stream_);
  after("copy_window");
}

void CudaBackend::make_points(const Shape& shape, const float* x0, const float* d, const PointBatch& pts, float* out) {
  const int n = static_cast<int>(pts.k.size());
  // k, patch scales, box indices and boxes travel in one small upload.
  std::vector<float> k(pts.k.begin(), pts.k.end()), scale(pts.patch_scale.begin(), pts.patch_scale.end());
  std::vector<int> idx = pts.box_index;
  std::vector<kernels::DeviceBox> boxes;
  for (const Box& b : pts.boxes) boxes.push_back({b.r0, b.c0, b.r1, b.c1});
  auto aligned = [](size_t bytes) { return (bytes + 255) / 256 * 256; };
  const size_t kb = aligned(sizeof(float) * n), sb = aligned(sizeof(float) * scale.size()),
               ib = aligned(sizeof(int) * idx.size()), bb = sizeof(kernels::DeviceBox) * boxes.size();
  std::vector<char> host(kb + sb + ib + bb);
  std::memcpy(host.data(), k.data(), sizeof(float) * n);
  if (!scale.empty()) std::memcpy(host.data() + kb, scale.data(), sizeof(float) * scale.size());
  if (!idx.empty()) std::memcpy(host.data() + kb + sb, idx.data(), sizeof(int) * idx.size());
  if (!boxes.empty()) std::memcpy(host.data() + kb + sb + ib, boxes.data(), bb);
  char* dev = static_cast<char*>(scratch(2, host.size()));
  copy_to_device(dev, host.data(), host.size());
  kernels::make_points(static_cast<int>(shape.channels()), static_cast<int>(shape.height()),
                       static_cast<int>(shape.width()), n, x0, d, reinterpret_cast<float*>(dev),
                       scale.empty() ? nullptr : reinterpret_cast<float*>(dev + kb),
                       idx.empty() ? nullptr : reinterpret_cast<int*>(dev + kb + sb),
                       boxes.empty() ? nullptr : reinterpret_cast<kernels::DeviceBox*>(dev + kb + sb + ib), out,
                       stream_);
  after("make_points");
}

void CudaBackend::scale_by_mask(int64_t per_sample, int n, const float* mask, float* x) {
  kernels::scale_by_mask(per_sample, n, mask, x, stream_);
  after("scale_by_mask");
}
void CudaBackend::target_forward_backward(TargetKind kind, int classes, int y, const float* logits, float* value,
                                          float* dlogits, int n) {
  kernels::target_forward_backward(kind == TargetKind::Logit, classes, y, n, logits, value, dlogits, stream_);
  after("target_forward_backward");
}
void CudaBackend::sum_batch(int64_t per_sample, int n, const float* x, const std::vector<double>& w, float* acc) {
  float* wd = nullptr;
  if (!w.empty()) {
    const std::vector<float> wf(w.begin(), w.end());
    wd = static_cast<float*>(scratch(3, sizeof(float) * wf.size()));
    copy_to_device(wd, wf.data(), sizeof(float) * wf.size());
  }
  kernels::sum_batch(per_sample, n, x, wd, acc, stream_);
  after("sum_batch");
}
void CudaBackend::accumulate_path_product(int64_t per_sample, int n, const float* g, const float* a, const float* b,
                                          float* acc) {
  kernels::accumulate_path_product(per_sample, n, g, a, b, acc, stream_);
  after("accumulate_path_product");
}

std::unique_ptr<Backend<float>> make_cuda_backend(const DeviceOptions& opt) {
  return std::make_unique<CudaBackend>(opt);
}

}  // namespace ipna
