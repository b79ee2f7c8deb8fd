// The secant rule (Quadrature::Secant): each step's gradient through the slopes of the
// nonlinearities over the step. Checked in float64 against what it must be: completeness exact at
// every step count on nets with every op it has slopes for; the slopes and max-pool shares of
// the backend ops against their definitions; Captum's DeepLift (Rescale rule) applied step by
// step on the same weights; and the error against a uniform m = 8192 reference at a quarter of
// the right rule's steps on the fixtures' random-weight nets.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

#include "engine/attribution.h"
#include "engine/backend.h"
#include "engine/cpu/cpu_backend.h"
#include "engine/error.h"
#include "engine/plan.h"
#include "loaders/onnx_loader.h"
#include "tests/fixtures.h"
#include "tests/net_builder.h"
#include "tests/op_graphs.h"

namespace ipna::test {
namespace {

// Every op the rule has slopes for: ReLU, ReLU6, an overlapping max pool, a smooth activation,
// a product with a per-channel gate (squeeze-and-excite), a residual add.
SplitModel every_slope_net() {
  NetBuilder b(Shape{3, 12, 12}, 5);
  b.conv(6, 3, 1, 1);
  b.relu();
  b.pool(OpKind::MaxPool, 3, 2, 1);
  const int trunk = b.conv(6, 3, 1, 1);
  b.clip(0, 6);
  const int branch = b.activation(ActivationFn::SiLU);
  b.global_avg();
  b.activation(ActivationFn::Sigmoid);
  const int gated = b.mul(branch, b.current());
  b.add(gated, trunk);
  return with_classifier_head(b, b.current());
}

AttributionRequest secant_request(int steps, TargetKind target) {
  AttributionRequest r;
  r.target_class = 1;
  r.target = target;
  r.steps = steps;
  r.quadrature = Quadrature::Secant;
  r.integrated_gradients = r.conductance = true;
  return r;
}

TEST(Secant, CompletenessIsExactAtEveryStepCount) {
  for (const auto& [name, model] :
       {std::pair{"small conv net", small_conv_net()}, {"every slope", every_slope_net()}}) {
    const Shape in = model.input_shape();
    const std::vector<double> x = random_vector(in.numel(), 3, 2.0), x0(in.numel(), 0.0);
    Attributor a(model, Precision::F64);
    for (TargetKind target : {TargetKind::Probability, TargetKind::Logit})
      for (int m : {1, 3, 8}) {
        AttributionRequest r = secant_request(m, target);
        const AttributionResult s = a.run(x, x0, r);
        const double dF = s.f_input - s.f_baseline;
        EXPECT_LT(std::abs(s.ig_gap), 1e-12 * std::abs(dF)) << name << " m=" << m;
        EXPECT_LT(std::abs(s.conductance_gap), 1e-12 * std::abs(dF)) << name << " m=" << m;
        EXPECT_EQ(s.evaluations, m + 1);   // one chunk: its leading point x'
        r.quadrature = Quadrature::Right;  // the check can fail: the right rule's gap at these m is not rounding
        EXPECT_GT(std::abs(a.run(x, x0, r).ig_gap), 1e-6 * std::abs(dF)) << name << " m=" << m;
      }
  }
}

// The tangent form through the same slopes: each box's patch sum is the rule's IG inside it, and boxes
// that tile the image add up to the whole image's map.
TEST(Secant, TangentPatchSumsAreItsIgInsideEachBox) {
  const SplitModel model = every_slope_net();
  const std::vector<double> x = random_vector(model.input_shape().numel(), 8, 2.0),
                            x0(model.input_shape().numel(), 0.0);
  Attributor a(model, Precision::F64);
  AttributionRequest r = secant_request(8, TargetKind::Probability);
  r.ipna_form = IpnaForm::Tangent;
  r.boxes = {{0, 0, 12, 12}, {0, 0, 5, 12}, {5, 0, 12, 7}, {5, 7, 12, 12}, {3, 4, 9, 10}};
  r.chunk = 3;
  const AttributionResult s = a.run(x, x0, r);
  const double dF = s.f_input - s.f_baseline;
  for (size_t b = 0; b < r.boxes.size(); ++b) EXPECT_LT(std::abs(s.ipna_gap[b]), 1e-12 * std::abs(dF)) << "box " << b;
  EXPECT_LT(std::abs(s.ipna_sum[0] - dF), 1e-12 * std::abs(dF));  // the whole image: completeness
  std::vector<double> tiles(s.ipna[0].size(), 0.0);
  for (size_t b = 1; b <= 3; ++b)
    for (size_t j = 0; j < tiles.size(); ++j) tiles[j] += s.ipna[b][j];
  EXPECT_LT(rel_err(tiles, s.ipna[0]), 1e-12);
  // Its limit is the tangent form's: at 4096 steps the right rule's tangent form is within its own error.
  r.boxes = {r.boxes[4]};
  r.chunk = 0;
  r.steps = 256;
  const AttributionResult sec = a.run(x, x0, r);
  r.quadrature = Quadrature::Right;
  r.steps = 4096;
  const AttributionResult fine = a.run(x, x0, r);
  r.steps = 1024;
  const AttributionResult right = a.run(x, x0, r);
  EXPECT_LT(rel_err(sec.ipna[0], fine.ipna[0]), rel_err(right.ipna[0], fine.ipna[0]));
}

TEST(Secant, ChunksAndSchedulesKeepItExact) {
  const SplitModel model = every_slope_net();
  const std::vector<double> x = random_vector(model.input_shape().numel(), 4, 2.0),
                            x0(model.input_shape().numel(), 0.0);
  Attributor a(model, Precision::F64);
  AttributionRequest r = secant_request(30, TargetKind::Probability);
  const AttributionResult whole = a.run(x, x0, r);
  r.chunk = 7;  // five chunks, each leading with the point before it
  const AttributionResult chunked = a.run(x, x0, r);
  EXPECT_EQ(chunked.evaluations, 30 + 5);
  EXPECT_LT(rel_err(chunked.ig, whole.ig), 1e-13);
  EXPECT_LT(rel_err(chunked.conductance, whole.conductance), 1e-13);
  r.chunk = 0;
  r.steps = 0;
  r.schedule.resize(31);
  for (int k = 0; k <= 30; ++k) r.schedule[k] = std::pow(k / 30.0, 2);  // dense near x'
  const AttributionResult warped = a.run(x, x0, r);
  const double dF = warped.f_input - warped.f_baseline;
  EXPECT_LT(std::abs(warped.ig_gap), 1e-12 * std::abs(dF));
  EXPECT_LT(std::abs(warped.conductance_gap), 1e-12 * std::abs(dF));
  EXPECT_GT(rel_err(warped.ig, whole.ig), 1e-6);  // another partition of the path, another sum
}

TEST(Secant, Float32FollowsFloat64) {
  const SplitModel model = every_slope_net();
  const std::vector<double> x = random_vector(model.input_shape().numel(), 6, 2.0),
                            x0(model.input_shape().numel(), 0.0);
  Attributor a64(model, Precision::F64), a32(model, Precision::F32);
  AttributionRequest r = secant_request(24, TargetKind::Probability);
  r.chunk = 5;
  const AttributionResult s64 = a64.run(x, x0, r), s32 = a32.run(x, x0, r);
  EXPECT_LT(rel_err(s32.ig, s64.ig), 1e-4);
  EXPECT_LT(rel_err(s32.conductance, s64.conductance), 1e-4);
  EXPECT_LT(std::abs(s32.ig_gap), 1e-5 * std::abs(s64.f_input - s64.f_baseline));
}

TEST(Secant, WhatItCannotDoIsRefused) {
  const SplitModel model = small_conv_net();
  const std::vector<double> x = random_vector(model.input_shape().numel(), 3), x0(x.size(), 0.0);
  Attributor a(model, Precision::F64);
  AttributionRequest r = secant_request(8, TargetKind::Probability);
  r.boxes = {{2, 2, 8, 8}};
  try {
    a.run(x, x0, r);
    ADD_FAILURE() << "the difference form under the secant rule was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("tangent form only"), std::string::npos) << e.what();
  }
  r.boxes.clear();
  const AttributionResult coarse = a.run(x, x0, secant_request(4, TargetKind::Probability));
  EXPECT_THROW(a.refine(x, x0, r, coarse), Error);

  NetBuilder b(Shape{4, 6, 6}, 2);
  b.conv(4, 3, 1, 1);
  b.layernorm();
  b.relu();
  const SplitModel norm = with_classifier_head(b, b.current());
  Attributor an(norm, Precision::F64);
  try {
    an.run(random_vector(4 * 36, 1), std::vector<double>(4 * 36, 0.0), r);
    ADD_FAILURE() << "a LayerNorm under the secant rule was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("LayerNorm"), std::string::npos) << e.what();
  }
}

// Through the plan, on every op graph the rule has slopes for: three samples as consecutive points, and
// each step's backward (an output weighting r_i, sample 0's none) dotted with the step's input change is
// r_i times the output's change over the step, exactly (float64, values NCHW); and float32 with the
// values the plan keeps NHWC (oneDNN's convolutions) gives float64's gradients.
TEST(Secant, EveryOpsStepSumsToItsChange) {
  CpuBackend<double> be64;
  CpuBackend<float> be32;
  int checked = 0;
  for (const OpGraph& og : op_graphs()) {
    GraphPlan<double> plan(og.graph, be64);
    if (plan.without_secant()) continue;
    const int n = 3;
    const int64_t xn = plan.input_numel(), yn = plan.output_numel();
    const std::vector<double> x = random_vector(n * xn, 7);
    std::vector<double> r = random_vector(n * yn, 8), y(n * yn), dx(n * xn);
    std::fill(r.begin(), r.begin() + yn, 0.0);
    auto ws = plan.make_workspace(n, true, true);
    plan.forward(n, x.data(), y.data(), ws, true);
    plan.backward(n, r.data(), dx.data(), ws);
    for (int i = 1; i < n; ++i) {
      double along = 0, change = 0, scale = 0;
      for (int64_t j = 0; j < xn; ++j) along += (x[i * xn + j] - x[(i - 1) * xn + j]) * dx[i * xn + j];
      for (int64_t j = 0; j < yn; ++j) {
        const double term = r[i * yn + j] * (y[i * yn + j] - y[(i - 1) * yn + j]);
        change += term;
        scale += std::abs(term);
      }
      EXPECT_LT(std::abs(along - change), 1e-12 * scale) << og.name << " step " << i;
    }
    GraphPlan<float> plan32(og.graph, be32);
    const std::vector<float> x32(x.begin(), x.end()), r32(r.begin(), r.end());
    std::vector<float> y32(n * yn), dx32(n * xn);
    auto ws32 = plan32.make_workspace(n, true, true);
    ws32.channels_last = true;
    plan32.forward(n, x32.data(), y32.data(), ws32, true);
    plan32.backward(n, r32.data(), dx32.data(), ws32);
    EXPECT_LT(
        rel_err(std::vector<double>(dx32.begin() + xn, dx32.end()), std::vector<double>(dx.begin() + xn, dx.end())),
        1e-4)
        << og.name;
    ++checked;
  }
  EXPECT_GE(checked, 15);
}

// The backend ops against their definitions on the CPU (the CUDA kernels against these in test_cuda.cpp).
TEST(Secant, SlopesAndMaxPoolSharesAreTheirDefinitions) {
  auto be = make_backend<double>("cpu");
  // Three samples of four elements: clip to [0, 6]; crossing 0, inside, crossing 6, unchanged outside.
  const std::vector<double> z{-1, 1, 5, -2, 3, 2, 8, -3, 3, 2, 8, -3}, y{0, 1, 5, 0, 3, 2, 6, 0, 3, 2, 6, 0};
  DeviceBuffer zd(*be, z.size() * 8), yd(*be, y.size() * 8), sd(*be, z.size() * 8);
  be->copy_to_device(zd.as<void>(), z.data(), z.size() * 8);
  be->copy_to_device(yd.as<void>(), y.data(), y.size() * 8);
  be->secant_slopes(4, 3, zd.as<double>(), yd.as<double>(), sd.as<double>(), false);
  std::vector<double> s(12);
  be->copy_to_host(s.data(), sd.as<double>(), s.size() * 8);
  // Sample 0: the derivative. Sample 1: -1 -> 3 is above 0 for 3/4 of the step, 5 -> 8 below 6 for 1/3 of
  // it. Sample 2 equals sample 1: the derivative there.
  const std::vector<double> want{0, 1, 1, 0, 0.75, 1, 1.0 / 3, 0, 1, 1, 0, 0};
  for (int j = 0; j < 12; ++j) EXPECT_DOUBLE_EQ(s[j], want[j]) << j;

  // Max pool 2x1 over a 2x1 plane, two samples: the argmax moves from element 0 to element 1.
  PoolDesc d;
  d.c = 1, d.h = 2, d.w = 1, d.ho = 1, d.wo = 1;
  d.win.kh = 2, d.win.sh = 2;
  const std::vector<double> x{3, 1, 2, 4};  // a: 3 -> 2, b: 1 -> 4; a - b = 2 - 4t is zero at t = 1/2
  DeviceBuffer xd(*be, 32), yp(*be, 16), wd(*be, 16), dy(*be, 16), dx(*be, 32);
  DeviceBuffer idx(*be, 8);
  be->copy_to_device(xd.as<void>(), x.data(), 32);
  be->maxpool_forward(d, xd.as<double>(), yp.as<double>(), idx.as<int32_t>(), 2);
  be->maxpool_secant_weights(d, idx.as<int32_t>(), xd.as<double>(), wd.as<double>(), 2);
  std::vector<double> w(2);
  be->copy_to_host(w.data(), wd.as<double>(), 16);
  EXPECT_DOUBLE_EQ(w[0], 1.0);
  EXPECT_DOUBLE_EQ(w[1], 0.5);
  EXPECT_DOUBLE_EQ(w[1] * (2 - 3) + (1 - w[1]) * (4 - 1), 4.0 - 3.0);  // the output's change, exactly
  const std::vector<double> g{0, 10};
  be->copy_to_device(dy.as<void>(), g.data(), 16);
  be->maxpool_backward_secant(d, idx.as<int32_t>(), wd.as<double>(), dy.as<double>(), dx.as<double>(), 2, false);
  std::vector<double> gx(4);
  be->copy_to_host(gx.data(), dx.as<double>(), 32);
  EXPECT_EQ(gx, (std::vector<double>{0, 0, 5, 5}));

  std::vector<double> v{2, 4, 6, 10, 8, 0};  // three samples of two
  DeviceBuffer vd(*be, 48);
  be->copy_to_device(vd.as<void>(), v.data(), 48);
  be->pair_mean(2, 3, vd.as<double>());
  be->copy_to_host(v.data(), vd.as<double>(), 48);
  EXPECT_EQ(v, (std::vector<double>{2, 4, 4, 7, 7, 5}));
}

// Captum's DeepLift with x_{k-1} as x_k's baseline is the Rescale rule on each step: on a net of
// ReLUs, convolutions and average pools it is the secant rule (fixtures: vgg_avg, 4 steps, logit).
TEST(SecantReference, EqualsCaptumsDeepLiftStepByStep) {
  if (!fixtures_present()) return;
  const std::string dir = fixture_dir() + "/vgg_avg";
  const auto meta = read_json(dir + "/meta.json");
  const SplitModel model = load_split_model(dir + "/model.onnx", meta["split"].get<std::string>());
  Attributor a(model, Precision::F64);
  AttributionRequest r = secant_request(4, TargetKind::Logit);
  r.target_class = meta["class"].get<int>();
  const AttributionResult s = a.run(npy(dir + "/x.npy"), npy(dir + "/baseline.npy"), r);
  EXPECT_LT(rel_err(s.ig, npy(dir + "/captum_deeplift4_ig_logit.npy")), 1e-10);
  EXPECT_LT(rel_err(s.conductance, npy(dir + "/captum_deeplift4_cond_logit.npy")), 1e-10);
  r.quadrature = Quadrature::Right;  // not the right rule's result
  EXPECT_GT(rel_err(a.run(npy(dir + "/x.npy"), npy(dir + "/baseline.npy"), r).ig,
                    npy(dir + "/captum_deeplift4_ig_logit.npy")),
            1e-3);
}

// Against a uniform right-rule reference of 4096 steps on the random-weight fixtures, whose gradients jump
// wherever a ReLU switches (the right rule's error then halves per doubling of m, at best): the secant
// rule at 64 steps (65 evaluations) beats the right rule at 256 for conductance and IPNA (its tangent
// form against the difference form's limit) on both nets and for IG on mbv2_block; on LeNet, whose max
// pools switch most, its IG comes within 20 % (bench/results/step-control.md: 3.6x fewer evaluations
// for the same error). And it converges faster than first order: 4x the steps cut its IG error more
// than 6x.
TEST(SecantReference, BeatsTheRightRuleWithAQuarterOfTheSteps) {
  if (!fixtures_present()) return;
  for (const char* name : {"lenet", "mbv2_block"}) {
    const std::string dir = fixture_dir() + "/" + name;
    const auto meta = read_json(dir + "/meta.json");
    const SplitModel model = load_split_model(dir + "/model.onnx", meta["split"].get<std::string>());
    const std::vector<double> x = npy(dir + "/x.npy"), x0 = npy(dir + "/baseline.npy");
    const auto& box = meta["boxes"][0];
    Attributor a(model, Precision::F64);
    AttributionRequest r;
    r.target_class = meta["class"].get<int>();
    r.integrated_gradients = r.conductance = true;
    r.boxes = {{box[0], box[1], box[2], box[3]}};
    r.steps = 4096;
    const AttributionResult ref = a.run(x, x0, r);
    r.steps = 256;
    const AttributionResult right = a.run(x, x0, r);
    r.quadrature = Quadrature::Secant;
    r.ipna_form = IpnaForm::Tangent;
    r.steps = 64;
    const AttributionResult quarter = a.run(x, x0, r);
    EXPECT_EQ(quarter.evaluations, 65);
    EXPECT_LT(rel_err(quarter.conductance, ref.conductance), rel_err(right.conductance, ref.conductance)) << name;
    EXPECT_LT(rel_err(quarter.ipna[0], ref.ipna[0]), rel_err(right.ipna[0], ref.ipna[0])) << name;
    EXPECT_LT(rel_err(quarter.ig, ref.ig), (std::string(name) == "lenet" ? 1.2 : 1.0) * rel_err(right.ig, ref.ig))
        << name;
    r.steps = 16;
    const AttributionResult coarse = a.run(x, x0, r);
    EXPECT_LT(rel_err(quarter.ig, ref.ig), rel_err(coarse.ig, ref.ig) / 6) << name;
  }
}

}  // namespace
}  // namespace ipna::test
