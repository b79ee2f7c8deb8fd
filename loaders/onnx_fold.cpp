// Constant folding: the shape arithmetic exporters emit around the real ops
// (F.pad's pads, x.view(x.size(0), -1)'s shape) evaluated at load time. Only
// nodes the model's output depends on get here (onnx_loader.cpp), and every
// axis, index, permutation and size is checked before it is used: a folded
// result never exceeds kMaxFoldedElements.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <set>

#include "loaders/onnx_context.h"

namespace ipna::onnx_import {
namespace {

std::vector<int64_t> strides_of(const std::vector<int64_t>& dims) {
  std::vector<int64_t> st(dims.size(), 1);
  for (int i = static_cast<int>(dims.size()) - 2; i >= 0; --i) st[i] = st[i + 1] * dims[i + 1];
  return st;
}

// An axis in [-rank, rank) made non-negative, or a failure naming `what`.
int64_t axis_in(Context& ctx, const onnx::NodeProto& n, int64_t a, size_t rank, const char* what) {
  const int64_t r = static_cast<int64_t>(rank);
  if (a < -r || a >= r)
    ctx.fail_node(n, std::string(what) + " " + std::to_string(a) + " is out of range for rank " + std::to_string(rank));
  return a < 0 ? a + r : a;
}

int64_t folded_count(Context& ctx, const onnx::NodeProto& n, const std::vector<int64_t>& dims) {
  if (dims.size() > kMaxRank) ctx.fail_node(n, "result of rank " + std::to_string(dims.size()) + " is not supported");
  auto c = checked_count(dims, kMaxFoldedElements);
  if (!c)
    ctx.fail_node(n, "result shape has a negative dimension or more than " + std::to_string(kMaxFoldedElements) +
                         " elements");
  return *c;
}

// out[i] = x[src(i)] where src walks x with per-output-axis steps from `base`.
ConstTensor strided_view(const ConstTensor& x, std::vector<int64_t> out_dims, int64_t base,
                         const std::vector<int64_t>& step_per_axis, int64_t count) {
  std::vector<int64_t> src(count);
  const auto out_st = strides_of(out_dims);
  for (int64_t i = 0; i < count; ++i) {
    int64_t rem = i, at = base;
    for (size_t d = 0; d < out_dims.size(); ++d) {
      at += (rem / out_st[d]) * step_per_axis[d];
      rem %= out_st[d];
    }
    src[i] = at;
  }
  return gather_elements(x, std::move(out_dims), src);
}

ConstTensor fold_shape(Context& ctx, const onnx::NodeProto& n) {
  const std::string& name = Context::input_name(n, 0);
  std::vector<int64_t> dims;
  if (const ConstTensor* c = ctx.find_constant(name)) {
    dims = c->dims;
  } else {
    const int v = ctx.activation(n, 0);
    dims = ctx.shape_of(v).dims;
    dims.insert(dims.begin(), 1);  // the batch: the engine's graphs are per sample
  }
  const int64_t r = static_cast<int64_t>(dims.size());
  int64_t start = ctx.attr_int(n, "start", 0), end = ctx.attr_int(n, "end", r);
  if (start < 0) start = std::max<int64_t>(0, start + r);
  if (end < 0) end = std::max<int64_t>(0, end + r);
  start = std::min(start, r);
  end = std::clamp(end, start, r);
  ConstTensor out;
  out.integer = true;
  out.ints.assign(dims.begin() + start, dims.begin() + end);
  out.dims = {end - start};
  return out;
}

ConstTensor fold_constant_of_shape(Context& ctx, const onnx::NodeProto& n) {
  ConstTensor out;
  out.dims = ctx.constant_ints(n, 0, "shape");
  const int64_t count = folded_count(ctx, n, out.dims);
  if (const auto* a = ctx.attr(n, "value")) {
    if (!a->has_t()) ctx.fail_attr(n, "value", "expected a one-element tensor");
    ConstTensor v = ctx.decode(a->t(), "attribute value of node '" + n.name() + "'");
    if (v.count() != 1) ctx.fail_attr(n, "value", "expected a one-element tensor");
    out.integer = v.integer;
    if (v.integer)
      out.ints.assign(count, v.ints[0]);
    else
      out.reals.assign(count, v.real(0));
  } else {
    out.reals.assign(count, 0.0);
  }
  return out;
}

ConstTensor fold_cast(Context& ctx, const onnx::NodeProto& n) {
  ConstTensor x = ctx.constant(n, 0, "input");
  const int64_t to = ctx.attr_int(n, "to", onnx::TensorProto::FLOAT);
  switch (to) {
    case onnx::TensorProto::FLOAT:
    case onnx::TensorProto::DOUBLE:
    case onnx::TensorProto::FLOAT16:
      if (x.integer) {
        x.reals.assign(x.ints.begin(), x.ints.end());
        x.ints.clear();
        x.integer = false;
      }
      return x;
    case onnx::TensorProto::INT8:
    case onnx::TensorProto::INT16:
    case onnx::TensorProto::INT32:
    case onnx::TensorProto::INT64:
    case onnx::TensorProto::UINT8:
    case onnx::TensorProto::UINT16:
    case onnx::TensorProto::UINT32:
    case onnx::TensorProto::UINT64:
    case onnx::TensorProto::BOOL:
      if (!x.integer) {
        for (int64_t i = 0; i < x.count(); ++i) {
          const double v = x.real(i);
          if (std::abs(v) >= 9.2e18) ctx.fail_node(n, "a value does not fit the integer type it is cast to");
          x.ints.push_back(to == onnx::TensorProto::BOOL ? v != 0.0 : static_cast<int64_t>(std::trunc(v)));
        }
        x.reals.clear();
        x.floats.clear();
        x.f32 = false;
        x.integer = true;
      } else if (to == onnx::TensorProto::BOOL) {
        for (int64_t& v : x.ints) v = v != 0;
      }
      return x;
    default:
      ctx.fail_attr(n, "to", "cast to data type " + std::to_string(to) + " is not supported");
  }
}

ConstTensor fold_reshape(Context& ctx, const onnx::NodeProto& n) {
  const ConstTensor& x = ctx.constant(n, 0, "data");
  std::vector<int64_t> shape = ctx.constant_ints(n, 1, "shape");
  const bool allowzero = ctx.attr_int(n, "allowzero", 0) != 0;
  if (shape.size() > kMaxRank) ctx.fail_node(n, "target shape of rank " + std::to_string(shape.size()));
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == 0 && !allowzero) {
      if (i >= x.dims.size()) ctx.fail_node(n, "shape entry " + std::to_string(i) + " is 0 (copy) beyond the input's rank");
      shape[i] = x.dims[i];
    }
    if (shape[i] == -1) {
      if (infer >= 0) ctx.fail_node(n, "shape has more than one -1");
      infer = static_cast<int64_t>(i);
    } else if (shape[i] < 0) {
      ctx.fail_node(n, "shape has a negative entry " + std::to_string(shape[i]));
    } else {
      if (shape[i] && known > kMaxFoldedElements / shape[i]) ctx.fail_node(n, "target shape is too large");
      known *= shape[i];
    }
  }
  if (infer >= 0) {
    if (known == 0 || x.count() % known) ctx.fail_node(n, "cannot infer the -1 entry of the target shape");
    shape[infer] = x.count() / known;
  }
  if (folded_count(ctx, n, shape) != x.count())
    ctx.fail_node(n, "target shape holds a different number of elements than the input (" + std::to_string(x.count()) +
                         ")");
  ConstTensor out = x;
  out.dims = shape;
  return out;
}

