// Every op's input-gradient backward against central finite differences in
// float64, through the real plan executor (batch of 3 samples, so batched
// GEMMs and the arena offsets are exercised too).
#include <gtest/gtest.h>

#include "engine/cpu/cpu_backend.h"
#include "engine/plan.h"
#include "tests/op_graphs.h"

namespace ipna::test {
namespace {

// Checks d(sum r*y)/dx of the plan against central differences of the forward.
void gradcheck(const Graph& g, unsigned seed = 3, double tol = 1e-7) {
  CpuBackend<double> be;
  GraphPlan<double> plan(g, be);
  const int n = 3;  // with 2 threads: one GEMM of 2 samples side by side and one of 1
  const int64_t xn = plan.input_numel(), yn = plan.output_numel();
  std::vector<double> x = random_vector(n * xn, seed), r = random_vector(n * yn, seed + 1);
  auto ws = plan.make_workspace(n, true);
  std::vector<double> y(n * yn), dx(n * xn);
  plan.forward(n, x.data(), y.data(), ws, true);
  plan.backward(n, r.data(), dx.data(), ws);
  auto loss = [&](const std::vector<double>& xi) {
    std::vector<double> yi(n * yn);
    auto w2 = plan.make_workspace(n, false);
    plan.forward(n, xi.data(), yi.data(), w2, false);
    double s = 0;
    for (int64_t i = 0; i < n * yn; ++i) s += r[i] * yi[i];
    return s;
  };
  const double eps = 1e-6;
  std::vector<double> fd(n * xn);
  for (int64_t i = 0; i < n * xn; ++i) {
    std::vector<double> xp = x, xm = x;
    xp[i] += eps;
    xm[i] -= eps;
    fd[i] = (loss(xp) - loss(xm)) / (2 * eps);
  }
  // Central differences of a piecewise-smooth function: O(eps^2) ~ 1e-12 away
  // from kinks, and random inputs sit > eps from a kink with overwhelming odds.
  EXPECT_LT(rel_err(dx, fd), tol);
  double maxabs = 0;
  for (int64_t i = 0; i < n * xn; ++i) maxabs = std::max(maxabs, std::abs(dx[i] - fd[i]));
  EXPECT_LT(maxabs, 1e-6);
}

class GradCheck : public ::testing::TestWithParam<std::string> {};

TEST_P(GradCheck, BackwardMatchesCentralDifferences) { gradcheck(op_graph(GetParam())); }

INSTANTIATE_TEST_SUITE_P(Ops, GradCheck, ::testing::ValuesIn(op_graph_names()),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace ipna::test

namespace ipna::test {
namespace {

// The tangent pass: ty = J(x) tx against central differences of the forward
// along tx, and with a direction nonzero only in a box, the cone-restricted
// pass equal to the full one.
class TangentCheck : public ::testing::TestWithParam<std::string> {};

TEST_P(TangentCheck, ForwardModeMatchesCentralDifferences) {
  const Graph g = op_graph(GetParam());
  CpuBackend<double> be;
  GraphPlan<double> plan(g, be);
  const int n = 2;
  const Shape& in = g.values[g.input].shape;
  const int64_t xn = plan.input_numel(), yn = plan.output_numel();
  const std::vector<double> x = random_vector(n * xn, 21);
  std::vector<double> v = random_vector(n * xn, 22);
  const Box box{1, 1, std::max<int>(2, static_cast<int>(in.height()) / 2), std::max<int>(2, static_cast<int>(in.width()) / 2)};
  if (in.rank() == 3)  // the patch direction: zero outside the box
    for (int64_t i = 0; i < n * xn; ++i) {
      const int64_t r = (i / in.width()) % in.height(), c = i % in.width();
      if (!box.contains(static_cast<int>(r), static_cast<int>(c))) v[i] = 0;
    }
  auto ws = plan.make_workspace(n, true);
  std::vector<double> y(n * yn), ty(n * yn), ty_cone(n * yn);
  plan.forward(n, x.data(), y.data(), ws, true);
  plan.tangent(n, v.data(), ty.data(), ws);
  auto eval = [&](double eps) {
    std::vector<double> xe(x), ye(n * yn);
    for (int64_t i = 0; i < n * xn; ++i) xe[i] += eps * v[i];
    auto w2 = plan.make_workspace(n, false);
    plan.forward(n, xe.data(), ye.data(), w2, false);
    return ye;
  };
  const double eps = 1e-6;
  const auto yp = eval(eps), ym = eval(-eps);
  std::vector<double> fd(n * yn);
  for (int64_t i = 0; i < n * yn; ++i) fd[i] = (yp[i] - ym[i]) / (2 * eps);
  EXPECT_LT(rel_err(ty, fd), 1e-7) << GetParam();
  if (in.rank() == 3) {
    const Cone cone = plan.cone(box);
    if (GetParam() == "ConvDensePadded" || GetParam() == "ConvWinogradPadded" || GetParam() == "ConvStridedDilated")
      EXPECT_TRUE(cone.windowed[0]) << GetParam() << ": the conv should run on its cone window only";
    plan.tangent(n, v.data(), ty_cone.data(), ws, {&cone});
    EXPECT_LT(rel_err(ty_cone, ty), 1e-13) << GetParam() << ": cone-restricted tangent differs";
  }
}

INSTANTIATE_TEST_SUITE_P(Ops, TangentCheck, ::testing::ValuesIn(op_graph_names()),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace ipna::test

namespace ipna::test {
namespace {

// On a line of points x0 + k_i d, a graph whose first convolution alone reads the input makes that
// convolution's output from its output at x0 and its change along d (GraphPlan::prepare_line), and
// backward_sum takes the weighted sum of the samples' gradients before that convolution's backward:
// both equal the plain passes. In float32 the two samples are float64's rounded once (made by float32
// convolutions, their rounding errors would repeat at every point of a path and add up in its sums).
TEST(LineHead, HeadMadeOnTheLineEqualsThePlainPasses) {
  int heads = 0;
  for (const OpGraph& og : op_graphs()) {
    CpuBackend<double> be;
    GraphPlan<double> plan(og.graph, be);
    heads += plan.has_line_head();
    const int n = 3;
    const int64_t xn = plan.input_numel(), yn = plan.output_numel();
    const std::vector<double> x0 = random_vector(xn, 31), d = random_vector(xn, 32), k = {0.5, 2.0, 3.0},
                              w = {0.3, 1.0, 2.5}, dy = random_vector(n * yn, 33);
    std::vector<double> pts(n * xn);
    for (int i = 0; i < n; ++i)
      for (int64_t j = 0; j < xn; ++j) pts[i * xn + j] = x0[j] + k[i] * d[j];
    auto ws = plan.make_workspace(n, true), ws_line = plan.make_workspace(n, true);
    std::vector<double> y(n * yn), y_line(n * yn), dx(n * xn), dx_line(n * xn);
    plan.forward(n, pts.data(), y.data(), ws, true);
    plan.prepare_line(x0, d, ws_line);
    plan.forward(n, pts.data(), y_line.data(), ws_line, true, {}, &k);
    EXPECT_LT(rel_err(y_line, y), 1e-13) << og.name;
    if (plan.has_line_head()) {
      CpuBackend<float> be32;
      GraphPlan<float> plan32(og.graph, be32);
      auto ws32 = plan32.make_workspace(1, false);
      plan32.prepare_line(x0, d, ws32);
      const size_t count = ws_line.line_ends.bytes() / sizeof(double);
      ASSERT_EQ(ws32.line_ends.bytes(), count * sizeof(float)) << og.name;
      const double* ends64 = ws_line.line_ends.as<double>();
      const float* ends32 = ws32.line_ends.as<float>();
      int64_t differ = 0;
      for (size_t j = 0; j < count; ++j) differ += ends32[j] != static_cast<float>(ends64[j]);
      EXPECT_EQ(differ, 0) << og.name;
    }

    plan.backward(n, dy.data(), dx.data(), ws);
    std::vector<double> sum = random_vector(xn, 34), acc = sum;  // backward_sum adds to what acc holds
    for (int i = 0; i < n; ++i)
      for (int64_t j = 0; j < xn; ++j) sum[j] += w[i] * dx[i * xn + j];
    plan.backward_sum(n, dy.data(), w, dx_line.data(), acc.data(), ws_line);
    EXPECT_LT(rel_err(acc, sum), 1e-13) << og.name;
  }
  // Fifteen of the op graphs start with a convolution that feeds another op (the check is not vacuous).
  EXPECT_GE(heads, 10);
}

}  // namespace
}  // namespace ipna::test
