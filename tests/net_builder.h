// Builds small graphs with random weights directly in the IR, for tests that
// need no ONNX file (gradient checks, SPEC.md properties).
#pragma once
#include <cmath>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "engine/graph.h"

namespace ipna::test {

class NetBuilder {
 public:
  NetBuilder(Shape input, unsigned seed = 1) : rng_(seed) {
    g_.source = "test-net";
    g_.input = g_.add_value("input", std::move(input));
    cur_ = g_.input;
  }
  int current() const { return cur_; }
  void set_current(int v) { cur_ = v; }
  const Shape& shape(int v) const { return g_.values[v].shape; }

  int conv(int cout, int k, int stride = 1, int pad = 0, int groups = 1, int dil = 1, bool bias = true) {
    Node n;
    n.kind = OpKind::Conv;
    n.groups = groups;
    n.win.kh = n.win.kw = k;
    n.win.sh = n.win.sw = stride;
    n.win.pad_top = n.win.pad_left = n.win.pad_bottom = n.win.pad_right = pad;
    n.win.dh = n.win.dw = dil;
    const int64_t cin = shape(cur_).channels();
    const int64_t fan_in = cin / groups * k * k;
    const auto w = random(cout * fan_in, std::sqrt(2.0 / fan_in));
    n.kernel.assign(w.begin(), w.end());
    if (bias) n.bias = random(cout, 0.1);
    return push(n, {cur_});
  }
  // A conv with its own pads on each side (as a Pad folded into it leaves).
  int conv_pads(int cout, int k, int top, int left, int bottom, int right) {
    conv(cout, k);
    Node& n = g_.nodes.back();
    n.win.pad_top = top;
    n.win.pad_left = left;
    n.win.pad_bottom = bottom;
    n.win.pad_right = right;
    std::vector<Shape> in{g_.values[n.inputs[0]].shape};
    g_.values[n.output].shape = infer_shape(n, in);
    return cur_;
  }
  int relu() { return clip(0, INFINITY); }
  int clip(double lo, double hi) {
    Node n;
    n.kind = OpKind::Clip;
    n.lo = lo;
    n.hi = hi;
    return push(n, {cur_});
  }
  int affine() {
    Node n;
    n.kind = OpKind::Affine;
    const int64_t c = shape(cur_).channels();
    n.weight = random(c, 0.3);
    for (auto& w : n.weight) w += 1.0;
    n.bias = random(c, 0.1);
    return push(n, {cur_});
  }
  int pool(OpKind kind, int k, int stride, int pad = 0, bool include_pad = false) {
    Node n;
    n.kind = kind;
    n.win.kh = n.win.kw = k;
    n.win.sh = n.win.sw = stride;
    n.win.pad_top = n.win.pad_left = n.win.pad_bottom = n.win.pad_right = pad;
    n.win.count_include_pad = include_pad;
    return push(n, {cur_});
  }
  int global_avg() {
    Node n;
    n.kind = OpKind::AvgPool;
    n.win.kh = static_cast<int>(shape(cur_).height());
    n.win.kw = static_cast<int>(shape(cur_).width());
    return push(n, {cur_});
  }
  int add(int a, int b) {
    Node n;
    n.kind = OpKind::Add;
    return push(n, {a, b});
  }
  int linear(int out) {
    Node n;
    n.kind = OpKind::Linear;
    const int64_t in = shape(cur_).numel();
    const auto w = random(out * in, std::sqrt(2.0 / in));
    n.kernel.assign(w.begin(), w.end());
    n.bias = random(out, 0.1);
    return push(n, {cur_});
  }
  int concat(const std::vector<int>& parts) {
    Node n;
    n.kind = OpKind::Concat;
    return push(n, parts);
  }
  int slice(int offset, int count) {
    Node n;
    n.kind = OpKind::Slice;
    n.channel_offset = offset;
    n.channel_count = count;
    return push(n, {cur_});
  }
  int mul(int a, int b) {
    Node n;
    n.kind = OpKind::Mul;
    return push(n, {a, b});
  }
  int activation(ActivationFn f, double alpha = 0, double beta = 0) {
    Node n;
    n.kind = OpKind::Activation;
    n.activation = f;
    n.alpha = alpha;
    n.beta = beta;
    return push(n, {cur_});
  }
  int channel_mean() {
    Node n;
    n.kind = OpKind::ChannelMean;
    return push(n, {cur_});
  }
  int layernorm(double eps = 1e-6) {
    Node n;
    n.kind = OpKind::LayerNorm;
    const int64_t c = shape(cur_).channels();
    n.weight = random(c, 0.3);
    for (auto& w : n.weight) w += 1.0;
    n.bias = random(c, 0.1);
    n.eps = eps;
    return push(n, {cur_});
  }
  // ShuffleNet's channel shuffle: view as [groups, C/groups], transpose, flatten.
  int shuffle(int groups) {
    Node n;
    n.kind = OpKind::ChannelShuffle;
    const int c = static_cast<int>(shape(cur_).channels()), per = c / groups;
    for (int k = 0; k < c; ++k) n.permutation.push_back((k % groups) * per + k / groups);
    return push(n, {cur_});
  }
  // Marks the current value as the output and returns the graph.
  Graph finish() {
    g_.output = cur_;
    g_.validate();
    return g_;
  }
  std::vector<double> random(int64_t count, double scale) {
    std::normal_distribution<double> nd(0.0, scale);
    std::vector<double> v(count);
    for (auto& x : v) x = nd(rng_);
    return v;
  }

 private:
  int push(Node n, std::vector<int> inputs) {
    n.inputs = std::move(inputs);
    n.name = std::string(op_name(n.kind)) + "_" + std::to_string(g_.nodes.size());
    std::vector<Shape> in;
    for (int v : n.inputs) in.push_back(g_.values[v].shape);
    n.output = g_.add_value("v" + std::to_string(g_.values.size()), infer_shape(n, in));
    g_.nodes.push_back(n);
    cur_ = n.output;
    return cur_;
  }
  Graph g_;
  int cur_;
  std::mt19937 rng_;
};

inline double rel_err(const std::vector<double>& a, const std::vector<double>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  if (a.size() != b.size()) return INFINITY;
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-300);
}

inline std::vector<double> random_vector(int64_t n, unsigned seed, double scale = 1.0) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> nd(0.0, scale);
  std::vector<double> v(n);
  for (auto& x : v) x = nd(rng);
  return v;
}

// Appends f2 = conv-relu-global pool-linear (5 classes) and splits the net at `split`.
inline SplitModel with_classifier_head(NetBuilder& b, int split) {
  b.set_current(split);
  b.conv(8, 3, 1, 1);
  b.relu();
  b.global_avg();
  b.linear(5);
  Graph g = b.finish();
  return split_graph(g, g.values[split].name);
}

// f1: conv-relu-maxpool-conv-relu (8x8x8 neurons), f2: conv-relu-gap-linear.
inline SplitModel small_conv_net(bool linear_f1 = false, unsigned seed = 11) {
  NetBuilder b(Shape{3, 16, 16}, seed);
  b.conv(6, 3, 1, 1);
  if (linear_f1) {
    b.affine();
    b.pool(OpKind::AvgPool, 2, 2);
    b.conv(8, 3, 1, 1);
  } else {
    b.relu();
    b.pool(OpKind::MaxPool, 2, 2);
    b.conv(8, 3, 1, 1);
    b.relu();
  }
  return with_classifier_head(b, b.current());
}

}  // namespace ipna::test
