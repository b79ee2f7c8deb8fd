// Graph rewrites of the ONNX import: a BatchNormalization (or a constant
// per-channel affine) after a Conv that nothing else reads becomes part of the
// Conv; a zero Pad is remembered and merged into the padding of the Conv or
// AveragePool that reads it; nodes that do not lead to the output go; and,
// before import, the decompositions of LayerNorm and GELU that older
// exporters write become one node each.
#include <cmath>
#include <cstring>
#include <set>
#include <vector>

#include "loaders/onnx_context.h"

namespace ipna::onnx_import {

bool fold_affine_into_conv(Context& ctx, int x, const std::vector<double>& s, const std::vector<double>& t,
                           const std::string& out_name) {
  const int p = ctx.producer(x);
  if (p < 0 || x == ctx.graph.input) return false;
  Node& conv = ctx.graph.nodes[p];
  if (conv.kind != OpKind::Conv || ctx.consumers(ctx.graph.values[x].name) != 1) return false;
  // conv(x)*s + t == conv with W*s and bias b*s + t; the scale stays apart from the float32 kernel.
  const int64_t c = static_cast<int64_t>(s.size());
  if (conv.kernel_scale.empty()) conv.kernel_scale.assign(c, 1.0);
  for (int64_t co = 0; co < c; ++co) conv.kernel_scale[co] *= s[co];
  if (conv.bias.empty()) conv.bias.assign(c, 0.0);
  for (int64_t co = 0; co < c; ++co) conv.bias[co] = conv.bias[co] * s[co] + t[co];
  ctx.rename(x, out_name);
  return true;
}

void defer_pad(Context& ctx, const onnx::NodeProto& n, int x, const std::vector<int64_t>& pads) {
  if (ctx.shape_of(x).rank() != 3 || pads.size() != 8 || pads[0] || pads[1] || pads[4] || pads[5])
    ctx.fail_node(n, "only padding of the two spatial axes of an N,C,H,W tensor is supported");
  for (auto p : pads)
    if (p < 0) ctx.fail_node(n, "negative pads (cropping) are not supported");
    else if (p > kMaxWindow) ctx.fail_node(n, "pads above " + std::to_string(kMaxWindow) + " are not supported");
  if (!pads[2] && !pads[3] && !pads[6] && !pads[7]) {
    ctx.alias(n.output(0), x);
    return;
  }
  ctx.pending_pads[n.output(0)] = {x, static_cast<int>(pads[2]), static_cast<int>(pads[3]), static_cast<int>(pads[6]),
                                   static_cast<int>(pads[7])};
}

std::optional<Context::PendingPad> take_pad(Context& ctx, const onnx::NodeProto& n) {
  const std::string& in = Context::input_name(n, 0);
  auto it = ctx.pending_pads.find(in);
  if (it == ctx.pending_pads.end()) return std::nullopt;
  if (ctx.consumers(in) != 1)
    ctx.fail_node(n, "its padded input feeds several nodes; only a Pad followed by one Conv or AveragePool is supported");
  Context::PendingPad p = it->second;
  ctx.pending_pads.erase(it);
  return p;
}

void remove_dead_nodes(Graph& g) {
  std::vector<bool> needed(g.values.size(), false);
  needed[g.output] = true;
  std::vector<Node> kept;
  for (auto it = g.nodes.rbegin(); it != g.nodes.rend(); ++it)
    if (needed[it->output]) {
      for (int v : it->inputs) needed[v] = true;
      kept.push_back(std::move(*it));
    }
  g.nodes.assign(std::make_move_iterator(kept.rbegin()), std::make_move_iterator(kept.rend()));
}

}  // namespace ipna::onnx_import

namespace ipna::onnx_import {
namespace {

// A constant with one value (an initializer or a Constant node), for matching patterns.
class Scalars {
 public:
  explicit Scalars(const onnx::GraphProto& g) {
    for (const auto& t : g.initializer()) tensors_[t.name()] = &t;
    for (const auto& n : g.node())
      if (n.op_type() == "Constant" && n.output_size() == 1)
        for (const auto& a : n.attribute())
          if (a.name() == "value" && a.has_t()) tensors_[n.output(0)] = &a.t();
  }
  bool is_constant(const std::string& name) const { return tensors_.count(name) > 0; }
  std::optional<double> value(const std::string& name) const {
    auto it = tensors_.find(name);
    if (it == tensors_.end()) return std::nullopt;
    const onnx::TensorProto& t = *it->second;
    int64_t count = 1;
    for (auto d : t.dims()) count *= d;
    if (count != 1) return std::nullopt;
    const std::string& raw = t.raw_data();
    switch (t.data_type()) {
      case onnx::TensorProto::FLOAT:
        if (raw.size() == 4) return static_cast<double>(read<float>(raw));
        if (t.float_data_size() == 1) return t.float_data(0);
        break;
      case onnx::TensorProto::DOUBLE:
        if (raw.size() == 8) return read<double>(raw);
        if (t.double_data_size() == 1) return t.double_data(0);
        break;
      case onnx::TensorProto::INT64:
        if (raw.size() == 8) return static_cast<double>(read<int64_t>(raw));
        if (t.int64_data_size() == 1) return static_cast<double>(t.int64_data(0));
        break;
      default: break;
    }
    return std::nullopt;
  }
  std::optional<std::vector<int64_t>> ints(const std::string& name) const {
    auto it = tensors_.find(name);
    if (it == tensors_.end() || it->second->data_type() != onnx::TensorProto::INT64) return std::nullopt;
    const onnx::TensorProto& t = *it->second;
    std::vector<int64_t> v(t.int64_data().begin(), t.int64_data().end());
    if (v.empty() && t.raw_data().size() % 8 == 0)
      for (size_t i = 0; i < t.raw_data().size(); i += 8) v.push_back(read<int64_t>(t.raw_data().substr(i, 8)));
    return v;
  }

