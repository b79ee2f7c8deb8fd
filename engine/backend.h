// The one interface between the attribution code and a device. IG, conductance
// and IPNA (engine/attribution.cpp) and the graph executor (engine/plan.cpp)
// only call these methods, so they never know which device runs them.
//
// Memory conventions: every pointer is device memory obtained from allocate().
// Activations are sample-major batches (n samples of a per-sample shape, NCHW;
// a convolution's may be NHWC where ConvDesc says so, see prefers_nhwc, and in
// forward bf16, see stores_bf16; a T* then points at 16-bit values).
// `accumulate` on a backward op means dx += result, otherwise dx = result; it
// lets a value that feeds several nodes (residual branches) sum its gradients
// in place. Clip masks are bit-packed over the flat batch index (bit i of word
// i/64), MaxPool keeps the argmax as a flat index into the sample's input.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/error.h"
#include "engine/graph.h"
#include "engine/op_desc.h"

namespace ipna {

// The CPU's batch buffers: a chunk of a few steps already fills the cores, and every
// byte of a larger batch is first touched (page faults) and streamed through the caches.
// 256 MiB ran EfficientNet-Lite0 IG in half the time of 1 GiB in a fresh process and 10%
// faster in a warm one (README "Library"); sweeps use it too (kSweepBudgetCpu).
constexpr size_t kHostBatchBudget = size_t(256) << 20;

// What the attribution needs of an image patch: rows r0:r1, cols c0:c1
// (half-open), all channels. The original's `x1 y1 x2 y2` is {x1, y1, x2, y2}.
struct Box {
  int r0 = 0, c0 = 0, r1 = 0, c1 = 0;
  bool contains(int r, int c) const { return r >= r0 && r < r1 && c >= c0 && c < c1; }
  int64_t area() const { return static_cast<int64_t>(r1 - r0) * (c1 - c0); }
};

// A batch of path points: point b is x0 + k[b] * d, plus patch_scale[b] * d
// inside box[b] when box_index[b] >= 0 (the patch point x_{k-1} + d_k*1_S of
// SPEC.md, d_k = patch_scale * d). An empty patch_scale means 1 throughout (the
// uniform schedule, whose arithmetic stays the original's).
struct PointBatch {
  std::vector<double> k;
  std::vector<int> box_index;
  std::vector<Box> boxes;
  std::vector<double> patch_scale;
};

enum class TargetKind { Probability, Logit };

// Device memory and copies, independent of the scalar type.
class Device {
 public:
  virtual ~Device() = default;
  virtual std::string name() const = 0;
  virtual void* allocate(size_t bytes) = 0;
  virtual void release(void* p) noexcept = 0;
  virtual void copy_to_device(void* dst, const void* src, size_t bytes) = 0;
  virtual void copy_to_host(void* dst, const void* src, size_t bytes) = 0;
  virtual void copy_on_device(void* dst, const void* src, size_t bytes) = 0;
  virtual void zero(void* dst, size_t bytes) = 0;
  // Memory the engine may plan with (bytes), for picking the chunk of steps.
  virtual size_t memory_available() const = 0;
  // Budget for the batch buffers when the request gives none, out of
  // `available` bytes (free memory plus what the engine already holds): at most
  // kHostBatchBudget. A GPU wants large batches and overrides this.
  virtual size_t default_memory_budget(size_t available) const {
    return std::min<size_t>(kHostBatchBudget, available / 4);
  }
  virtual void synchronize() {}
  // Independent tasks (IPNA's patch passes, one per box): run(task, lane) for every task in
  // [0, tasks), at most `lanes` (<= concurrent_lanes()) at once, each lane on its own host
  // thread with its own buffers, calling this device's ops concurrently with the other lanes.
  // A device that queues its ops on one stream has one lane and runs the tasks in order. The
  // first task that throws stops the tasks not yet started; its exception is rethrown here.
  virtual int concurrent_lanes() const { return 1; }
  // How many boxes of the same cone geometry a patch pass batches by default (AttributionRequest::box_batch).
  // Batching k boxes saves launches, not arithmetic: a device whose small launches cost more than their work
  // wants it; on the CPU one box's patch passes cost the same per step at any batch size.
  virtual int boxes_per_patch_pass() const { return 1; }
  virtual void run_concurrently(int tasks, int lanes, const std::function<void(int task, int lane)>& run) {
    (void)lanes;
    for (int t = 0; t < tasks; ++t) run(t, 0);
  }
  // Seconds spent so far choosing algorithms (cuDNN's timed search), which a
  // run pays once per shape; timings report them apart.
  virtual double algorithm_search_seconds() const { return 0; }
};

// Owning device allocation.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(Device& dev, size_t bytes) : dev_(&dev), bytes_(bytes) { ptr_ = bytes ? dev.allocate(bytes) : nullptr; }
  ~DeviceBuffer() { reset(); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept { *this = std::move(o); }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      reset();
      dev_ = o.dev_;
      ptr_ = o.ptr_;
      bytes_ = o.bytes_;
      o.ptr_ = nullptr;
      o.bytes_ = 0;
    }
    return *this;
  }
  void reset() noexcept {
    if (ptr_ && dev_) dev_->release(ptr_);
    ptr_ = nullptr;
    bytes_ = 0;
  }
  template <typename U>
  U* as() const {
    return static_cast<U*>(ptr_);
  }
  size_t bytes() const { return bytes_; }

 private:
  Device* dev_ = nullptr;
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// For a backend's convolutions that run NCHW batches only (where its prefers_nhwc is false).
inline void refuse_nhwc(const ConvDesc& d) {
  if (d.in_nhwc || d.out_nhwc || d.in_bf16 || d.out_bf16)
    throw Error("internal: an NHWC or bf16 batch for a convolution that does not prefer NHWC");
}

