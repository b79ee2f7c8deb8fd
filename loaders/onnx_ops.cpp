// One handler per supported ONNX op: each reads its node's inputs and
// attributes through the checking accessors of Context and emits graph nodes
// (engine/graph.h), aliases or constants.
#include <cmath>

#include "loaders/onnx_context.h"
#include "loaders/onnx_loader.h"

namespace ipna {

const char* const kSupportedOps =
    "Conv, BatchNormalization (inference), Relu, Clip, Sigmoid, Tanh, HardSigmoid, HardSwish, Erf, Gelu, "
    "LayerNormalization (over channels), MaxPool, AveragePool, GlobalAveragePool, ReduceMean (over the plane, or "
    "the channels), Add, Sub, Mul, Div (with a per-channel constant; Add and Mul of tensors), Concat, Split and "
    "Slice (along channels), Flatten, Reshape (to [N,-1], or a channel shuffle), Transpose (NCHW<->NHWC), Gemm, "
    "MatMul, Identity, Dropout (inference), Constant, Pad (zeros, before Conv or AveragePool), a trailing Softmax, "
    "and shape arithmetic on constants (Shape, ConstantOfShape, Concat, Reshape, Slice, Transpose, Cast, Unsqueeze, "
    "Squeeze, Gather, Add, Sub, Mul, Div)";

namespace onnx_import {

Node node_for(const onnx::NodeProto& n, OpKind kind) {
  Node node;
  node.kind = kind;
  node.name = n.name().empty() ? n.op_type() + ":" + n.output(0) : n.name();
  return node;
}

namespace {

int rank3_input(Context& ctx, const onnx::NodeProto& n, int x) {
  if (ctx.shape_of(x).rank() != 3) ctx.fail_node(n, "input must be C,H,W, got " + ctx.shape_of(x).str());
  return x;
}

void op_constant(Context& ctx, const onnx::NodeProto& n) {
  const std::string where = "the value of Constant node '" + n.name() + "'";
  if (const auto* a = ctx.attr(n, "value")) {
    if (!a->has_t()) ctx.fail_attr(n, "value", "expected a tensor");
    ctx.set_constant(n.output(0), ctx.decode(a->t(), where));
    return;
  }
  ConstTensor c;
  if (ctx.attr(n, "value_float")) {
    c.reals = {ctx.attr_float(n, "value_float", 0)};
  } else if (ctx.attr(n, "value_int")) {
    c.integer = true;
    c.ints = {ctx.attr_int(n, "value_int", 0)};
  } else if (ctx.attr(n, "value_ints")) {
    c.integer = true;
    c.ints = ctx.attr_ints(n, "value_ints");
    c.dims = {static_cast<int64_t>(c.ints.size())};
  } else {
    ctx.fail_attr(n, "value", "only tensor, float, int and ints constants are supported");
  }
  ctx.set_constant(n.output(0), std::move(c));
}

void op_identity(Context& ctx, const onnx::NodeProto& n) {
  if (n.op_type() == "Dropout" && n.output_size() > 1 && !n.output(1).empty() && ctx.consumers(n.output(1)))
    ctx.fail_node(n, "its mask output is used (training graph?)");
  if (const ConstTensor* c = ctx.find_constant(Context::input_name(n, 0))) {
    ctx.set_constant(n.output(0), *c);
    return;
  }
  ctx.pass_through(n.output(0), Context::input_name(n, 0), ctx.activation_any_layout(n, 0));
}

// Flattening keeps the engine's layout only channels-first or with a 1x1 plane.
int flattenable(Context& ctx, const onnx::NodeProto& n) {
  const int x = ctx.activation_any_layout(n, 0);
  if (ctx.channels_last(Context::input_name(n, 0)) && ctx.shape_of(x).plane() != 1)
    ctx.fail_unsupported(n, "flattening a channels-last tensor is not supported");
  return x;
}

void op_flatten(Context& ctx, const onnx::NodeProto& n) {
  if (ctx.attr_int(n, "axis", 1) != 1) ctx.fail_attr(n, "axis", "only axis=1 (keep the batch dimension) is supported");
  ctx.alias(n.output(0), flattenable(ctx, n));
  ctx.set_onnx_rank(n.output(0), 2);
}

void op_softmax(Context& ctx, const onnx::NodeProto& n) {
  if (ctx.consumers(n.output(0)) != 1 || ctx.graph_output_name != n.output(0))
    ctx.fail_unsupported(n, "Softmax is supported only as the model's last node");
  ctx.alias(n.output(0), ctx.activation(n, 0));  // the engine applies softmax itself (target = probability)
}

void op_pad(Context& ctx, const onnx::NodeProto& n) {
  const int x = ctx.activation(n, 0);
  const std::string mode = ctx.attr_string(n, "mode", "constant");
  if (mode != "constant") ctx.fail_attr(n, "mode", "only constant padding is supported, got '" + mode + "'");
  std::vector<int64_t> pads = ctx.attr_ints(n, "pads");
  if (ctx.has_input(n, 1)) pads = ctx.constant_ints(n, 1, "pads");
  double value = ctx.attr_float(n, "value", 0.0);
  if (ctx.has_input(n, 2)) {
    const ConstTensor& v = ctx.constant(n, 2, "constant_value");
    if (v.count() != 1) ctx.fail_node(n, "constant_value must hold one value");
    value = v.real(0);
  }
  if (ctx.has_input(n, 3)) ctx.fail_unsupported(n, "the axes input of Pad is not supported");
  if (value != 0.0) ctx.fail_unsupported(n, "only zero padding is supported");
  defer_pad(ctx, n, x, pads);
}

void op_conv(Context& ctx, const onnx::NodeProto& n) {
  Node node = node_for(n, OpKind::Conv);
  const auto pad = take_pad(ctx, n);
  const int x = rank3_input(ctx, n, pad ? pad->input : ctx.activation(n, 0));
  ConstTensor w = ctx.take_constant(n, 1, "W");
  if (w.dims.size() != 4) ctx.fail_unsupported(n, "only 2-D convolution (4-D weight) is supported");
  for (int64_t d : w.dims)
    if (d < 1) ctx.fail_node(n, "the weight has an empty dimension");
  const auto ks = ctx.attr_ints(n, "kernel_shape");
  if (!ks.empty() && (ks.size() != 2 || ks[0] != w.dims[2] || ks[1] != w.dims[3]))
    ctx.fail_attr(n, "kernel_shape", "does not match the weight");
  const int64_t groups = ctx.attr_int(n, "group", 1);
  const int64_t cin = ctx.shape_of(x).dims[0];
  if (groups < 1 || groups > cin) ctx.fail_attr(n, "group", "must lie in [1, input channels = " + std::to_string(cin) + "]");
  node.groups = static_cast<int>(groups);
  node.win = ctx.window(n, w.dims[2], w.dims[3], ctx.shape_of(x), false);
  if (pad) {
    node.win.pad_top += pad->top;
    node.win.pad_left += pad->left;
    node.win.pad_bottom += pad->bottom;
    node.win.pad_right += pad->right;
  }
  if (w.dims[1] * groups != cin)
    ctx.fail_node(n, "weight expects " + std::to_string(w.dims[1] * groups) + " input channels, input has " +
                         std::to_string(cin));
  node.kernel = w.take_floats();
  if (ctx.has_input(n, 2)) {
    const ConstTensor& b = ctx.constant(n, 2, "B");
    if (b.count() != w.dims[0]) ctx.fail_node(n, "B needs one value per output channel (" + std::to_string(w.dims[0]) + ")");
    for (int64_t i = 0; i < b.count(); ++i) node.bias.push_back(b.real(i));
  }
  node.inputs = {x};
  ctx.emit(std::move(node), n.output(0));
}

std::vector<double> reals_of(const ConstTensor& c) {
  std::vector<double> v;
  for (int64_t i = 0; i < c.count(); ++i) v.push_back(c.real(i));
  return v;
}

void op_batchnorm(Context& ctx, const onnx::NodeProto& n) {
  if (ctx.attr_int(n, "training_mode", 0)) ctx.fail_attr(n, "training_mode", "only inference mode is supported");
  for (int i = 1; i < n.output_size(); ++i)
    if (!n.output(i).empty() && ctx.consumers(n.output(i)))
      ctx.fail_node(n, "running-statistics outputs are used (training graph?)");
  const int x = ctx.activation(n, 0);
  const auto scale = reals_of(ctx.constant(n, 1, "scale")), bias = reals_of(ctx.constant(n, 2, "B")),
             mean = reals_of(ctx.constant(n, 3, "input_mean")), var = reals_of(ctx.constant(n, 4, "input_var"));
  const double eps = ctx.attr_float(n, "epsilon", 1e-5);
  const int64_t c = ctx.shape_of(x).channels();
  if (static_cast<int64_t>(scale.size()) != c || bias.size() != scale.size() || mean.size() != scale.size() ||
      var.size() != scale.size())
    ctx.fail_node(n, "scale, B, mean and var need one value per channel (" + std::to_string(c) + ")");
  std::vector<double> s(c), t(c);
  for (int64_t i = 0; i < c; ++i) {
    if (!(var[i] + eps > 0)) ctx.fail_node(n, "variance + epsilon must be positive");
    s[i] = scale[i] / std::sqrt(var[i] + eps);
    t[i] = bias[i] - mean[i] * s[i];
  }
  if (fold_affine_into_conv(ctx, x, s, t, n.output(0))) return;
  Node node = node_for(n, OpKind::Affine);
  node.weight = s;
  node.bias = t;
  node.inputs = {x};
  ctx.emit(std::move(node), n.output(0));
}

void op_pool(Context& ctx, const onnx::NodeProto& n) {
  const bool max = n.op_type() == "MaxPool";
  if (n.output_size() > 1 && !n.output(1).empty()) ctx.fail_unsupported(n, "the Indices output is not supported");
  const auto pad = max ? std::nullopt : take_pad(ctx, n);
  const int x = rank3_input(ctx, n, pad ? pad->input : ctx.activation(n, 0));
  const auto ks = ctx.attr_ints(n, "kernel_shape");
  if (ks.size() != 2) ctx.fail_attr(n, "kernel_shape", "expected 2 values (2-D pooling)");
  Node node = node_for(n, max ? OpKind::MaxPool : OpKind::AvgPool);
  node.win = ctx.window(n, ks[0], ks[1], ctx.shape_of(x), true);
  if (!max) node.win.count_include_pad = ctx.attr_int(n, "count_include_pad", 0) != 0;
  if (pad) {
    // The padded zeros were real elements of the pool's input: they count.
    const Window& w = node.win;
    if (!w.count_include_pad && (w.pad_top || w.pad_left || w.pad_bottom || w.pad_right))
      ctx.fail_unsupported(n, "a Pad before an AveragePool that has its own pads and count_include_pad=0 is not supported");
    if (ctx.attr_int(n, "ceil_mode", 0)) ctx.fail_unsupported(n, "a Pad before an AveragePool with ceil_mode=1 is not supported");
    node.win.count_include_pad = true;
    node.win.pad_top += pad->top;
    node.win.pad_left += pad->left;
    node.win.pad_bottom += pad->bottom;
    node.win.pad_right += pad->right;
  }
  if (max && ctx.attr_int(n, "storage_order", 0)) ctx.fail_attr(n, "storage_order", "only 0 is supported");
  node.inputs = {x};
  ctx.emit(std::move(node), n.output(0));
}

void op_global_average_pool(Context& ctx, const onnx::NodeProto& n) {
  const int x = rank3_input(ctx, n, ctx.activation(n, 0));
  Node node = node_for(n, OpKind::AvgPool);
  node.win.kh = static_cast<int>(ctx.shape_of(x).dims[1]);
  node.win.kw = static_cast<int>(ctx.shape_of(x).dims[2]);
  node.inputs = {x};
  ctx.emit(std::move(node), n.output(0));
}

// MatMul over the last axis of a channels-last [N,H,W,C] tensor: a 1x1 convolution.
void channels_last_matmul(Context& ctx, const onnx::NodeProto& n) {
  const int x = ctx.activation_any_layout(n, 0);
  const ConstTensor& b = ctx.constant(n, 1, "B");
  const int64_t c = ctx.shape_of(x).channels();
  if (b.dims.size() != 2 || b.dims[0] != c)
    ctx.fail_node(n, "B must be [" + std::to_string(c) + ", out] for the channels-last input " + ctx.shape_of(x).str());
  Node node = node_for(n, OpKind::Conv);
  const int64_t out = b.dims[1];
  node.kernel.resize(c * out);
  for (int64_t o = 0; o < out; ++o)
    for (int64_t i = 0; i < c; ++i) node.kernel[o * c + i] = static_cast<float>(b.real(i * out + o));
  node.inputs = {x};
  ctx.emit(std::move(node), n.output(0));
  ctx.set_channels_last(n.output(0), true);
}

void op_linear(Context& ctx, const onnx::NodeProto& n) {
  const bool gemm = n.op_type() == "Gemm";
  if (!gemm && ctx.channels_last(Context::input_name(n, 0))) return channels_last_matmul(ctx, n);
  const int x = ctx.activation(n, 0);
  const int64_t k = ctx.shape_of(x).numel();
  ConstTensor b = ctx.take_constant(n, 1, "B");
  if (b.dims.size() != 2) ctx.fail_unsupported(n, "B must be a 2-D constant");
  const bool trans_b = gemm && ctx.attr_int(n, "transB", 0);
  if (gemm && ctx.attr_int(n, "transA", 0)) ctx.fail_attr(n, "transA", "only transA=0 is supported");
  const double alpha = gemm ? ctx.attr_float(n, "alpha", 1.0) : 1.0;
  const double beta = gemm ? ctx.attr_float(n, "beta", 1.0) : 1.0;
  const int64_t in_dim = trans_b ? b.dims[1] : b.dims[0], out_dim = trans_b ? b.dims[0] : b.dims[1];
  if (in_dim != k)
    ctx.fail_node(n, "B expects " + std::to_string(in_dim) + " input features, the input has " + std::to_string(k));
  Node node = node_for(n, OpKind::Linear);
  if (trans_b) {
    node.kernel = b.take_floats();  // already [out, in]: no second copy of a large layer
  } else {
    node.kernel.resize(in_dim * out_dim);
    for (int64_t o = 0; o < out_dim; ++o)
      for (int64_t i = 0; i < in_dim; ++i) node.kernel[o * in_dim + i] = static_cast<float>(b.real(i * out_dim + o));
  }
  if (alpha != 1.0) node.kernel_scale.assign(out_dim, alpha);
  if (gemm && ctx.has_input(n, 2)) {
    const ConstTensor& c = ctx.constant(n, 2, "C");
    if (c.count() != out_dim && c.count() != 1) ctx.fail_node(n, "C must hold one value per output feature");
    for (int64_t o = 0; o < out_dim; ++o) node.bias.push_back(beta * c.real(c.count() == 1 ? 0 : o));
  }
  node.inputs = {x};
  ctx.emit(std::move(node), n.output(0));
}

}  // namespace

const std::map<std::string, OpHandler>& op_handlers() {
  static const std::map<std::string, OpHandler> table = [] {
    std::map<std::string, OpHandler> t{
      {"Constant", op_constant},
      {"Identity", op_identity},
      {"Dropout", op_identity},
      {"Flatten", op_flatten},
      {"Softmax", op_softmax},
      {"Pad", op_pad},
      {"Conv", op_conv},
      {"BatchNormalization", op_batchnorm},
      {"MaxPool", op_pool},
      {"AveragePool", op_pool},
      {"GlobalAveragePool", op_global_average_pool},
      {"Gemm", op_linear},
      {"MatMul", op_linear},
    };
    add_channel_ops(t);
    add_pointwise_ops(t);
    return t;
  }();
  return table;
}

}  // namespace onnx_import
}  // namespace ipna
