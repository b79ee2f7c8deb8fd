// The plan's memory layout: arena reuse and the per-sample byte estimate the
// chunk choice relies on.
#include <gtest/gtest.h>

#include "engine/attribution.h"
#include "engine/cpu/cpu_backend.h"
#include "engine/plan.h"
#include "tests/net_builder.h"

namespace ipna::test {
namespace {

TEST(Plan, ArenaReusesDeadBuffers) {
  NetBuilder b(Shape{8, 32, 32});
  for (int i = 0; i < 10; ++i) {
    b.conv(8, 3, 1, 1);
    b.relu();
  }
  Graph g = b.finish();
  CpuBackend<float> be;
  GraphPlan<float> plan(g, be);
  const size_t act = 8 * 32 * 32 * sizeof(float);
  // 20 values of one activation each; in-place ReLU and reuse keep at most 2 live.
  EXPECT_LE(plan.bytes_per_sample(false), 2 * act);
  // Backward adds its own two slots and one bit per ReLU element.
  EXPECT_LE(plan.bytes_per_sample(true), 4 * act + 10 * (8 * 32 * 32 / 8) + 4096);
}

TEST(Plan, MemoryBudgetPicksChunk) {
  NetBuilder b(Shape{3, 16, 16});
  b.conv(4, 3, 1, 1);
  b.relu();
  int split = b.current();
  b.global_avg();
  b.linear(3);
  Graph g = b.finish();
  Attributor a(split_graph(g, g.values[split].name), Precision::F32);
  AttributionRequest r;
  r.target_class = 0;
  r.steps = 64;
  r.integrated_gradients = true;
  auto x = random_vector(3 * 16 * 16, 1), x0 = black_baseline(Shape{3, 16, 16});
  r.memory_budget = size_t(1) << 30;
  AttributionResult big = a.run(x, x0, r);
  EXPECT_EQ(big.chunk, 64);
  const size_t per_step = big.workspace_bytes / 64;
  r.memory_budget = per_step * 5 + per_step / 2;
  AttributionResult small = a.run(x, x0, r);
  EXPECT_EQ(small.chunk, 5);
  EXPECT_LE(small.workspace_bytes, r.memory_budget);
  EXPECT_LT(rel_err(small.ig, big.ig), 1e-6);
  r.memory_budget = 1;
  EXPECT_EQ(a.run(x, x0, r).chunk, 1);
}

}  // namespace
}  // namespace ipna::test
