// The plan's memory layout: arena reuse and the per-sample byte estimate the
// chunk choice relies on; the CPU backend's lanes that patch passes run on.
#include <gtest/gtest.h>
#include <omp.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "engine/attribution.h"
#include "engine/cpu/cpu_backend.h"
#include "engine/plan.h"
#include "tests/net_builder.h"

namespace ipna::test {
namespace {

// The CPU's lanes (engine/backend.h, run_concurrently): every task runs once, on a lane below the count asked
// for, lanes really run at once, and the first failure comes back to the caller with the tasks after it skipped.
TEST(Plan, CpuLanesRunEveryTaskOnceAndReturnTheFirstFailure) {
  const int threads = omp_get_max_threads();
  omp_set_num_threads(std::max(2, threads));
  CpuBackend<float> cpu;
  const int lanes = cpu.concurrent_lanes();
  ASSERT_GE(lanes, 2);
  std::vector<std::atomic<int>> runs(40);
  std::atomic<int> busy{0}, most_at_once{0}, bad_lane{0};
  // Each task waits (until one deadline for all) for the other lane to be inside a task too.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  cpu.run_concurrently(40, 2, [&](int task, int lane) {
    if (lane < 0 || lane >= 2) ++bad_lane;
    const int now = ++busy;
    for (int seen = most_at_once; now > seen && !most_at_once.compare_exchange_weak(seen, now);) {
    }
    while (most_at_once < 2 && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
    ++runs[task];
    --busy;
  });
  for (int t = 0; t < 40; ++t) EXPECT_EQ(runs[t], 1) << t;
  EXPECT_EQ(bad_lane, 0);
  EXPECT_EQ(most_at_once, 2);

  std::atomic<int> started{0};
  try {
    cpu.run_concurrently(1000, lanes, [&](int task, int) {
      ++started;
      if (task == 3) throw Error("task 3 failed");
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    });
    ADD_FAILURE() << "the failure was lost";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "task 3 failed");
  }
  EXPECT_LT(started, 100);  // the tasks after the failure were skipped (1000 would take 0.1 s)
  omp_set_num_threads(threads);
}

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

// conv 3x3 to `channels` -> ReLU (the split) -> global average -> linear to 3 classes, on RGB
// inputs of side x side.
SplitModel conv_relu_net(int side, int channels) {
  NetBuilder b(Shape{3, side, side});
  b.conv(channels, 3, 1, 1);
  b.relu();
  const int split = b.current();
  b.global_avg();
  b.linear(3);
  Graph g = b.finish();
  return split_graph(g, g.values[split].name);
}

AttributionRequest ig_of_class_0_in_64_steps() {
  AttributionRequest r;
  r.target_class = 0;
  r.steps = 64;
  r.integrated_gradients = true;
  return r;
}

TEST(Plan, MemoryBudgetPicksChunk) {
  Attributor a(conv_relu_net(16, 4), Precision::F32);
  AttributionRequest r = ig_of_class_0_in_64_steps();
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

// Without a budget the CPU plans its batches in kHostBatchBudget (a larger one only costs
// there, README "Library"): a model of several MiB a step runs its 64 steps in chunks, the
// same IG as in one chunk.
TEST(Plan, DefaultBudgetOnTheCpuKeepsBatchesSmall) {
  Attributor a(conv_relu_net(128, 16), Precision::F32);
  AttributionRequest r = ig_of_class_0_in_64_steps();
  auto x = random_vector(3 * 128 * 128, 2), x0 = black_baseline(Shape{3, 128, 128});
  AttributionResult chunked = a.run(x, x0, r);
  EXPECT_LT(chunked.chunk, 64);
  EXPECT_GT(chunked.chunk, 1);
  EXPECT_LE(chunked.workspace_bytes, kHostBatchBudget);
  EXPECT_GT(chunked.workspace_bytes * 64 / chunked.chunk, kHostBatchBudget);  // one chunk would not fit
  r.chunk = 64;
  EXPECT_LT(rel_err(chunked.ig, a.run(x, x0, r).ig), 1e-6);
}

}  // namespace
}  // namespace ipna::test