std::vector<int64_t> axes_of(Context& ctx, const onnx::NodeProto& n) {
  return ctx.has_input(n, 1) ? ctx.constant_ints(n, 1, "axes") : ctx.attr_ints(n, "axes");
}

ConstTensor fold_unsqueeze(Context& ctx, const onnx::NodeProto& n) {
  const ConstTensor& x = ctx.constant(n, 0, "data");
  std::vector<int64_t> axes = axes_of(ctx, n);
  const size_t rank = x.dims.size() + axes.size();
  if (rank > kMaxRank) ctx.fail_node(n, "result of rank " + std::to_string(rank) + " is not supported");
  for (auto& a : axes) a = axis_in(ctx, n, a, rank, "axis");
  std::sort(axes.begin(), axes.end());
  if (std::adjacent_find(axes.begin(), axes.end()) != axes.end()) ctx.fail_node(n, "an axis is repeated");
  ConstTensor out = x;
  for (auto a : axes) out.dims.insert(out.dims.begin() + a, 1);
  return out;
}

ConstTensor fold_squeeze(Context& ctx, const onnx::NodeProto& n) {
  const ConstTensor& x = ctx.constant(n, 0, "data");
  std::vector<int64_t> axes = axes_of(ctx, n);
  std::set<int64_t> drop;
  for (auto a : axes) {
    const int64_t ax = axis_in(ctx, n, a, x.dims.size(), "axis");
    if (x.dims[ax] != 1) ctx.fail_node(n, "axis " + std::to_string(a) + " has size " + std::to_string(x.dims[ax]) + ", not 1");
    if (!drop.insert(ax).second) ctx.fail_node(n, "an axis is repeated");
  }
  ConstTensor out = x;
  out.dims.clear();
  for (size_t i = 0; i < x.dims.size(); ++i)
    if (axes.empty() ? x.dims[i] != 1 : !drop.count(static_cast<int64_t>(i))) out.dims.push_back(x.dims[i]);
  return out;
}

