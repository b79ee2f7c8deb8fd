#include "loaders/onnx_loader.h"

#include <onnx/onnx_pb.h>

#include <cmath>
#include <algorithm>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <set>

#include "engine/error.h"

namespace ipna {

const char* const kSupportedOps =
    "Conv, BatchNormalization (inference), Relu, Clip, MaxPool, AveragePool, GlobalAveragePool, Add, Flatten, "
    "Reshape (to [N,-1]), Gemm, MatMul, Identity, Dropout (inference), Constant, Pad (zeros, before Conv or "
    "AveragePool), a trailing Softmax, and shape arithmetic on constants (Shape, ConstantOfShape, Concat, Reshape, "
    "Slice, Transpose, Cast, Unsqueeze, Squeeze, Gather)";

namespace {

struct ConstTensor {
  std::vector<int64_t> dims;
  std::vector<double> data;
};

class Loader {
 public:
  explicit Loader(std::string path) : path_(std::move(path)) {}
  Graph load();

 private:
  [[noreturn]] void fail_node(const onnx::NodeProto& n, const std::string& why) const {
    throw Error(path_ + ": node '" + n.name() + "' (op " + n.op_type() + "): " + why + ". Supported ops: " +
                kSupportedOps);
  }
  [[noreturn]] void fail_attr(const onnx::NodeProto& n, const std::string& attr, const std::string& why) const {
    throw Error(path_ + ": node '" + n.name() + "' (op " + n.op_type() + "), attribute '" + attr + "': " + why);
  }
  ConstTensor to_const(const onnx::TensorProto& t) const;
  const onnx::AttributeProto* attr(const onnx::NodeProto& n, const char* name) const {
    for (const auto& a : n.attribute())
      if (a.name() == name) return &a;
    return nullptr;
  }
  int64_t attr_int(const onnx::NodeProto& n, const char* name, int64_t def) const {
    auto* a = attr(n, name);
    return a ? a->i() : def;
  }
  float attr_float(const onnx::NodeProto& n, const char* name, float def) const {
    auto* a = attr(n, name);
    return a ? a->f() : def;
  }
  std::vector<int64_t> attr_ints(const onnx::NodeProto& n, const char* name) const {
    auto* a = attr(n, name);
    if (!a) return {};
    return {a->ints().begin(), a->ints().end()};
  }
  const ConstTensor& constant(const onnx::NodeProto& n, int i, const char* role) const {
    if (i >= n.input_size() || n.input(i).empty()) fail_node(n, std::string("missing input ") + role);
    auto it = consts_.find(n.input(i));
    if (it == consts_.end())
      fail_node(n, std::string("input ") + role + " ('" + n.input(i) +
                       "') must be a constant initializer (weights computed at run time are not supported)");
    for (size_t j = 0; j < it->second.data.size(); ++j)
      if (!std::isfinite(it->second.data[j]))
        throw Error(path_ + ": initializer '" + n.input(i) + "' (" + role + " of node '" + n.name() +
                    "') has a NaN or Inf value at element " + std::to_string(j));
    return it->second;
  }
  int activation(const onnx::NodeProto& n, int i) const {
    if (i >= n.input_size()) fail_node(n, "missing input " + std::to_string(i));
    auto it = tensors_.find(n.input(i));
    if (it == tensors_.end() && pending_pads_.count(n.input(i)))
      fail_node(n, "input '" + n.input(i) + "' comes from a nonzero Pad; Pad is supported only before a Conv or AveragePool");
    if (it == tensors_.end()) {
      if (consts_.count(n.input(i))) fail_node(n, "input '" + n.input(i) + "' is a constant where a tensor is expected");
      fail_node(n, "input '" + n.input(i) + "' is not produced by any earlier node");
    }
    return it->second;
  }
  Window window(const onnx::NodeProto& n, int kh, int kw, const Shape& in, bool pool);
  int emit(Node node, const std::string& out_name);
  // Evaluates shape arithmetic on constants (and Shape of a tensor, whose
  // size is static with a batch of 1), as exporters emit for F.pad or
  // x.view(x.size(0), -1). Returns false when the node is not such a node.
  bool fold_constant(const onnx::NodeProto& n);
  void alias(const onnx::NodeProto& n, int value);

