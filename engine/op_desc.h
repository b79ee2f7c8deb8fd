// The plain geometry of the ops with windows, shared by the graph IR, the
// backends and the CUDA kernels (which include nothing else of the engine).
#pragma once
#include <cstdint>

namespace ipna {

// Sliding-window geometry shared by Conv and the pools.
struct Window {
  int kh = 1, kw = 1;
  int sh = 1, sw = 1;
  int pad_top = 0, pad_left = 0, pad_bottom = 0, pad_right = 0;
  int dh = 1, dw = 1;
  bool count_include_pad = false;  // AvgPool only
};

// Smooth (or piecewise-smooth) elementwise activations. Their backward keeps
// the derivative at the forward point, one value per element.
enum class ActivationFn {
  Sigmoid,
  Tanh,
  HardSigmoid,  // clip(alpha * x + beta, 0, 1)
  HardSwish,    // x * hardsigmoid(x), alpha = 1/6, beta = 1/2
  SiLU,         // x * sigmoid(x)
  GeluErf,      // x * Phi(x)
  GeluTanh,     // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
  Erf,
};

// One convolution (per sample: x [cin, h, w] -> y [cout, ho, wo]).
struct ConvDesc {
  int cin = 0, h = 0, w = 0;
  int cout = 0, ho = 0, wo = 0;
  int groups = 1;
  Window win;
  // The batches' layout, NCHW unless set: NHWC (channels last) for x (and dx) with in_nhwc, for y
  // (and dy) with out_nhwc. Set only where the backend's prefers_nhwc says so for this convolution.
  bool in_nhwc = false, out_nhwc = false;
  // Forward only: x (in_bf16) or y (out_bf16) held as bf16, an NHWC side of a backend whose
  // stores_bf16 says so. Gradients are float32 always.
  bool in_bf16 = false, out_bf16 = false;
};

// One pooling (per sample and channel: [h, w] -> [ho, wo], c channels).
struct PoolDesc {
  int c = 0, h = 0, w = 0;
  int ho = 0, wo = 0;
  Window win;
};

// A rectangle of a plane, rows r0..r0+h and columns c0..c0+w: where a cone's tangent
// is kept compactly, as [n, C, h, w], by the patch passes.
struct PlaneWindow {
  int r0 = 0, c0 = 0, h = 0, w = 0;
};

}  // namespace ipna