ConstTensor fold_concat(Context& ctx, const onnx::NodeProto& n) {
  std::vector<const ConstTensor*> in;
  for (int i = 0; i < n.input_size(); ++i) in.push_back(&ctx.constant(n, i, "input"));
  if (in.empty()) ctx.fail_node(n, "has no inputs");
  const size_t rank = in[0]->dims.size();
  if (rank == 0) ctx.fail_node(n, "cannot concatenate scalars");
  const int64_t axis = axis_in(ctx, n, ctx.attr_int(n, "axis", 0), rank, "axis");
  std::vector<int64_t> dims = in[0]->dims;
  dims[axis] = 0;
  bool integer = true;
  for (const ConstTensor* t : in) {
    if (t->dims.size() != rank) ctx.fail_node(n, "inputs differ in rank");
    for (size_t d = 0; d < rank; ++d)
      if (static_cast<int64_t>(d) != axis && t->dims[d] != in[0]->dims[d])
        ctx.fail_node(n, "inputs differ in dimension " + std::to_string(d));
    dims[axis] += t->dims[axis];
    integer = integer && t->integer;
  }
  folded_count(ctx, n, dims);
  const int64_t outer = std::accumulate(dims.begin(), dims.begin() + axis, int64_t(1), std::multiplies<>());
  ConstTensor out;
  out.dims = dims;
  out.integer = integer;
  for (int64_t o = 0; o < outer; ++o)
    for (const ConstTensor* t : in) {
      const int64_t block = outer ? t->count() / outer : 0;
      for (int64_t j = o * block; j < (o + 1) * block; ++j)
        integer ? out.ints.push_back(t->ints[j]) : out.reals.push_back(t->real(j));
    }
  return out;
}

ConstTensor fold_transpose(Context& ctx, const onnx::NodeProto& n) {
  const ConstTensor& x = ctx.constant(n, 0, "data");
  const size_t rank = x.dims.size();
  std::vector<int64_t> perm = ctx.attr_ints(n, "perm");
  if (perm.empty())
    for (int64_t i = static_cast<int64_t>(rank) - 1; i >= 0; --i) perm.push_back(i);
  if (perm.size() != rank) ctx.fail_attr(n, "perm", "needs one entry per axis (" + std::to_string(rank) + ")");
  std::vector<bool> seen(rank, false);
  for (auto p : perm) {
    if (p < 0 || p >= static_cast<int64_t>(rank) || seen[p]) ctx.fail_attr(n, "perm", "is not a permutation of the axes");
    seen[p] = true;
  }
  const auto in_st = strides_of(x.dims);
  std::vector<int64_t> dims, step;
  for (auto p : perm) {
    dims.push_back(x.dims[p]);
    step.push_back(in_st[p]);
  }
  return strided_view(x, dims, 0, step, x.count());
}

