// The SPEC.md properties as oracles, on a small conv net built in the IR with
// random weights, in float64: completeness of IG and conductance, patch
// completeness of IPNA, additivity over a partition, exactness with a linear
// f1, and the engine's own invariants (chunking, precision, pruning, errors).
#include <gtest/gtest.h>

#include <cmath>

#include "engine/attribution.h"
#include "engine/error.h"
#include "tests/net_builder.h"

namespace ipna::test {
namespace {

struct Fixture {
  SplitModel model = small_conv_net();
  std::vector<double> x = random_vector(3 * 16 * 16, 21);
  std::vector<double> x0 = black_baseline(Shape{3, 16, 16});
};

AttributionResult run(const SplitModel& m, const std::vector<double>& x, const std::vector<double>& x0, int steps,
                      std::vector<Box> boxes, Precision p = Precision::F64, int chunk = 0,
                      TargetKind t = TargetKind::Probability, int cls = 2) {
  Attributor a(m, p);
  AttributionRequest r;
  r.target_class = cls;
  r.target = t;
  r.steps = steps;
  r.integrated_gradients = true;
  r.conductance = true;
  r.boxes = std::move(boxes);
  r.chunk = chunk;
  return a.run(x, x0, r);
}

// Errors of the four SPEC.md properties at one m: IG and conductance
// completeness gaps, the worst patch-completeness gap over four boxes that
// partition the image, and the neuron-wise additivity error (L2, relative).
struct PropertyErrors {
  double ig, cond, patch, additivity, scale;
};

PropertyErrors property_errors(const SplitModel& m, const std::vector<double>& x, const std::vector<double>& x0,
                               int steps, TargetKind target) {
  std::vector<Box> quads{{0, 0, 8, 8}, {0, 8, 8, 16}, {8, 0, 16, 8}, {8, 8, 16, 16}};
  AttributionResult r = run(m, x, x0, steps, quads, Precision::F64, 0, target);
  PropertyErrors e{std::abs(r.ig_gap), std::abs(r.conductance_gap), 0, 0, 0};
  for (size_t b = 0; b < quads.size(); ++b) e.patch = std::max(e.patch, std::abs(r.ipna_gap[b]));
  std::vector<double> sum(r.conductance.size(), 0.0);
  for (auto& map : r.ipna)
    for (size_t j = 0; j < map.size(); ++j) sum[j] += map[j];
  e.additivity = rel_err(sum, r.conductance);
  for (double v : r.ig) e.scale += std::abs(v);  // the size of the attributions, sum |IG_i|
  return e;
}

// The right Riemann sum of a piecewise-smooth integrand converges like 1/m;
// ReLU and max-pool kinks make single errors non-monotone in m. So: each error
// at m in {2048, 4096} must be at least 8x below its worst at m in {16, 32}
// (1/m predicts 128x), and at 4096 the gaps must be under 0.5% of sum |IG|
// and the neuron-wise additivity error under 5%.
void check_convergence(TargetKind target) {
  Fixture f;
  PropertyErrors coarse{0, 0, 0, 0, 0}, fine{0, 0, 0, 0, 0};
  for (int m : {16, 32, 2048, 4096}) {
    PropertyErrors e = property_errors(f.model, f.x, f.x0, m, target);
    PropertyErrors& into = m <= 32 ? coarse : fine;
    into = {std::max(into.ig, e.ig), std::max(into.cond, e.cond), std::max(into.patch, e.patch),
            std::max(into.additivity, e.additivity), e.scale};
  }
  EXPECT_LT(fine.ig, coarse.ig / 8);
  EXPECT_LT(fine.cond, coarse.cond / 8);
  EXPECT_LT(fine.patch, coarse.patch / 8);
  EXPECT_LT(fine.additivity, coarse.additivity / 8);
  EXPECT_LT(fine.ig, 0.005 * fine.scale);
  EXPECT_LT(fine.cond, 0.005 * fine.scale);
  EXPECT_LT(fine.patch, 0.005 * fine.scale);
  EXPECT_LT(fine.additivity, 0.05);
}

TEST(Properties, CompletenessPatchCompletenessAdditivityProbability) { check_convergence(TargetKind::Probability); }
TEST(Properties, CompletenessPatchCompletenessAdditivityLogit) { check_convergence(TargetKind::Logit); }

// With f1 linear, h(x_{k-1} + d 1_S) - h(x_{k-1}) = J d 1_S: IPNA is exactly
// linear in S, and patch completeness and additivity hold for every m.
TEST(Properties, LinearF1IsExactForAnyM) {
  SplitModel m = small_conv_net(true);
  auto x = random_vector(3 * 16 * 16, 5);
  auto x0 = black_baseline(Shape{3, 16, 16});
  std::vector<Box> boxes{{2, 3, 9, 7}, {2, 7, 9, 12}, {2, 3, 9, 12}, {0, 0, 16, 16}};
  AttributionResult r = run(m, x, x0, 7, boxes);
  std::vector<double> sum(r.ipna[0].size());
  for (size_t j = 0; j < sum.size(); ++j) sum[j] = r.ipna[0][j] + r.ipna[1][j];
  EXPECT_LT(rel_err(sum, r.ipna[2]), 1e-12);
  EXPECT_LT(rel_err(r.ipna[3], r.conductance), 1e-12);
  for (size_t b = 0; b < boxes.size(); ++b)
    EXPECT_NEAR(r.ipna_sum[b], r.ig_in_box[b], 1e-12 * (std::abs(r.ig_in_box[b]) + 1e-3)) << "box " << b;
}

TEST(Properties, ConductanceIsIpnaOfTheWholeImage) {
  Fixture f;
  AttributionResult r = run(f.model, f.x, f.x0, 24, {{0, 0, 16, 16}});
  EXPECT_LT(rel_err(r.ipna[0], r.conductance), 1e-13);
}

TEST(Engine, ChunkingDoesNotChangeResults) {
  Fixture f;
  AttributionResult a = run(f.model, f.x, f.x0, 20, {{1, 2, 9, 9}}, Precision::F64, 1);
  AttributionResult b = run(f.model, f.x, f.x0, 20, {{1, 2, 9, 9}}, Precision::F64, 7);
  AttributionResult c = run(f.model, f.x, f.x0, 20, {{1, 2, 9, 9}}, Precision::F64, 20);
  EXPECT_EQ(a.chunk, 1);
  EXPECT_EQ(b.chunk, 7);
  for (auto* r : {&b, &c}) {
    EXPECT_LT(rel_err(r->ig, a.ig), 1e-13);
    EXPECT_LT(rel_err(r->conductance, a.conductance), 1e-13);
    EXPECT_LT(rel_err(r->ipna[0], a.ipna[0]), 1e-13);
  }
}

TEST(Engine, Float32AgreesWithFloat64) {
  Fixture f;
  AttributionResult a = run(f.model, f.x, f.x0, 32, {{1, 2, 9, 9}}, Precision::F64);
  AttributionResult b = run(f.model, f.x, f.x0, 32, {{1, 2, 9, 9}}, Precision::F32);
  EXPECT_LT(rel_err(b.ig, a.ig), 1e-4);
  EXPECT_LT(rel_err(b.conductance, a.conductance), 1e-4);
  EXPECT_LT(rel_err(b.ipna[0], a.ipna[0]), 1e-4);
  EXPECT_NEAR(b.f_input, a.f_input, 1e-5);
}

TEST(Engine, LogitTargetValueIsTheLogit) {
  Fixture f;
  AttributionResult r = run(f.model, f.x, f.x0, 8, {}, Precision::F64, 0, TargetKind::Logit, 1);
  Attributor a(f.model, Precision::F64);
  EXPECT_NEAR(r.f_input, a.logits(f.x)[1], 1e-12);
  EXPECT_NEAR(r.f_baseline, a.logits(f.x0)[1], 1e-12);
}

TEST(Pruning, MaskCountsAndGranularity) {
  Shape s{4, 3, 3};
  std::vector<double> scores = random_vector(s.numel(), 9);
  auto m = prune_mask(scores, s, {25.0, -1, Granularity::Neuron});
  int zeros = 0;
  for (double v : m) zeros += v == 0.0;
  EXPECT_EQ(zeros, 9);  // llround(0.25 * 36)
  // The zeroed units are exactly the top scores.
  double min_pruned = INFINITY, max_kept = -INFINITY;
  for (size_t i = 0; i < m.size(); ++i) (m[i] == 0 ? min_pruned : max_kept) =
      m[i] == 0 ? std::min(min_pruned, scores[i]) : std::max(max_kept, scores[i]);
  EXPECT_GT(min_pruned, max_kept);
  auto mc = prune_mask(scores, s, {-1, 2, Granularity::Channel});
  auto cs = channel_scores(scores, s);
  std::vector<int> order{0, 1, 2, 3};
  std::sort(order.begin(), order.end(), [&](int a, int b) { return cs[a] > cs[b]; });
  for (int c = 0; c < 4; ++c)
    for (int j = 0; j < 9; ++j) EXPECT_EQ(mc[c * 9 + j], (c == order[0] || c == order[1]) ? 0.0 : 1.0);
  EXPECT_THROW(prune_mask(scores, s, {101.0, -1, Granularity::Neuron}), Error);
  EXPECT_THROW(prune_mask(scores, s, {-1, 5, Granularity::Channel}), Error);
}

TEST(Pruning, PrunedModelIgMatchesMaskedForward) {
  Fixture f;
  Attributor a(f.model, Precision::F64);
  AttributionRequest r;
  r.target_class = 2;
  r.steps = 512;
  r.integrated_gradients = true;
  r.boxes = {{0, 0, 8, 8}};
  AttributionResult base = a.run(f.x, f.x0, r);
  auto mask = prune_mask(base.ipna[0], base.split_shape, {10.0, -1, Granularity::Neuron});
  r.split_mask = mask;
  AttributionResult pruned = a.run(f.x, f.x0, r);
  // F(x) of the pruned model is the softmax of a separate masked forward.
  auto z = a.logits(f.x, mask);
  double zmax = *std::max_element(z.begin(), z.end()), s = 0;
  for (double v : z) s += std::exp(v - zmax);
  EXPECT_NEAR(pruned.f_input, std::exp(z[2] - zmax) / s, 1e-12);
  EXPECT_LT(std::abs(pruned.ig_gap), 0.01 * std::abs(pruned.f_input - pruned.f_baseline) + 1e-6);
  // An all-ones mask is the unpruned model.
  r.split_mask.assign(mask.size(), 1.0);
  AttributionResult same = a.run(f.x, f.x0, r);
  EXPECT_LT(rel_err(same.ig, base.ig), 1e-14);
  // Pruned neurons carry no IPNA.
  for (size_t j = 0; j < mask.size(); ++j)
    if (mask[j] == 0) EXPECT_EQ(pruned.ipna[0][j], 0.0);
}

TEST(Errors, BadRequestsAreRefusedWithAMessage) {
  Fixture f;
  Attributor a(f.model, Precision::F64);
  AttributionRequest r;
  r.target_class = 2;
  r.steps = 4;
  r.integrated_gradients = true;
  auto expect_error = [&](AttributionRequest q, std::vector<double> x, const std::string& needle) {
    try {
      a.run(x, f.x0, q);
      ADD_FAILURE() << "no error for: " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  auto q = r;
  q.steps = 0;
  expect_error(q, f.x, "steps must be positive");
  q = r;
  q.target_class = 5;
  expect_error(q, f.x, "out of range");
  q = r;
  q.target_class = -1;
  expect_error(q, f.x, "out of range");
  q = r;
  q.boxes = {{4, 4, 4, 9}};
  expect_error(q, f.x, "box 0");
  q = r;
  q.boxes = {{0, 0, 17, 8}};
  expect_error(q, f.x, "box 0");
  q = r;
  q.split_mask = {1.0, 0.0};
  expect_error(q, f.x, "pruning mask");
  auto bad = f.x;
  bad[7] = NAN;
  expect_error(r, bad, "NaN");
  bad[7] = INFINITY;
  expect_error(r, bad, "NaN or Inf");
  expect_error(r, std::vector<double>(10, 0.0), "expects");
  q = r;
  q.integrated_gradients = false;
  expect_error(q, f.x, "nothing to compute");
}

}  // namespace
}  // namespace ipna::test
