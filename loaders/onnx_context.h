// What the ONNX loader's pieces share while a model turns into the graph IR:
// the constants and tensors seen so far, attribute and input accessors that
// check every value before it is used, and the limits a model file must stay
// within. A model file is untrusted input: every index, axis, count and size
// read from it is checked here or in the handler using it, and a failure is an
// ipna::Error naming the file, node, op and attribute.
//
// The pieces: onnx_loader.cpp (file, graph inputs/outputs, the node loop),
// onnx_ops.cpp (one handler per supported op), onnx_fold.cpp (shape
// arithmetic on constants), onnx_rewrites.cpp (BatchNorm and Pad folding,
// dead-node removal).
#pragma once
#include <onnx/onnx_pb.h>

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "engine/graph.h"

namespace ipna::onnx_import {

// Largest tensor the loader accepts: an initializer, or one sample of an activation.
constexpr int64_t kMaxElements = int64_t(1) << 28;
// Largest tensor constant folding may compute (shape arithmetic is small).
constexpr int64_t kMaxFoldedElements = int64_t(1) << 24;
constexpr size_t kMaxRank = 8;
// Kernel sizes, strides, pads and dilations.
constexpr int64_t kMaxWindow = int64_t(1) << 16;

// A constant: float32 data as stored (weights keep 4 bytes a value), other
// float data (float64, or computed by folding) as doubles, integers exactly as int64.
struct ConstTensor {
  std::vector<int64_t> dims;
  bool integer = false, f32 = false;
  std::vector<float> floats;  // f32
  std::vector<double> reals;  // neither integer nor f32
  std::vector<int64_t> ints;  // integer
  int64_t count() const {
    return static_cast<int64_t>(integer ? ints.size() : (f32 ? floats.size() : reals.size()));
  }
  double real(int64_t i) const { return integer ? static_cast<double>(ints[i]) : (f32 ? floats[i] : reals[i]); }
  // The values as float32 (the engine's weight storage).
  std::vector<float> take_floats();
};

// Product of dims, or nullopt when a dim is negative or the product passes `limit`.
std::optional<int64_t> checked_count(const std::vector<int64_t>& dims, int64_t limit);

// A ConstantOfShape/Cast-free element shuffle: out[i] = x[src[i]], same type as x.
ConstTensor gather_elements(const ConstTensor& x, std::vector<int64_t> dims, const std::vector<int64_t>& src);

class Context {
 public:
  explicit Context(std::string path) : path_(std::move(path)) {}

  const std::string& path() const { return path_; }
  [[noreturn]] void fail(const std::string& why) const;
  [[noreturn]] void fail_node(const onnx::NodeProto& n, const std::string& why) const;
  [[noreturn]] void fail_unsupported(const onnx::NodeProto& n, const std::string& why) const;
  [[noreturn]] void fail_attr(const onnx::NodeProto& n, const std::string& attr, const std::string& why) const;

  // --- attributes: absent gives the default, a wrong type is an error ---
  const onnx::AttributeProto* attr(const onnx::NodeProto& n, const char* name) const;
  int64_t attr_int(const onnx::NodeProto& n, const char* name, int64_t def) const;
  // ONNX stores float attributes in float32; exporters wrote them from decimal
  // hyperparameters (eps = 1e-3). The value comes back as the double of the
  // shortest decimal that rounds to that float32, so float64 runs see 0.001,
  // not 0.0010000000475.
  double attr_float(const onnx::NodeProto& n, const char* name, double def) const;
  std::string attr_string(const onnx::NodeProto& n, const char* name, const std::string& def) const;
  std::vector<int64_t> attr_ints(const onnx::NodeProto& n, const char* name) const;

  // --- inputs ---
  // Name of input i, or "" when the node has no such (or an empty) input.
  static const std::string& input_name(const onnx::NodeProto& n, int i);
  bool has_input(const onnx::NodeProto& n, int i) const { return !input_name(n, i).empty(); }
  bool is_constant(const std::string& name) const { return consts_.count(name) > 0 || initializers_.count(name) > 0; }
  // Initializers are decoded when first used, and their stored bytes released
  // then, so loading holds about one copy of the weights at a time.
  void add_initializer(onnx::TensorProto* t) { initializers_[t->name()] = t; }
  const ConstTensor* find_constant(const std::string& name) const;
  // Input i as constant() does, moved out when no other node reads it (a weight).
  ConstTensor take_constant(const onnx::NodeProto& n, int i, const char* role);
  // Input i, which must be a constant with finite values; `role` names it in messages.
  const ConstTensor& constant(const onnx::NodeProto& n, int i, const char* role) const;
  // Input i of a constant as integers (shape arithmetic); fails on non-integral values.
  std::vector<int64_t> constant_ints(const onnx::NodeProto& n, int i, const char* role) const;
  // Input i, which must be a tensor computed by an earlier node (or the graph input): its value id.
  // A channels-last view is refused here: only layout-aware handlers take one (activation_any_layout).
  int activation(const onnx::NodeProto& n, int i) const;
  int activation_any_layout(const onnx::NodeProto& n, int i) const;

