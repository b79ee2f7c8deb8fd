// End to end: the CLI's experiments (tools/experiments.cpp) on small models,
// checked against the files they write and against independent computations.
#include <gtest/gtest.h>
#include <stb_image.h>

#include <filesystem>
#include <fstream>
#include <numeric>

#include "engine/error.h"
#include "loaders/idx.h"
#include "loaders/onnx_loader.h"
#include "tests/fixtures.h"
#include "engine/experiments/attribute.h"
#include "engine/experiments/class_window.h"
#include "tools/experiments.h"

namespace fs = std::filesystem;

namespace ipna::test {
namespace {

std::string scratch(const std::string& name) {
  auto d = fs::temp_directory_path() / "ipna_experiments_test" / name;
  fs::remove_all(d);
  fs::create_directories(d.parent_path());
  return d.string();
}

cli::AttributeArgs tiny_args(const std::string& out) {
  cli::AttributeArgs a;
  a.model.files = {fixture_dir() + "/tiny224/model.onnx"};
  a.model.split = "split";
  a.model.precision = "f64";
  a.input.image = read_json(fixture_dir() + "/images/files.json")["landscape.png"].get<std::string>();
  a.cls = 3;
  a.boxes = {45, 100, 90, 130};
  a.steps.steps = "16";
  a.prune_percent = 10;
  a.quiet = true;
  a.out = out;
  return a;
}

double sum(const std::vector<double>& v) { return std::accumulate(v.begin(), v.end(), 0.0); }

TEST(ReferenceExperiments, AttributeFilesAgreeWithTheReport) {
  if (!fixtures_present()) return;
  const std::string out = scratch("attribute");
  auto rep = cli::run_attribute(tiny_args(out));
  auto ig = npy(out + "/ig.npy"), ig_pruned = npy(out + "/ig_pruned.npy"), mask = npy(out + "/prune_mask.npy");
  const Shape in{3, 224, 224};
  const Box box{45, 100, 90, 130};
  EXPECT_NEAR(sum(ig), rep["ig"]["sum"].get<double>(), 1e-12);
  EXPECT_NEAR(sum_in_box(ig, in, box), rep["boxes"][0]["ig_inside"].get<double>(), 1e-12);
  EXPECT_NEAR(rep["boxes"][0]["ig_inside"].get<double>() + rep["boxes"][0]["ig_outside"].get<double>(), sum(ig), 1e-12);
  EXPECT_NEAR(sum(ig_pruned), rep["pruned"]["ig_sum"].get<double>(), 1e-12);
  EXPECT_NEAR(sum_in_box(ig_pruned, in, box), rep["pruned"]["ig_inside"].get<double>(), 1e-12);
  auto ipna = npy(out + "/ipna.npy");
  EXPECT_NEAR(sum(ipna), rep["boxes"][0]["ipna_sum"].get<double>(), 1e-12);
  // The pruned mask is the top 10% by IPNA, and the pruned confidence is a separate masked forward.
  const int64_t zeros = std::count(mask.begin(), mask.end(), 0.0);
  EXPECT_EQ(zeros, std::llround(0.1 * mask.size()));
  EXPECT_EQ(zeros, rep["pruned"]["pruned_neurons"].get<int64_t>());
  SplitModel m = load_split_model(fixture_dir() + "/tiny224/model.onnx", "split");
  Attributor engine(m, Precision::F64);
  std::vector<double> x, x0;
  tiny_args(out).input.load(m.input_shape(), x, x0, nullptr);
  auto z = engine.logits(x, mask);
  double zmax = *std::max_element(z.begin(), z.end()), s = 0;
  for (double v : z) s += std::exp(v - zmax);
  EXPECT_NEAR(rep["pruned"]["confidence"].get<double>(), std::exp(z[3] - zmax) / s, 1e-12);
  // Every picture decodes, at the crop's size (the figure is a grid of three).
  for (const auto& f : rep["files"]) {
    int w = 0, h = 0, n = 0;
    ASSERT_TRUE(stbi_info((out + "/" + f.get<std::string>()).c_str(), &w, &h, &n)) << f;
    if (f != "figure.png") {
      EXPECT_EQ(w, 224) << f;
      EXPECT_EQ(h, 224) << f;
    } else {
      EXPECT_GT(w, 3 * 224);
    }
  }
  EXPECT_EQ(rep["files"].size(), 11u);
}

TEST(ReferenceExperiments, CurveEndpoints) {
  if (!fixtures_present()) return;
  const std::string out = scratch("curve");
  cli::CurveArgs c;
  c.base = tiny_args(out);
  c.fractions = {0, 0.5, 1};
  auto rep = cli::run_curve(c);
  ASSERT_EQ(rep["rows"].size(), 6u);
  auto base = cli::run_attribute(tiny_args(scratch("curve_base")));
  for (const auto& row : rep["rows"]) {
    const double f = row["fraction"];
    EXPECT_NEAR(row["ig_inside"].get<double>() + row["ig_outside"].get<double>(), row["ig_total"].get<double>(), 1e-12);
    if (f == 0) EXPECT_NEAR(row["ig_total"].get<double>(), base["ig"]["sum"].get<double>(), 1e-12);
    if (f == 1) EXPECT_EQ(row["ig_total"].get<double>(), 0.0);  // h is all zeros: F no longer depends on x
  }
  int w = 0, h = 0, n = 0;
  EXPECT_TRUE(stbi_info((out + "/curve.png").c_str(), &w, &h, &n));
  std::ifstream csv(out + "/curve.csv");
  int lines = 0;
  for (std::string l; std::getline(csv, l);) ++lines;
  EXPECT_EQ(lines, 7);
}

TEST(ReferenceExperiments, ClassWindowAccuracyMatchesPyTorch) {
  const std::string out = scratch("class_window");
  cli::ClassWindowArgs a;
  a.model.files = {cli::default_model_path("fashion_cnn.onnx")};
  a.model.split = "hidden";
  a.cls = 6;  // Shirt: the class the model finds hardest
  a.images = 6;
  a.k_max = 3;
  a.steps.steps = "16";
  a.random_draws = 2;
  a.quiet = true;
  a.out = out;
  auto rep = cli::run_class_window(a);
  ASSERT_EQ(rep["table"].size(), 4u);
  // k = 0 prunes nothing: the accuracy is the model's on the class's 1000 test
  // images, which the PyTorch training script measured.
  auto meta = read_json(cli::default_model_path("fashion_cnn.json"));
  EXPECT_NEAR(rep["table"][0]["ipna"]["accuracy"].get<double>(),
              meta["per_class_accuracy"]["Shirt"].get<double>(), 1.5e-3);  // float32 argmax near-ties
  EXPECT_EQ(rep["class_test_images"].get<int>(), 1000);
  for (const char* f : {"class_window.csv", "class_window.png", "avg_ipna.npy", "avg_conductance.npy"})
    EXPECT_TRUE(fs::exists(out + "/" + f)) << f;
  EXPECT_EQ(read_npy(out + "/avg_ipna.npy").data.size(), 64u);
}

TEST(Experiments, BadInputLeavesNoOutputFolder) {
  if (!fixtures_present()) return;
  auto expect_error = [](const std::function<void(cli::AttributeArgs&)>& spoil, const std::string& needle) {
    const std::string out = scratch("bad");
    cli::AttributeArgs a = tiny_args(out);
    spoil(a);
    try {
      cli::run_attribute(a);
      ADD_FAILURE() << "no error for " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
    EXPECT_FALSE(fs::exists(out)) << needle;
    for (const auto& entry : fs::directory_iterator(fs::path(out).parent_path()))
      EXPECT_EQ(entry.path().filename().string().find("bad.partial"), std::string::npos) << entry.path();
  };
  expect_error([](auto& a) { a.input.image = "/nonexistent.jpg"; }, "cannot open image");
  expect_error([](auto& a) { a.input.image = "/etc/hostname"; }, "not a JPEG or PNG");
  expect_error([](auto& a) { a.boxes = {200, 0, 230, 10}; }, "box 0");
  expect_error([](auto& a) { a.cls = 10; }, "out of range");
  expect_error([](auto& a) { a.prune_percent = 101; }, "[0, 100]");
  expect_error([](auto& a) { a.model.files = {"/nonexistent.onnx"}; }, "cannot open model file");
}

TEST(Experiments, ClassWindowOutsideTheImageIsRefused) {
  cli::ClassWindowArgs a;
  a.model.files = {cli::default_model_path("fashion_cnn.onnx")};
  a.model.split = "hidden";
  a.window = {20, 20, 30, 25};
  a.out = scratch("bad_window");
  EXPECT_THROW(cli::run_class_window(a), Error);
  EXPECT_FALSE(fs::exists(a.out));
}

}  // namespace
}  // namespace ipna::test

namespace ipna::test {
namespace {

// The library checks its own specs, with messages that name values, not command-line options.
TEST(Experiments, LibraryCallsCheckTheirSpecs) {
  const SplitModel m = load_split_model(std::string(IPNA_TEST_DATA) + "/../models/fashion_cnn.onnx", "hidden");
  Attributor engine(m, Precision::F64);
  const std::vector<double> x(784, 0.5), x0(784, 0.0);
  auto refused = [](auto&& call, const std::string& expect) {
    try {
      call();
      ADD_FAILURE() << "accepted; expected '" << expect << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(expect), std::string::npos) << e.what();
      EXPECT_EQ(std::string(e.what()).find("--"), std::string::npos) << "names a CLI option: " << e.what();
    }
  };
  AttributeSpec s;
  s.target_class = 1;
  s.steps.steps = 8;
  s.prune_percent = 10;
  refused([&] { attribute(engine, x, x0, s); }, "needs a box");
  s.prune_percent = 120;
  refused([&] { attribute(engine, x, x0, s); }, "[0, 100]");
  s.prune_percent = -1;
  s.boxes = {{0, 0, 14, 14}, {14, 14, 28, 28}};
  refused([&] { pruning_curve(engine, x, x0, s, {0.5}); }, "exactly one box");
  s.boxes.resize(1);
  refused([&] { pruning_curve(engine, x, x0, s, {1.5}); }, "[0, 1]");
  ClassWindowSpec w;
  w.window = {20, 20, 30, 25};
  refused([&] { class_window(engine, read_idx_dataset(kFashionMnistDir, "test"), w); }, "window");

  // The typed result agrees with its JSON and with the grid's additivity in tangent form.
  s.boxes.clear();
  s.grid_rows = s.grid_cols = 2;
  s.ipna_form = IpnaForm::Tangent;
  s.prune_percent = 25;
  const AttributeResult r = attribute(engine, x, x0, s);
  ASSERT_EQ(r.boxes.size(), 4u);
  ASSERT_TRUE(r.grid && r.pruned);
  EXPECT_NEAR(r.grid->ipna_total_minus_ig_total, 0.0, 1e-12);  // SPEC.md: the tangent form is additive
  EXPECT_EQ(r.pruned->pruned_units, 16);                         // 25% of 64
  const nlohmann::json j = r.to_json();
  EXPECT_EQ(j["grid"]["ipna_total"].get<double>(), r.grid->ipna_total);
  EXPECT_EQ(j["pruned"]["ig_sum"].get<double>(), r.pruned->result.ig_sum);
}

}  // namespace
}  // namespace ipna::test