// A bf16 value as stored: the upper half of the float32's bits.
using Bf16Bits = uint16_t;

template <typename T>
class Backend : public Device {
 public:
  // --- network ops (forward and input-gradient backward) ---
  // Whether this convolution runs faster on NHWC batches (ConvDesc's in_nhwc, out_nhwc) than on
  // NCHW ones: a plan then keeps the values such convolutions make and read NHWC (transposing them
  // where other launches read or write them, transpose_layout), which a device whose convolutions
  // want that layout would otherwise reorder into and out of at every convolution. A backend
  // accepts the NHWC flags only where it says true.
  virtual bool prefers_nhwc(const ConvDesc& d) const {
    (void)d;
    return false;
  }
  // Whether the forward values that a plan keeps NHWC are stored as bf16 (half the bytes moved; the
  // gradients stay float32): the convolutions then read and write them as ConvDesc's in_bf16 and
  // out_bf16 say, Clip, Add and the activations run on them through their _bf16 forwards, and
  // transpose_layout converts them. Only where the convolutions compute in bf16 anyway.
  virtual bool stores_bf16() const { return false; }
  virtual void conv2d_forward(const ConvDesc& d, const T* weight, const T* bias, const T* x, T* y, int n) = 0;
  virtual void conv2d_backward_data(const ConvDesc& d, const T* weight, const T* dy, T* dx, int n, bool accumulate) = 0;
  virtual void linear_forward(int in, int out, const T* weight, const T* bias, const T* x, T* y, int n) = 0;
  virtual void linear_backward_data(int in, int out, const T* weight, const T* dy, T* dx, int n, bool accumulate) = 0;
  virtual void affine_forward(int c, int64_t plane, const T* scale, const T* shift, const T* x, T* y, int n) = 0;
  virtual void affine_backward(int c, int64_t plane, const T* scale, const T* dy, T* dx, int n, bool accumulate) = 0;
  // mask may be null (forward without saving for backward).
  virtual void clip_forward(int64_t count, T lo, T hi, const T* x, T* y, uint64_t* mask) = 0;
  virtual void clip_backward(int64_t count, const uint64_t* mask, const T* dy, T* dx, bool accumulate) = 0;
  // argmax may be null.
  virtual void maxpool_forward(const PoolDesc& d, const T* x, T* y, int32_t* argmax, int n) = 0;
  virtual void maxpool_backward(const PoolDesc& d, const int32_t* argmax, const T* dy, T* dx, int n,
                                bool accumulate) = 0;
  virtual void avgpool_forward(const PoolDesc& d, const T* x, T* y, int n) = 0;
  virtual void avgpool_backward(const PoolDesc& d, const T* dy, T* dx, int n, bool accumulate) = 0;
  virtual void add_forward(int64_t count, const T* a, const T* b, T* y) = 0;
  // Clip, Add and the activations on bf16 values (stores_bf16), computed in float32 and rounded to
  // nearest even; an activation's derivative stays float32.
  virtual void activation_forward_bf16(ActivationFn f, int64_t count, T alpha, T beta, const Bf16Bits* x, Bf16Bits* y,
                                       T* derivative) {
    (void)f, (void)count, (void)alpha, (void)beta, (void)x, (void)y, (void)derivative;
    throw Error("internal: " + name() + " stores no bf16 values");
  }
  virtual void clip_forward_bf16(int64_t count, T lo, T hi, const Bf16Bits* x, Bf16Bits* y, uint64_t* mask) {
    (void)count, (void)lo, (void)hi, (void)x, (void)y, (void)mask;
    throw Error("internal: " + name() + " stores no bf16 values");
  }
  virtual void add_forward_bf16(int64_t count, const Bf16Bits* a, const Bf16Bits* b, Bf16Bits* y) {
    (void)count, (void)a, (void)b, (void)y;
    throw Error("internal: " + name() + " stores no bf16 values");
  }
  // y = a - b; y may alias a (a patch's change on a cone window).
  virtual void subtract(int64_t count, const T* a, const T* b, T* y) = 0;
  // dst = src, or dst += src.
  virtual void accumulate(int64_t count, const T* src, T* dst, bool accumulate) = 0;
  // Concat and Slice: per sample, `channels` channels of `plane` elements from
  // src (from its channel src_c0 of src_c) to dst (from its channel dst_c0 of dst_c).
  virtual void copy_channels(int n, int64_t plane, int channels, const T* src, int src_c, int src_c0, T* dst, int dst_c,
                             int dst_c0, bool accumulate) = 0;
  // y (+)= a * b, b of a's shape or one value per channel (broadcast over the plane).
  virtual void mul_forward(int n, int c, int64_t plane, bool b_per_channel, const T* a, const T* b, T* y,
                           bool accumulate) = 0;
  // da (+)= dy * b and db (+)= dy * a (summed over the plane for a per-channel b);
  // da or db may be null. Also the backward of Activation: dx = dy * derivative.
  virtual void mul_backward(int n, int c, int64_t plane, bool b_per_channel, const T* a, const T* b, const T* dy, T* da,
                            bool accumulate_a, T* db, bool accumulate_b) = 0;
  // y = f(x); derivative = f'(x) when not null (what backward keeps). alpha and
  // beta parameterise HardSigmoid. y may alias x.
  virtual void activation_forward(ActivationFn f, int64_t count, T alpha, T beta, const T* x, T* y, T* derivative) = 0;
  // The secant rule (Quadrature::Secant): a batch of consecutive path points, each sample's
  // backward using the slopes of its nonlinearities over the step from the sample before.
  // Elementwise y = f(z), per_sample elements a sample: slope of sample i >= 1 = (y_i - y_{i-1}) /
  // (z_i - z_{i-1}). smooth: slope holds f'(z) on entry, kept where the step is too short for the
  // quotient to beat it (|dz| <= sqrt(eps) max(1, |z|)); otherwise (Clip, piecewise linear) the
  // quotient wherever dz != 0, and 1 or 0 as y equals z elsewhere. Sample 0 keeps f'(z_0).
  virtual void secant_slopes(int64_t per_sample, int n, const T* z, const T* y, T* slope, bool smooth) = 0;
  // MaxPool: where sample i's argmax b differs from sample i-1's a, w = the fraction of the step
  // during which a stays the larger, were both inputs linear along it: the share of the output's
  // gradient routed to a (and 1 - w to b), so that w dz_a + (1 - w) dz_b is the step's change of the
  // output exactly. w = 1 where they agree and in sample 0.
  virtual void maxpool_secant_weights(const PoolDesc& d, const int32_t* argmax, const T* x, T* w, int n) = 0;
  virtual void maxpool_backward_secant(const PoolDesc& d, const int32_t* argmax, const T* w, const T* dy, T* dx, int n,
                                       bool accumulate) = 0;
  // Its forward mode (the tangent form of IPNA): ty = w tx[a] + (1 - w) tx[b].
  virtual void maxpool_tangent_secant(const PoolDesc& d, const int32_t* argmax, const T* w, const T* tx, T* ty,
                                      int n) = 0;
  // v_i = (v_{i-1} + v_i) / 2 for i >= 1, in place: the factors of a Mul, whose step changes by
  // exactly a_mean db + b_mean da.
  virtual void pair_mean(int64_t per_sample, int n, T* v) = 0;
  virtual void channel_mean_forward(int n, int c, int64_t plane, const T* x, T* y) = 0;
  virtual void channel_mean_backward(int n, int c, int64_t plane, const T* dy, T* dx, bool accumulate) = 0;
  // Normalises each position over the channels: y = (x - mean) * rstd * gamma + beta,
  // rstd = 1/sqrt(var + eps). Keeps x_hat = (x - mean) * rstd [n, c, plane] and
  // rstd [n, plane] for backward when they are not null.
  virtual void layernorm_forward(int n, int c, int64_t plane, T eps, const T* gamma, const T* beta, const T* x, T* y,
                                 T* xhat, T* rstd) = 0;
  virtual void layernorm_backward(int n, int c, int64_t plane, const T* gamma, const T* xhat, const T* rstd,
                                  const T* dy, T* dx, bool accumulate) = 0;
  // Forward: y channel k = x channel perm[k]. Backward (inverse): dx channel perm[k] (+)= dy channel k.
  virtual void channel_shuffle(int n, int c, int64_t plane, const int32_t* perm, const T* x, T* y, bool inverse,
                               bool accumulate) = 0;
  // dst (+)= src from NCHW to NHWC (to_nhwc) or back, n samples of c channels of `plane` positions; for
  // a backend whose prefers_nhwc says true somewhere (the others are never asked). nhwc_bf16: the NHWC
  // side holds bf16 (stores_bf16; never accumulated), the NCHW side float32 as always.
  virtual void transpose_layout(int n, int c, int64_t plane, const T* src, T* dst, bool to_nhwc, bool nhwc_bf16,
                                bool accumulate) {
    (void)n, (void)c, (void)plane, (void)src, (void)dst, (void)to_nhwc, (void)nhwc_bf16, (void)accumulate;
    throw Error("internal: " + name() + " has no NHWC layout");
  }

