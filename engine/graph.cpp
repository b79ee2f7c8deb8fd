#include "engine/graph.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "engine/error.h"

namespace ipna {

const char* op_name(OpKind k) {
  switch (k) {
    case OpKind::Conv: return "Conv";
    case OpKind::Affine: return "Affine";
    case OpKind::Clip: return "Clip";
    case OpKind::MaxPool: return "MaxPool";
    case OpKind::AvgPool: return "AvgPool";
    case OpKind::Add: return "Add";
    case OpKind::Linear: return "Linear";
    case OpKind::Concat: return "Concat";
    case OpKind::Slice: return "Slice";
    case OpKind::Mul: return "Mul";
    case OpKind::Activation: return "Activation";
    case OpKind::ChannelMean: return "ChannelMean";
    case OpKind::LayerNorm: return "LayerNorm";
    case OpKind::ChannelShuffle: return "ChannelShuffle";
  }
  return "?";
}

const char* activation_name(ActivationFn f) {
  switch (f) {
    case ActivationFn::Sigmoid: return "Sigmoid";
    case ActivationFn::Tanh: return "Tanh";
    case ActivationFn::HardSigmoid: return "HardSigmoid";
    case ActivationFn::HardSwish: return "HardSwish";
    case ActivationFn::SiLU: return "SiLU";
    case ActivationFn::GeluErf: return "Gelu";
    case ActivationFn::GeluTanh: return "Gelu (tanh)";
    case ActivationFn::Erf: return "Erf";
  }
  return "?";
}

int Graph::add_value(const std::string& name, Shape shape) {
  values.push_back({name, std::move(shape)});
  return static_cast<int>(values.size()) - 1;
}

std::optional<int> Graph::find_value(const std::string& name) const {
  for (size_t i = 0; i < values.size(); ++i)
    if (values[i].name == name) return static_cast<int>(i);
  auto it = aliases.find(name);
  if (it != aliases.end()) return it->second;
  it = modules.find(name);
  if (it != modules.end()) return it->second;
  return std::nullopt;
}

std::vector<std::string> Graph::split_candidates() const {
  std::vector<std::string> out;
  for (size_t i = 0; i < values.size(); ++i)
    if (static_cast<int>(i) != input && static_cast<int>(i) != output) out.push_back(values[i].name);
  return out;
}

static int window_out(int64_t in, int k, int s, int p0, int p1, int d) {
  int64_t span = static_cast<int64_t>(d) * (k - 1) + 1;
  int64_t num = in + p0 + p1 - span;
  if (num < 0) return 0;
  return static_cast<int>(num / s + 1);
}

Shape infer_shape(const Node& n, const std::vector<Shape>& in) {
  auto fail = [&](const std::string& why) -> Error {
    return Error("node '" + n.name + "' (" + op_name(n.kind) + "): " + why);
  };
  if (in.empty()) throw fail("has no input");
  const Shape& x = in[0];
  switch (n.kind) {
    case OpKind::Conv:
    case OpKind::MaxPool:
    case OpKind::AvgPool: {
      if (x.rank() != 3) throw fail("expects a C,H,W input, got " + x.str());
      const Window& w = n.win;
      if (w.kh < 1 || w.kw < 1 || w.sh < 1 || w.sw < 1 || w.dh < 1 || w.dw < 1)
        throw fail("kernel, stride and dilation must be positive");
      if (w.pad_top < 0 || w.pad_left < 0 || w.pad_bottom < 0 || w.pad_right < 0)
        throw fail("negative padding is not supported");
      int ho = window_out(x.dims[1], w.kh, w.sh, w.pad_top, w.pad_bottom, w.dh);
      int wo = window_out(x.dims[2], w.kw, w.sw, w.pad_left, w.pad_right, w.dw);
      if (ho <= 0 || wo <= 0) throw fail("the window does not fit the input " + x.str());
      if (n.kind != OpKind::Conv) return Shape{x.dims[0], ho, wo};
      if (n.groups < 1 || x.dims[0] % n.groups) throw fail("input channels " + std::to_string(x.dims[0]) +
                                                          " not divisible by group " + std::to_string(n.groups));
      int64_t cin_g = x.dims[0] / n.groups;
      int64_t per_out = cin_g * w.kh * w.kw;
      if (n.kernel.empty() || n.kernel.size() % per_out)
        throw fail("weight has " + std::to_string(n.kernel.size()) + " elements, not a multiple of Cin/groups*kh*kw = " +
                   std::to_string(per_out));
      int64_t cout = static_cast<int64_t>(n.kernel.size()) / per_out;
      if (!n.kernel_scale.empty() && static_cast<int64_t>(n.kernel_scale.size()) != cout)
        throw fail("kernel scale has " + std::to_string(n.kernel_scale.size()) + " elements, expected " +
                   std::to_string(cout));
      if (cout % n.groups) throw fail("output channels not divisible by group");
      if (!n.bias.empty() && static_cast<int64_t>(n.bias.size()) != cout)
        throw fail("bias has " + std::to_string(n.bias.size()) + " elements, expected " + std::to_string(cout));
      return Shape{cout, ho, wo};
    }
    case OpKind::Affine:
      if (static_cast<int64_t>(n.weight.size()) != x.channels() || n.bias.size() != n.weight.size())
        throw fail("scale/shift must have one value per channel (" + std::to_string(x.channels()) + ")");
      return x;
    case OpKind::Clip:
      if (!(n.lo <= n.hi)) throw fail("min must not exceed max");
      return x;
    case OpKind::Add:
      if (in.size() != 2) throw fail("expects two inputs");
      if (in[0] != in[1]) throw fail("inputs differ in shape: " + in[0].str() + " vs " + in[1].str() +
                                     " (broadcasting Add is supported only for constants)");
      return x;
    case OpKind::Linear: {
      int64_t k = x.numel();
      if (n.kernel.empty() || n.kernel.size() % k)
        throw fail("weight has " + std::to_string(n.kernel.size()) + " elements; input has " + std::to_string(k) +
                   " features per sample");
      int64_t out = static_cast<int64_t>(n.kernel.size()) / k;
      if (!n.kernel_scale.empty() && static_cast<int64_t>(n.kernel_scale.size()) != out)
        throw fail("kernel scale size mismatch");
      if (!n.bias.empty() && static_cast<int64_t>(n.bias.size()) != out) throw fail("bias size mismatch");
      return Shape{out};
    }
    case OpKind::Concat: {
      // Channels of C,H,W inputs with the same plane, or features of [F] inputs.
      int64_t c = 0;
      for (const Shape& s : in) {
        if (s.rank() != x.rank() || (s.rank() != 3 && s.rank() != 1) || s.height() != x.height() ||
            s.width() != x.width())
          throw fail("inputs must all be C,H,W with the same H and W, or all [F]; got " + x.str() + " and " + s.str());
        c += s.dims[0];
      }
      return x.rank() == 1 ? Shape{c} : Shape{c, x.dims[1], x.dims[2]};
    }
    case OpKind::Slice:
      if (x.rank() != 3 && x.rank() != 1) throw fail("expects a C,H,W or [F] input, got " + x.str());
      if (n.channel_offset < 0 || n.channel_count < 1 || n.channel_offset + n.channel_count > x.dims[0])
        throw fail("channels [" + std::to_string(n.channel_offset) + ", " +
                   std::to_string(n.channel_offset + n.channel_count) + ") are not within the input's " +
                   std::to_string(x.dims[0]));
      return x.rank() == 1 ? Shape{n.channel_count} : Shape{n.channel_count, x.dims[1], x.dims[2]};
    case OpKind::Mul:
      if (in.size() != 2) throw fail("expects two inputs");
      if (in[1] != x && !(x.rank() == 3 && in[1] == Shape{x.dims[0], 1, 1}))
        throw fail("the second input must have the first's shape " + x.str() + " or one value per channel, got " +
                   in[1].str());
      return x;
    case OpKind::Activation:
      return x;
    case OpKind::ChannelMean:
      if (x.rank() != 3) throw fail("expects a C,H,W input, got " + x.str());
      return Shape{1, x.dims[1], x.dims[2]};
    case OpKind::LayerNorm:
      if (static_cast<int64_t>(n.weight.size()) != x.channels() || n.bias.size() != n.weight.size())
        throw fail("gamma and beta must have one value per channel (" + std::to_string(x.channels()) + ")");
      if (!(n.eps > 0)) throw fail("epsilon must be positive");
      return x;
    case OpKind::ChannelShuffle: {
      std::vector<bool> seen(x.channels(), false);
      if (static_cast<int64_t>(n.permutation.size()) != x.channels()) throw fail("the permutation needs one entry per channel");
      for (int p : n.permutation) {
        if (p < 0 || p >= x.channels() || seen[p]) throw fail("not a permutation of the channels");
        seen[p] = true;
      }
      return x;
    }
  }
  throw fail("unknown op");
}

void Graph::validate() const {
  if (input < 0 || output < 0) throw Error(source + ": graph has no input or output");
  std::vector<bool> defined(values.size(), false);
  defined[input] = true;
  for (const Node& n : nodes) {
    std::vector<Shape> in;
    for (int i : n.inputs) {
      if (i < 0 || i >= static_cast<int>(values.size()) || !defined[i])
        throw Error(source + ": node '" + n.name + "' reads a value that is not computed before it");
      in.push_back(values[i].shape);
    }
    Shape s = infer_shape(n, in);
    if (s != values[n.output].shape)
      throw Error(source + ": node '" + n.name + "' output shape " + values[n.output].shape.str() +
                  " does not match inferred " + s.str());
    for (double w : n.weight)
      if (!std::isfinite(w)) throw Error(source + ": node '" + n.name + "' has a NaN or Inf weight");
    for (float w : n.kernel)
      if (!std::isfinite(w)) throw Error(source + ": node '" + n.name + "' has a NaN or Inf weight");
    for (double w : n.kernel_scale)
      if (!std::isfinite(w)) throw Error(source + ": node '" + n.name + "' has a NaN or Inf weight scale");
    for (double w : n.bias)
      if (!std::isfinite(w)) throw Error(source + ": node '" + n.name + "' has a NaN or Inf bias");
    defined[n.output] = true;
  }
  if (!defined[output]) throw Error(source + ": the output is not computed by any node");
}

int64_t Graph::macs_per_sample() const {
  int64_t total = 0;
  for (const Node& n : nodes) {
    const Shape& o = values[n.output].shape;
    if (n.kind == OpKind::Conv) {
      int64_t cin_g = values[n.inputs[0]].shape.channels() / n.groups;
      total += o.numel() * cin_g * n.win.kh * n.win.kw;
    } else if (n.kind == OpKind::Linear) {
      total += static_cast<int64_t>(n.kernel.size());
    }
  }
  return total;
}

Graph Graph::without_weights() const {
  Graph out;
  out.values = values;
  out.input = input;
  out.output = output;
  out.aliases = aliases;
  out.modules = modules;
  out.source = source;
  out.nodes.reserve(nodes.size());
  for (const Node& n : nodes) {
    Node c;
    c.kind = n.kind;
    c.name = n.name;
    c.inputs = n.inputs;
    c.output = n.output;
    c.win = n.win;
    c.groups = n.groups;
    c.lo = n.lo;
    c.hi = n.hi;
    c.activation = n.activation;
    c.alpha = n.alpha;
    c.beta = n.beta;
    c.eps = n.eps;
    c.channel_offset = n.channel_offset;
    c.channel_count = n.channel_count;
    c.permutation = n.permutation;
    out.nodes.push_back(std::move(c));
  }
  return out;
}

// Moves the nodes `keep` (in order) into a fresh graph with `in` as input and
// `out` as output, renumbering values.
static Graph extract(Graph& g, const std::vector<int>& keep, int in, int out) {
  Graph s;
  s.source = g.source;
  std::map<int, int> remap;
  auto map_value = [&](int v) {
    auto it = remap.find(v);
    if (it != remap.end()) return it->second;
    int id = s.add_value(g.values[v].name, g.values[v].shape);
    remap[v] = id;
    return id;
  };
  s.input = map_value(in);
  for (int ni : keep) {
    Node n = std::move(g.nodes[ni]);  // weights move, not copy: ResNet-152's are 0.5 GB in float64
    for (int& i : n.inputs) i = map_value(i);
    n.output = map_value(n.output);
    s.nodes.push_back(std::move(n));
  }
  s.output = map_value(out);
  for (const auto& [name, v] : g.aliases)
    if (remap.count(v)) s.aliases[name] = remap[v];
  for (const auto& [name, v] : g.modules)
    if (remap.count(v)) s.modules[name] = remap[v];
  return s;
}

namespace {
// The nodes of f1 (the ancestors of h), and of f2, or the first node after h
// that reads a value of f1 other than h.
struct Partition {
  std::vector<int> f1, f2;
  int crossing_node = -1, crossing_value = -1;
};
Partition partition(const Graph& g, int h) {
  std::vector<int> producer(g.values.size(), -1);
  for (size_t i = 0; i < g.nodes.size(); ++i) producer[g.nodes[i].output] = static_cast<int>(i);
  std::vector<bool> in_f1(g.nodes.size(), false);
  std::vector<int> stack{h};
  std::vector<bool> seen(g.values.size(), false);
  while (!stack.empty()) {
    const int v = stack.back();
    stack.pop_back();
    if (seen[v]) continue;
    seen[v] = true;
    const int p = producer[v];
    if (p < 0) continue;
    in_f1[p] = true;
    for (int i : g.nodes[p].inputs) stack.push_back(i);
  }
  Partition part;
  std::vector<bool> f2_value(g.values.size(), false);
  f2_value[h] = true;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    if (in_f1[i]) {
      part.f1.push_back(static_cast<int>(i));
      continue;
    }
    for (int v : g.nodes[i].inputs)
      if (!f2_value[v] && part.crossing_node < 0) {
        part.crossing_node = static_cast<int>(i);
        part.crossing_value = v;
      }
    f2_value[g.nodes[i].output] = true;
    part.f2.push_back(static_cast<int>(i));
  }
  return part;
}
}  // namespace

