// Every op's input-gradient backward against central finite differences in
// float64, through the real plan executor (batch of 3 samples, so batched
// GEMMs and the arena offsets are exercised too).
#include <gtest/gtest.h>

#include "engine/cpu/cpu_backend.h"
#include "engine/plan.h"
#include "tests/net_builder.h"

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

TEST(GradCheck, ConvDensePadded) {
  NetBuilder b(Shape{3, 7, 6});
  b.conv(4, 3, 1, 1);
  gradcheck(b.finish());
}
TEST(GradCheck, ConvStridedDilated) {
  NetBuilder b(Shape{2, 9, 8});
  b.conv(3, 3, 2, 2, 1, 2);
  gradcheck(b.finish());
}
TEST(GradCheck, ConvGrouped) {
  NetBuilder b(Shape{4, 6, 6});
  b.conv(6, 3, 1, 1, 2);
  gradcheck(b.finish());
}
TEST(GradCheck, ConvDepthwiseWithMultiplier) {
  NetBuilder b(Shape{3, 7, 7});
  b.conv(6, 3, 2, 1, 3);
  gradcheck(b.finish());
}
// 3x3 stride-1 convs with >= 8 channels take the Winograd path, both ways.
TEST(GradCheck, ConvWinogradPadded) {
  NetBuilder b(Shape{8, 6, 6});
  b.conv(8, 3, 1, 1);
  gradcheck(b.finish());
}
TEST(GradCheck, ConvWinogradOddSizeUnpadded) {
  NetBuilder b(Shape{9, 7, 5});
  b.conv(10, 3, 1, 0);
  gradcheck(b.finish());
}
TEST(GradCheck, ConvWinogradPad2) {
  NetBuilder b(Shape{8, 5, 4});
  b.conv(8, 3, 1, 2);
  gradcheck(b.finish());
}
TEST(GradCheck, ConvPointwise) {
  NetBuilder b(Shape{5, 4, 4});
  b.conv(3, 1);
  gradcheck(b.finish());
}
TEST(GradCheck, ConvPointwiseStride2NoBias) {
  NetBuilder b(Shape{5, 5, 5});
  b.conv(3, 1, 2, 0, 1, 1, false);
  gradcheck(b.finish());
}
TEST(GradCheck, Linear) {
  NetBuilder b(Shape{2, 3, 3});
  b.linear(5);
  gradcheck(b.finish());
}
TEST(GradCheck, Affine) {
  NetBuilder b(Shape{3, 4, 5});
  b.affine();
  gradcheck(b.finish());
}
TEST(GradCheck, Relu) {
  NetBuilder b(Shape{3, 5, 5});
  b.relu();
  gradcheck(b.finish());
}
TEST(GradCheck, Relu6) {
  NetBuilder b(Shape{2, 4, 4});
  b.conv(3, 1);
  b.affine();
  b.clip(0, 0.7);  // a low cap so both clipped sides occur with unit-normal inputs
  gradcheck(b.finish());
}
TEST(GradCheck, MaxPoolOverlappingPadded) {
  NetBuilder b(Shape{2, 7, 7});
  b.pool(OpKind::MaxPool, 3, 2, 1);
  gradcheck(b.finish());
}
TEST(GradCheck, AvgPoolExcludePad) {
  NetBuilder b(Shape{2, 7, 6});
  b.pool(OpKind::AvgPool, 3, 2, 1, false);
  gradcheck(b.finish());
}
TEST(GradCheck, AvgPoolIncludePad) {
  NetBuilder b(Shape{2, 6, 6});
  b.pool(OpKind::AvgPool, 3, 2, 1, true);
  gradcheck(b.finish());
}
TEST(GradCheck, GlobalAveragePool) {
  NetBuilder b(Shape{3, 4, 5});
  b.global_avg();
  gradcheck(b.finish());
}
TEST(GradCheck, ResidualAddSumsBothPaths) {
  NetBuilder b(Shape{3, 5, 5});
  int x = b.current();
  b.conv(3, 3, 1, 1);
  int r = b.relu();
  b.add(x, r);  // the input feeds the conv and the add: its gradient must sum both
  gradcheck(b.finish());
}
TEST(GradCheck, AddOfSameValue) {
  NetBuilder b(Shape{2, 3, 3});
  int c = b.conv(2, 1);
  b.add(c, c);
  gradcheck(b.finish());
}
TEST(GradCheck, WholeNetwork) {
  NetBuilder b(Shape{3, 12, 12}, 5);
  b.conv(6, 3, 1, 1);
  b.affine();
  b.relu();
  b.pool(OpKind::MaxPool, 2, 2);
  int skip = b.current();
  b.conv(12, 1);
  b.clip(0, 6);
  b.conv(12, 3, 1, 1, 12);  // depthwise
  b.clip(0, 6);
  b.conv(6, 1);
  b.add(skip, b.current());
  b.pool(OpKind::AvgPool, 2, 2);
  b.global_avg();
  b.linear(4);
  gradcheck(b.finish());
}

}  // namespace
}  // namespace ipna::test
