// The ONNX import driver: parses the file, checks the graph's structure
// (every node has an output, every tensor one producer), finds the nodes the
// model's output depends on and turns only those into the graph IR, through
// constant folding (onnx_fold.cpp) or the op's handler (onnx_ops.cpp).
#include "loaders/onnx_loader.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <new>
#include <set>

#include <google/protobuf/unknown_field_set.h>

#include "engine/error.h"
#include "loaders/onnx_context.h"

namespace ipna {
namespace onnx_import {
namespace {

// ONNX protobufs cannot exceed 2 GiB; larger models keep weights as external data.
constexpr uintmax_t kMaxFileBytes = uintmax_t(2) << 30;

std::string node_label(const onnx::NodeProto& n, int index) {
  return "node " + std::to_string(index) + (n.name().empty() ? "" : " '" + n.name() + "'") + " (op " + n.op_type() + ")";
}

// The module paths a node belongs to, outermost first: from the name scopes
// PyTorch's dynamo exporter writes into node metadata ("['', 'layer2',
// 'layer2.1', 'layer2.1.relu', 'relu_8']"), or from the TorchScript exporter's
// node names ("/layer2/layer2.1/relu/Relu"), whose levels repeat their
// parent's path ("features.1.0") or name just the attribute ("relu").
// NodeProto.metadata_props (field 9, ONNX 1.16) is newer than Debian's libonnx:
// read it from the fields protobuf kept as unknown.
std::vector<onnx::StringStringEntryProto> metadata_props(const onnx::NodeProto& n) {
  constexpr int kMetadataPropsField = 9;
  std::vector<onnx::StringStringEntryProto> out;
  const auto& unknown = n.GetReflection()->GetUnknownFields(n);
  for (int i = 0; i < unknown.field_count(); ++i) {
    const auto& f = unknown.field(i);
    if (f.number() != kMetadataPropsField || f.type() != google::protobuf::UnknownField::TYPE_LENGTH_DELIMITED) continue;
    onnx::StringStringEntryProto e;
    if (e.ParseFromString(f.length_delimited())) out.push_back(std::move(e));
  }
  return out;
}

std::vector<std::string> module_paths(const onnx::NodeProto& n) {
  std::vector<std::string> levels;
  for (const auto& p : metadata_props(n))
    if (p.key() == "pkg.torch.onnx.name_scopes") {
      const std::string& v = p.value();
      for (size_t at = 0; (at = v.find('\'', at)) != std::string::npos;) {
        const size_t end = v.find('\'', at + 1);
        if (end == std::string::npos) break;
        levels.push_back(v.substr(at + 1, end - at - 1));
        at = end + 1;
      }
      if (levels.size() < 2) return {};
      return std::vector<std::string>(levels.begin() + 1, levels.end() - 1);  // the root '' and the op itself
    }
  const std::string& name = n.name();
  if (name.size() < 2 || name[0] != '/') return {};
  for (size_t at = 1; at < name.size();) {
    const size_t end = name.find('/', at);
    if (end == std::string::npos) break;  // the last level is the op
    levels.push_back(name.substr(at, end - at));
    at = end + 1;
  }
  std::vector<std::string> paths;
  std::string prev_level, path;
  for (const std::string& level : levels) {
    if (level.empty()) return paths;
    const bool extends = !prev_level.empty() && level.rfind(prev_level + ".", 0) == 0;
    const std::string part = extends ? level.substr(prev_level.size() + 1) : level;
    path = path.empty() ? part : path + "." + part;
    paths.push_back(path);
    prev_level = level;
  }
  return paths;
}

class Importer {
 public:
  explicit Importer(const std::string& path) : ctx_(path) {}
  Graph run();