std::optional<std::string> not_a_cut(const Graph& g, int v) {
  if (v == g.input) return "it is the model input";
  if (v == g.output) return "it is the model output";
  const Partition p = partition(g, v);
  if (p.crossing_node < 0) return std::nullopt;
  return "node '" + g.nodes[p.crossing_node].name + "' after it also reads '" + g.values[p.crossing_value].name +
         "', computed before it";
}

SplitModel split_graph(Graph g, const std::string& split_name) {
  auto found = g.find_value(split_name);
  if (!found) {
    std::string msg = g.source + ": no tensor named '" + split_name + "'. Nearest names:";
    std::vector<std::string> pool = g.split_candidates();
    for (const auto& [a, v] : g.aliases) pool.push_back(a);
    for (const auto& [a, v] : g.modules) pool.push_back(a);
    for (const auto& s : nearest_names(split_name, pool)) msg += " '" + s + "'";
    msg += " (info lists every tensor of the model)";
    throw Error(msg);
  }
  const int h = *found;
  if (h == g.input) throw Error(g.source + ": split tensor '" + split_name + "' is the model input; choose an internal tensor");
  if (h == g.output) throw Error(g.source + ": split tensor '" + split_name + "' is the model output; choose an internal tensor");
  if (g.values[g.output].shape.plane() != 1)
    throw Error(g.source + ": the model output must be [N, classes] (or [N, classes, 1, 1]), got per-sample shape " +
                g.values[g.output].shape.str());
  const Partition p = partition(g, h);
  if (p.crossing_node >= 0)
    throw Error(g.source + ": tensor '" + split_name + "' does not cut the network: " + *not_a_cut(g, h) +
                " (split at the output of a whole block, e.g. after a residual Add)");
  SplitModel m;
  m.split_name = split_name;
  m.f1 = extract(g, p.f1, g.input, h);
  m.f2 = extract(g, p.f2, h, g.output);
  return m;
}