  // --- forward-mode (tangent) pieces; the other ops' tangents are their forward without bias, or
  // their backward (a mask, a scale, a derivative) applied forwards ---
  // ty[o] = tx[argmax[o]]: a max-pool routes tangents as its forward routed values.
  virtual void maxpool_tangent(const PoolDesc& d, const int32_t* argmax, const T* tx, T* ty, int n) = 0;
  // The same on windows: ty [n, c, out.h, out.w] holds window `out` of the output planes, tx
  // [n, c, in.h, in.w] window `in` of the input planes (zero outside it); argmax is whole-plane.
  virtual void maxpool_tangent_window(const PoolDesc& d, const int32_t* argmax, PlaneWindow in, const T* tx,
                                      PlaneWindow out, T* ty, int n) = 0;
  // ty = tx where the Clip mask (whole planes of h x w, as clip_forward wrote it) is set, else 0,
  // on window `win` of n*c planes; tx and ty are [n, c, win.h, win.w].
  virtual void clip_tangent_window(int n, int c, int h, int w, PlaneWindow win, const uint64_t* mask, const T* tx,
                                   T* ty) = 0;
  // The difference form's Clip on a cone window: y = clip(base + change) - clip(base), base whole
  // planes of h x w read on window `win` (the base point's values, in place in the value store),
  // change and y [n, c, win.h, win.w]; y may alias change. One pass instead of copying the base's
  // window out and clipping both points.
  virtual void clip_difference_window(int n, int c, int h, int w, PlaneWindow win, T lo, T hi, const T* base,
                                      const T* change, T* y) = 0;
  // The difference form's MaxPool on a cone window: y = pool(base + change) - pool(base) on window `out`
  // of the output planes, pooled as d pools whole planes (padding never wins). base: whole input planes
  // read on window `in` (the positions `out` reads), clipped to [lo, hi] first with clip_base (a ReLU's
  // output, which the value store makes from its input); change [n, c, in.h, in.w]; y [n, c, out.h, out.w].
  virtual void maxpool_difference_window(const PoolDesc& d, PlaneWindow in, PlaneWindow out, const T* base,
                                         bool clip_base, T lo, T hi, const T* change, T* y, int n) = 0;
  // ty = gamma * rstd * (tx - mean_c(tx) - x_hat * mean_c(tx * x_hat)), at the saved point.
  virtual void layernorm_tangent(int n, int c, int64_t plane, const T* gamma, const T* xhat, const T* rstd, const T* tx,
                                 T* ty) = 0;
  // Per sample and channel: the h x w window at (dst_r, dst_c) of dst's plane (dst_h x dst_w) gets the
  // window at (src_r, src_c) of src's plane (src_h x src_w); source positions outside the plane read as
  // zero (so a window may hang over the border as padding).
  virtual void copy_window(int n, int channels, const T* src, int src_h, int src_w, int src_r, int src_c, T* dst,
                           int dst_h, int dst_w, int dst_r, int dst_c, int h, int w) = 0;

