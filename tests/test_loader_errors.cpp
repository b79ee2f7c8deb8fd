// The ONNX loader on real files and on broken or unsupported ones: each bad
// input must give an ipna::Error whose message names what is wrong.
#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>

#include "engine/error.h"
#include "loaders/onnx_loader.h"
#include "tests/fixtures.h"

namespace ipna::test {
namespace {

std::string tmp_path(const std::string& name) {
  auto d = std::filesystem::temp_directory_path() / "ipna_loader_test";
  std::filesystem::create_directories(d);
  return (d / name).string();
}

void expect_error(const std::function<void()>& f, const std::vector<std::string>& needles) {
  try {
    f();
    ADD_FAILURE() << "expected an error mentioning " << needles[0];
  } catch (const Error& e) {
    for (const auto& n : needles) EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << e.what();
  }
}

// A tiny model: input [N,2,4,4] -> Conv(3x3 pad 1) -> X -> ... built per test.
struct ProtoModel {
  onnx::ModelProto m;
  ProtoModel() {
    m.set_ir_version(7);
    m.add_opset_import()->set_version(13);
    auto* g = m.mutable_graph();
    auto* in = g->add_input();
    in->set_name("input");
    auto* tt = in->mutable_type()->mutable_tensor_type();
    tt->set_elem_type(onnx::TensorProto::FLOAT);
    tt->mutable_shape()->add_dim()->set_dim_param("N");
    for (int d : {2, 4, 4}) tt->mutable_shape()->add_dim()->set_dim_value(d);
  }
  void init(const std::string& name, std::vector<int64_t> dims, std::vector<float> v) {
    auto* t = m.mutable_graph()->add_initializer();
    t->set_name(name);
    t->set_data_type(onnx::TensorProto::FLOAT);
    for (auto d : dims) t->add_dims(d);
    for (float x : v) t->add_float_data(x);
  }
  onnx::NodeProto* node(const std::string& op, std::vector<std::string> in, std::string out) {
    auto* n = m.mutable_graph()->add_node();
    n->set_op_type(op);
    n->set_name(op + "_" + out);
    for (auto& i : in) n->add_input(i);
    n->add_output(out);
    return n;
  }
  void output(const std::string& name) { m.mutable_graph()->add_output()->set_name(name); }
  std::string save(const std::string& file) {
    std::string p = tmp_path(file);
    std::ofstream f(p, std::ios::binary);
    m.SerializeToOstream(&f);
    return p;
  }
};

// Conv -> Relu -> BatchNormalization (not foldable: a Relu sits between) -> GAP -> Flatten -> Gemm.
ProtoModel valid_model() {
  ProtoModel p;
  p.init("w", {3, 2, 3, 3}, std::vector<float>(54, 0.1f));
  p.init("b", {3}, {0.f, 0.1f, -0.1f});
  p.node("Conv", {"input", "w", "b"}, "c")->add_attribute()->set_name("pads");
  auto* pads = p.m.mutable_graph()->mutable_node(0)->mutable_attribute(0);
  pads->set_type(onnx::AttributeProto::INTS);
  for (int i = 0; i < 4; ++i) pads->add_ints(1);
  p.node("Relu", {"c"}, "r");
  p.init("gamma", {3}, {1.f, 2.f, 0.5f});
  p.init("beta", {3}, {0.f, 1.f, 0.f});
  p.init("mean", {3}, {0.f, 0.f, 1.f});
  p.init("var", {3}, {1.f, 4.f, 1.f});
  p.node("BatchNormalization", {"r", "gamma", "beta", "mean", "var"}, "bn");
  p.node("GlobalAveragePool", {"bn"}, "gap");
  p.node("Flatten", {"gap"}, "flat");
  p.init("fc", {3, 2}, {1, 0, 0, 1, 0, 1});  // B is [K=3, M=2]
  p.node("Gemm", {"flat", "fc"}, "logits");
  p.output("logits");
  return p;
}

TEST(Loader, ValidModelWithStandaloneBatchNormBecomesAffine) {
  Graph g = load_onnx(valid_model().save("valid.onnx"));
  ASSERT_EQ(g.nodes.size(), 5u);
  EXPECT_EQ(g.nodes[2].kind, OpKind::Affine);
  EXPECT_NEAR(g.nodes[2].weight[1], 2.0 / std::sqrt(4.0 + 1e-5), 1e-7);
  EXPECT_NEAR(g.nodes[2].bias[2], 0.0 - 1.0 * 0.5 / std::sqrt(1.0 + 1e-5), 1e-7);
  EXPECT_EQ(g.values[g.output].shape, (Shape{2}));
  // Flatten is an alias of the pooled tensor: both names split at the same place.
  SplitModel a = split_graph(g, "gap"), b = split_graph(g, "flat");
  EXPECT_EQ(a.split_shape(), b.split_shape());
}

TEST(Loader, MissingFile) {
  expect_error([] { load_onnx("/nonexistent/model.onnx"); }, {"cannot open model file", "/nonexistent/model.onnx"});
}

TEST(Loader, GarbageFile) {
  std::string p = tmp_path("garbage.onnx");
  std::ofstream(p) << "this is not a protobuf \x01\x02\xff at all";
  expect_error([&] { load_onnx(p); }, {p, "not a valid ONNX model"});
}

TEST(Loader, TruncatedFile) {
  if (!fixtures_present()) return;
  std::ifstream in(fixture_dir() + "/resnet18/model.onnx", std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), {});
  std::string p = tmp_path("truncated.onnx");
  std::ofstream(p, std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  expect_error([&] { load_onnx(p); }, {p});
}

TEST(Loader, UnsupportedOperatorNamesNodeAndList) {
  ProtoModel p = valid_model();
  p.m.mutable_graph()->mutable_node(1)->set_op_type("LRN");
  std::string path = p.save("lrn.onnx");
  expect_error([&] { load_onnx(path); }, {path, "Relu_r", "LRN", "unsupported operator", "Supported ops: Conv"});
}

TEST(Loader, NaNWeightIsRefused) {
  ProtoModel p = valid_model();
  p.m.mutable_graph()->mutable_initializer(0)->set_float_data(5, NAN);
  std::string path = p.save("nan.onnx");
  expect_error([&] { load_onnx(path); }, {"'w'", "NaN or Inf", "Conv_c"});
}

TEST(Loader, BadAttributeIsNamed) {
  ProtoModel p = valid_model();
  auto* a = p.m.mutable_graph()->mutable_node(0)->add_attribute();
  a->set_name("strides");
  a->set_type(onnx::AttributeProto::INTS);
  a->add_ints(1);
  std::string path = p.save("strides.onnx");
  expect_error([&] { load_onnx(path); }, {"attribute 'strides'", "expected 2 values"});
}

TEST(Loader, MissingSplitNameSuggestsNearest) {
  Graph g = load_onnx(valid_model().save("valid2.onnx"));
  expect_error([&] { split_graph(g, "relu"); }, {"no tensor named 'relu'", "Nearest names", "'r'"});
  expect_error([&] { split_graph(g, "input"); }, {"model input"});
  expect_error([&] { split_graph(g, "logits"); }, {"model output"});
}

TEST(Loader, SplitInsideAResidualBlockIsNotACut) {
  if (!fixtures_present()) return;
  Graph g = load_onnx(fixture_dir() + "/resnet18/model.onnx");
  // The first conv output after the stem's max pool lies inside layer1's
  // first residual block: the skip path from the pool crosses it.
  std::string inner;
  bool after_pool = false;
  for (const auto& n : g.nodes) {
    if (n.kind == OpKind::MaxPool) after_pool = true;
    if (after_pool && n.kind == OpKind::Conv) {
      inner = g.values[n.output].name;
      break;
    }
  }
  ASSERT_FALSE(inner.empty());
  expect_error([&] { split_graph(g, inner); }, {"does not cut the network"});
  EXPECT_NO_THROW(split_graph(g, "layer2"));
}

}  // namespace
}  // namespace ipna::test
