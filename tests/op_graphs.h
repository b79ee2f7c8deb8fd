// The single-op (and one whole-network) graphs every backend is checked on:
// float64 finite differences on the CPU (test_ops_gradcheck.cpp) and the CUDA
// backend against the CPU one (test_cuda.cpp).
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "tests/net_builder.h"

namespace ipna::test {

struct OpGraph {
  std::string name;
  Graph graph;
};

inline std::vector<OpGraph> op_graphs() {
  std::vector<OpGraph> out;
  auto add = [&](const std::string& name, NetBuilder& b) { out.push_back({name, b.finish()}); };
  {
    NetBuilder b(Shape{3, 7, 6});
    b.conv(4, 3, 1, 1);
    add("ConvDensePadded", b);
  }
  {
    NetBuilder b(Shape{3, 7, 6});
    b.conv_pads(4, 3, 0, 1, 2, 1);
    add("ConvAsymmetricPads", b);
  }
  {
    NetBuilder b(Shape{2, 9, 8});
    b.conv(3, 3, 2, 2, 1, 2);
    add("ConvStridedDilated", b);
  }
  {
    NetBuilder b(Shape{4, 6, 6});
    b.conv(6, 3, 1, 1, 2);
    add("ConvGrouped", b);
  }
  {
    NetBuilder b(Shape{3, 7, 7});
    b.conv(6, 3, 2, 1, 3);
    add("ConvDepthwiseWithMultiplier", b);
  }
  // 3x3 stride-1 convs with >= 8 channels take the CPU's Winograd path, both ways.
  {
    NetBuilder b(Shape{8, 6, 6});
    b.conv(8, 3, 1, 1);
    add("ConvWinogradPadded", b);
  }
  {
    NetBuilder b(Shape{9, 7, 5});
    b.conv(10, 3, 1, 0);
    add("ConvWinogradOddSizeUnpadded", b);
  }
  {
    NetBuilder b(Shape{8, 5, 4});
    b.conv(8, 3, 1, 2);
    add("ConvWinogradPad2", b);
  }
  {
    NetBuilder b(Shape{5, 4, 4});
    b.conv(3, 1);
    add("ConvPointwise", b);
  }
  {
    NetBuilder b(Shape{5, 5, 5});
    b.conv(3, 1, 2, 0, 1, 1, false);
    add("ConvPointwiseStride2NoBias", b);
  }
  {
    NetBuilder b(Shape{2, 3, 3});
    b.linear(5);
    add("Linear", b);
  }
  {
    NetBuilder b(Shape{3, 4, 5});
    b.affine();
    add("Affine", b);
  }
  {
    NetBuilder b(Shape{3, 5, 5});
    b.relu();
    add("Relu", b);
  }
  {
    NetBuilder b(Shape{2, 4, 4});
    b.conv(3, 1);
    b.affine();
    b.clip(0, 0.7);  // a low cap so both clipped sides occur with unit-normal inputs
    add("Relu6", b);
  }
  {
    NetBuilder b(Shape{2, 7, 7});
    b.pool(OpKind::MaxPool, 3, 2, 1);
    add("MaxPoolOverlappingPadded", b);
  }
  {
    NetBuilder b(Shape{2, 8, 8});
    b.conv(3, 3, 1, 1);
    b.pool(OpKind::MaxPool, 3, 2, 1);  // on a cone, the pool reads the conv's change and its stored base
    add("ConvThenMaxPool", b);
  }
  {  // on a cone, the second convolution reads the first's compact window, the rest of its input as padding
    NetBuilder b(Shape{2, 12, 12});
    b.conv(3, 3, 1, 1);
    b.conv(3, 3, 2, 2, 1, 2);
    add("ConvThenStridedDilatedConv", b);
  }
  {
    NetBuilder b(Shape{2, 12, 12});
    b.conv(3, 3, 1, 1);
    b.conv_pads(3, 3, 0, 1, 2, 1);
    add("ConvThenAsymmetricPadsConv", b);
  }
  {
    NetBuilder b(Shape{2, 7, 6});
    b.pool(OpKind::AvgPool, 3, 2, 1, false);
    add("AvgPoolExcludePad", b);
  }
  {
    NetBuilder b(Shape{2, 6, 6});
    b.pool(OpKind::AvgPool, 3, 2, 1, true);
    add("AvgPoolIncludePad", b);
  }
  {
    NetBuilder b(Shape{3, 4, 5});
    b.global_avg();
    add("GlobalAveragePool", b);
  }
  {
    NetBuilder b(Shape{3, 5, 5});
    const int x = b.current();
    b.conv(3, 3, 1, 1);
    const int r = b.relu();
    b.add(x, r);  // the input feeds the conv and the add: its gradient must sum both
    add("ResidualAddSumsBothPaths", b);
  }
  {
    NetBuilder b(Shape{2, 3, 3});
    const int c = b.conv(2, 1);
    b.add(c, c);
    add("AddOfSameValue", b);
  }
  {
    NetBuilder b(Shape{3, 5, 4});
    const int x = b.current();
    const int c = b.conv(2, 3, 1, 1);
    b.concat({x, c, x});  // an input twice: its gradient sums both parts
    add("Concat", b);
  }
  {
    NetBuilder b(Shape{6, 4, 5});
    b.slice(2, 3);
    add("SliceOfChannels", b);
  }
  {
    NetBuilder b(Shape{4, 4, 4});
    const int x = b.current();
    const int c = b.conv(4, 3, 1, 1);
    b.mul(x, c);
    add("MulSameShape", b);
  }
  {
    NetBuilder b(Shape{4, 5, 5});
    const int x = b.current();
    b.global_avg();
    b.conv(4, 1);
    const int gate = b.activation(ActivationFn::Sigmoid);
    b.mul(x, gate);  // squeeze-excitation: the gate [C,1,1] broadcast over the plane
    add("MulSqueezeExcitationGate", b);
  }
  {
    NetBuilder b(Shape{3, 4, 4});
    const int x = b.current();
    b.mul(x, x);
    add("MulOfSameValue", b);
  }
  for (auto [f, name] : {std::pair{ActivationFn::Sigmoid, "Sigmoid"}, {ActivationFn::Tanh, "Tanh"},
                         {ActivationFn::HardSwish, "HardSwish"}, {ActivationFn::SiLU, "SiLU"},
                         {ActivationFn::GeluErf, "GeluErf"}, {ActivationFn::GeluTanh, "GeluTanh"},
                         {ActivationFn::Erf, "Erf"}}) {
    NetBuilder b(Shape{3, 5, 5});
    b.conv(3, 3, 1, 1);  // spreads the values over a few units, across HardSwish's kinks
    b.activation(f);
    add(name, b);
  }
  {
    NetBuilder b(Shape{3, 5, 5});
    b.conv(3, 3, 1, 1);
    b.activation(ActivationFn::HardSigmoid, 1.0 / 6, 0.5);
    add("HardSigmoid", b);
  }
  {
    NetBuilder b(Shape{5, 3, 4});
    b.channel_mean();
    add("ChannelMean", b);
  }
  {
    NetBuilder b(Shape{6, 3, 4});
    b.layernorm();
    add("LayerNormOverChannels", b);
  }
  {
    NetBuilder b(Shape{6, 3, 3});
    b.conv(6, 1);
    b.shuffle(2);
    add("ChannelShuffle", b);
  }
  {
    NetBuilder b(Shape{3, 12, 12}, 5);
    b.conv(6, 3, 1, 1);
    b.affine();
    b.relu();
    b.pool(OpKind::MaxPool, 2, 2);
    const int skip = b.current();
    b.conv(12, 1);
    b.clip(0, 6);
    b.conv(12, 3, 1, 1, 12);  // depthwise
    b.clip(0, 6);
    b.conv(6, 1);
    b.add(skip, b.current());
    b.pool(OpKind::AvgPool, 2, 2);
    b.global_avg();
    b.linear(4);
    add("WholeNetwork", b);
  }
  return out;
}

inline std::vector<std::string> op_graph_names() {
  std::vector<std::string> names;
  for (const auto& g : op_graphs()) names.push_back(g.name);
  return names;
}

inline Graph op_graph(const std::string& name) {
  for (auto& g : op_graphs())
    if (g.name == name) return g.graph;
  return {};
}

}  // namespace ipna::test
