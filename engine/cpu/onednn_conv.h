// float32 convolutions on the CPU through oneDNN (Debian's libdnnl), forward
// and backward-data. Activations stay in our NCHW batches, or NHWC where the
// ConvDesc says so (oneDNN's direct kernels run NHWC, so a plan that keeps the
// values between convolutions NHWC spares reordering them); oneDNN picks the
// weights' layout, which is reordered once per weight buffer and direction and
// cached (like the cuDNN algorithms on the GPU); primitives are created once per
// shape, batch size and direction. Bias is fused into the forward primitive.
// CpuMath picks the algorithm: direct, Winograd where oneDNN has it (3x3,
// stride 1), or direct reading bf16 (rounded on the way in).
// float64 keeps our own im2col + BLAS reference (engine/cpu/conv2d.cpp).
// Threads may call at once (the CPU backend's patch lanes): each has its own
// stream, scratchpad and staging buffers; primitives and reordered weights are
// shared under a lock.
#pragma once
#include <cstdint>
#include <memory>

#include "engine/device_options.h"
#include "engine/op_desc.h"

namespace ipna::cpu {

class OnednnConvolutions {
 public:
  // Bf16: sources, weights and output gradients rounded to bf16 (oneDNN accumulates in float32
  // and writes float32, or bf16 where ConvDesc's out_bf16 asks), for CPUs with AVX-512 BF16 or AMX.
  explicit OnednnConvolutions(CpuMath math = CpuMath::Fp32);
  CpuMath math() const;
  ~OnednnConvolutions();
  OnednnConvolutions(const OnednnConvolutions&) = delete;
  OnednnConvolutions& operator=(const OnednnConvolutions&) = delete;

  void forward(const ConvDesc& d, const float* weight, const float* bias, const float* x, float* y, int n);
  // dx = (or +=) the input gradient of y's gradient dy.
  void backward_data(const ConvDesc& d, const float* weight, const float* dy, float* dx, int n, bool accumulate);
  // dst (+)= src between NCHW and NHWC (to_nhwc) or back: n samples of c channels of `plane` positions
  // (the plans' transposes around launches that run NCHW only); nhwc_bf16: the NHWC side is bf16.
  void transpose(int n, int c, int64_t plane, const float* src, float* dst, bool to_nhwc, bool nhwc_bf16,
                 bool accumulate);
  // Drops what was cached for a weight buffer that is being released.
  void forget(const void* weight);

 private:
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace ipna::cpu
