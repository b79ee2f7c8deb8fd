#include "loaders/onnx_context.h"

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <cmath>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "engine/error.h"
#include "loaders/onnx_loader.h"

namespace ipna::onnx_import {

std::optional<int64_t> checked_count(const std::vector<int64_t>& dims, int64_t limit) {
  int64_t c = 1;
  for (int64_t d : dims) {
    if (d < 0) return std::nullopt;
    if (d == 0) return 0;  // an empty tensor, whatever the other dims say
  }
  for (int64_t d : dims) {
    if (c > limit / d) return std::nullopt;
    c *= d;
  }
  return c;
}

ConstTensor gather_elements(const ConstTensor& x, std::vector<int64_t> dims, const std::vector<int64_t>& src) {
  ConstTensor out;
  out.dims = std::move(dims);
  out.integer = x.integer;
  out.f32 = x.f32;
  if (x.integer)
    for (int64_t s : src) out.ints.push_back(x.ints[s]);
  else if (x.f32)
    for (int64_t s : src) out.floats.push_back(x.floats[s]);
  else
    for (int64_t s : src) out.reals.push_back(x.reals[s]);
  return out;
}

std::vector<float> ConstTensor::take_floats() {
  if (f32) return std::move(floats);
  std::vector<float> out(static_cast<size_t>(count()));
  for (int64_t i = 0; i < count(); ++i) out[i] = static_cast<float>(real(i));
  return out;
}

namespace {
std::string node_label(const onnx::NodeProto& n) {
  std::string name = n.name();
  if (name.empty() && n.output_size() > 0) name = n.output(0);
  return "node '" + name + "' (op " + n.op_type() + ")";
}
const char* type_name(int t) {
  switch (t) {
    case onnx::AttributeProto::FLOAT: return "a float";
    case onnx::AttributeProto::INT: return "an integer";
    case onnx::AttributeProto::STRING: return "a string";
    case onnx::AttributeProto::TENSOR: return "a tensor";
    case onnx::AttributeProto::INTS: return "a list of integers";
    case onnx::AttributeProto::FLOATS: return "a list of floats";
    default: return "another type";
  }
}
}  // namespace

void Context::fail(const std::string& why) const { throw Error(path_ + ": " + why); }

void Context::fail_node(const onnx::NodeProto& n, const std::string& why) const {
  throw Error(path_ + ": " + node_label(n) + ": " + why);
}

void Context::fail_unsupported(const onnx::NodeProto& n, const std::string& why) const {
  throw Error(path_ + ": " + node_label(n) + ": " + why + ". Supported ops: " + kSupportedOps);
}

void Context::fail_attr(const onnx::NodeProto& n, const std::string& attr, const std::string& why) const {
  throw Error(path_ + ": " + node_label(n) + ", attribute '" + attr + "': " + why);
}

const onnx::AttributeProto* Context::attr(const onnx::NodeProto& n, const char* name) const {
  for (const auto& a : n.attribute())
    if (a.name() == name) return &a;
  return nullptr;
}

namespace {
// Exporters do not always set AttributeProto.type; a value in the expected field is accepted then.
bool has_type(const onnx::AttributeProto& a, onnx::AttributeProto::AttributeType t) {
  if (a.type() == t) return true;
  if (a.type() != onnx::AttributeProto::UNDEFINED) return false;
  switch (t) {
    case onnx::AttributeProto::INT: return a.has_i();
    case onnx::AttributeProto::FLOAT: return a.has_f();
    case onnx::AttributeProto::STRING: return a.has_s();
    case onnx::AttributeProto::INTS: return true;
    default: return false;
  }
}
}  // namespace

int64_t Context::attr_int(const onnx::NodeProto& n, const char* name, int64_t def) const {
  const auto* a = attr(n, name);
  if (!a) return def;
  if (!has_type(*a, onnx::AttributeProto::INT)) fail_attr(n, name, std::string("expected an integer, got ") + type_name(a->type()));
  return a->i();
}

double Context::attr_float(const onnx::NodeProto& n, const char* name, double def) const {
  const auto* a = attr(n, name);
  if (!a) return def;
  if (!has_type(*a, onnx::AttributeProto::FLOAT)) fail_attr(n, name, std::string("expected a float, got ") + type_name(a->type()));
  if (!std::isfinite(a->f())) fail_attr(n, name, "must be finite");
  char digits[64];
  const auto end = std::to_chars(digits, digits + sizeof digits - 1, a->f()).ptr;  // shortest round trip
  *end = '\0';
  return std::strtod(digits, nullptr);
}

std::string Context::attr_string(const onnx::NodeProto& n, const char* name, const std::string& def) const {
  const auto* a = attr(n, name);
  if (!a) return def;
  if (!has_type(*a, onnx::AttributeProto::STRING)) fail_attr(n, name, std::string("expected a string, got ") + type_name(a->type()));
  return a->s();
}

std::vector<int64_t> Context::attr_ints(const onnx::NodeProto& n, const char* name) const {
  const auto* a = attr(n, name);
  if (!a) return {};
  if (!has_type(*a, onnx::AttributeProto::INTS))
    fail_attr(n, name, std::string("expected a list of integers, got ") + type_name(a->type()));
  if (static_cast<size_t>(a->ints_size()) > kMaxFoldedElements) fail_attr(n, name, "has too many values");
  return {a->ints().begin(), a->ints().end()};
}

const std::string& Context::input_name(const onnx::NodeProto& n, int i) {
  static const std::string kNone;
  return i >= 0 && i < n.input_size() ? n.input(i) : kNone;
}

const ConstTensor* Context::find_constant(const std::string& name) const {
  auto it = consts_.find(name);
  if (it != consts_.end()) return &it->second;
  auto init = initializers_.find(name);
  if (init == initializers_.end()) return nullptr;
  onnx::TensorProto* t = init->second;
  ConstTensor c = decode(*t, "initializer");
  std::string().swap(*t->mutable_raw_data());  // the bytes now live in c
  t->clear_float_data();
  t->clear_double_data();
  t->clear_int64_data();
  t->clear_int32_data();
  initializers_.erase(init);
  return &consts_.emplace(name, std::move(c)).first->second;
}

ConstTensor Context::take_constant(const onnx::NodeProto& n, int i, const char* role) {
  const ConstTensor& c = constant(n, i, role);
  const std::string& name = input_name(n, i);
  if (consumers(name) > 1) return c;
  ConstTensor out = std::move(consts_[name]);
  consts_.erase(name);
  return out;
}

const ConstTensor& Context::constant(const onnx::NodeProto& n, int i, const char* role) const {
  const std::string& name = input_name(n, i);
  if (name.empty()) fail_node(n, std::string("missing input ") + role);
  const ConstTensor* c = find_constant(name);
  if (!c)
    fail_node(n, std::string("input ") + role + " ('" + name +
                     "') must be a constant initializer (weights computed at run time are not supported)");
  if (!c->integer)
    for (int64_t j = 0; j < c->count(); ++j)
      if (!std::isfinite(c->real(j)))
        fail(std::string("initializer '") + name + "' (" + role + " of " + node_label(n) +
             ") has a NaN or Inf value at element " + std::to_string(j));
  return *c;
}

std::vector<int64_t> Context::constant_ints(const onnx::NodeProto& n, int i, const char* role) const {
  const ConstTensor& c = constant(n, i, role);
  if (c.integer) return c.ints;
  std::vector<int64_t> v;
  v.reserve(c.count());
  for (int64_t j = 0; j < c.count(); ++j) {
    const double d = c.real(j);
    if (d != std::trunc(d) || std::abs(d) > 9.0e15) fail_node(n, std::string("input ") + role + " must hold integers");
    v.push_back(static_cast<int64_t>(d));
  }
  return v;
}

int Context::activation(const onnx::NodeProto& n, int i) const {
  const int v = activation_any_layout(n, i);
  if (channels_last(input_name(n, i)))
    fail_unsupported(n, "input '" + input_name(n, i) +
                            "' is a channels-last view (after a Transpose); this op takes channels-first tensors");
  return v;
}

int Context::onnx_rank(const std::string& name, int value) const {
  auto it = onnx_rank_.find(name);
  return it != onnx_rank_.end() ? it->second : static_cast<int>(graph.values[value].shape.rank()) + 1;
}

void Context::pass_through(const std::string& out, const std::string& in, int value) {
  alias(out, value);
  set_channels_last(out, channels_last(in));
  auto r = onnx_rank_.find(in);
  if (r != onnx_rank_.end()) onnx_rank_[out] = r->second;
}

int Context::activation_any_layout(const onnx::NodeProto& n, int i) const {
  const std::string& name = input_name(n, i);
  if (name.empty()) fail_node(n, "missing input " + std::to_string(i));
  auto it = tensors_.find(name);
  if (it != tensors_.end()) return it->second;
  if (pending_pads.count(name))
    fail_node(n, "input '" + name + "' comes from a nonzero Pad; Pad is supported only before a Conv or AveragePool");
  if (grouped_views.count(name))
    fail_unsupported(n, "input '" + name +
                            "' is a tensor reshaped into channel groups; only a channel shuffle (Transpose 0,2,1,3,4 "
                            "and a Reshape back) is supported on it");
  if (consts_.count(name)) fail_node(n, "input '" + name + "' is a constant where a tensor is expected");
  fail_node(n, "input '" + name + "' is not produced by any earlier node");
}

int Context::emit(Node node, const std::string& out_name) {
  std::vector<Shape> in;
  for (int v : node.inputs) in.push_back(graph.values[v].shape);
  Shape s;
  try {
    s = infer_shape(node, in);
  } catch (const Error& e) {
    fail(e.what());
  }
  if (!checked_count(s.dims, kMaxElements))
    fail("node '" + node.name + "': its output " + s.str() + " has more than " + std::to_string(kMaxElements) +
         " elements per sample");
  node.output = graph.add_value(out_name, s);
  tensors_[out_name] = node.output;
  producer_[node.output] = static_cast<int>(graph.nodes.size());
  graph.nodes.push_back(std::move(node));
  return graph.nodes.back().output;
}

std::optional<int> Context::find_tensor(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? std::nullopt : std::optional<int>(it->second);
}

void Context::alias(const std::string& name, int value) {
  tensors_[name] = value;
  graph.aliases[name] = value;
}

void Context::rename(int value, const std::string& name) {
  tensors_.erase(graph.values[value].name);
  graph.values[value].name = name;
  tensors_[name] = value;
}

int Context::producer(int value) const {
  auto it = producer_.find(value);
  return it == producer_.end() ? -1 : it->second;
}

int Context::consumers(const std::string& name) const {
  auto it = consumer_count.find(name);
  return it == consumer_count.end() ? 0 : it->second;
}

Window Context::window(const onnx::NodeProto& n, int64_t kh, int64_t kw, const Shape& in, bool pool) const {
  if (kh < 1 || kw < 1 || kh > kMaxWindow || kw > kMaxWindow)
    fail_attr(n, "kernel_shape", "kernel sizes must lie in [1, " + std::to_string(kMaxWindow) + "]");
  auto pair = [&](const char* name, int64_t lo, int& a, int& b) {
    auto v = attr_ints(n, name);
    if (v.empty()) return;
    if (v.size() != 2) fail_attr(n, name, "expected 2 values (2-D only)");
    for (int64_t x : v)
      if (x < lo || x > kMaxWindow)
        fail_attr(n, name, "values must lie in [" + std::to_string(lo) + ", " + std::to_string(kMaxWindow) + "]");
    a = static_cast<int>(v[0]);
    b = static_cast<int>(v[1]);
  };
  Window w;
  w.kh = static_cast<int>(kh);
  w.kw = static_cast<int>(kw);
  pair("strides", 1, w.sh, w.sw);
  pair("dilations", 1, w.dh, w.dw);
  auto pads = attr_ints(n, "pads");
  if (!pads.empty()) {
    if (pads.size() != 4) fail_attr(n, "pads", "expected 4 values (top, left, bottom, right)");
    for (int64_t p : pads)
      if (p < 0 || p > kMaxWindow) fail_attr(n, "pads", "values must lie in [0, " + std::to_string(kMaxWindow) + "]");
    w.pad_top = static_cast<int>(pads[0]);
    w.pad_left = static_cast<int>(pads[1]);
    w.pad_bottom = static_cast<int>(pads[2]);
    w.pad_right = static_cast<int>(pads[3]);
  }
  const std::string auto_pad = attr_string(n, "auto_pad", "NOTSET");
  if (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
    auto same = [&](int64_t size, int k, int s, int d, int& p0, int& p1) {
      const int64_t out = (size + s - 1) / s;
      const int64_t total = std::max<int64_t>(0, (out - 1) * s + (int64_t(k) - 1) * d + 1 - size);
      p0 = static_cast<int>(auto_pad == "SAME_UPPER" ? total / 2 : total - total / 2);
      p1 = static_cast<int>(total - p0);
    };
    same(in.dims[1], w.kh, w.sh, w.dh, w.pad_top, w.pad_bottom);
    same(in.dims[2], w.kw, w.sw, w.dw, w.pad_left, w.pad_right);
  } else if (auto_pad == "VALID") {
    w.pad_top = w.pad_left = w.pad_bottom = w.pad_right = 0;
  } else if (auto_pad != "NOTSET") {
    fail_attr(n, "auto_pad", "unknown value '" + auto_pad + "'");
  }
  if (pool && attr_int(n, "ceil_mode", 0)) {
    // Output size rounded up, as in ONNX/PyTorch, expressed as extra bottom/right padding;
    // a window may not start in the bottom/right padding.
    auto grow = [&](int64_t size, int k, int s, int d, int p0, int& p1) {
      const int64_t span = (int64_t(k) - 1) * d + 1;
      int64_t out = (size + p0 + p1 - span + s - 1) / s + 1;
      if ((out - 1) * s >= size + p0) --out;
      p1 = static_cast<int>(std::max<int64_t>(p1, (out - 1) * s + span - size - p0));
    };
    const int pb = w.pad_bottom, pr = w.pad_right;
    grow(in.dims[1], w.kh, w.sh, w.dh, w.pad_top, w.pad_bottom);
    grow(in.dims[2], w.kw, w.sw, w.dw, w.pad_left, w.pad_right);
    if (n.op_type() == "AveragePool" && attr_int(n, "count_include_pad", 0) &&
        (pb != w.pad_bottom || pr != w.pad_right))
      fail_attr(n, "ceil_mode", "ceil_mode=1 with count_include_pad=1 is not supported");
  }
  return w;
}

std::string Context::read_external(const onnx::TensorProto& t, const std::string& label) const {
  std::string location;
  int64_t offset = 0, length = -1;
  for (const auto& kv : t.external_data()) {
    if (kv.key() == "location") location = kv.value();
    if (kv.key() == "offset" || kv.key() == "length") {
      char* end = nullptr;
      errno = 0;
      const long long v = std::strtoll(kv.value().c_str(), &end, 10);
      if (kv.value().empty() || *end || errno || v < 0) fail(label + ": external data " + kv.key() + " '" + kv.value() + "' is not a size");
      (kv.key() == "offset" ? offset : length) = v;
    }
  }
  // Only files beside the model (or below it): a model file must not make us read elsewhere.
  const std::filesystem::path rel = std::filesystem::path(location).lexically_normal();
  if (location.empty() || rel.is_absolute() || rel.empty() || *rel.begin() == "..")
    fail(label + ": external data location '" + location + "' must be a file beside the model");
  const std::filesystem::path file = std::filesystem::path(path_).parent_path() / rel;
  std::error_code ec;
  const uintmax_t size = std::filesystem::file_size(file, ec);
  if (ec) fail(label + ": cannot open its external data file '" + file.string() + "': " + ec.message());
  if (static_cast<uintmax_t>(offset) > size) fail(label + ": external data offset beyond the end of '" + file.string() + "'");
  if (length < 0) length = static_cast<int64_t>(size) - offset;
  if (static_cast<uintmax_t>(offset) + static_cast<uintmax_t>(length) > size)
    fail(label + ": external data runs past the end of '" + file.string() + "' (truncated?)");
  if (length > (int64_t(8) << 30)) fail(label + ": external data of " + std::to_string(length) + " bytes is too large");
  std::ifstream f(file, std::ios::binary);
  std::string bytes(static_cast<size_t>(length), '\0');
  if (!f.seekg(offset) || !f.read(bytes.data(), length)) fail(label + ": cannot read external data from '" + file.string() + "'");
  return bytes;
}

ConstTensor Context::decode(const onnx::TensorProto& t, const std::string& where) const {
  const std::string label = where + " '" + t.name() + "'";
  if (static_cast<size_t>(t.dims_size()) > kMaxRank) fail(label + " has rank " + std::to_string(t.dims_size()));
  ConstTensor c;
  c.dims.assign(t.dims().begin(), t.dims().end());
  const auto count = checked_count(c.dims, kMaxElements);
  if (!count) {
    fail(label + " has dims " + Shape(c.dims).str() + ": negative, or more than " + std::to_string(kMaxElements) +
         " elements");
  }
  std::string external;
  if (t.data_location() == onnx::TensorProto::EXTERNAL) external = read_external(t, label);
  const std::string& raw = t.data_location() == onnx::TensorProto::EXTERNAL ? external : t.raw_data();
  auto mismatch = [&](size_t have) {
    fail(label + " holds " + std::to_string(have) + " values, its dims say " + std::to_string(*count) +
         " (truncated file?)");
  };
  auto from_raw = [&](auto sample, auto& dst) {  // element by element: no third copy of a large layer
    using S = decltype(sample);
    if (raw.size() != static_cast<size_t>(*count) * sizeof(S)) mismatch(raw.size() / sizeof(S));
    dst.resize(static_cast<size_t>(*count));
    for (size_t i = 0; i < dst.size(); ++i) {
      S v;
      std::memcpy(&v, raw.data() + i * sizeof(S), sizeof(S));
      dst[i] = v;
    }
  };
  auto from_field = [&](const auto& field, auto& dst) {
    if (field.size() != *count) mismatch(static_cast<size_t>(field.size()));
    dst.assign(field.begin(), field.end());
  };
  switch (t.data_type()) {
    case onnx::TensorProto::FLOAT:
      c.f32 = true;
      raw.empty() ? from_field(t.float_data(), c.floats) : from_raw(float{}, c.floats);
      break;
    case onnx::TensorProto::DOUBLE:
      raw.empty() ? from_field(t.double_data(), c.reals) : from_raw(double{}, c.reals);
      break;
    case onnx::TensorProto::INT64:
      c.integer = true;
      raw.empty() ? from_field(t.int64_data(), c.ints) : from_raw(int64_t{}, c.ints);
      break;
    case onnx::TensorProto::INT32:
      c.integer = true;
      raw.empty() ? from_field(t.int32_data(), c.ints) : from_raw(int32_t{}, c.ints);
      break;
    default:
      fail(label + " has data type " + std::to_string(t.data_type()) +
           "; only float32, float64, int32 and int64 are supported");
  }
  return c;
}

}  // namespace ipna::onnx_import