ConstTensor fold_slice(Context& ctx, const onnx::NodeProto& n) {
  const ConstTensor& x = ctx.constant(n, 0, "data");
  std::vector<int64_t> starts, ends, axes, steps;
  if (n.input_size() == 1) {  // opset < 10: attributes
    starts = ctx.attr_ints(n, "starts");
    ends = ctx.attr_ints(n, "ends");
    axes = ctx.attr_ints(n, "axes");
  } else {
    starts = ctx.constant_ints(n, 1, "starts");
    ends = ctx.constant_ints(n, 2, "ends");
    if (ctx.has_input(n, 3)) axes = ctx.constant_ints(n, 3, "axes");
    if (ctx.has_input(n, 4)) steps = ctx.constant_ints(n, 4, "steps");
  }
  const size_t rank = x.dims.size();
  if (ends.size() != starts.size() || (!axes.empty() && axes.size() != starts.size()) ||
      (!steps.empty() && steps.size() != starts.size()))
    ctx.fail_node(n, "starts, ends, axes and steps differ in length");
  if (starts.size() > rank) ctx.fail_node(n, "more slice entries than axes");
  std::vector<int64_t> lo(rank, 0), step(rank, 1), cnt = x.dims;
  std::vector<bool> used(rank, false);
  for (size_t i = 0; i < starts.size(); ++i) {
    const int64_t ax = axes.empty() ? static_cast<int64_t>(i) : axis_in(ctx, n, axes[i], rank, "axis");
    if (used[ax]) ctx.fail_node(n, "an axis is repeated");
    used[ax] = true;
    const int64_t dim = x.dims[ax], st = steps.empty() ? 1 : steps[i];
    if (st == 0) ctx.fail_node(n, "a step is 0");
    auto clampi = [&](int64_t v) {
      if (v < 0) v = v < -dim ? -1 : v + dim;  // -1: before the first element
      return st > 0 ? std::clamp<int64_t>(v, 0, dim) : std::clamp<int64_t>(v, -1, dim - 1);
    };
    const int64_t b = clampi(starts[i]), e = clampi(ends[i]);
    lo[ax] = b;
    step[ax] = st;
    // Steps of any size: count the positions b, b+st, ... strictly before e.
    const int64_t span = st > 0 ? e - b : b - e;
    const int64_t mag = st > 0 ? st : (st == std::numeric_limits<int64_t>::min() ? dim + 1 : -st);
    cnt[ax] = span <= 0 ? 0 : (span - 1) / mag + 1;
  }
  const int64_t count = folded_count(ctx, n, cnt);
  const auto in_st = strides_of(x.dims);
  int64_t base = 0;
  std::vector<int64_t> walk(rank);
  for (size_t d = 0; d < rank; ++d) {
    if (cnt[d] == 0) return gather_elements(x, cnt, {});
    base += lo[d] * in_st[d];
    walk[d] = cnt[d] > 1 ? step[d] * in_st[d] : 0;
  }
  return strided_view(x, cnt, base, walk, count);
}

ConstTensor fold_gather(Context& ctx, const onnx::NodeProto& n) {
  const ConstTensor& x = ctx.constant(n, 0, "data");
  const std::vector<int64_t> idx = ctx.constant_ints(n, 1, "indices");
  const std::vector<int64_t>& idx_dims = ctx.constant(n, 1, "indices").dims;
  if (x.dims.empty()) ctx.fail_node(n, "cannot gather from a scalar");
  const int64_t axis = axis_in(ctx, n, ctx.attr_int(n, "axis", 0), x.dims.size(), "axis");
  const int64_t dim = x.dims[axis];
  std::vector<int64_t> dims(x.dims.begin(), x.dims.begin() + axis);
  dims.insert(dims.end(), idx_dims.begin(), idx_dims.end());
  dims.insert(dims.end(), x.dims.begin() + axis + 1, x.dims.end());
  folded_count(ctx, n, dims);
  const int64_t outer = std::accumulate(x.dims.begin(), x.dims.begin() + axis, int64_t(1), std::multiplies<>());
  const int64_t inner = std::accumulate(x.dims.begin() + axis + 1, x.dims.end(), int64_t(1), std::multiplies<>());
  std::vector<int64_t> src;
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t k : idx) {
      if (k < -dim || k >= dim)
        ctx.fail_node(n, "index " + std::to_string(k) + " is out of range for an axis of size " + std::to_string(dim));
      if (k < 0) k += dim;
      for (int64_t j = 0; j < inner; ++j) src.push_back((o * dim + k) * inner + j);
    }
  return gather_elements(x, dims, src);
}

