// The graph IR: a topologically ordered list of nodes over per-sample values.
// Loaders produce it (BatchNorm already folded, Flatten/Reshape/Identity/Dropout
// removed as aliases); the engine splits it at a named value into f1 and f2.
#pragma once
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "engine/op_desc.h"
#include "engine/shape.h"

namespace ipna {

enum class OpKind {
  Conv,       // 2-D convolution, grouped/depthwise, with bias
  Affine,     // per-channel y = scale*x + shift (BatchNorm without a conv before it)
  Clip,       // y = min(max(x, lo), hi); ReLU is Clip(0, +inf), ReLU6 is Clip(0, 6)
  MaxPool,
  AvgPool,    // GlobalAveragePool is AvgPool with the window = the plane
  Add,        // residual: y = a + b, same shapes
  Linear,     // y = x W^T + b over the flattened sample
  Concat,          // the channels of all inputs, in order (same H and W)
  Slice,           // channels [channel_offset, channel_offset + channel_count) of the input
  Mul,             // y = a * b: b of a's shape, or [C,1,1] (a gate broadcast over the plane)
  Activation,      // y = f(x), f = node.activation (smooth or piecewise smooth)
  ChannelMean,     // [C,H,W] -> [1,H,W]: the mean over the channels at each position
  LayerNorm,       // over the channels at each position; weight = gamma [C], bias = beta [C]
  ChannelShuffle,  // output channel c is input channel permutation[c]
};

const char* op_name(OpKind k);
const char* activation_name(ActivationFn f);

struct Node {
  OpKind kind{};
  std::string name;          // the ONNX node name (or a made-up one), for messages
  std::vector<int> inputs;   // value ids
  int output = -1;           // value id
  Window win;                // Conv, MaxPool, AvgPool
  int groups = 1;            // Conv
  double lo = 0, hi = 0;     // Clip
  ActivationFn activation = ActivationFn::Sigmoid;  // Activation
  double alpha = 0, beta = 0;                       // Activation (HardSigmoid)
  double eps = 0;                                   // LayerNorm
  int channel_offset = 0, channel_count = 0;        // Slice
  std::vector<int> permutation;                     // ChannelShuffle
  // Conv: kernel [Cout, Cin/groups, kh, kw] times kernel_scale [Cout], bias [Cout].
  // Linear: kernel [out, in] times kernel_scale [out], bias [out].
  // The kernel stays in float32 as the model file stores it (half the memory of
  // doubles); a folded BatchNorm or Gemm's alpha is the per-output kernel_scale
  // (empty: 1), applied in double when the weights go to the device, so float64
  // runs see exactly the folded weights.
  std::vector<float> kernel;
  std::vector<double> kernel_scale;
  // Affine: weight = scale [C], bias = shift [C].  LayerNorm: weight = gamma [C], bias = beta [C].
  std::vector<double> weight, bias;
};

struct Value {
  std::string name;
  Shape shape;  // per sample
};

struct Graph {
  std::vector<Value> values;
  std::vector<Node> nodes;  // topological order
  int input = -1;
  int output = -1;
  // Names that were removed as aliases (Flatten, Reshape, Identity, Dropout,
  // a trailing Softmax's input) point at the value that carries their data.
  std::map<std::string, int> aliases;
  // Module paths of the network the model was exported from ("layer2",
  // "features.7"), from the exporter's node names or name scopes, to the value
  // their last node computes: a user can split at a module without knowing
  // tensor names.
  std::map<std::string, int> modules;
  std::string source;  // file it came from, for messages

  int add_value(const std::string& name, Shape shape);
  // Looks up a value by name (aliases, then module paths, included); nullopt if absent.
  std::optional<int> find_value(const std::string& name) const;
  // Names a user may split at (every value except the input and output).
  std::vector<std::string> split_candidates() const;
  // Throws ipna::Error when a node's shapes or weights are inconsistent.
  void validate() const;
  int64_t macs_per_sample() const;
  // The same graph with every weight and bias dropped: shapes and wiring only.
  Graph without_weights() const;
};

// f1: input -> h, f2: h -> logits. Both are standalone graphs.
struct SplitModel {
  Graph f1, f2;
  std::string split_name;
  Shape input_shape() const { return f1.values[f1.input].shape; }
  Shape split_shape() const { return f1.values[f1.output].shape; }
  int num_classes() const { return static_cast<int>(f2.values[f2.output].shape.numel()); }
};

// Why splitting g at value v would not cut the network (a node after v reads a
// value computed before it, as inside a residual block), or nullopt when it does.
std::optional<std::string> not_a_cut(const Graph& g, int v);

// The tensors a model could be split at, in node order (the output aside): name,
// op, shape, the other names it is known by (aliases; module paths, outermost
// first), and why it does not cut the network where it does not.
struct SplitPoint {
  std::string name, op;
  Shape shape;
  std::vector<std::string> aliases, modules;
  std::optional<std::string> not_a_cut;
};
std::vector<SplitPoint> split_points(const Graph& g);

// Splits at the named value. Errors: the name is unknown (the nearest names
// are listed), or the value is not a cut (see not_a_cut).
SplitModel split_graph(Graph g, const std::string& split_name);
// The original's two-model form: model1's output feeds model2's input.
SplitModel join_split(const Graph& first, const Graph& second);

// Shape of a node's output given its input shapes; throws ipna::Error with the
// node's name on a mismatch.
Shape infer_shape(const Node& n, const std::vector<Shape>& in);

// Up to `count` names closest to `name` by edit distance.
std::vector<std::string> nearest_names(const std::string& name, const std::vector<std::string>& pool,
                                       size_t count = 5);

}  // namespace ipna