  // --- attribution kernels ---
  // out[b] = x0 + k[b]*d (+ patch_scale[b]*d inside box) for each point of the batch.
  virtual void make_points(const Shape& shape, const T* x0, const T* d, const PointBatch& pts, T* out) = 0;
  // x[b, j] *= mask[j]
  virtual void scale_by_mask(int64_t per_sample, int n, const T* mask, T* x) = 0;
  // For each sample: value[b] = F (probability of class y or its logit),
  // dlogits[b, :] = dF/dlogits.
  virtual void target_forward_backward(TargetKind kind, int classes, int y, const T* logits, T* value, T* dlogits,
                                       int n) = 0;
  // acc[j] += sum_b w[b] * x[b, j], w from the host (empty: all 1, summed without multiplying)
  virtual void sum_batch(int64_t per_sample, int n, const T* x, const std::vector<double>& w, T* acc) = 0;
  // acc[j] += sum_b g[b, j] * (a[b, j] - b[b, j]); b may be null (zero)
  virtual void accumulate_path_product(int64_t per_sample, int n, const T* g, const T* a, const T* b, T* acc) = 0;
};

// "cpu" (float32 or float64), or "cuda[:N][/fp32|/tf32][/cap=MiB]" (float32)
// when built with CUDA (engine/backend_factory.cpp).
template <typename T>
std::unique_ptr<Backend<T>> make_backend(const std::string& device);

}  // namespace ipna