 private:
  template <typename V>
  static V read(const std::string& raw) {
    V v;
    std::memcpy(&v, raw.data(), sizeof v);
    return v;
  }
  std::map<std::string, const onnx::TensorProto*> tensors_;
};

class Matcher {
 public:
  explicit Matcher(onnx::GraphProto& g) : g_(g), scalars_(g) {
    for (int i = 0; i < g.node_size(); ++i)
      for (const auto& in : g.node(i).input()) readers_[in].push_back(i);
    for (const auto& o : g.output()) readers_[o.name()].push_back(-1);  // a graph output: never fused away
  }
  const onnx::NodeProto& node(int i) const { return g_.node(i); }
  // The one node reading `name`, when it is of op `op`, has one output and is not removed; -1 otherwise.
  int only_reader(const std::string& name, const char* op) const {
    auto it = readers_.find(name);
    if (it == readers_.end() || it->second.size() != 1 || it->second[0] < 0) return -1;
    const int r = it->second[0];
    return node(r).op_type() == op && node(r).output_size() == 1 && !removed_.count(r) ? r : -1;
  }
  const std::vector<int>& readers(const std::string& name) const {
    static const std::vector<int> kNone;
    auto it = readers_.find(name);
    return it == readers_.end() ? kNone : it->second;
  }
  // For a two-input node reading `name`: its other input.
  static std::string other_input(const onnx::NodeProto& n, const std::string& name) {
    if (n.input_size() != 2) return "";
    return n.input(0) == name ? n.input(1) : (n.input(1) == name ? n.input(0) : "");
  }
  bool scalar_is(const std::string& name, double v, double tol) const {
    auto s = scalars_.value(name);
    return s && std::abs(*s - v) <= tol;
  }
  std::optional<std::vector<int64_t>> reduce_axes(const onnx::NodeProto& n) const {
    for (const auto& a : n.attribute()) {
      if (a.name() == "keepdims" && a.i() == 0) return std::nullopt;
      if (a.name() == "axes") return std::vector<int64_t>(a.ints().begin(), a.ints().end());
    }
    if (n.input_size() > 1) return scalars_.ints(n.input(1));
    return std::nullopt;
  }
  const Scalars& scalars() const { return scalars_; }
  // Replaces `nodes` by `fused`, placed where the last of them was.
  void replace(const std::vector<int>& nodes, onnx::NodeProto fused) {
    int last = -1;
    for (int i : nodes) {
      removed_.insert(i);
      last = std::max(last, i);
    }
    fused_[last] = std::move(fused);
  }
  void apply() {
    if (fused_.empty()) return;
    std::vector<onnx::NodeProto> out;
    for (int i = 0; i < g_.node_size(); ++i) {
      auto f = fused_.find(i);
      if (f != fused_.end())
        out.push_back(std::move(f->second));
      else if (!removed_.count(i))
        out.push_back(std::move(*g_.mutable_node(i)));
    }
    g_.clear_node();
    for (auto& n : out) *g_.add_node() = std::move(n);
  }
  bool removed(int i) const { return removed_.count(i) > 0; }