// Add, Sub, Mul, Div of constants of the same dims, or with a one-element
// operand (shape arithmetic: channels // groups). Integer division truncates.
ConstTensor fold_arithmetic(Context& ctx, const onnx::NodeProto& n) {
  const ConstTensor &a = ctx.constant(n, 0, "A"), &b = ctx.constant(n, 1, "B");
  if (a.dims != b.dims && a.count() != 1 && b.count() != 1)
    ctx.fail_node(n, "constants of dims " + Shape(a.dims).str() + " and " + Shape(b.dims).str() +
                         " (only equal dims or a one-element operand are folded)");
  const ConstTensor& big = a.count() >= b.count() ? a : b;
  ConstTensor out;
  out.dims = a.count() == 1 && b.count() != 1 ? b.dims : a.dims;
  out.integer = a.integer && b.integer;
  const std::string& op = n.op_type();
  const int64_t count = big.count();
  for (int64_t i = 0; i < count; ++i) {
    const int64_t ia = a.count() == 1 ? 0 : i, ib = b.count() == 1 ? 0 : i;
    if (out.integer) {
      const int64_t x = a.ints[ia], y = b.ints[ib];
      int64_t r = 0;
      bool overflow;
      if (op == "Add") {
        overflow = __builtin_add_overflow(x, y, &r);
      } else if (op == "Sub") {
        overflow = __builtin_sub_overflow(x, y, &r);
      } else if (op == "Mul") {
        overflow = __builtin_mul_overflow(x, y, &r);
      } else {
        if (y == 0) ctx.fail_node(n, "integer division by zero");
        overflow = x == std::numeric_limits<int64_t>::min() && y == -1;
        if (!overflow) r = x / y;
      }
      if (overflow) ctx.fail_node(n, "integer overflow in shape arithmetic");
      out.ints.push_back(r);
    } else {
      const double x = a.real(ia), y = b.real(ib);
      out.reals.push_back(op == "Add" ? x + y : op == "Sub" ? x - y : op == "Mul" ? x * y : x / y);
    }
  }
  return out;
}

using Folder = ConstTensor (*)(Context&, const onnx::NodeProto&);
const std::map<std::string, Folder>& folders() {
  static const std::map<std::string, Folder> table{
      {"Shape", fold_shape},         {"ConstantOfShape", fold_constant_of_shape},
      {"Cast", fold_cast},           {"Reshape", fold_reshape},
      {"Unsqueeze", fold_unsqueeze}, {"Squeeze", fold_squeeze},
      {"Concat", fold_concat},       {"Transpose", fold_transpose},
      {"Slice", fold_slice},         {"Gather", fold_gather},
      {"Add", fold_arithmetic},      {"Sub", fold_arithmetic},
      {"Mul", fold_arithmetic},      {"Div", fold_arithmetic}};
  return table;
}

}  // namespace

bool fold_constant(Context& ctx, const onnx::NodeProto& n) {
  auto it = folders().find(n.op_type());
  if (it == folders().end()) return false;
  // Shape reads only the shape of a tensor; the others fold when every input is a constant.
  if (n.op_type() != "Shape")
    for (int i = 0; i < n.input_size(); ++i)
      if (!n.input(i).empty() && !ctx.is_constant(n.input(i))) return false;
  ctx.set_constant(n.output(0), it->second(ctx, n));
  return true;
}

}  // namespace ipna::onnx_import