SplitModel join_split(const Graph& first, const Graph& second) {
  const Shape& a = first.values[first.output].shape;
  const Shape& b = second.values[second.input].shape;
  if (a.numel() != b.numel())
    throw Error("the first model's output " + a.str() + " (" + first.source + ") does not match the second model's input " +
                b.str() + " (" + second.source + ")");
  if (second.values[second.output].shape.plane() != 1)
    throw Error(second.source + ": the second model's output must be [N, classes], got per-sample shape " +
                second.values[second.output].shape.str());
  SplitModel m;
  m.f1 = first;
  m.f2 = second;
  m.f2.values[m.f2.input].shape = a;
  m.f2.validate();
  m.split_name = first.values[first.output].name;
  return m;
}

static size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::vector<std::string> nearest_names(const std::string& name, const std::vector<std::string>& pool, size_t count) {
  std::vector<std::pair<size_t, std::string>> scored;
  for (const auto& p : pool) scored.emplace_back(edit_distance(name, p), p);
  std::stable_sort(scored.begin(), scored.end(), [](auto& x, auto& y) { return x.first < y.first; });
  std::vector<std::string> out;
  for (size_t i = 0; i < scored.size() && i < count; ++i) out.push_back(scored[i].second);
  return out;
}

std::vector<SplitPoint> split_points(const Graph& g) {
  std::map<int, std::vector<std::string>> alias_names, module_names;
  for (const auto& [name, v] : g.aliases) alias_names[v].push_back(name);
  for (const auto& [path, v] : g.modules) module_names[v].push_back(path);
  for (auto& [v, paths] : module_names)  // the outermost module first
    std::stable_sort(paths.begin(), paths.end(), [](const std::string& a, const std::string& b) {
      return std::count(a.begin(), a.end(), '.') < std::count(b.begin(), b.end(), '.');
    });
  std::vector<SplitPoint> out;
  for (const auto& n : g.nodes) {
    if (n.output == g.output) continue;
    SplitPoint p;
    p.name = g.values[n.output].name;
    p.op = n.kind == OpKind::Activation ? activation_name(n.activation) : op_name(n.kind);
    p.shape = g.values[n.output].shape;
    p.aliases = alias_names[n.output];
    p.modules = module_names[n.output];
    p.not_a_cut = not_a_cut(g, n.output);
    out.push_back(std::move(p));
  }
  return out;
}

}  // namespace ipna
