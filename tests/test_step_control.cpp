// Step control (SPEC.md "Non-uniform paths"): the uniform schedule is the
// original's arithmetic bit for bit, schedules enter every formula through d_k
// (the tangent form's patch completeness holds for any schedule), the adaptive
// warp equalises F's change per step, the gradient warp follows the IG integrand's
// turn (checked against finite differences), both converge with fewer evaluations
// than uniform steps where F saturates, and run_to_tolerance stops where it says.
// Float64 on small conv nets with random weights.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "engine/attribution.h"
#include "engine/error.h"
#include "engine/experiments/steps.h"
#include "engine/step_control.h"
#include "tests/net_builder.h"

namespace ipna::test {
namespace {

struct SmallNet {
  SplitModel model = small_conv_net();
  std::vector<double> x = random_vector(3 * 16 * 16, 21);
  std::vector<double> x0 = black_baseline(Shape{3, 16, 16});
  std::vector<Box> boxes{{2, 3, 9, 12}, {8, 0, 16, 8}};
  AttributionRequest request(int steps) const {
    AttributionRequest r;
    r.target_class = 2;
    r.steps = steps;
    r.integrated_gradients = r.conductance = true;
    r.boxes = boxes;
    return r;
  }
};

void expect_identical(const AttributionResult& a, const AttributionResult& b, const std::string& what) {
  EXPECT_EQ(a.ig, b.ig) << what;
  EXPECT_EQ(a.conductance, b.conductance) << what;
  EXPECT_EQ(a.ipna, b.ipna) << what;
  EXPECT_EQ(a.f_input, b.f_input) << what;
}

TEST(StepControl, AnExplicitUniformScheduleIsTheDefaultBitForBit) {
  SmallNet s;
  Attributor a(s.model, Precision::F64);
  for (int m : {10, 7}) {  // k/m inexact in binary: the engine must still take the integer path
    const AttributionResult base = a.run(s.x, s.x0, s.request(m));
    AttributionRequest r = s.request(0);
    r.schedule = PathWarp().schedule(m);
    expect_identical(a.run(s.x, s.x0, r), base, "identity warp, m=" + std::to_string(m));
    for (int k = 0; k <= m; ++k) r.schedule[k] = static_cast<double>(k) / m;
    expect_identical(a.run(s.x, s.x0, r), base, "k/m, m=" + std::to_string(m));
  }
}

TEST(StepControl, SchedulesAreChecked) {
  SmallNet s;
  Attributor a(s.model, Precision::F64);
  auto message = [&](std::vector<double> sched, int steps) {
    AttributionRequest r = s.request(steps);
    r.schedule = std::move(sched);
    try {
      a.run(s.x, s.x0, r);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message({0, 0.5, 0.4, 1}, 0).find("increase strictly"), std::string::npos);
  EXPECT_NE(message({0, 0.5, 0.9}, 0).find("a_m = 1"), std::string::npos);
  EXPECT_NE(message({0, 0.5, 1}, 3).find("so 2 steps, but 3"), std::string::npos);
  EXPECT_NE(message({1}, 0).find("at least 2 values"), std::string::npos);
  EXPECT_THROW(PathWarp({0, 0.5, 1}, {1, 2, 3}, 0.0), Error);  // no uniform share
}

// Patch completeness of the tangent form, sum_j IPNA^t_j(S) = IG inside S, holds at every m and for any
// schedule (SPEC.md): the tangent's direction is d_k 1_S and IG's weight d_k, the same d_k.
TEST(StepControl, TangentPatchCompletenessHoldsOnNonUniformSchedules) {
  SmallNet s;
  Attributor a(s.model, Precision::F64);
  AttributionRequest r = s.request(0);
  r.ipna_form = IpnaForm::Tangent;
  r.schedule = {0, 0.01, 0.05, 0.3, 0.31, 0.7, 1};
  const AttributionResult t = a.run(s.x, s.x0, r);
  for (size_t b = 0; b < s.boxes.size(); ++b)
    EXPECT_NEAR(t.ipna_sum[b], t.ig_in_box[b], 1e-12 * (std::abs(t.ig_in_box[b]) + 1e-3)) << "box " << b;
}

// F = a steep logistic step at 0.7 along the path: the warp gives each step about the same change of F,
// except the floor share, spread uniformly.
TEST(StepControl, TheWarpEqualisesTheChangeOfFPerStep) {
  auto F = [](double a) { return 1 / (1 + std::exp(-40 * (a - 0.7))); };
  const int n = 256;
  std::vector<double> p(n + 1), f(n + 1);
  for (int i = 0; i <= n; ++i) {
    p[i] = static_cast<double>(i) / n;
    f[i] = F(p[i]);
  }
  const double floor = 0.2;
  const PathWarp w(p, f, floor);
  ASSERT_FALSE(w.identity());
  const int m = 64;
  const auto a = w.schedule(m);
  ASSERT_EQ(a.size(), static_cast<size_t>(m + 1));
  EXPECT_EQ(a.front(), 0.0);
  EXPECT_EQ(a.back(), 1.0);
  double largest = 0;
  int in_flat = 0;  // steps wholly in a < 0.4, where F barely moves
  for (int k = 1; k <= m; ++k) {
    largest = std::max(largest, std::abs(F(a[k]) - F(a[k - 1])));
    if (a[k] < 0.4) ++in_flat;
  }
  const double total = std::abs(F(1) - F(0));
  // at most the equal share of the non-floor steps, with room for the pilot's linear interpolation
  EXPECT_LT(largest, 1.3 * total / ((1 - floor) * m));
  // the floor: about floor * m * 0.4 steps of uniform spacing land below 0.4
  EXPECT_GE(in_flat, static_cast<int>(floor * m * 0.4) - 1);
  // uniform steps would put a quarter of the change into one step
  EXPECT_GT(std::abs(F(45.0 / m) - F(44.0 / m)), 5 * largest);
  EXPECT_TRUE(PathWarp(p, std::vector<double>(n + 1, 0.5), floor).identity());  // flat F: uniform
  EXPECT_EQ(PathWarp().schedule(3), (std::vector<double>{0, 1.0 / 3, 2.0 / 3, 1}));
}

// A net whose F saturates along the path (0.55 to 1.00: the input scaled up), against a uniform
// m = 8192 reference: errors fall as 1/m, and both the adaptive schedule's and the gradient
// schedule's are at least a quarter smaller than uniform steps' at every m, for IG, conductance and IPNA.
TEST(StepControl, AdaptiveAndGradientStepsConvergeFasterWhereFSaturates) {
  SmallNet s;
  s.model = small_conv_net(false, 13);
  for (double& v : s.x) v *= 6;
  Attributor a(s.model, Precision::F64);
  AttributionRequest r = s.request(8192);
  r.target_class = 4;  // the class F saturates towards
  r.boxes.resize(1);
  const AttributionResult ref = a.run(s.x, s.x0, r);
  ASSERT_LT(ref.f_baseline, 0.6);
  ASSERT_GT(ref.f_input, 0.999);
  const PathWarp adaptive = adaptive_warp(a, s.x, s.x0, r, PilotSpec{});
  const PathWarp gradient = gradient_warp(a, s.x, s.x0, r, PilotSpec{});
  double first_uniform = 0, last_uniform = 0;
  for (int m : {16, 32, 64, 128, 256}) {
    r.steps = m;
    r.schedule.clear();
    const AttributionResult u = a.run(s.x, s.x0, r);
    for (auto [schedule, warp] : {std::pair{"adaptive", &adaptive}, {"gradient", &gradient}}) {
      r.schedule = warp->schedule(m);
      const AttributionResult w = a.run(s.x, s.x0, r);
      for (auto [name, uni, got, want] :
           {std::tuple{"IG", &u.ig, &w.ig, &ref.ig}, {"conductance", &u.conductance, &w.conductance, &ref.conductance},
            {"IPNA", &u.ipna[0], &w.ipna[0], &ref.ipna[0]}})
        EXPECT_LT(rel_err(*got, *want), 0.75 * rel_err(*uni, *want)) << schedule << " " << name << " m=" << m;
    }
    (m == 16 ? first_uniform : last_uniform) = rel_err(u.ig, ref.ig);
  }
  EXPECT_LT(last_uniform, first_uniform / 12);  // 16x the steps: about 1/16 the error
}

// PathWarp::from_weights: each pilot interval holds its share of the steps, (1 - floor) w_i / sum w
// + floor * length, up to one step at each end.
TEST(StepControl, WeightsGiveEachIntervalItsShareOfTheSteps) {
  const std::vector<double> p{0, 0.25, 0.5, 0.75, 1}, w{0, 3, 1, 0};
  const double floor = 0.2;
  const int m = 400;
  const auto a = PathWarp::from_weights(p, w, floor).schedule(m);
  for (size_t i = 1; i < p.size(); ++i) {
    const double share = (1 - floor) * w[i - 1] / 4 + floor * (p[i] - p[i - 1]);
    const auto in = std::count_if(a.begin() + 1, a.end(), [&](double v) { return v > p[i - 1] && v <= p[i]; });
    EXPECT_NEAR(static_cast<double>(in), share * m, 1.0) << "interval " << i;
  }
  EXPECT_TRUE(PathWarp::from_weights(p, {0, 0, 0, 0}, floor).identity());
  EXPECT_THROW(PathWarp::from_weights(p, {0, -1, 0, 0}, floor), Error);
  EXPECT_THROW(PathWarp::from_weights(p, {1, 1, 1}, floor), Error);
  EXPECT_EQ(parse_schedule("gradient", "schedule"), ScheduleKind::Gradient);
  try {
    parse_schedule("curvature", "the schedule");
    ADD_FAILURE() << "an unknown schedule was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("the schedule: expected uniform, adaptive or gradient, got 'curvature'"),
              std::string::npos)
        << e.what();
  }
}

// The gradient warp's pilot against float64 central differences of F: v(p) = grad F(x(p)) * (x - x') at
// the 33 pilot points, interval i weighted sqrt(|v_i - v_{i-1}|), gives the same schedule. A random
// baseline: at a constant image max-pool windows tie, and differences there average one-sided slopes.
TEST(StepControl, TheGradientWarpFollowsTheTurnOfTheIntegrand) {
  SmallNet s;
  s.x0 = random_vector(3 * 16 * 16, 5, 0.5);
  Attributor a(s.model, Precision::F64);
  AttributionRequest r = s.request(0);
  const PilotSpec pilot;
  const int n = static_cast<int>(s.x.size()), classes = s.model.num_classes();
  const double h = 1e-5;
  std::vector<double> p(pilot.intervals + 1), w(pilot.intervals), before;
  for (int i = 0; i <= pilot.intervals; ++i) {
    p[i] = i == pilot.intervals ? 1.0 : static_cast<double>(i) / pilot.intervals;
    std::vector<double> shifted(2 * static_cast<size_t>(n) * n);  // x(p) +- h e_j for every j
    for (int j = 0; j < n; ++j)
      for (int sign = 0; sign < 2; ++sign)
        for (int k = 0; k < n; ++k)
          shifted[(2 * j + sign) * static_cast<size_t>(n) + k] =
              s.x0[k] + p[i] * (s.x[k] - s.x0[k]) + (k == j ? (sign ? -h : h) : 0.0);
    const std::vector<double> z = a.logits(shifted, {}, 2 * n);
    std::vector<double> v(n);
    for (int j = 0; j < n; ++j)
      v[j] = (target_value(r.target, &z[(2 * j) * classes], classes, r.target_class) -
              target_value(r.target, &z[(2 * j + 1) * classes], classes, r.target_class)) /
             (2 * h) * (s.x[j] - s.x0[j]);
    if (i > 0) {
      double d = 0;
      for (int j = 0; j < n; ++j) d += (v[j] - before[j]) * (v[j] - before[j]);
      w[i - 1] = std::sqrt(std::sqrt(d));
    }
    before = v;
  }
  const PathWarp got = gradient_warp(a, s.x, s.x0, r, pilot);
  ASSERT_FALSE(got.identity());
  const auto want = PathWarp::from_weights(p, w, pilot.floor).schedule(64), have = got.schedule(64);
  for (int k = 0; k <= 64; ++k) EXPECT_NEAR(have[k], want[k], 1e-6) << k;
  int forwards = -1, evaluations = -1;
  EXPECT_EQ(schedule_warp(ScheduleKind::Gradient, a, s.x, s.x0, r, pilot, &forwards, &evaluations).schedule(64), have);
  EXPECT_EQ(evaluations, pilot.intervals + 1);
  EXPECT_EQ(forwards, -1);
  EXPECT_TRUE(schedule_warp(ScheduleKind::Uniform, a, s.x, s.x0, r, pilot, nullptr, nullptr).identity());
}

// The subdividing warp's schedules are nested: the points of m are those of 2m at even k, bit for bit,
// and each step of m is split into two equal halves.
TEST(StepControl, SubdividingWarpsNestTheirSchedules) {
  const PathWarp warp = PathWarp({0, 0.25, 0.5, 0.75, 1}, {0.1, 0.1, 0.8, 0.9, 0.9}, 0.2).subdividing(16);
  const PathWarp full = PathWarp({0, 0.25, 0.5, 0.75, 1}, {0.1, 0.1, 0.8, 0.9, 0.9}, 0.2);
  EXPECT_EQ(warp.schedule(16), full.schedule(16));
  for (int m : {16, 32, 64, 128}) {
    const std::vector<double> a = warp.schedule(m), b = warp.schedule(2 * m);
    for (int k = 0; k <= m; ++k) ASSERT_EQ(a[k], b[2 * k]) << "m=" << m << " k=" << k;
    for (int k = 1; k <= m; ++k)
      ASSERT_NEAR(b[2 * k] - b[2 * k - 1], b[2 * k - 1] - b[2 * k - 2], 1e-15) << "m=" << m << " k=" << k;
  }
  EXPECT_TRUE(PathWarp().subdividing(16).identity());
}

// refine(2m from m) evaluates the m new points only and equals the whole run at 2m, for IG by the right,
// left and trapezoid rules, conductance and the difference form (from the coarse run's split samples, on
// cones and on whole planes) and the tangent form, on uniform and adaptive schedules, in one chunk and in
// chunks of 3 points; float64 to 1e-12, float32 to 1e-5.
TEST(StepControl, RefiningFromACoarserRunEqualsTheWholeRun) {
  SmallNet s;
  struct Variant {
    IpnaForm form;
    bool cones;
  };
  for (Precision p : {Precision::F64, Precision::F32})
  for (int chunk : {0, 3})
  for (Variant v : {Variant{IpnaForm::Tangent, true}, {IpnaForm::Difference, true}, {IpnaForm::Difference, false}}) {
    Attributor a(s.model, p);
    const double tol = p == Precision::F64 ? 1e-12 : 1e-5;
    AttributionRequest r = s.request(0);
    r.ipna_form = v.form;
    r.receptive_field_cones = v.cones;
    r.keep_split_samples = true;
    r.chunk = chunk;
    const PathWarp adaptive = adaptive_warp(a, s.x, s.x0, r, PilotSpec{}).subdividing(8);
    ASSERT_FALSE(adaptive.identity());
    for (const PathWarp& warp : {PathWarp(), adaptive})
      for (Quadrature q : {Quadrature::Right, Quadrature::Left, Quadrature::Trapezoid}) {
        const std::string what = std::string(warp.identity() ? "uniform" : "adaptive") + " rule " +
                                 std::to_string(static_cast<int>(q)) + (p == Precision::F64 ? " f64" : " f32") +
                                 " chunk " + std::to_string(chunk) +
                                 (v.form == IpnaForm::Tangent ? " tangent" : v.cones ? " difference" : " difference whole");
        r.quadrature = q;
        r.schedule = warp.schedule(8);
        AttributionResult coarse = a.run(s.x, s.x0, r);
        for (int m : {16, 32}) {  // twice: a refined run refines further
          r.schedule = warp.schedule(m);
          const AttributionResult fine = a.refine(s.x, s.x0, r, coarse), whole = a.run(s.x, s.x0, r);
          EXPECT_EQ(fine.evaluations, whole.evaluations / 2) << what;
          EXPECT_LT(rel_err(fine.ig, whole.ig), tol) << what << " m=" << m;
          EXPECT_LT(rel_err(fine.conductance, whole.conductance), tol) << what << " m=" << m;
          ASSERT_TRUE(fine.split_samples) << what;
          for (size_t b = 0; b < s.boxes.size(); ++b) {
            EXPECT_LT(rel_err(fine.ipna[b], whole.ipna[b]), tol) << what << " m=" << m << " box " << b;
            EXPECT_NEAR(fine.ipna_gap[b], whole.ipna_gap[b], tol * std::abs(whole.ig_in_box[b])) << what;
          }
          EXPECT_NEAR(fine.ig_gap, whole.ig_gap, tol * std::abs(whole.f_input - whole.f_baseline)) << what;
          coarse = fine;
        }
      }
  }
}

TEST(StepControl, RefiningRefusesWhatIsNotNested) {
  SmallNet s;
  Attributor a(s.model, Precision::F64);
  AttributionRequest r = s.request(8);
  r.conductance = false;
  r.ipna_form = IpnaForm::Tangent;
  const AttributionResult coarse = a.run(s.x, s.x0, r);
  ASSERT_FALSE(coarse.split_samples);  // nothing asked to keep them
  auto message = [&](AttributionRequest q) {
    try {
      a.refine(s.x, s.x0, q, coarse);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  r.steps = 16;
  AttributionRequest q = r;
  q.conductance = true;
  EXPECT_NE(message(q).find("kept its split activations and gradients"), std::string::npos);
  q = r;
  q.ipna_form = IpnaForm::Difference;
  EXPECT_NE(message(q).find("kept its split activations and gradients"), std::string::npos);
  q = r;
  q.integrated_gradients = false;
  q.quadrature = Quadrature::Left;
  EXPECT_NE(message(q).find("refined on the right rule's points"), std::string::npos);
  q = r;
  q.quadrature = Quadrature::Middle;
  EXPECT_NE(message(q).find("midpoint rule"), std::string::npos);
  q = r;
  q.steps = 15;
  EXPECT_NE(message(q).find("even number of steps"), std::string::npos);
  q = r;
  q.steps = 0;
  q.schedule = PathWarp().schedule(16);
  q.schedule[3] = 3.5 / 16;  // step 4 is half as long as step 3
  EXPECT_NE(message(q).find("steps 3 and 4"), std::string::npos);
  q = r;
  q.boxes.pop_back();
  EXPECT_NE(message(q).find("2 IPNA maps, the request 1 boxes"), std::string::npos);
  EXPECT_EQ(message(r), "no error");
}

// run_to_tolerance doubles m until every gap and the change are under the tolerance, and says so; with
// a cap below what the tolerance needs it stops there and says that instead.
TEST(StepControl, RunToToleranceStopsWhereItSays) {
  SmallNet s;
  Attributor a(s.model, Precision::F64);
  StepControl c;
  c.schedule = ScheduleKind::Adaptive;
  c.tolerance = 0.02;
  const ControlledResult done = run_to_tolerance(a, s.x, s.x0, s.request(0), c);
  ASSERT_TRUE(done.converged) << done.summary();
  ASSERT_GE(done.levels.size(), 2u);
  int evaluations = 0;
  for (size_t i = 0; i < done.levels.size(); ++i) {
    EXPECT_EQ(done.levels[i].steps, 16 << i);
    evaluations += done.levels[i].evaluations;
  }
  EXPECT_EQ(done.evaluations, evaluations);
  EXPECT_EQ(done.pilot_forwards, c.pilot.intervals + 1);
  const AttributionResult& r = done.result;
  const double dF = std::abs(r.f_input - r.f_baseline);
  EXPECT_LE(std::abs(r.ig_gap), c.tolerance * dF);
  EXPECT_LE(std::abs(r.conductance_gap), c.tolerance * dF);
  for (size_t b = 0; b < r.ipna_gap.size(); ++b)
    EXPECT_LE(std::abs(r.ipna_gap[b]), c.tolerance * std::max(std::abs(r.ig_in_box[b]), 0.01 * dF)) << b;
  EXPECT_LE(done.levels.back().worst(), c.tolerance);
  EXPECT_EQ(done.schedule,
            adaptive_warp(a, s.x, s.x0, s.request(0), c.pilot).subdividing(16).schedule(done.levels.back().steps));
  for (size_t i = 1; i < done.levels.size(); ++i) EXPECT_EQ(done.levels[i].reused, done.levels[i].steps / 2) << i;
  EXPECT_NE(done.summary().find("all under the tolerance"), std::string::npos) << done.summary();

  StepControl g = c;
  g.schedule = ScheduleKind::Gradient;
  const ControlledResult by_gradient = run_to_tolerance(a, s.x, s.x0, s.request(0), g);
  ASSERT_TRUE(by_gradient.converged) << by_gradient.summary();
  EXPECT_EQ(by_gradient.pilot_forwards, 0);
  EXPECT_EQ(by_gradient.pilot_evaluations, g.pilot.intervals + 1);
  EXPECT_EQ(by_gradient.schedule, gradient_warp(a, s.x, s.x0, s.request(0), g.pilot)
                                      .subdividing(16)
                                      .schedule(by_gradient.levels.back().steps));
  EXPECT_NE(by_gradient.summary().find("33 pilot gradient evaluations"), std::string::npos) << by_gradient.summary();

  c.tolerance = 1e-9;
  c.max_steps = 32;
  const ControlledResult capped = run_to_tolerance(a, s.x, s.x0, s.request(0), c);
  EXPECT_FALSE(capped.converged);
  EXPECT_EQ(capped.levels.back().steps, 32);
  EXPECT_NE(capped.summary().find("NOT under the tolerance"), std::string::npos) << capped.summary();
}

// With IG, conductance and the tangent form, every doubling evaluates the new points alone, and the result
// is the whole run at the last step count on the same schedule.
TEST(StepControl, RunToToleranceReusesEarlierPoints) {
  SmallNet s;
  Attributor a(s.model, Precision::F64);
  AttributionRequest r = s.request(0);
  r.ipna_form = IpnaForm::Tangent;
  StepControl c;
  c.tolerance = 0.01;
  r.chunk = 8;
  std::vector<std::pair<int, int>> progress;
  r.progress = [&](int d, int t) { progress.emplace_back(d, t); };
  const ControlledResult done = run_to_tolerance(a, s.x, s.x0, r, c);
  ASSERT_TRUE(done.converged) << done.summary();
  ASSERT_GE(done.levels.size(), 3u) << done.summary();
  // one bar over all step counts: done never goes back, and ends at every evaluation
  ASSERT_FALSE(progress.empty());
  for (size_t i = 1; i < progress.size(); ++i) EXPECT_GT(progress[i].first, progress[i - 1].first) << i;
  EXPECT_EQ(progress.back(), std::make_pair(done.evaluations, done.evaluations));
  r.chunk = 0;
  r.progress = nullptr;
  EXPECT_EQ(done.levels[0].reused, 0);
  EXPECT_EQ(done.levels[0].evaluations, 16);
  for (size_t i = 1; i < done.levels.size(); ++i) {
    EXPECT_EQ(done.levels[i].evaluations, done.levels[i].steps / 2) << i;
    EXPECT_EQ(done.levels[i].reused, done.levels[i].steps / 2) << i;
  }
  EXPECT_EQ(done.evaluations, done.levels.back().steps);
  EXPECT_NE(done.summary().find("points reused"), std::string::npos) << done.summary();
  r.steps = done.levels.back().steps;
  r.schedule = done.schedule;
  const AttributionResult whole = a.run(s.x, s.x0, r);
  EXPECT_LT(rel_err(done.result.ig, whole.ig), 1e-12);
  EXPECT_LT(rel_err(done.result.conductance, whole.conductance), 1e-12);
  EXPECT_FALSE(done.result.split_samples);
  for (size_t b = 0; b < s.boxes.size(); ++b) EXPECT_LT(rel_err(done.result.ipna[b], whole.ipna[b]), 1e-12) << b;
}

// The difference form's IPNA carries a first-order bias (g at x_k times f1's change from x_{k-1}) on top of
// the Riemann sums' own error; extrapolating from m / 2 and m removes it, so the extrapolated maps near the
// common limit of both forms (the tangent form at many steps) faster than the maps they come from, the
// more so as m grows.
TEST(StepControl, ExtrapolationRemovesTheDifferenceFormsFirstOrderBias) {
  for (int target : {2, 0}) {
    SmallNet s;
    Attributor a(s.model, Precision::F64);
    AttributionRequest r = s.request(8192);
    r.target_class = target;
    r.conductance = false;
    r.ipna_form = IpnaForm::Tangent;
    const AttributionResult limit = a.run(s.x, s.x0, r);
    r.ipna_form = IpnaForm::Difference;
    r.steps = 256;
    AttributionResult half = a.run(s.x, s.x0, r);
    for (auto [m, most] : {std::pair{512, 0.55}, {1024, 0.3}}) {
      r.steps = m;
      const AttributionResult p = a.run(s.x, s.x0, r), e = extrapolate_ipna(p, half, 2);
      for (size_t b = 0; b < s.boxes.size(); ++b) {
        const std::string what =
            "class " + std::to_string(target) + " m=" + std::to_string(m) + " box " + std::to_string(b);
        EXPECT_LT(rel_err(e.ipna[b], limit.ipna[b]), most * rel_err(p.ipna[b], limit.ipna[b])) << what;
        double sum = 0;
        for (size_t i = 0; i < e.ipna[b].size(); ++i) {
          ASSERT_NEAR(e.ipna[b][i], 2 * p.ipna[b][i] - half.ipna[b][i], 1e-15) << what;
          sum += e.ipna[b][i];
        }
        EXPECT_NEAR(e.ipna_sum[b], sum, 1e-12) << what;
        EXPECT_NEAR(e.ipna_gap[b], sum - p.ig_in_box[b], 1e-12) << what;
      }
      EXPECT_EQ(e.ig, p.ig);
      half = p;
    }
  }
}

// With extrapolation, each step count reports IPNA extrapolated from it and the step count before, while
// refining continues from the sums as run: the result equals whole runs at the last two step counts,
// extrapolated, and reaching m still costs m gradient evaluations.
TEST(StepControl, RunToToleranceExtrapolatesFromTheStepCountBefore) {
  SmallNet s;
  Attributor a(s.model, Precision::F64);
  StepControl c;
  c.extrapolate = true;
  c.tolerance = 0.03;
  const ControlledResult done = run_to_tolerance(a, s.x, s.x0, s.request(0), c);
  ASSERT_GE(done.levels.size(), 3u) << done.summary();
  EXPECT_TRUE(done.extrapolated);
  EXPECT_NE(done.summary().find("IPNA extrapolated from"), std::string::npos) << done.summary();
  const int m = done.levels.back().steps;
  EXPECT_EQ(done.evaluations, m);
  AttributionRequest r = s.request(m);
  r.schedule = done.schedule;
  const AttributionResult fine = a.run(s.x, s.x0, r);
  r.steps = m / 2;
  r.schedule.clear();
  for (int k = 0; k <= m; k += 2) r.schedule.push_back(done.schedule[k]);
  const AttributionResult want = extrapolate_ipna(fine, a.run(s.x, s.x0, r), 2);
  const double unit = std::abs(fine.f_input - fine.f_baseline);
  for (size_t b = 0; b < s.boxes.size(); ++b) {
    EXPECT_LT(rel_err(done.result.ipna[b], want.ipna[b]), 1e-11) << b;
    EXPECT_NEAR(done.levels.back().patch_gap[b] * std::max(std::abs(want.ig_in_box[b]), 0.01 * unit), want.ipna_gap[b],
                1e-11)
        << b;
  }
  EXPECT_LT(rel_err(done.result.ig, fine.ig), 1e-12);
  EXPECT_LT(rel_err(done.result.conductance, fine.conductance), 1e-12);

  AttributionRequest tangent = s.request(0);
  tangent.ipna_form = IpnaForm::Tangent;
  EXPECT_THROW(run_to_tolerance(a, s.x, s.x0, tangent, c), Error);
  AttributionRequest no_boxes = s.request(0);
  no_boxes.boxes.clear();
  EXPECT_THROW(run_to_tolerance(a, s.x, s.x0, no_boxes, c), Error);
}

// A fixed m extrapolates from m / 2 on the same points: m gradient evaluations, uniform steps as a plain run's.
TEST(StepControl, AFixedStepCountExtrapolatesFromHalfOfIt) {
  SmallNet s;
  Attributor a(s.model, Precision::F64);
  StepPlan plan;
  plan.steps = 64;
  plan.extrapolate = true;
  const StepRun run = run_steps(a, s.x, s.x0, s.request(0), plan);
  EXPECT_EQ(run.steps, 64);
  EXPECT_EQ(run.report["extrapolated_from"], 32);
  EXPECT_EQ(run.report["evaluations"], 64);
  const AttributionResult want = extrapolate_ipna(a.run(s.x, s.x0, s.request(64)), a.run(s.x, s.x0, s.request(32)), 2);
  for (size_t b = 0; b < s.boxes.size(); ++b) EXPECT_LT(rel_err(run.result.ipna[b], want.ipna[b]), 1e-11) << b;
  plan.steps = 63;
  EXPECT_THROW(run_steps(a, s.x, s.x0, s.request(0), plan), Error);
}

}  // namespace
}  // namespace ipna::test
