// Handlers of the elementwise ops: the smooth activations (Sigmoid, Tanh,
// HardSigmoid, HardSwish, Erf, Gelu), Add/Sub/Mul/Div with a constant (an
// Affine per channel) or of two tensors (the residual Add, the product with a
// squeeze-excitation gate), and LayerNormalization over the channels. Every
// one keeps its input's layout, channels-first or channels-last.
#include <cmath>

#include "loaders/onnx_context.h"

namespace ipna::onnx_import {
namespace {

void keep_layout(Context& ctx, const onnx::NodeProto& n, int value) {
  ctx.set_channels_last(n.output(0), ctx.channels_last(Context::input_name(n, 0)));
  ctx.set_onnx_rank(n.output(0), ctx.onnx_rank(Context::input_name(n, 0), value));
}

void emit_activation(Context& ctx, const onnx::NodeProto& n, ActivationFn f, double alpha = 0, double beta = 0) {
  Node node = node_for(n, OpKind::Activation);
  node.activation = f;
  node.alpha = alpha;
  node.beta = beta;
  const int x = ctx.activation_any_layout(n, 0);
  node.inputs = {x};
  ctx.emit(std::move(node), n.output(0));
  keep_layout(ctx, n, x);
}

void op_sigmoid(Context& ctx, const onnx::NodeProto& n) { emit_activation(ctx, n, ActivationFn::Sigmoid); }
void op_tanh(Context& ctx, const onnx::NodeProto& n) { emit_activation(ctx, n, ActivationFn::Tanh); }
void op_erf(Context& ctx, const onnx::NodeProto& n) { emit_activation(ctx, n, ActivationFn::Erf); }
void op_hard_swish(Context& ctx, const onnx::NodeProto& n) { emit_activation(ctx, n, ActivationFn::HardSwish); }
void op_hard_sigmoid(Context& ctx, const onnx::NodeProto& n) {
  double alpha = ctx.attr_float(n, "alpha", 0.2);
  // PyTorch's hardsigmoid, relu6(x + 3) / 6, exports alpha as float32(1/6): the exact 1/6 it means.
  if (std::abs(alpha - 1.0 / 6) < 1e-7) alpha = 1.0 / 6;
  emit_activation(ctx, n, ActivationFn::HardSigmoid, alpha, ctx.attr_float(n, "beta", 0.5));
}
void op_gelu(Context& ctx, const onnx::NodeProto& n) {
  const std::string approx = ctx.attr_string(n, "approximate", "none");
  if (approx != "none" && approx != "tanh") ctx.fail_attr(n, "approximate", "must be none or tanh");
  emit_activation(ctx, n, approx == "tanh" ? ActivationFn::GeluTanh : ActivationFn::GeluErf);
}

void op_clip(Context& ctx, const onnx::NodeProto& n) {
  Node node = node_for(n, OpKind::Clip);
  node.lo = n.op_type() == "Relu" ? 0.0 : -INFINITY;
  node.hi = INFINITY;
  if (n.op_type() == "Clip") {
    if (ctx.attr(n, "min")) node.lo = ctx.attr_float(n, "min", 0);
    if (ctx.attr(n, "max")) node.hi = ctx.attr_float(n, "max", 0);
    auto bound = [&](int i, const char* role, double& v) {
      if (!ctx.has_input(n, i)) return;
      const ConstTensor& c = ctx.constant(n, i, role);
      if (c.count() != 1) ctx.fail_node(n, std::string(role) + " must hold one value");
      v = c.real(0);
    };
    bound(1, "min", node.lo);
    bound(2, "max", node.hi);
  }
  const int x = ctx.activation_any_layout(n, 0);
  node.inputs = {x};
  ctx.emit(std::move(node), n.output(0));
  keep_layout(ctx, n, x);
}

// A constant operand as one value per channel of the tensor `name` (value v),
// under ONNX broadcasting: its dims, aligned to the right, are 1 except at
// most at the channel axis. Empty when it is not such a constant.
std::vector<double> per_channel(Context& ctx, const ConstTensor& c, const std::string& name, int v) {
  const Shape& s = ctx.shape_of(v);
  const int rank = ctx.onnx_rank(name, v);
  const int64_t channels = s.channels();
  const int ch_axis = ctx.channels_last(name) ? rank - 1 : 1;
  if (c.dims.size() > static_cast<size_t>(rank)) return {};
  int64_t along = 1;
  for (size_t i = 0; i < c.dims.size(); ++i) {
    const int axis = rank - static_cast<int>(c.dims.size()) + static_cast<int>(i);
    if (c.dims[i] == 1) continue;
    if (axis != ch_axis || c.dims[i] != channels) return {};
    along = c.dims[i];
  }
  std::vector<double> out(channels);
  for (int64_t k = 0; k < channels; ++k) out[k] = c.real(along == 1 ? 0 : k);
  return out;
}

// x <op> c or c <op> x with a per-channel constant c: an Affine.
void arithmetic_with_constant(Context& ctx, const onnx::NodeProto& n, bool constant_first) {
  const std::string& op = n.op_type();
  const int xi = constant_first ? 1 : 0;
  const int x = ctx.activation_any_layout(n, xi);
  const std::string& name = Context::input_name(n, xi);
  const ConstTensor& c = ctx.constant(n, constant_first ? 0 : 1, "constant operand");
  std::vector<double> k = per_channel(ctx, c, name, x);
  if (k.empty())
    ctx.fail_unsupported(n, "a constant operand must hold one value, or one per channel; got dims " +
                                Shape(c.dims).str() + " for the tensor " + ctx.shape_of(x).str());
  const int64_t ch = ctx.shape_of(x).channels();
  Node node = node_for(n, OpKind::Affine);
  node.weight.assign(ch, 1.0);
  node.bias.assign(ch, 0.0);
  for (int64_t i = 0; i < ch; ++i) {
    if (op == "Add") {
      node.bias[i] = k[i];
    } else if (op == "Sub") {
      node.weight[i] = constant_first ? -1.0 : 1.0;
      node.bias[i] = constant_first ? k[i] : -k[i];
    } else if (op == "Mul") {
      node.weight[i] = k[i];
    } else {  // Div
      if (constant_first) ctx.fail_unsupported(n, "dividing a constant by a tensor is not supported");
      if (k[i] == 0) ctx.fail_node(n, "division by zero");
      node.weight[i] = 1.0 / k[i];
    }
  }
  node.inputs = {x};
  ctx.emit(std::move(node), n.output(0));
  ctx.set_channels_last(n.output(0), ctx.channels_last(name));
  ctx.set_onnx_rank(n.output(0), ctx.onnx_rank(name, x));
}

// Mul(x, Sigmoid(x)) is SiLU, Mul(x, HardSigmoid(x)) with PyTorch's parameters
// is HardSwish: the activation node becomes the fused op, keeping one
// derivative for backward instead of two factors.
bool fuse_gated_activation(Context& ctx, const onnx::NodeProto& n, int a, int b, const std::string& b_name) {
  const int p = ctx.producer(b);
  if (p < 0 || ctx.consumers(b_name) != 1) return false;
  Node& act = ctx.graph.nodes[p];
  if (act.kind != OpKind::Activation || act.inputs[0] != a) return false;
  if (act.activation == ActivationFn::Sigmoid) {
    act.activation = ActivationFn::SiLU;
  } else if (act.activation == ActivationFn::HardSigmoid && std::abs(act.alpha - 1.0 / 6) < 1e-6 &&
             std::abs(act.beta - 0.5) < 1e-6) {
    act.activation = ActivationFn::HardSwish;
  } else {
    return false;
  }
  ctx.rename(b, n.output(0));
  return true;
}

void op_arithmetic(Context& ctx, const onnx::NodeProto& n) {
  const std::string& op = n.op_type();
  const bool c0 = ctx.is_constant(Context::input_name(n, 0)), c1 = ctx.is_constant(Context::input_name(n, 1));
  if (c0 && c1) ctx.fail_unsupported(n, "arithmetic on two constants of these shapes is not supported");
  if (c0 || c1) return arithmetic_with_constant(ctx, n, c0);
  const int a = ctx.activation_any_layout(n, 0), b = ctx.activation_any_layout(n, 1);
  const std::string &an = Context::input_name(n, 0), &bn = Context::input_name(n, 1);
  const Shape &sa = ctx.shape_of(a), &sb = ctx.shape_of(b);
  const bool same_layout = ctx.channels_last(an) == ctx.channels_last(bn);
  if (op == "Add") {
    if (sa != sb || !same_layout)
      ctx.fail_unsupported(n, "Add of two tensors needs the same shape and layout, got " + sa.str() + " and " + sb.str());
    Node node = node_for(n, OpKind::Add);
    node.inputs = {a, b};
    ctx.emit(std::move(node), n.output(0));
    keep_layout(ctx, n, a);
    return;
  }
  if (op != "Mul") ctx.fail_unsupported(n, op + " of two tensors is not supported");
  if (fuse_gated_activation(ctx, n, a, b, bn) || fuse_gated_activation(ctx, n, b, a, an)) {
    keep_layout(ctx, n, a);
    return;
  }
  // The full tensor first, a per-channel gate ([C,1,1]) second.
  const bool b_gate = sb.rank() == 3 && sb.plane() == 1 && sa.rank() == 3 && sb.dims[0] == sa.dims[0];
  const bool a_gate = sa.rank() == 3 && sa.plane() == 1 && sb.rank() == 3 && sa.dims[0] == sb.dims[0];
  Node node = node_for(n, OpKind::Mul);
  if (sa == sb && same_layout) {
    node.inputs = {a, b};
  } else if (b_gate || a_gate) {
    node.inputs = b_gate ? std::vector<int>{a, b} : std::vector<int>{b, a};
  } else {
    ctx.fail_unsupported(n, "Mul of two tensors needs the same shape, or one value per channel for one of them; got " +
                                sa.str() + " and " + sb.str());
  }
  const std::string& full = node.inputs[0] == a ? an : bn;
  ctx.emit(std::move(node), n.output(0));
  ctx.set_channels_last(n.output(0), ctx.channels_last(full));
}

void op_layer_norm(Context& ctx, const onnx::NodeProto& n) {
  for (int i = 1; i < n.output_size(); ++i)
    if (!n.output(i).empty() && ctx.consumers(n.output(i))) ctx.fail_unsupported(n, "its Mean/InvStdDev outputs are used");
  const int x = ctx.activation_any_layout(n, 0);
  const Shape& s = ctx.shape_of(x);
  const int rank = ctx.onnx_rank(Context::input_name(n, 0), x);
  const int64_t axis = ctx.attr_int(n, "axis", -1);
  const int64_t a = axis < 0 ? axis + rank : axis;
  // Over the channels: the last axis of a channels-last view, or axis 1 when nothing follows the channels.
  const bool over_channels =
      ctx.channels_last(Context::input_name(n, 0)) ? a == rank - 1 : (a == 1 && (rank == 2 || s.plane() == 1));
  if (!over_channels) ctx.fail_unsupported(n, "LayerNormalization is supported over the channels only");
  const int64_t c = s.channels();
  Node node = node_for(n, OpKind::LayerNorm);
  node.eps = ctx.attr_float(n, "epsilon", 1e-5);
  node.weight.assign(c, 1.0);
  node.bias.assign(c, 0.0);
  auto take = [&](int i, const char* role, std::vector<double>& dst) {
    if (!ctx.has_input(n, i)) return;
    const ConstTensor& t = ctx.constant(n, i, role);
    if (t.count() != c) ctx.fail_node(n, std::string(role) + " needs one value per channel (" + std::to_string(c) + ")");
    for (int64_t k = 0; k < c; ++k) dst[k] = t.real(k);
  };
  take(1, "Scale", node.weight);
  take(2, "B", node.bias);
  node.inputs = {x};
  ctx.emit(std::move(node), n.output(0));
  keep_layout(ctx, n, x);
}

}  // namespace

void add_pointwise_ops(std::map<std::string, OpHandler>& table) {
  table["Relu"] = op_clip;
  table["Clip"] = op_clip;
  table["Sigmoid"] = op_sigmoid;
  table["Tanh"] = op_tanh;
  table["Erf"] = op_erf;
  table["HardSigmoid"] = op_hard_sigmoid;
  table["HardSwish"] = op_hard_swish;
  table["Gelu"] = op_gelu;
  for (const char* op : {"Add", "Sub", "Mul", "Div"}) table[op] = op_arithmetic;
  table["LayerNormalization"] = op_layer_norm;
}

}  // namespace ipna::onnx_import