 private:
  onnx::GraphProto& g_;
  Scalars scalars_;
  std::map<std::string, std::vector<int>> readers_;
  std::set<int> removed_;
  std::map<int, onnx::NodeProto> fused_;
};

onnx::NodeProto make_node(const std::string& op, const std::string& name, std::vector<std::string> inputs,
                          const std::string& output) {
  onnx::NodeProto n;
  n.set_op_type(op);
  n.set_name(name);
  for (auto& i : inputs) n.add_input(i);
  n.add_output(output);
  return n;
}

// ReduceMean(x) -> Sub(x, mean) -> Pow(2) -> ReduceMean -> Add(eps) -> Sqrt -> Div(sub, sqrt) [-> Mul(gamma) -> Add(beta)]
void fuse_layer_norms(Matcher& m, int r1) {
  const onnx::NodeProto& n1 = m.node(r1);
  const auto axes = m.reduce_axes(n1);
  if (!axes || axes->size() != 1 || n1.input_size() < 1 || n1.output_size() != 1) return;
  const std::string& x = n1.input(0);
  const int sub = m.only_reader(n1.output(0), "Sub");
  if (sub < 0 || m.node(sub).input_size() != 2 || m.node(sub).input(0) != x || m.node(sub).input(1) != n1.output(0))
    return;
  const std::string& d = m.node(sub).output(0);
  const auto& rd = m.readers(d);
  if (rd.size() != 2 || rd[0] < 0 || rd[1] < 0) return;
  const int pow = m.node(rd[0]).op_type() == "Pow" ? rd[0] : rd[1], div = pow == rd[0] ? rd[1] : rd[0];
  if (m.node(pow).op_type() != "Pow" || m.node(div).op_type() != "Div" || m.node(pow).input_size() != 2 ||
      m.node(div).input_size() != 2 || m.node(pow).output_size() != 1 || m.node(div).output_size() != 1 || m.node(pow).input(0) != d || !m.scalar_is(m.node(pow).input(1), 2.0, 0) ||
      m.node(div).input(0) != d)
    return;
  const int r2 = m.only_reader(m.node(pow).output(0), "ReduceMean");
  if (r2 < 0 || m.reduce_axes(m.node(r2)) != axes) return;
  const int add = m.only_reader(m.node(r2).output(0), "Add");
  if (add < 0) return;
  const std::string eps_name = Matcher::other_input(m.node(add), m.node(r2).output(0));
  const auto eps = m.scalars().value(eps_name);
  if (!eps || !(*eps > 0)) return;
  const int sqrt = m.only_reader(m.node(add).output(0), "Sqrt");
  if (sqrt < 0 || m.only_reader(m.node(sqrt).output(0), "Div") != div || m.node(div).input(1) != m.node(sqrt).output(0))
    return;
  std::vector<int> nodes{r1, sub, pow, r2, add, sqrt, div};
  std::string gamma, beta, out = m.node(div).output(0);
  const int mul = m.only_reader(out, "Mul");
  if (mul >= 0 && m.scalars().is_constant(Matcher::other_input(m.node(mul), out))) {
    gamma = Matcher::other_input(m.node(mul), out);
    out = m.node(mul).output(0);
    nodes.push_back(mul);
    const int addb = m.only_reader(out, "Add");
    if (addb >= 0 && m.scalars().is_constant(Matcher::other_input(m.node(addb), out))) {
      beta = Matcher::other_input(m.node(addb), out);
      out = m.node(addb).output(0);
      nodes.push_back(addb);
    }
  }
  onnx::NodeProto ln = make_node("LayerNormalization", n1.name() + "/LayerNormalization", {x, gamma, beta}, out);
  auto* a = ln.add_attribute();
  a->set_name("axis");
  a->set_type(onnx::AttributeProto::INT);
  a->set_i((*axes)[0]);
  auto* e = ln.add_attribute();
  e->set_name("epsilon");
  e->set_type(onnx::AttributeProto::FLOAT);
  e->set_f(static_cast<float>(*eps));
  m.replace(nodes, std::move(ln));
}

// Div(x, sqrt 2) -> Erf -> Add(1) -> Mul by x and by 1/2, in either order: GELU
// (TorchScript exports (x * (1 + erf)) * 0.5, the dynamo exporter x * (0.5 * (1 + erf))).
void fuse_gelu(Matcher& m, int dv) {
  const onnx::NodeProto& d = m.node(dv);
  if (d.input_size() != 2 || d.output_size() != 1 || !m.scalar_is(d.input(1), std::sqrt(2.0), 1e-5)) return;
  const std::string& x = d.input(0);
  const int erf = m.only_reader(d.output(0), "Erf");
  if (erf < 0) return;
  const int add = m.only_reader(m.node(erf).output(0), "Add");
  if (add < 0 || !m.scalar_is(Matcher::other_input(m.node(add), m.node(erf).output(0)), 1.0, 0)) return;
  const int first = m.only_reader(m.node(add).output(0), "Mul");
  if (first < 0) return;
  const std::string f = Matcher::other_input(m.node(first), m.node(add).output(0));
  const bool half_first = m.scalar_is(f, 0.5, 0);
  if (!half_first && f != x) return;
  const int second = m.only_reader(m.node(first).output(0), "Mul");
  if (second < 0) return;
  const std::string g = Matcher::other_input(m.node(second), m.node(first).output(0));
  if (half_first ? g != x : !m.scalar_is(g, 0.5, 0)) return;
  m.replace({dv, erf, add, first, second}, make_node("Gelu", d.name() + "/Gelu", {x}, m.node(second).output(0)));
}

}  // namespace

void fuse_decompositions(onnx::GraphProto& g) {
  Matcher m(g);
  for (int i = 0; i < g.node_size(); ++i) {
    if (m.removed(i)) continue;
    if (g.node(i).op_type() == "ReduceMean") fuse_layer_norms(m, i);
    if (g.node(i).op_type() == "Div") fuse_gelu(m, i);
  }
  m.apply();
}

}  // namespace ipna::onnx_import
