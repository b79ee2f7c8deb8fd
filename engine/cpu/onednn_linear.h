// float32 linear layers on the CPU through oneDNN: the forward on its inner
// product (weights [out, in] reordered once per buffer into the layout it picks,
// primitives cached per shape and batch, as for the convolutions), the input
// gradient on its sgemm; each measured fastest of OpenBLAS, oneDNN's sgemm and its
// inner product on the classifier shapes of the benchmark models, 1.1x to 1.8x
// OpenBLAS (bench/bench_linear.cpp). float64 keeps the BLAS path (engine/cpu/linear.cpp).
// Threads may call at once (the CPU backend's patch lanes): each runs on its own
// stream and scratchpad, the caches are shared under a lock.
#pragma once
#include <memory>

namespace ipna::cpu {

class OnednnLinear {
 public:
  OnednnLinear();
  ~OnednnLinear();
  OnednnLinear(const OnednnLinear&) = delete;
  OnednnLinear& operator=(const OnednnLinear&) = delete;

  // y = x W^T (+ bias).
  void forward(int in, int out, const float* weight, const float* bias, const float* x, float* y, int n);
  // dx = (or +=) dy W.
  void backward_data(int in, int out, const float* weight, const float* dy, float* dx, int n, bool accumulate);
  // Drops what was cached for a weight buffer that is being released.
  void forget(const void* weight);

 private:
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace ipna::cpu
