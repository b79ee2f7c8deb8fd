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
