// Agreement with PyTorch and Captum on the same weights (tools/make_fixtures.py):
// LeNet, a VGG-style net with average pooling, ResNet-18 at 64x64, a
// MobileNetV2 block (depthwise + ReLU6 + residual) and eight more torchvision
// families, both targets, float64 to 1e-9 relative (L2) and float32 to 1e-4. Pruned-model IG by the IPNA ranking
// and by the channel conductance ranking is checked the same way.
#include <gtest/gtest.h>

#include "engine/attribution.h"
#include "loaders/onnx_loader.h"
#include "tests/fixtures.h"
#include "tests/net_builder.h"

namespace ipna::test {
namespace {

class Reference : public ::testing::TestWithParam<std::string> {};

struct Case {
  std::string dir;
  nlohmann::json meta;
  SplitModel model;
  std::vector<double> x, x0;
  std::vector<Box> boxes;
};

Case load_case(const std::string& name) {
  Case c;
  c.dir = fixture_dir() + "/" + name;
  c.meta = read_json(c.dir + "/meta.json");
  c.model = load_split_model(c.dir + "/model.onnx", c.meta["split"].get<std::string>());
  c.x = npy(c.dir + "/x.npy");
  c.x0 = npy(c.dir + "/baseline.npy");
  for (auto& b : c.meta["boxes"]) c.boxes.push_back({b[0], b[1], b[2], b[3]});
  return c;
}

AttributionResult attribute(Case& c, Precision p, TargetKind t, const std::vector<double>& mask = {},
                            bool with_boxes = true, const std::string& device = "cpu") {
  Attributor a(c.model, p, device);
  AttributionRequest r;
  r.target_class = c.meta["class"];
  r.target = t;
  r.steps = c.meta["steps"];
  r.integrated_gradients = true;
  r.conductance = true;
  if (with_boxes) r.boxes = c.boxes;
  r.split_mask = mask;
  return a.run(c.x, c.x0, r);
}

TEST_P(Reference, MatchesPyTorchAndCaptum) {
  if (!fixtures_present()) return;
  Case c = load_case(GetParam());
  for (const auto& cs : c.meta["cases"]) {
    const std::string t = cs["target"];
    const TargetKind kind = t == "prob" ? TargetKind::Probability : TargetKind::Logit;
    const auto ref_ig = npy(c.dir + "/ref_ig_" + t + ".npy"), ref_cond = npy(c.dir + "/ref_cond_" + t + ".npy");
    const auto cap_ig = npy(c.dir + "/captum_ig_" + t + ".npy"), cap_cond = npy(c.dir + "/captum_cond_" + t + ".npy");
    // Tolerances: float64 to 1e-9, or for conductance and IPNA, sums of differences of neighbouring
    // path points, 4 unit roundoffs times their condition number kappa (the factor by which they magnify
    // rounding of h, from the fixtures); float32 to 1e-4, or within 8x of what float32 costs PyTorch
    // itself on the same formulas where that is more (deep random nets can be badly conditioned).
    const auto& kappa = cs["kappa"];
    const auto& e32 = cs["float32_error"];
    auto tol = [&](Precision p, const nlohmann::json& k, const nlohmann::json& e) {
      return p == Precision::F64 ? std::max(1e-9, 4 * 0x1p-53 * k.get<double>())
                                 : std::max(1e-4, 8 * e.get<double>());
    };
    for (Precision p : {Precision::F64, Precision::F32}) {
      const std::string what = GetParam() + " target=" + t + (p == Precision::F64 ? " f64" : " f32");
      AttributionResult r = attribute(c, p, kind);
      const double t_ig = tol(p, 1.0, e32["ig"]), t_cond = tol(p, kappa["cond"], e32["cond"]);
      EXPECT_LT(rel_err(r.ig, ref_ig), t_ig) << what << " IG vs PyTorch";
      EXPECT_LT(rel_err(r.ig, cap_ig), t_ig) << what << " IG vs Captum";
      EXPECT_LT(rel_err(r.conductance, ref_cond), t_cond) << what << " conductance vs PyTorch";
      EXPECT_LT(rel_err(r.conductance, cap_cond), t_cond) << what << " conductance vs Captum LayerConductance";
      for (size_t b = 0; b < c.boxes.size(); ++b)
        EXPECT_LT(rel_err(r.ipna[b], npy(c.dir + "/ref_ipna" + std::to_string(b) + "_" + t + ".npy")),
                  tol(p, kappa["ipna"][b], e32["ipna"][b]))
            << what << " IPNA box " << b;
      if (p == Precision::F32) {  // without boxes f1 keeps NHWC values too, as f2 always does in float32
        const AttributionResult plain = attribute(c, p, kind, {}, false);
        EXPECT_LT(rel_err(plain.ig, ref_ig), t_ig) << what << " IG vs PyTorch, no boxes";
        EXPECT_LT(rel_err(plain.conductance, ref_cond), t_cond) << what << " conductance vs PyTorch, no boxes";
      }
      const double fx = cs["F_x"], fx0 = cs["F_x0"], t_f = p == Precision::F64 ? 1e-9 : 1e-4;
      EXPECT_NEAR(r.f_input, fx, t_f * (std::abs(fx) + 1e-3)) << what;
      EXPECT_NEAR(r.f_baseline, fx0, t_f * (std::abs(fx0) + 1e-3)) << what;
    }
  }
}

// A non-uniform schedule (SPEC.md "Non-uniform paths") against PyTorch on the same schedule, and IG by
// Captum's other rules, float64 (from a baseline off the black image's max-pool ties, as the left and
// trapezoid rules take a gradient at the baseline itself). The fixtures' trapezoid reference is
// Captum's riemann_trapezoid with n = m + 1 points, which weighs each by 1/n rounded to float32 where
// the rule weighs 1/m: m * float(1/n) times ours.
TEST_P(Reference, SchedulesAndQuadratureRulesMatchPyTorchAndCaptum) {
  if (!fixtures_present()) return;
  Case c = load_case(GetParam());
  const auto& cs = c.meta["cases"][0];  // the probability target
  ASSERT_EQ(cs["target"], "prob");
  const int m = c.meta["steps"];
  Attributor a(c.model, Precision::F64);
  AttributionRequest r;
  r.target_class = c.meta["class"];
  r.steps = 0;
  r.schedule = npy(c.dir + "/schedule.npy");
  r.integrated_gradients = r.conductance = true;
  r.boxes = c.boxes;
  const AttributionResult s = a.run(c.x, c.x0, r);
  const auto& kappa = cs["kappa"];
  auto tol = [](const nlohmann::json& k) { return std::max(1e-9, 16 * 0x1p-53 * k.get<double>()); };
  EXPECT_LT(rel_err(s.ig, npy(c.dir + "/ref_ig_schedule.npy")), 1e-9) << "IG";
  EXPECT_LT(rel_err(s.conductance, npy(c.dir + "/ref_cond_schedule.npy")), tol(kappa["cond"])) << "conductance";
  for (size_t b = 0; b < c.boxes.size(); ++b)
    EXPECT_LT(rel_err(s.ipna[b], npy(c.dir + "/ref_ipna" + std::to_string(b) + "_schedule.npy")),
              tol(kappa["ipna"][b]))
        << "IPNA box " << b;
  EXPECT_EQ(s.evaluations, m);

  r.schedule.clear();
  r.steps = m;
  const auto x0r = npy(c.dir + "/baseline_random.npy");
  const AttributionResult right = a.run(c.x, x0r, r);
  for (auto [rule, name] : {std::pair{Quadrature::Left, "left"}, {Quadrature::Middle, "middle"},
                            {Quadrature::Trapezoid, "trapezoid"}}) {
    r.quadrature = rule;
    const AttributionResult q = a.run(c.x, x0r, r);
    std::vector<double> ig = q.ig;
    if (rule == Quadrature::Trapezoid)
      for (double& v : ig) v *= m * static_cast<double>(static_cast<float>(1.0 / (m + 1)));
    EXPECT_LT(rel_err(ig, npy(c.dir + "/captum_ig_" + std::string(name) + "_prob.npy")), 1e-9) << name;
    // conductance and IPNA keep the right rule's steps; IG took its own points
    EXPECT_EQ(q.conductance, right.conductance) << name;
    EXPECT_EQ(q.ipna, right.ipna) << name;
    EXPECT_EQ(q.evaluations, m + (rule == Quadrature::Trapezoid ? m + 1 : m)) << name;
    EXPECT_NEAR(q.ipna_gap[0], q.ipna_sum[0] - sum_in_box(q.ig, q.input_shape, c.boxes[0]), 1e-12) << name;
  }
}

// cpu/winograd (F(4x4, 3x3) for the 3x3 stride-1 convolutions) against PyTorch's float64
// references. Per convolution it costs 2x to 8x direct float32's error (tests/test_cuda.cpp); through a
// whole attribution the difference grows to 300x on the ResNet-18 fixture (1e-4 against 3e-7), so the
// bound here is 1e-3 relative, ten times float32's, or 8x PyTorch's own float32 error where more.
TEST_P(Reference, WinogradWithinItsBound) {
  if (!fixtures_present()) return;
  Case c = load_case(GetParam());
  for (const auto& cs : c.meta["cases"]) {
    const std::string t = cs["target"];
    const TargetKind kind = t == "prob" ? TargetKind::Probability : TargetKind::Logit;
    const auto& e32 = cs["float32_error"];
    const AttributionResult r = attribute(c, Precision::F32, kind, {}, false, "cpu/winograd");
    EXPECT_LT(rel_err(r.ig, npy(c.dir + "/ref_ig_" + t + ".npy")), std::max(1e-3, 8 * e32["ig"].get<double>()))
        << GetParam() << " target=" << t << " IG";
    EXPECT_LT(rel_err(r.conductance, npy(c.dir + "/ref_cond_" + t + ".npy")),
              std::max(1e-3, 8 * e32["cond"].get<double>()))
        << GetParam() << " target=" << t << " conductance";
  }
}

TEST_P(Reference, PrunedIntegratedGradients) {
  if (!fixtures_present()) return;
  Case c = load_case(GetParam());
  AttributionResult base = attribute(c, Precision::F64, TargetKind::Probability);
  for (const auto& pr : c.meta["prune"]) {
    const std::string tag = pr["tag"];
    const bool channel = pr["channel"];
    const auto& scores = tag == "neuron_ipna" ? base.ipna[0] : base.conductance;
    auto mask = prune_mask(scores, base.split_shape,
                           {pr["percent"].get<double>(), -1, channel ? Granularity::Channel : Granularity::Neuron});
    EXPECT_EQ(mask, npy(c.dir + "/mask_" + tag + ".npy")) << tag << ": ranking differs from PyTorch's";
    AttributionResult r = attribute(c, Precision::F64, TargetKind::Probability, mask, false);
    EXPECT_LT(rel_err(r.ig, npy(c.dir + "/ref_ig_pruned_" + tag + ".npy")), 1e-9) << tag;
    EXPECT_NEAR(r.f_input, pr["F_x"].get<double>(), 1e-9) << tag;
  }
}

INSTANTIATE_TEST_SUITE_P(Models, Reference,
                         ::testing::Values("lenet", "vgg_avg", "resnet18", "mbv2_block", "tiny224"));
// torchvision's other CNN families (tools/make_fixtures.py FAMILIES): squeeze-excitation gates, Concat,
// Split and channel shuffles, channels-last LayerNorm and GELU, exported by PyTorch's TorchScript exporter.
INSTANTIATE_TEST_SUITE_P(Families, Reference,
                         ::testing::Values("mobilenet_v3_small", "efficientnet_b0", "regnet_y_400mf", "densenet121",
                                           "googlenet", "squeezenet1_1", "shufflenet_v2_x0_5", "convnext_tiny"));

TEST(ReferenceTwoPart, OriginalTwoFileFormGivesTheSameResult) {
  if (!fixtures_present()) return;
  Case c = load_case("lenet");
  SplitModel two = load_two_part_model(c.dir + "/first.onnx", c.dir + "/second.onnx");
  EXPECT_EQ(two.split_shape(), c.model.split_shape());
  Attributor a(two, Precision::F64);
  AttributionRequest r;
  r.target_class = c.meta["class"];
  r.steps = c.meta["steps"];
  r.integrated_gradients = true;
  r.conductance = true;
  r.boxes = c.boxes;
  AttributionResult res = a.run(c.x, c.x0, r);
  EXPECT_LT(rel_err(res.ig, npy(c.dir + "/ref_ig_prob.npy")), 1e-9);
  EXPECT_LT(rel_err(res.ipna[0], npy(c.dir + "/ref_ipna0_prob.npy")), 1e-9);
}

}  // namespace
}  // namespace ipna::test