  // Tensors the ONNX graph sees channels-last ([N,H,W,C], after a Transpose
  // 0,2,3,1) are the same engine values as their channels-first originals; the
  // layout-aware handlers translate ops on them (MatMul over the last axis is a
  // 1x1 convolution, LayerNorm over it is over the channels, ...).
  bool channels_last(const std::string& name) const { return channels_last_.count(name) > 0; }
  void set_channels_last(const std::string& name, bool on) {
    if (on)
      channels_last_.insert(name);
    else
      channels_last_.erase(name);
  }
  // The tensor's rank as the ONNX graph sees it, the batch included (a [C,1,1]
  // value may be an ONNX [N,C] after ReduceMean without keepdims).
  int onnx_rank(const std::string& name, int value) const;
  void set_onnx_rank(const std::string& name, int rank) { onnx_rank_[name] = rank; }
  // Binds `out` to the value of input `in`, with its layout and rank (Identity, Flatten, ...).
  void pass_through(const std::string& out, const std::string& in, int value);

  // ShuffleNet's channel shuffle arrives as Reshape to [N, g, C/g, H, W], Transpose
  // (0,2,1,3,4), Reshape back: the first two wait here, the last emits the op.
  struct GroupedView {
    int value;
    int groups;
    bool transposed;
  };
  std::map<std::string, GroupedView> grouped_views;
  const Shape& shape_of(int value) const { return graph.values[value].shape; }

  // --- results ---
  void set_constant(const std::string& name, ConstTensor c) { consts_[name] = std::move(c); }
  // Appends node (its inputs set) with output `out_name`; infers and checks its shape.
  int emit(Node node, const std::string& out_name);
  // The ONNX tensor `name` is the value `value`.
  void bind(const std::string& name, int value) { tensors_[name] = value; }
  std::optional<int> find_tensor(const std::string& name) const;
  // `name` carries the data of `value` (Flatten, Identity, ...).
  void alias(const std::string& name, int value);
  // Renames the tensor `value` to `name` (a BatchNorm folded into the Conv that produced it).
  void rename(int value, const std::string& name);
  int producer(int value) const;  // node index in graph, -1 for the input
  Node& node_of(int value) { return graph.nodes[producer(value)]; }
  int consumers(const std::string& name) const;

  // Window geometry from strides/pads/dilations/auto_pad (and ceil_mode for pools).
  Window window(const onnx::NodeProto& n, int64_t kh, int64_t kw, const Shape& in, bool pool) const;
  // TensorProto to a constant, checking type, dims and stored size; weights
  // stored as external data (beside the model, as PyTorch's dynamo exporter
  // and models over 2 GiB keep them) are read from their file.
  ConstTensor decode(const onnx::TensorProto& t, const std::string& where) const;
  std::string read_external(const onnx::TensorProto& t, const std::string& label) const;

  // A zero Pad waiting to be folded into the Conv or AveragePool reading it (onnx_rewrites.cpp).
  struct PendingPad {
    int input;
    int top, left, bottom, right;
  };
  std::map<std::string, PendingPad> pending_pads;

  Graph graph;
  std::string graph_output_name;
  std::map<std::string, int> consumer_count;  // reads of each name by the nodes the model needs, and graph outputs

 private:
  std::string path_;
  mutable std::map<std::string, ConstTensor> consts_;
  mutable std::map<std::string, onnx::TensorProto*> initializers_;  // not decoded yet
  std::map<std::string, int> tensors_;  // ONNX tensor name -> value id
  std::map<int, int> producer_;         // value id -> node index in graph
  std::set<std::string> channels_last_;
  std::map<std::string, int> onnx_rank_;
};

// One handler per supported op (onnx_ops.cpp): reads the ONNX node, emits
// graph nodes, aliases or constants into the context.
using OpHandler = void (*)(Context&, const onnx::NodeProto&);
const std::map<std::string, OpHandler>& op_handlers();
// The handlers of onnx_ops_channels.cpp (Concat, Split, Slice, Transpose,
// Reshape, ReduceMean on tensors) and onnx_ops_pointwise.cpp (activations,
// Mul/Div/Sub, LayerNorm, MatMul in channels-last form), added to the table.
void add_channel_ops(std::map<std::string, OpHandler>& table);
void add_pointwise_ops(std::map<std::string, OpHandler>& table);
// A node of the engine's graph for ONNX node n (its name kept for messages).
Node node_for(const onnx::NodeProto& n, OpKind kind);

// Constant folding (onnx_fold.cpp): evaluates the node when all its inputs are
// constants (or it is a Shape of a tensor) and it is shape arithmetic.
// Returns false when the node is not such a node.
bool fold_constant(Context& ctx, const onnx::NodeProto& n);

// Graph rewrites (onnx_rewrites.cpp).
// If the tensor x was produced by a Conv that nothing else reads, folds the
// per-channel y = s*x + t into that Conv and names its output `out_name`; returns false otherwise.
bool fold_affine_into_conv(Context& ctx, int x, const std::vector<double>& s, const std::vector<double>& t,
                           const std::string& out_name);
// A zero Pad of the two spatial axes of a C,H,W tensor becomes a pending pad.
void defer_pad(Context& ctx, const onnx::NodeProto& n, int x, const std::vector<int64_t>& pads);
// If input 0 of n is a pending pad: the padded tensor and its pads (the pad is consumed).
std::optional<Context::PendingPad> take_pad(Context& ctx, const onnx::NodeProto& n);
// Drops the nodes that do not lead to the graph output.
void remove_dead_nodes(Graph& g);
// Before import: replaces the decompositions older exporters write for
// LayerNorm (ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt, Div[, Mul, Add]) and
// GELU (Div by sqrt 2, Erf, Add 1, Mul, Mul by 1/2) with one node each.
void fuse_decompositions(onnx::GraphProto& g);

}  // namespace ipna::onnx_import
