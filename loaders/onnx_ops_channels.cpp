// Handlers of the ops that move whole channels or reshape tensors: Concat,
// Split and Slice along channels, ReduceMean over the plane or the channels,
// the channel shuffle (Reshape, Transpose, Reshape), the channels-last views of
// Transpose, and the rank changes of Squeeze/Unsqueeze on tensors.
#include <algorithm>

#include "loaders/onnx_context.h"

namespace ipna::onnx_import {
namespace {

// The tensor's dims as the ONNX graph sees them (batch 1): [1,C,H,W], [1,H,W,C] or [1,F].
std::vector<int64_t> onnx_dims(const Context& ctx, const std::string& name, int v) {
  const Shape& s = ctx.shape_of(v);
  if (ctx.onnx_rank(name, v) == 1) return {s.numel()};
  if (ctx.onnx_rank(name, v) == 2) return {1, s.numel()};
  if (s.rank() == 1) return {1, s.dims[0]};
  if (ctx.channels_last(name)) return {1, s.dims[1], s.dims[2], s.dims[0]};
  return {1, s.dims[0], s.dims[1], s.dims[2]};
}

int64_t channel_axis(const Context& ctx, const std::string& name, int v) {
  return ctx.channels_last(name) ? static_cast<int64_t>(onnx_dims(ctx, name, v).size()) - 1 : 1;
}

int64_t normalised_axis(Context& ctx, const onnx::NodeProto& n, int64_t a, size_t rank) {
  const int64_t r = static_cast<int64_t>(rank);
  if (a < -r || a >= r) ctx.fail_node(n, "axis " + std::to_string(a) + " is out of range for rank " + std::to_string(rank));
  return a < 0 ? a + r : a;
}

void op_concat(Context& ctx, const onnx::NodeProto& n) {
  if (n.input_size() == 0) ctx.fail_node(n, "has no inputs");
  Node node = node_for(n, OpKind::Concat);
  const std::string& first = Context::input_name(n, 0);
  for (int i = 0; i < n.input_size(); ++i) {
    node.inputs.push_back(ctx.activation_any_layout(n, i));
    if (ctx.channels_last(Context::input_name(n, i)) != ctx.channels_last(first))
      ctx.fail_unsupported(n, "inputs of different layouts (channels-first and channels-last)");
  }
  const int x = node.inputs[0];
  const int64_t axis = normalised_axis(ctx, n, ctx.attr_int(n, "axis", 1), onnx_dims(ctx, first, x).size());
  if (axis != channel_axis(ctx, first, x)) ctx.fail_unsupported(n, "only concatenation along the channels is supported");
  ctx.emit(std::move(node), n.output(0));
  ctx.set_channels_last(n.output(0), ctx.channels_last(first));
  ctx.set_onnx_rank(n.output(0), ctx.onnx_rank(first, x));
}

// Channels [offset, offset + count) of the input as output `name`.
void emit_slice(Context& ctx, const onnx::NodeProto& n, int x, int64_t offset, int64_t count, const std::string& name) {
  if (offset == 0 && count == ctx.shape_of(x).channels()) {
    ctx.pass_through(name, Context::input_name(n, 0), x);
    return;
  }
  Node node = node_for(n, OpKind::Slice);
  node.name += "/" + name;
  node.channel_offset = static_cast<int>(offset);
  node.channel_count = static_cast<int>(count);
  node.inputs = {x};
  ctx.emit(std::move(node), name);
  ctx.set_channels_last(name, ctx.channels_last(Context::input_name(n, 0)));
  ctx.set_onnx_rank(name, ctx.onnx_rank(Context::input_name(n, 0), x));
}

void op_split(Context& ctx, const onnx::NodeProto& n) {
  const int x = ctx.activation_any_layout(n, 0);
  const auto dims = onnx_dims(ctx, Context::input_name(n, 0), x);
  const int64_t axis = normalised_axis(ctx, n, ctx.attr_int(n, "axis", 0), dims.size());
  if (axis != channel_axis(ctx, Context::input_name(n, 0), x)) ctx.fail_unsupported(n, "only splitting along the channels is supported");
  const int64_t c = ctx.shape_of(x).channels();
  std::vector<int64_t> sizes = ctx.has_input(n, 1) ? ctx.constant_ints(n, 1, "split") : ctx.attr_ints(n, "split");
  if (sizes.empty()) {  // equal parts, the last one smaller if need be (opset 18)
    const int64_t parts = ctx.attr_int(n, "num_outputs", n.output_size());
    if (parts < 1 || parts > c) ctx.fail_attr(n, "num_outputs", "must lie in [1, channels]");
    const int64_t each = (c + parts - 1) / parts;
    for (int64_t at = 0; at < c; at += each) sizes.push_back(std::min(each, c - at));
  }
  if (static_cast<int64_t>(sizes.size()) != n.output_size())
    ctx.fail_node(n, std::to_string(sizes.size()) + " split sizes for " + std::to_string(n.output_size()) + " outputs");
  int64_t at = 0;
  for (int i = 0; i < n.output_size(); ++i) {
    if (sizes[i] < 0 || at + sizes[i] > c) ctx.fail_node(n, "split sizes exceed the " + std::to_string(c) + " channels");
    if (!n.output(i).empty() && sizes[i] > 0) emit_slice(ctx, n, x, at, sizes[i], n.output(i));
    at += sizes[i];
  }
  if (at != c) ctx.fail_node(n, "split sizes add up to " + std::to_string(at) + ", not the " + std::to_string(c) + " channels");
}

void op_slice(Context& ctx, const onnx::NodeProto& n) {
  const int x = ctx.activation_any_layout(n, 0);
  const auto dims = onnx_dims(ctx, Context::input_name(n, 0), x);
  std::vector<int64_t> starts, ends, axes, steps;
  if (n.input_size() == 1) {
    starts = ctx.attr_ints(n, "starts");
    ends = ctx.attr_ints(n, "ends");
    axes = ctx.attr_ints(n, "axes");
  } else {
    starts = ctx.constant_ints(n, 1, "starts");
    ends = ctx.constant_ints(n, 2, "ends");
    if (ctx.has_input(n, 3)) axes = ctx.constant_ints(n, 3, "axes");
    if (ctx.has_input(n, 4)) steps = ctx.constant_ints(n, 4, "steps");
  }
  if (ends.size() != starts.size() || (!axes.empty() && axes.size() != starts.size()) ||
      (!steps.empty() && steps.size() != starts.size()))
    ctx.fail_node(n, "starts, ends, axes and steps differ in length");
  const int64_t ch = channel_axis(ctx, Context::input_name(n, 0), x), c = ctx.shape_of(x).channels();
  int64_t lo = 0, hi = c;
  for (size_t i = 0; i < starts.size(); ++i) {
    const int64_t ax = axes.empty() ? static_cast<int64_t>(i) : normalised_axis(ctx, n, axes[i], dims.size());
    const int64_t dim = dims[ax];
    if (!steps.empty() && steps[i] != 1) ctx.fail_unsupported(n, "only slices with step 1 are supported on tensors");
    auto clampi = [&](int64_t v) { return std::clamp<int64_t>(v < 0 ? v + dim : v, 0, dim); };
    const int64_t b = clampi(starts[i]), e = clampi(ends[i]);
    if (ax == ch) {
      lo = b;
      hi = e;
    } else if (b != 0 || e != dim) {
      ctx.fail_unsupported(n, "only slicing along the channels is supported on tensors");
    }
  }
  if (hi <= lo) ctx.fail_node(n, "the slice is empty");
  emit_slice(ctx, n, x, lo, hi - lo, n.output(0));
}

void op_transpose(Context& ctx, const onnx::NodeProto& n) {
  const std::vector<int64_t> perm = ctx.attr_ints(n, "perm");
  auto view = ctx.grouped_views.find(Context::input_name(n, 0));
  if (view != ctx.grouped_views.end()) {
    if (perm != std::vector<int64_t>{0, 2, 1, 3, 4} || view->second.transposed)
      ctx.fail_unsupported(n, "on channel groups only the shuffle's Transpose (perm 0,2,1,3,4) is supported");
    Context::GroupedView t = view->second;
    t.transposed = true;
    ctx.grouped_views[n.output(0)] = t;
    return;
  }
  const int x = ctx.activation_any_layout(n, 0);
  const bool cl = ctx.channels_last(Context::input_name(n, 0));
  if (ctx.onnx_rank(Context::input_name(n, 0), x) == 4 && ctx.shape_of(x).rank() == 3) {
    if (!cl && perm == std::vector<int64_t>{0, 2, 3, 1}) {
      ctx.alias(n.output(0), x);
      ctx.set_channels_last(n.output(0), true);
      return;
    }
    if (cl && perm == std::vector<int64_t>{0, 3, 1, 2}) {
      ctx.alias(n.output(0), x);
      return;
    }
  }
  ctx.fail_unsupported(n, "on tensors only NCHW <-> NHWC transposes (perm 0,2,3,1 and 0,3,1,2) and the channel "
                          "shuffle's are supported");
}

void op_reshape(Context& ctx, const onnx::NodeProto& n) {
  std::vector<int64_t> shape = ctx.constant_ints(n, 1, "shape");
  auto view = ctx.grouped_views.find(Context::input_name(n, 0));
  if (view != ctx.grouped_views.end()) {
    const Context::GroupedView g = view->second;
    const Shape& s = ctx.shape_of(g.value);
    if (!g.transposed || shape.size() != 4 || (shape[1] != -1 && shape[1] != s.dims[0]) || shape[2] != s.dims[1] ||
        shape[3] != s.dims[2])
      ctx.fail_unsupported(n, "channel groups must be transposed (0,2,1,3,4) and reshaped back to [N, C, H, W]");
    // Grouped [g, C/g] transposed to [C/g, g]: output channel k is input channel (k % g) * (C/g) + k / g.
    Node node = node_for(n, OpKind::ChannelShuffle);
    const int c = static_cast<int>(s.dims[0]), per = c / g.groups;
    for (int k = 0; k < c; ++k) node.permutation.push_back((k % g.groups) * per + k / g.groups);
    node.inputs = {g.value};
    ctx.emit(std::move(node), n.output(0));
    return;
  }
  const int x = ctx.activation_any_layout(n, 0);
  const Shape& s = ctx.shape_of(x);
  const bool cl = ctx.channels_last(Context::input_name(n, 0));
  const int64_t per = s.numel();
  auto batch_ok = [&](int64_t d) { return d == 1 || d == -1 || d == 0; };
  // [N, -1]: flattening each sample (channels-first, or a 1x1 plane).
  if (shape.size() == 2 && batch_ok(shape[0]) && (shape[1] == -1 || shape[1] == per) &&
      (shape[0] != -1 || shape[1] == per)) {
    if (cl && s.plane() != 1) ctx.fail_unsupported(n, "flattening a channels-last tensor is not supported");
    ctx.alias(n.output(0), x);
    ctx.set_onnx_rank(n.output(0), 2);
    return;
  }
  // [N, g, C/g, H, W]: the first step of a channel shuffle.
  if (!cl && s.rank() == 3 && shape.size() == 5 && batch_ok(shape[0]) && shape[1] > 0 && shape[2] > 0 &&
      shape[1] <= s.dims[0] && shape[2] <= s.dims[0] && shape[1] * shape[2] == s.dims[0] && shape[3] == s.dims[1] &&
      shape[4] == s.dims[2]) {
    ctx.grouped_views[n.output(0)] = {x, static_cast<int>(shape[1]), false};
    return;
  }
  // [-1]: everything in one axis, batch included (a batch of 1 as exported): an identity Gather follows.
  if (shape == std::vector<int64_t>{-1} && (!cl || s.plane() == 1)) {
    ctx.alias(n.output(0), x);
    ctx.set_onnx_rank(n.output(0), 1);
    return;
  }
  // [N, C, H, W] of the same (or, from [N, C], a 1x1) plane: nothing moves.
  if (!cl && shape.size() == 4 && batch_ok(shape[0]) && (shape[1] == -1 || shape[1] == s.channels()) &&
      shape[2] == s.height() && shape[3] == s.width()) {
    ctx.alias(n.output(0), x);
    ctx.set_onnx_rank(n.output(0), 4);
    return;
  }
  ctx.fail_unsupported(n, "on tensors only a reshape to [N, -1], the steps of a channel shuffle, or to the same "
                          "[N, C, H, W] are supported");
}

// Squeeze/Unsqueeze on tensors: [N, C] <-> [N, C, 1, 1] only changes the rank the graph sees.
void op_squeeze(Context& ctx, const onnx::NodeProto& n) {
  const int x = ctx.activation_any_layout(n, 0);
  const Shape& s = ctx.shape_of(x);
  const int rank = ctx.onnx_rank(Context::input_name(n, 0), x);
  std::vector<int64_t> axes = ctx.has_input(n, 1) ? ctx.constant_ints(n, 1, "axes") : ctx.attr_ints(n, "axes");
  const bool unsqueeze = n.op_type() == "Unsqueeze";
  const int out_rank = unsqueeze ? rank + static_cast<int>(axes.size()) : rank - static_cast<int>(axes.size());
  for (auto& a : axes) a = normalised_axis(ctx, n, a, unsqueeze ? out_rank : rank);
  std::sort(axes.begin(), axes.end());
  const bool ok = s.plane() == 1 && !ctx.channels_last(Context::input_name(n, 0)) &&
                  ((rank == 2 && out_rank == 4) || (rank == 4 && out_rank == 2)) &&
                  axes == std::vector<int64_t>{2, 3};
  if (!ok) ctx.fail_unsupported(n, "on tensors only [N, C] <-> [N, C, 1, 1] is supported");
  ctx.alias(n.output(0), x);
  ctx.set_onnx_rank(n.output(0), out_rank);
}

// Gather on a tensor: only the identity gather of a fully flattened tensor by
// arange(numel) shaped back to the tensor's dims (PyTorch's dynamo exporter
// writes as_strided so).
void op_gather(Context& ctx, const onnx::NodeProto& n) {
  const int x = ctx.activation_any_layout(n, 0);
  const ConstTensor& idx = ctx.constant(n, 1, "indices");
  const std::vector<int64_t> ids = ctx.constant_ints(n, 1, "indices");
  bool identity = ctx.onnx_rank(Context::input_name(n, 0), x) == 1 && ctx.attr_int(n, "axis", 0) == 0 &&
                  static_cast<int64_t>(ids.size()) == ctx.shape_of(x).numel();
  for (size_t i = 0; identity && i < ids.size(); ++i) identity = ids[i] == static_cast<int64_t>(i);
  if (!identity || idx.dims.empty() || idx.dims[0] != 1)
    ctx.fail_unsupported(n, "on tensors only the identity gather of a flattened tensor is supported");
  ctx.alias(n.output(0), x);
  ctx.set_onnx_rank(n.output(0), static_cast<int>(idx.dims.size()));
}

void op_reduce_mean(Context& ctx, const onnx::NodeProto& n) {
  const int x = ctx.activation_any_layout(n, 0);
  const bool cl = ctx.channels_last(Context::input_name(n, 0));
  const auto dims = onnx_dims(ctx, Context::input_name(n, 0), x);
  std::vector<int64_t> axes = ctx.has_input(n, 1) ? ctx.constant_ints(n, 1, "axes") : ctx.attr_ints(n, "axes");
  for (auto& a : axes) a = normalised_axis(ctx, n, a, dims.size());
  std::sort(axes.begin(), axes.end());
  const bool keep = ctx.attr_int(n, "keepdims", 1) != 0;
  const Shape& s = ctx.shape_of(x);
  if (dims.size() == 4 && axes == (cl ? std::vector<int64_t>{1, 2} : std::vector<int64_t>{2, 3})) {
    Node node = node_for(n, OpKind::AvgPool);  // the mean over the plane: a global average pool
    node.win.kh = static_cast<int>(s.dims[1]);
    node.win.kw = static_cast<int>(s.dims[2]);
    node.inputs = {x};
    ctx.emit(std::move(node), n.output(0));
    ctx.set_channels_last(n.output(0), cl && keep);
    if (!keep) ctx.set_onnx_rank(n.output(0), 2);
    return;
  }
  if (dims.size() == 4 && keep && axes == std::vector<int64_t>{cl ? 3 : 1}) {
    Node node = node_for(n, OpKind::ChannelMean);
    node.inputs = {x};
    ctx.emit(std::move(node), n.output(0));
    ctx.set_channels_last(n.output(0), cl);
    return;
  }
  ctx.fail_unsupported(n, "ReduceMean is supported over the plane (a global average pool) or, keeping dims, over the "
                          "channels");
}

}  // namespace

void add_channel_ops(std::map<std::string, OpHandler>& table) {
  table["Concat"] = op_concat;
  table["Split"] = op_split;
  table["Slice"] = op_slice;
  table["Transpose"] = op_transpose;
  table["Reshape"] = op_reshape;
  table["Squeeze"] = op_squeeze;
  table["Unsqueeze"] = op_squeeze;
  table["ReduceMean"] = op_reduce_mean;
  table["Gather"] = op_gather;
}

}  // namespace ipna::onnx_import