  std::string path_;
  Graph g_;
  std::map<std::string, ConstTensor> consts_;
  std::map<std::string, int> tensors_;   // ONNX tensor name -> value id
  std::map<std::string, int> consumers_;  // how many nodes (and graph outputs) read a name
  std::map<int, int> producer_;           // value id -> node index in g_
  // A zero-valued Pad waits to be folded into the Conv or AveragePool reading it.
  struct PendingPad {
    int input;
    int top, left, bottom, right;
  };
  std::map<std::string, PendingPad> pending_pads_;
  // If input 0 of n is a pending Pad: its input value and pads, and the pad is consumed.
  std::optional<PendingPad> take_pad(const onnx::NodeProto& n) {
    auto it = pending_pads_.find(n.input(0));
    if (it == pending_pads_.end()) return std::nullopt;
    if (consumers_[n.input(0)] != 1) fail_node(n, "its padded input feeds several nodes; only a Pad followed by one Conv or AveragePool is supported");
    PendingPad p = it->second;
    pending_pads_.erase(it);
    return p;
  }
};

ConstTensor Loader::to_const(const onnx::TensorProto& t) const {
  ConstTensor c;
  c.dims.assign(t.dims().begin(), t.dims().end());
  int64_t count = 1;
  for (auto d : c.dims) count *= d;
  if (t.data_location() == onnx::TensorProto::EXTERNAL)
    throw Error(path_ + ": initializer '" + t.name() + "' uses external data; export with the weights inside the file");
  const std::string& raw = t.raw_data();
  auto bad = [&](size_t have) {
    return Error(path_ + ": initializer '" + t.name() + "' holds " + std::to_string(have) + " values, its dims say " +
                 std::to_string(count) + " (truncated file?)");
  };
  switch (t.data_type()) {
    case onnx::TensorProto::FLOAT:
      if (!raw.empty()) {
        if (raw.size() != static_cast<size_t>(count) * 4) throw bad(raw.size() / 4);
        std::vector<float> f(count);
        std::memcpy(f.data(), raw.data(), raw.size());
        c.data.assign(f.begin(), f.end());
      } else {
        c.data.assign(t.float_data().begin(), t.float_data().end());
      }
      break;
    case onnx::TensorProto::DOUBLE:
      if (!raw.empty()) {
        if (raw.size() != static_cast<size_t>(count) * 8) throw bad(raw.size() / 8);
        c.data.resize(count);
        std::memcpy(c.data.data(), raw.data(), raw.size());
      } else {
        c.data.assign(t.double_data().begin(), t.double_data().end());
      }
      break;
    case onnx::TensorProto::INT64:
      if (!raw.empty()) {
        if (raw.size() != static_cast<size_t>(count) * 8) throw bad(raw.size() / 8);
        std::vector<int64_t> v(count);
        std::memcpy(v.data(), raw.data(), raw.size());
        c.data.assign(v.begin(), v.end());
      } else {
        c.data.assign(t.int64_data().begin(), t.int64_data().end());
      }
      break;
    case onnx::TensorProto::INT32:
      if (!raw.empty()) {
        if (raw.size() != static_cast<size_t>(count) * 4) throw bad(raw.size() / 4);
        std::vector<int32_t> v(count);
        std::memcpy(v.data(), raw.data(), raw.size());
        c.data.assign(v.begin(), v.end());
      } else {
        c.data.assign(t.int32_data().begin(), t.int32_data().end());
      }
      break;
    default:
      throw Error(path_ + ": initializer '" + t.name() + "' has data type " + std::to_string(t.data_type()) +
                  "; only float32, float64, int32 and int64 are supported");
  }
  if (static_cast<int64_t>(c.data.size()) != count) throw bad(c.data.size());
  return c;
}

Window Loader::window(const onnx::NodeProto& n, int kh, int kw, const Shape& in, bool pool) {
  Window w;
  w.kh = kh;
  w.kw = kw;
  auto strides = attr_ints(n, "strides");
  auto pads = attr_ints(n, "pads");
  auto dil = attr_ints(n, "dilations");
  if (!strides.empty()) {
    if (strides.size() != 2) fail_attr(n, "strides", "expected 2 values (2-D only)");
    w.sh = static_cast<int>(strides[0]);
    w.sw = static_cast<int>(strides[1]);
  }
  if (!dil.empty()) {
    if (dil.size() != 2) fail_attr(n, "dilations", "expected 2 values (2-D only)");
    w.dh = static_cast<int>(dil[0]);
    w.dw = static_cast<int>(dil[1]);
  }
  if (!pads.empty()) {
    if (pads.size() != 4) fail_attr(n, "pads", "expected 4 values (top, left, bottom, right)");
    w.pad_top = static_cast<int>(pads[0]);
    w.pad_left = static_cast<int>(pads[1]);
    w.pad_bottom = static_cast<int>(pads[2]);
    w.pad_right = static_cast<int>(pads[3]);
  }
  if (w.sh < 1 || w.sw < 1) fail_attr(n, "strides", "must be positive");
  if (w.dh < 1 || w.dw < 1) fail_attr(n, "dilations", "must be positive");
  if (w.pad_top < 0 || w.pad_left < 0 || w.pad_bottom < 0 || w.pad_right < 0) fail_attr(n, "pads", "must be >= 0");
  std::string auto_pad = attr(n, "auto_pad") ? attr(n, "auto_pad")->s() : "NOTSET";
  if (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
    auto same = [&](int64_t size, int k, int s, int d, int& p0, int& p1) {
      int64_t out = (size + s - 1) / s;
      int64_t total = std::max<int64_t>(0, (out - 1) * s + (int64_t(k) - 1) * d + 1 - size);
      p0 = static_cast<int>(auto_pad == "SAME_UPPER" ? total / 2 : total - total / 2);
      p1 = static_cast<int>(total - p0);
    };
    same(in.dims[1], kh, w.sh, w.dh, w.pad_top, w.pad_bottom);
    same(in.dims[2], kw, w.sw, w.dw, w.pad_left, w.pad_right);
  } else if (auto_pad == "VALID") {
    w.pad_top = w.pad_left = w.pad_bottom = w.pad_right = 0;
  } else if (auto_pad != "NOTSET") {
    fail_attr(n, "auto_pad", "unknown value '" + auto_pad + "'");
  }
  if (pool && attr_int(n, "ceil_mode", 0)) {
    // Output size rounded up, as in ONNX/PyTorch, expressed as extra bottom/right padding;
    // a window may not start in the bottom/right padding.
    auto grow = [&](int64_t size, int k, int s, int d, int p0, int& p1) {
      int64_t span = (int64_t(k) - 1) * d + 1;
      int64_t out = (size + p0 + p1 - span + s - 1) / s + 1;
      if ((out - 1) * s >= size + p0) --out;
      p1 = static_cast<int>(std::max<int64_t>(p1, (out - 1) * s + span - size - p0));
    };
    int pb = w.pad_bottom, pr = w.pad_right;
    grow(in.dims[1], kh, w.sh, w.dh, w.pad_top, w.pad_bottom);
    grow(in.dims[2], kw, w.sw, w.dw, w.pad_left, w.pad_right);
    if (n.op_type() == "AveragePool" && attr_int(n, "count_include_pad", 0) &&
        (pb != w.pad_bottom || pr != w.pad_right))
      fail_attr(n, "ceil_mode", "ceil_mode=1 with count_include_pad=1 is not supported");
  }
  return w;
}

int Loader::emit(Node node, const std::string& out_name) {
  std::vector<Shape> in;
  for (int v : node.inputs) in.push_back(g_.values[v].shape);
  Shape s;
  try {
    s = infer_shape(node, in);
  } catch (const Error& e) {
    throw Error(path_ + ": " + e.what());
  }
  node.output = g_.add_value(out_name, s);
  tensors_[out_name] = node.output;
  producer_[node.output] = static_cast<int>(g_.nodes.size());
  g_.nodes.push_back(std::move(node));
  return g_.nodes.back().output;
}

void Loader::alias(const onnx::NodeProto& n, int value) {
  tensors_[n.output(0)] = value;
  g_.aliases[n.output(0)] = value;
}

namespace {
int64_t count_of(const std::vector<int64_t>& dims) {
  int64_t c = 1;
  for (auto d : dims) c *= d;
  return c;
}
std::vector<int64_t> strides_of(const std::vector<int64_t>& dims) {
  std::vector<int64_t> st(dims.size(), 1);
  for (int i = static_cast<int>(dims.size()) - 2; i >= 0; --i) st[i] = st[i + 1] * dims[i + 1];
  return st;
}
int64_t norm_axis(int64_t a, size_t rank) { return a < 0 ? a + static_cast<int64_t>(rank) : a; }
}  // namespace

bool Loader::fold_constant(const onnx::NodeProto& n) {
  static const std::set<std::string> kOps{"Shape", "ConstantOfShape", "Concat", "Reshape", "Slice", "Transpose",
                                          "Cast", "Unsqueeze", "Squeeze", "Gather"};
  const std::string& op = n.op_type();
  if (!kOps.count(op)) return false;
  if (op == "Shape") {
    auto it = tensors_.find(n.input(0));
    if (it == tensors_.end()) return false;
    ConstTensor c;
    c.dims = {static_cast<int64_t>(g_.values[it->second].shape.rank() + 1)};
    c.data.push_back(1);  // batch
    for (auto d : g_.values[it->second].shape.dims) c.data.push_back(static_cast<double>(d));
    consts_[n.output(0)] = c;
    return true;
  }
  std::vector<const ConstTensor*> in;
  for (int i = 0; i < n.input_size(); ++i) {
    if (n.input(i).empty()) {
      in.push_back(nullptr);
      continue;
    }
    auto it = consts_.find(n.input(i));
    if (it == consts_.end()) return false;  // a real tensor: handled (or refused) as an op
    in.push_back(&it->second);
  }
  auto ints = [](const ConstTensor* t) {
    std::vector<int64_t> v;
    if (t)
      for (double d : t->data) v.push_back(static_cast<int64_t>(d));
    return v;
  };
  ConstTensor out;
  const ConstTensor& x = *in.at(0);
  if (op == "ConstantOfShape") {
    out.dims = ints(&x);
    double value = 0;
    if (auto* a = attr(n, "value")) value = to_const(a->t()).data.at(0);
    out.data.assign(count_of(out.dims), value);
  } else if (op == "Cast") {
    out = x;
    const int64_t to = attr_int(n, "to", 1);
    if (to != onnx::TensorProto::FLOAT && to != onnx::TensorProto::DOUBLE)
      for (double& v : out.data) v = std::trunc(v);
  } else if (op == "Reshape") {
    out.data = x.data;
    std::vector<int64_t> shape = ints(in.at(1));
    int64_t known = 1, infer = -1;
    for (size_t i = 0; i < shape.size(); ++i) {
      if (shape[i] == 0) shape[i] = x.dims.at(i);
      if (shape[i] == -1)
        infer = static_cast<int64_t>(i);
      else
        known *= shape[i];
    }
    if (infer >= 0) shape[infer] = known ? count_of(x.dims) / known : 0;
    out.dims = shape;
  } else if (op == "Unsqueeze" || op == "Squeeze") {
    std::vector<int64_t> axes = n.input_size() > 1 ? ints(in.at(1)) : attr_ints(n, "axes");
    out.data = x.data;
    if (op == "Unsqueeze") {
      out.dims = x.dims;
      const size_t rank = x.dims.size() + axes.size();
      for (auto& a : axes) a = norm_axis(a, rank);
      std::sort(axes.begin(), axes.end());
      for (auto a : axes) out.dims.insert(out.dims.begin() + a, 1);
    } else {
      for (auto& a : axes) a = norm_axis(a, x.dims.size());
      for (size_t i = 0; i < x.dims.size(); ++i)
        if (!(axes.empty() ? x.dims[i] == 1 : std::count(axes.begin(), axes.end(), static_cast<int64_t>(i)) > 0))
          out.dims.push_back(x.dims[i]);
    }
  } else if (op == "Concat") {
    const int64_t axis = norm_axis(attr_int(n, "axis", 0), x.dims.size());
    out.dims = x.dims;
    out.dims[axis] = 0;
    for (auto* t : in) out.dims[axis] += t->dims.at(axis);
    const int64_t outer = count_of(std::vector<int64_t>(x.dims.begin(), x.dims.begin() + axis));
    for (int64_t o = 0; o < outer; ++o)
      for (auto* t : in) {
        const int64_t block = count_of(t->dims) / std::max<int64_t>(outer, 1);
        out.data.insert(out.data.end(), t->data.begin() + o * block, t->data.begin() + (o + 1) * block);
      }
  } else if (op == "Transpose") {
    std::vector<int64_t> perm = attr_ints(n, "perm");
    if (perm.empty())
      for (int64_t i = static_cast<int64_t>(x.dims.size()) - 1; i >= 0; --i) perm.push_back(i);
    for (auto p : perm) out.dims.push_back(x.dims.at(p));
    const auto in_st = strides_of(x.dims), out_st = strides_of(out.dims);
    out.data.resize(x.data.size());
    for (int64_t i = 0; i < static_cast<int64_t>(out.data.size()); ++i) {
      int64_t rem = i, src = 0;
      for (size_t d = 0; d < out.dims.size(); ++d) {
        src += (rem / out_st[d]) * in_st[perm[d]];
        rem %= out_st[d];
      }
      out.data[i] = x.data[src];
    }
  } else if (op == "Slice") {
    std::vector<int64_t> starts = ints(in.at(1)), ends = ints(in.at(2));
    std::vector<int64_t> axes = in.size() > 3 && in[3] ? ints(in[3]) : std::vector<int64_t>();
    std::vector<int64_t> steps = in.size() > 4 && in[4] ? ints(in[4]) : std::vector<int64_t>();
    const size_t rank = x.dims.size();
    std::vector<int64_t> lo(rank, 0), step(rank, 1), cnt = x.dims;
    for (size_t i = 0; i < starts.size(); ++i) {
      const int64_t ax = axes.empty() ? static_cast<int64_t>(i) : norm_axis(axes[i], rank);
      const int64_t dim = x.dims.at(ax), st = steps.empty() ? 1 : steps[i];
      auto clampi = [&](int64_t v) {
        if (v < 0) v += dim;
        return st > 0 ? std::clamp<int64_t>(v, 0, dim) : std::clamp<int64_t>(v, -1, dim - 1);
      };
      const int64_t b = clampi(starts[i]), e = clampi(ends[i]);
      lo[ax] = b;
      step[ax] = st;
      cnt[ax] = st > 0 ? std::max<int64_t>(0, (e - b + st - 1) / st) : std::max<int64_t>(0, (b - e - st - 1) / -st);
    }
    out.dims = cnt;
    const auto in_st = strides_of(x.dims), out_st = strides_of(cnt);
    out.data.resize(count_of(cnt));
    for (int64_t i = 0; i < static_cast<int64_t>(out.data.size()); ++i) {
      int64_t rem = i, src = 0;
      for (size_t d = 0; d < rank; ++d) {
        src += (lo[d] + (rem / out_st[d]) * step[d]) * in_st[d];
        rem %= out_st[d];
      }
      out.data[i] = x.data[src];
    }
  } else if (op == "Gather") {
    const int64_t axis = norm_axis(attr_int(n, "axis", 0), x.dims.size());
    const ConstTensor& idx = *in.at(1);
    const int64_t outer = count_of(std::vector<int64_t>(x.dims.begin(), x.dims.begin() + axis));
    const int64_t inner = count_of(std::vector<int64_t>(x.dims.begin() + axis + 1, x.dims.end()));
    out.dims.assign(x.dims.begin(), x.dims.begin() + axis);
    out.dims.insert(out.dims.end(), idx.dims.begin(), idx.dims.end());
    out.dims.insert(out.dims.end(), x.dims.begin() + axis + 1, x.dims.end());
    for (int64_t o = 0; o < outer; ++o)
      for (double iv : idx.data) {
        int64_t k = static_cast<int64_t>(iv);
        if (k < 0) k += x.dims[axis];
        for (int64_t j = 0; j < inner; ++j) out.data.push_back(x.data[(o * x.dims[axis] + k) * inner + j]);
      }
  }
  consts_[n.output(0)] = std::move(out);
  return true;
}

Graph Loader::load() {
  std::ifstream f(path_, std::ios::binary);
  if (!f) throw Error("cannot open model file '" + path_ + "': " + std::strerror(errno));
  onnx::ModelProto model;
  if (!model.ParseFromIstream(&f))
    throw Error(path_ + ": not a valid ONNX model (protobuf parsing failed: the file is truncated or not ONNX)");
  if (!model.has_graph() || model.graph().node_size() == 0)
    throw Error(path_ + ": the ONNX file has no graph nodes (truncated or not a model?)");
  const onnx::GraphProto& gp = model.graph();
  g_.source = path_;

  for (const auto& t : gp.initializer()) consts_[t.name()] = to_const(t);
  for (const auto& n : gp.node())
    for (const auto& i : n.input()) consumers_[i]++;
  for (const auto& o : gp.output()) consumers_[o.name()]++;

  // The data input: the first graph input that is not an initializer.
  for (const auto& in : gp.input()) {
    if (consts_.count(in.name())) continue;
    const auto& tt = in.type().tensor_type();
    if (tt.elem_type() != onnx::TensorProto::FLOAT)
      throw Error(path_ + ": input '" + in.name() + "' must be float32");
    std::vector<int64_t> dims;
    for (int i = 1; i < tt.shape().dim_size(); ++i) {
      const auto& d = tt.shape().dim(i);
      if (!d.has_dim_value() || d.dim_value() <= 0)
        throw Error(path_ + ": input '" + in.name() + "' dimension " + std::to_string(i) +
                    " is not a fixed size (only the batch dimension may be symbolic)");
      dims.push_back(d.dim_value());
    }
    if (dims.size() != 3 && dims.size() != 1)
      throw Error(path_ + ": input '" + in.name() + "' must be [N,C,H,W] or [N,F], got rank " +
                  std::to_string(dims.size() + 1));
    g_.input = g_.add_value(in.name(), Shape(dims));
    tensors_[in.name()] = g_.input;
    break;
  }
  if (g_.input < 0) throw Error(path_ + ": the graph has no data input");
  if (gp.output_size() != 1)
    throw Error(path_ + ": the model must have exactly one output (logits), it has " + std::to_string(gp.output_size()));
  const std::string out_name = gp.output(0).name();

  for (const auto& n : gp.node()) {
    const std::string& op = n.op_type();
    if (!n.domain().empty() && n.domain() != "ai.onnx") fail_node(n, "operator domain '" + n.domain() + "' is not supported");
    Node node;
    node.name = n.name().empty() ? (op + ":" + (n.output_size() ? n.output(0) : "?")) : n.name();
    if (fold_constant(n)) continue;
    if (op == "Constant") {
      auto* a = attr(n, "value");
      if (!a || !a->has_t()) fail_attr(n, "value", "only tensor constants are supported");
      consts_[n.output(0)] = to_const(a->t());
      continue;
    }
    if (op == "Identity" || op == "Dropout") {
      if (op == "Dropout" && n.output_size() > 1 && !n.output(1).empty() && consumers_[n.output(1)])
        fail_node(n, "its mask output is used (training graph?)");
      if (consts_.count(n.input(0))) {
        consts_[n.output(0)] = consts_[n.input(0)];
        continue;
      }
      alias(n, activation(n, 0));
      continue;
    }
    if (op == "Flatten") {
      int64_t axis = attr_int(n, "axis", 1);
      if (axis != 1) fail_attr(n, "axis", "only axis=1 (keep the batch dimension) is supported");
      alias(n, activation(n, 0));
      continue;
    }
    if (op == "Reshape") {
      int x = activation(n, 0);
      const ConstTensor& shp = constant(n, 1, "shape");
      const int64_t per = g_.values[x].shape.numel();
      bool ok = shp.data.size() == 2 &&
                (shp.data[1] == -1 || shp.data[1] == per) && (shp.data[0] != -1 || shp.data[1] == per);
      if (!ok) fail_node(n, "only a reshape to [N, -1] (flattening each sample) is supported");
      alias(n, x);
      continue;
    }
    if (op == "Softmax") {
      if (n.output(0) != out_name) fail_node(n, "Softmax is supported only as the model's last node");
      alias(n, activation(n, 0));  // the engine applies softmax itself (target = probability)
      continue;
    }
    if (op == "Pad") {
      int x = activation(n, 0);
      std::string mode = attr(n, "mode") ? attr(n, "mode")->s() : "constant";
      if (mode != "constant") fail_attr(n, "mode", "only constant padding is supported, got '" + mode + "'");
      std::vector<int64_t> pads = attr_ints(n, "pads");
      if (n.input_size() > 1 && !n.input(1).empty()) {
        const auto& p = constant(n, 1, "pads").data;
        pads.assign(p.begin(), p.end());
      }
      double value = attr_float(n, "value", 0.f);
      if (n.input_size() > 2 && !n.input(2).empty()) value = constant(n, 2, "constant_value").data.at(0);
      if (value != 0.0) fail_node(n, "only zero padding is supported");
      if (pads.size() != 8 || pads[0] || pads[1] || pads[4] || pads[5])
        fail_node(n, "only padding of the two spatial axes of an N,C,H,W tensor is supported");
      for (auto p : pads)
        if (p < 0) fail_node(n, "negative pads (cropping) are not supported");
      if (!pads[2] && !pads[3] && !pads[6] && !pads[7]) {
        alias(n, x);
        continue;
      }
      pending_pads_[n.output(0)] = {x, static_cast<int>(pads[2]), static_cast<int>(pads[3]), static_cast<int>(pads[6]),
                                    static_cast<int>(pads[7])};
      continue;
    }
    if (op == "Conv") {
      node.kind = OpKind::Conv;
      auto pad = take_pad(n);
      int x = pad ? pad->input : activation(n, 0);
      const ConstTensor& w = constant(n, 1, "W");
      if (w.dims.size() != 4) fail_node(n, "only 2-D convolution (4-D weight) is supported");
      if (g_.values[x].shape.rank() != 3) fail_node(n, "input must be C,H,W");
      auto ks = attr_ints(n, "kernel_shape");
      if (!ks.empty() && (ks.size() != 2 || ks[0] != w.dims[2] || ks[1] != w.dims[3]))
        fail_attr(n, "kernel_shape", "does not match the weight");
      node.groups = static_cast<int>(attr_int(n, "group", 1));
      node.win = window(n, static_cast<int>(w.dims[2]), static_cast<int>(w.dims[3]), g_.values[x].shape, false);
      if (pad) {
        node.win.pad_top += pad->top;
        node.win.pad_left += pad->left;
        node.win.pad_bottom += pad->bottom;
        node.win.pad_right += pad->right;
      }
      if (w.dims[1] * node.groups != g_.values[x].shape.dims[0])
        fail_node(n, "weight expects " + std::to_string(w.dims[1] * node.groups) + " input channels, input has " +
                         std::to_string(g_.values[x].shape.dims[0]));
      node.weight = w.data;
      if (n.input_size() > 2 && !n.input(2).empty()) node.bias = constant(n, 2, "B").data;
      node.inputs = {x};
      emit(std::move(node), n.output(0));
      continue;
    }
    if (op == "BatchNormalization") {
      if (attr_int(n, "training_mode", 0)) fail_attr(n, "training_mode", "only inference mode is supported");
      if (n.output_size() > 1)
        for (int i = 1; i < n.output_size(); ++i)
          if (!n.output(i).empty() && consumers_[n.output(i)]) fail_node(n, "running-statistics outputs are used (training graph?)");
      int x = activation(n, 0);
      const auto& scale = constant(n, 1, "scale").data;
      const auto& bias = constant(n, 2, "B").data;
      const auto& mean = constant(n, 3, "input_mean").data;
      const auto& var = constant(n, 4, "input_var").data;
      const double eps = attr_float(n, "epsilon", 1e-5f);
      const int64_t c = g_.values[x].shape.channels();
      if (static_cast<int64_t>(scale.size()) != c || bias.size() != scale.size() || mean.size() != scale.size() ||
          var.size() != scale.size())
        fail_node(n, "scale, B, mean and var need one value per channel (" + std::to_string(c) + ")");
      std::vector<double> s(c), t(c);
      for (int64_t i = 0; i < c; ++i) {
        if (var[i] + eps <= 0) fail_node(n, "variance + epsilon must be positive");
        s[i] = scale[i] / std::sqrt(var[i] + eps);
        t[i] = bias[i] - mean[i] * s[i];
      }
      auto p = producer_.find(x);
      const bool foldable = p != producer_.end() && g_.nodes[p->second].kind == OpKind::Conv &&
                            consumers_[g_.values[x].name] == 1 && x != g_.input;
      if (foldable) {
        // conv(x)*s + t == conv with W*s and bias b*s + t.
        Node& conv = g_.nodes[p->second];
        const int64_t per_out = static_cast<int64_t>(conv.weight.size()) / c;
        for (int64_t co = 0; co < c; ++co)
          for (int64_t j = 0; j < per_out; ++j) conv.weight[co * per_out + j] *= s[co];
        if (conv.bias.empty()) conv.bias.assign(c, 0.0);
        for (int64_t co = 0; co < c; ++co) conv.bias[co] = conv.bias[co] * s[co] + t[co];
        tensors_.erase(g_.values[x].name);
        g_.values[x].name = n.output(0);
        tensors_[n.output(0)] = x;
        continue;
      }
      node.kind = OpKind::Affine;
      node.weight = s;
      node.bias = t;
      node.inputs = {x};
      emit(std::move(node), n.output(0));
      continue;
    }
    if (op == "Relu" || op == "Clip") {
      node.kind = OpKind::Clip;
      node.lo = op == "Relu" ? 0.0 : -INFINITY;
      node.hi = INFINITY;
      if (op == "Clip") {
        if (attr(n, "min")) node.lo = attr_float(n, "min", 0);
        if (attr(n, "max")) node.hi = attr_float(n, "max", 0);
        if (n.input_size() > 1 && !n.input(1).empty()) node.lo = constant(n, 1, "min").data.at(0);
        if (n.input_size() > 2 && !n.input(2).empty()) node.hi = constant(n, 2, "max").data.at(0);
      }
      node.inputs = {activation(n, 0)};
      emit(std::move(node), n.output(0));
      continue;
    }
    if (op == "MaxPool" || op == "AveragePool") {
      if (n.output_size() > 1 && !n.output(1).empty()) fail_node(n, "the Indices output is not supported");
      auto pad = op == "AveragePool" ? take_pad(n) : std::nullopt;
      int x = pad ? pad->input : activation(n, 0);
      if (g_.values[x].shape.rank() != 3) fail_node(n, "input must be C,H,W");
      auto ks = attr_ints(n, "kernel_shape");
      if (ks.size() != 2) fail_attr(n, "kernel_shape", "expected 2 values (2-D pooling)");
      node.kind = op == "MaxPool" ? OpKind::MaxPool : OpKind::AvgPool;
      node.win = window(n, static_cast<int>(ks[0]), static_cast<int>(ks[1]), g_.values[x].shape, true);
      if (op == "AveragePool") node.win.count_include_pad = attr_int(n, "count_include_pad", 0) != 0;
      if (pad) {
        // The padded zeros were real elements of the pool's input: they count.
        const Window& w = node.win;
        if (!w.count_include_pad && (w.pad_top || w.pad_left || w.pad_bottom || w.pad_right))
          fail_node(n, "a Pad before an AveragePool that has its own pads and count_include_pad=0 is not supported");
        if (attr_int(n, "ceil_mode", 0)) fail_node(n, "a Pad before an AveragePool with ceil_mode=1 is not supported");
        node.win.count_include_pad = true;
        node.win.pad_top += pad->top;
        node.win.pad_left += pad->left;
        node.win.pad_bottom += pad->bottom;
        node.win.pad_right += pad->right;
      }
      if (op == "MaxPool" && attr_int(n, "storage_order", 0)) fail_attr(n, "storage_order", "only 0 is supported");
      node.inputs = {x};
      emit(std::move(node), n.output(0));
      continue;
    }
    if (op == "GlobalAveragePool") {
      int x = activation(n, 0);
      const Shape& s = g_.values[x].shape;
      if (s.rank() != 3) fail_node(n, "input must be C,H,W");
      node.kind = OpKind::AvgPool;
      node.win.kh = static_cast<int>(s.dims[1]);
      node.win.kw = static_cast<int>(s.dims[2]);
      node.inputs = {x};
      emit(std::move(node), n.output(0));
      continue;
    }
    if (op == "Add") {
      const bool c0 = consts_.count(n.input(0)), c1 = consts_.count(n.input(1));
      if (c0 && c1) fail_node(n, "adding two constants is not supported");
      if (!c0 && !c1) {
        node.kind = OpKind::Add;
        node.inputs = {activation(n, 0), activation(n, 1)};
        emit(std::move(node), n.output(0));
        continue;
      }
      // A constant bias: one value per channel (or per feature) becomes an Affine.
      int x = activation(n, c0 ? 1 : 0);
      const ConstTensor& b = constant(n, c0 ? 0 : 1, "bias");
      const int64_t ch = g_.values[x].shape.channels();
      int64_t nonunit = 0, count = 1;
      for (auto d : b.dims) {
        count *= d;
        nonunit += d != 1;
      }
      if (!(count == ch && nonunit <= 1) && count != 1)
        fail_node(n, "a constant addend must hold one value per channel; got dims of " + std::to_string(b.dims.size()) +
                         " axes with " + std::to_string(count) + " values");
      node.kind = OpKind::Affine;
      node.weight.assign(ch, 1.0);
      node.bias = count == 1 ? std::vector<double>(ch, b.data[0]) : b.data;
      node.inputs = {x};
      emit(std::move(node), n.output(0));
      continue;
    }
    if (op == "Gemm" || op == "MatMul") {
      int x = activation(n, 0);
      const int64_t k = g_.values[x].shape.numel();
      const ConstTensor& b = constant(n, 1, "B");
      if (b.dims.size() != 2) fail_node(n, "B must be a 2-D constant");
      bool trans_b = op == "Gemm" && attr_int(n, "transB", 0);
      if (op == "Gemm" && attr_int(n, "transA", 0)) fail_attr(n, "transA", "only transA=0 is supported");
      const double alpha = op == "Gemm" ? attr_float(n, "alpha", 1.f) : 1.0;
      const double beta = op == "Gemm" ? attr_float(n, "beta", 1.f) : 1.0;
      const int64_t in_dim = trans_b ? b.dims[1] : b.dims[0], out_dim = trans_b ? b.dims[0] : b.dims[1];
      if (in_dim != k)
        fail_node(n, "B expects " + std::to_string(in_dim) + " input features, the input has " + std::to_string(k));
      node.kind = OpKind::Linear;
      node.weight.resize(in_dim * out_dim);
      for (int64_t o = 0; o < out_dim; ++o)
        for (int64_t i = 0; i < in_dim; ++i)
          node.weight[o * in_dim + i] = alpha * (trans_b ? b.data[o * in_dim + i] : b.data[i * out_dim + o]);
      if (op == "Gemm" && n.input_size() > 2 && !n.input(2).empty()) {
        const ConstTensor& c = constant(n, 2, "C");
        if (static_cast<int64_t>(c.data.size()) != out_dim && c.data.size() != 1)
          fail_node(n, "C must hold one value per output feature");
        node.bias.resize(out_dim);
        for (int64_t o = 0; o < out_dim; ++o) node.bias[o] = beta * c.data[c.data.size() == 1 ? 0 : o];
      }
      node.inputs = {x};
      emit(std::move(node), n.output(0));
      continue;
    }
    fail_node(n, "unsupported operator");
  }

  auto out = tensors_.find(out_name);
  if (out == tensors_.end()) throw Error(path_ + ": the model output '" + out_name + "' is not computed by any node");
  g_.output = out->second;
  if (g_.output == g_.input) throw Error(path_ + ": the model output is its input");
  // The output keeps the name the model file gives it, also through aliases.
  if (g_.values[g_.output].name != out_name) g_.aliases[out_name] = g_.output;

  // Drop nodes that do not lead to the output.
  std::vector<bool> needed(g_.values.size(), false);
  needed[g_.output] = true;
  std::vector<Node> kept;
  for (auto it = g_.nodes.rbegin(); it != g_.nodes.rend(); ++it)
    if (needed[it->output]) {
      for (int v : it->inputs) needed[v] = true;
      kept.push_back(*it);
    }
  g_.nodes.assign(kept.rbegin(), kept.rend());
  g_.validate();
  return std::move(g_);
}

}  // namespace

Graph load_onnx(const std::string& path) { return Loader(path).load(); }

SplitModel load_split_model(const std::string& path, const std::string& split_name) {
  return split_graph(load_onnx(path), split_name);
}

SplitModel load_two_part_model(const std::string& first_path, const std::string& second_path) {
  Graph a = load_onnx(first_path), b = load_onnx(second_path);
  return join_split(a, b);
}

}  // namespace ipna
