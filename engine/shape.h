// Per-sample tensor shapes. Every activation in the engine is a batch of
// samples laid out sample-major (NCHW or NF); a Shape describes one sample,
// so buffers for a batch of n samples are n * numel() elements.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace ipna {

struct Shape {
  std::vector<int64_t> dims;  // without the batch dimension: {C,H,W} or {F}

  Shape() = default;
  Shape(std::initializer_list<int64_t> d) : dims(d) {}
  explicit Shape(std::vector<int64_t> d) : dims(std::move(d)) {}

  int64_t numel() const {
    int64_t n = 1;
    for (auto d : dims) n *= d;
    return n;
  }
  size_t rank() const { return dims.size(); }
  // Channel/row/col views; a rank-1 shape is F channels of 1x1.
  int64_t channels() const { return dims.empty() ? 1 : dims[0]; }
  int64_t height() const { return dims.size() >= 3 ? dims[1] : 1; }
  int64_t width() const { return dims.size() >= 3 ? dims[2] : 1; }
  int64_t plane() const { return channels() ? numel() / channels() : 0; }
  bool operator==(const Shape& o) const { return dims == o.dims; }
  bool operator!=(const Shape& o) const { return dims != o.dims; }
  std::string str() const {
    std::string s = "[";
    for (size_t i = 0; i < dims.size(); ++i) {
      if (i) s += ',';
      s += std::to_string(dims[i]);
    }
    return s + "]";
  }
};

}  // namespace ipna