 private:
  void parse(onnx::ModelProto& model);
  // Indices of the nodes the graph output depends on, in file order.
  std::vector<int> needed_nodes(const onnx::GraphProto& gp);
  void add_input(const onnx::GraphProto& gp);
  Context ctx_;
};

void Importer::parse(onnx::ModelProto& model) {
  const std::string& path = ctx_.path();
  std::error_code ec;
  const auto bytes = std::filesystem::file_size(path, ec);
  if (ec) throw Error("cannot open model file '" + path + "': " + ec.message());
  if (bytes > kMaxFileBytes)
    throw Error(path + ": " + std::to_string(bytes >> 20) + " MiB is above ONNX's 2 GiB limit for one file");
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error("cannot open model file '" + path + "': " + std::strerror(errno));
  if (!model.ParseFromIstream(&f))
    throw Error(path + ": not a valid ONNX model (protobuf parsing failed: the file is truncated or not ONNX)");
  if (!model.has_graph() || model.graph().node_size() == 0)
    throw Error(path + ": the ONNX file has no graph nodes (truncated or not a model?)");
}

std::vector<int> Importer::needed_nodes(const onnx::GraphProto& gp) {
  std::map<std::string, int> producer;
  std::set<std::string> sources;
  for (const auto& t : gp.initializer()) sources.insert(t.name());
  for (const auto& in : gp.input()) sources.insert(in.name());
  for (int i = 0; i < gp.node_size(); ++i) {
    const auto& n = gp.node(i);
    if (n.output_size() == 0 || n.output(0).empty())
      ctx_.fail(node_label(n, i) + " has no output");
    for (const auto& o : n.output()) {
      if (o.empty()) continue;
      if (sources.count(o)) ctx_.fail(node_label(n, i) + " writes '" + o + "', which is a graph input or initializer");
      if (!producer.emplace(o, i).second) ctx_.fail("tensor '" + o + "' is produced by two nodes");
    }
  }
  std::vector<bool> needed(gp.node_size(), false);
  std::vector<std::string> stack{ctx_.graph_output_name};
  std::set<std::string> seen;
  while (!stack.empty()) {
    const std::string name = stack.back();
    stack.pop_back();
    if (!seen.insert(name).second) continue;
    auto it = producer.find(name);
    if (it == producer.end()) continue;
    needed[it->second] = true;
    for (const auto& i : gp.node(it->second).input())
      if (!i.empty()) stack.push_back(i);
  }
  std::vector<int> out;
  for (int i = 0; i < gp.node_size(); ++i)
    if (needed[i]) out.push_back(i);
  return out;
}

void Importer::add_input(const onnx::GraphProto& gp) {
  std::set<std::string> inits;
  for (const auto& t : gp.initializer()) inits.insert(t.name());
  for (const auto& in : gp.input()) {
    if (inits.count(in.name())) continue;
    const auto& tt = in.type().tensor_type();
    if (tt.elem_type() != onnx::TensorProto::FLOAT) ctx_.fail("input '" + in.name() + "' must be float32");
    std::vector<int64_t> dims;
    for (int i = 1; i < tt.shape().dim_size(); ++i) {
      const auto& d = tt.shape().dim(i);
      if (!d.has_dim_value() || d.dim_value() <= 0)
        ctx_.fail("input '" + in.name() + "' dimension " + std::to_string(i) +
                  " is not a fixed size (only the batch dimension may be symbolic)");
      dims.push_back(d.dim_value());
    }
    if (dims.size() != 3 && dims.size() != 1)
      ctx_.fail("input '" + in.name() + "' must be [N,C,H,W] or [N,F], got rank " + std::to_string(dims.size() + 1));
    if (!checked_count(dims, kMaxElements))
      ctx_.fail("input '" + in.name() + "' has more than " + std::to_string(kMaxElements) + " elements per sample");
    ctx_.graph.input = ctx_.graph.add_value(in.name(), Shape(dims));
    ctx_.bind(in.name(), ctx_.graph.input);
    return;
  }
  ctx_.fail("the graph has no data input");
}

Graph Importer::run() {
  onnx::ModelProto model;
  parse(model);
  const onnx::GraphProto& gp = model.graph();
  Graph& g = ctx_.graph;
  g.source = ctx_.path();
  if (gp.output_size() != 1)
    ctx_.fail("the model must have exactly one output (logits), it has " + std::to_string(gp.output_size()));
  ctx_.graph_output_name = gp.output(0).name();
  if (ctx_.graph_output_name.empty()) ctx_.fail("the model output has no name");
  needed_nodes(gp);  // the structure checks first: every node has an output, every tensor one producer
  fuse_decompositions(*model.mutable_graph());
  const std::vector<int> order = needed_nodes(gp);
  std::set<std::string> used;
  for (int i : order)
    for (const auto& in : gp.node(i).input()) {
      ctx_.consumer_count[in]++;
      used.insert(in);
    }
  ctx_.consumer_count[ctx_.graph_output_name]++;
  // Only the initializers the needed nodes read are decoded, each when first used.
  for (auto& t : *model.mutable_graph()->mutable_initializer())
    if (used.count(t.name())) ctx_.add_initializer(&t);
  add_input(gp);

  std::map<std::string, std::string> module_last_output;  // module path -> output of its last tensor node
  for (int i : order) {
    const onnx::NodeProto& n = gp.node(i);
    if (!n.domain().empty() && n.domain() != "ai.onnx")
      ctx_.fail_unsupported(n, "operator domain '" + n.domain() + "' is not supported");
    if (fold_constant(ctx_, n)) continue;
    auto handler = op_handlers().find(n.op_type());
    if (handler == op_handlers().end()) ctx_.fail_unsupported(n, "unsupported operator");
    handler->second(ctx_, n);
    for (const std::string& p : module_paths(n)) module_last_output[p] = n.output(0);
  }
  for (const auto& [path, tensor] : module_last_output)
    if (auto v = ctx_.find_tensor(tensor)) g.modules[path] = *v;

  const std::optional<int> out = ctx_.find_tensor(ctx_.graph_output_name);
  if (!out) {
    if (ctx_.is_constant(ctx_.graph_output_name)) ctx_.fail("the model output is a constant");
    ctx_.fail("the model output '" + ctx_.graph_output_name + "' is not computed by any node");
  }
  g.output = *out;
  if (g.output == g.input) ctx_.fail("the model output is its input");
  // The output keeps the name the model file gives it, also through aliases.
  if (g.values[g.output].name != ctx_.graph_output_name) g.aliases[ctx_.graph_output_name] = g.output;
  remove_dead_nodes(g);
  g.validate();
  return std::move(g);
}

}  // namespace
}  // namespace onnx_import

Graph load_onnx(const std::string& path) {
  try {
    return onnx_import::Importer(path).run();
  } catch (const Error&) {
    throw;
  } catch (const std::bad_alloc&) {
    throw Error(path + ": out of memory while loading the model");
  } catch (const std::exception& e) {
    // A backstop: every check above should have named the problem already.
    throw Error(path + ": malformed model (" + e.what() + ")");
  }
}

SplitModel load_split_model(const std::string& path, const std::string& split_name) {
  return split_graph(load_onnx(path), split_name);
}

SplitModel load_two_part_model(const std::string& first_path, const std::string& second_path) {
  Graph a = load_onnx(first_path), b = load_onnx(second_path);
  return join_split(a, b);
}

}  // namespace ipna
