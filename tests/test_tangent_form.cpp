// IPNA in tangent form (SPEC.md "IPNA, tangent form") and the receptive-field
// cones: patch completeness and additivity at every m, the two forms meeting
// as m grows, and the cone-restricted passes equal to whole-plane passes on
// every reference model, box shapes at corners and over the whole image, in
// both precisions.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <numeric>

#include "engine/attribution.h"
#include "engine/cpu/cpu_backend.h"
#include "engine/plan.h"
#include "loaders/onnx_loader.h"
#include "tests/fixtures.h"
#include "tests/net_builder.h"

namespace ipna::test {
namespace {

// f1: conv-relu-maxpool-conv-relu, a squeeze-excitation gate and a residual add; f2: conv-relu-gap-linear.
SplitModel net(unsigned seed = 13) {
  NetBuilder b(Shape{3, 16, 16}, seed);
  b.conv(6, 3, 1, 1);
  b.relu();
  b.pool(OpKind::MaxPool, 2, 2);
  const int x = b.conv(8, 3, 1, 1);
  b.global_avg();
  b.conv(8, 1);
  const int gate = b.activation(ActivationFn::Sigmoid);
  const int se = b.mul(x, gate);
  b.set_current(se);
  b.conv(8, 3, 1, 1);
  b.activation(ActivationFn::SiLU);
  return with_classifier_head(b, b.add(se, b.current()));
}

AttributionResult run(const SplitModel& m, int steps, std::vector<Box> boxes, IpnaForm form, bool cones = true,
                      Precision p = Precision::F64) {
  Attributor a(m, p);
  AttributionRequest r;
  r.target_class = 2;
  r.steps = steps;
  r.integrated_gradients = true;
  r.conductance = true;
  r.boxes = std::move(boxes);
  r.ipna_form = form;
  r.receptive_field_cones = cones;
  return a.run(random_vector(3 * 16 * 16, 21), black_baseline(Shape{3, 16, 16}), r);
}

// A box that no tap of a 1x1 stride-2 convolution reads (an odd row and column) never reaches the split
// tensor: its cone is empty from there on, and its IPNA is zero in both forms, on cones as on whole planes.
TEST(TangentForm, ABoxItsConeNeverCarriesOnHasZeroIpna) {
  NetBuilder b(Shape{3, 16, 16}, 5);
  b.conv(6, 1, 2, 0);
  b.relu();
  b.conv(6, 3, 1, 1);
  b.relu();
  const SplitModel m = with_classifier_head(b, b.current());
  CpuBackend<double> cpu;
  const Cone cone = GraphPlan<double>(m.f1, cpu).cone({3, 5, 4, 6}, true, true);
  ASSERT_EQ(cone.rect[m.f1.output].area(), 0);
  ASSERT_TRUE(cone.compact[m.f1.output] && cone.compact[m.f1.input]);
  for (IpnaForm form : {IpnaForm::Tangent, IpnaForm::Difference})
    for (bool cones : {true, false}) {
      const AttributionResult r = run(m, 8, {{3, 5, 4, 6}}, form, cones);
      ASSERT_EQ(r.ipna[0].size(), static_cast<size_t>(m.split_shape().numel()));
      EXPECT_EQ(std::count(r.ipna[0].begin(), r.ipna[0].end(), 0.0), m.split_shape().numel()) << cones;
      EXPECT_NE(r.ig_sum, 0.0);
    }
}

// The difference form's patch values outside a box's cone must equal the base point's exactly, in every
// precision: its IPNA there is exactly zero. The stem makes the base points on the line of points
// (GraphPlan::prepare_line), conv(x') + k conv(d), where conv(x' + k d) would round differently; on cones the patch
// only adds the stem's change on the box's window (the stem is always windowed for it).
TEST(TangentForm, DifferenceFormIsExactlyZeroOutsideTheConeInEveryPrecision) {
  struct Case {
    const char* what;
    SplitModel model;
    Box box;
  };
  std::vector<Case> cases;
  {
    NetBuilder b(Shape{3, 16, 16}, 17);
    b.conv(6, 3, 1, 1);
    b.relu();
    b.pool(OpKind::MaxPool, 2, 2);
    b.conv(8, 3, 1, 1);
    b.relu();
    cases.push_back({"3x3 stem, small box", with_classifier_head(b, b.current()), {2, 3, 6, 7}});
  }
  {
    // The box covers 7 of the stem's 8 output columns, over 80 % of its plane: the stem runs on its window
    // only because it is the line's head.
    NetBuilder b(Shape{3, 16, 16}, 19);
    b.conv(6, 1, 2, 0);
    b.relu();
    b.conv(8, 1, 1, 0);
    b.relu();
    cases.push_back({"1x1 stride-2 stem, wide box", with_classifier_head(b, b.current()), {0, 1, 16, 16}});
  }
  for (const Case& c : cases) {
    CpuBackend<double> cpu;
    ASSERT_TRUE(GraphPlan<double>(c.model.f1, cpu).has_line_head()) << c.what;
    const Cone cone = GraphPlan<double>(c.model.f1, cpu).cone(c.box, true, true);
    const Cone::Rect& rect = cone.rect[c.model.f1.output];
    const Shape& hs = c.model.split_shape();
    ASSERT_GT(rect.area(), 0) << c.what;
    ASSERT_LT(rect.area(), hs.plane()) << c.what;  // part of the split's plane: there is an outside
    for (Precision p : {Precision::F32, Precision::F64}) {
      Attributor a(c.model, p);
      AttributionRequest r;
      r.target_class = 2;
      r.steps = 8;
      r.conductance = true;
      r.boxes = {c.box};
      r.ipna_form = IpnaForm::Difference;
      const AttributionResult res = a.run(random_vector(3 * 16 * 16, 23), black_baseline(Shape{3, 16, 16}), r);
      int64_t inside_nonzero = 0, outside_nonzero = 0;
      for (int64_t j = 0; j < hs.numel(); ++j) {
        const int64_t row = (j / hs.width()) % hs.height(), col = j % hs.width();
        const bool inside = row >= rect.r0 && row < rect.r1 && col >= rect.c0 && col < rect.c1;
        (inside ? inside_nonzero : outside_nonzero) += res.ipna[0][j] != 0.0;
      }
      EXPECT_EQ(outside_nonzero, 0) << c.what << (p == Precision::F32 ? ", f32" : ", f64");
      EXPECT_GT(inside_nonzero, 0) << c.what;
    }
  }
}

// The CPU runs the patch passes of different boxes on cones at once, one lane per OpenMP thread
// (engine/backend.h, run_concurrently), each lane's ops single-threaded. Every box must come out as with one lane: a
// race on a shared buffer (oneDNN's own scratchpad did this) hands one box another's numbers, an error of order 1. The
// one-lane run is a one-thread run, whose shared passes (and GEMM batching) may round differently from the threaded
// ones: the maps must agree to each precision's rounding. Several runs per setting, to give a race its chances; the
// lanes run with two threads even on a one-core machine.
TEST(TangentForm, PatchLanesGiveEveryBoxWhatOneLaneGives) {
  const int threads = std::max(2, omp_get_max_threads());
  std::vector<std::pair<std::string, SplitModel>> models;
  models.emplace_back("conv/SE/residual net", net());
  models.emplace_back("Fashion-MNIST CNN (a linear layer in f1)",
                      load_split_model(std::string(IPNA_TEST_DATA) + "/../models/fashion_cnn.onnx", "hidden"));
  int compared = 0;
  for (const auto& [name, m] : models) {
    const int H = static_cast<int>(m.input_shape().height()), W = static_cast<int>(m.input_shape().width());
    std::vector<Box> grid;  // 3 x 3 boxes, and the whole image
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 3; ++j) grid.push_back({i * H / 3, j * W / 3, (i + 1) * H / 3, (j + 1) * W / 3});
    grid.push_back({0, 0, H, W});
    const std::vector<double> x = random_vector(m.input_shape().numel(), 3), x0(x.size(), 0.0);
    for (Precision p : {Precision::F64, Precision::F32})
      for (IpnaForm form : {IpnaForm::Tangent, IpnaForm::Difference}) {
        Attributor a(m, p);
        AttributionRequest r;
        r.target_class = 1;
        r.steps = 6;
        r.chunk = 4;  // two chunks: the lanes' buffers are reused
        r.boxes = grid;
        r.ipna_form = form;
        omp_set_num_threads(1);
        const AttributionResult one = a.run(x, x0, r);
        omp_set_num_threads(threads);
        for (int rep = 0; rep < 6; ++rep) {
          const AttributionResult lanes = a.run(x, x0, r);
          for (size_t b = 0; b < grid.size(); ++b) {
            const std::string what = name + (p == Precision::F64 ? " f64" : " f32") +
                                     (form == IpnaForm::Tangent ? " tangent" : " difference") + " box " +
                                     std::to_string(b);
            ASSERT_GT(std::abs(one.ipna_sum[b]), 0.0) << what;
            ASSERT_LT(rel_err(lanes.ipna[b], one.ipna[b]), p == Precision::F64 ? 1e-12 : 1e-5) << what;
            ++compared;
          }
        }
      }
  }
  omp_set_num_threads(threads);
  EXPECT_EQ(compared, 2 * 2 * 2 * 6 * 10);
}

TEST(TangentForm, PatchCompletenessHoldsAtEveryStepCount) {
  const SplitModel m = net();
  const std::vector<Box> boxes{{2, 3, 9, 12}, {0, 0, 16, 16}, {12, 12, 16, 16}};
  for (int steps : {1, 3, 8}) {
    AttributionResult r = run(m, steps, boxes, IpnaForm::Tangent);
    for (size_t b = 0; b < boxes.size(); ++b)
      EXPECT_NEAR(r.ipna_sum[b], r.ig_in_box[b], 1e-12 * std::abs(r.ig_in_box[b])) << "m=" << steps << " box " << b;
    // The whole image: the tangent sum is IG's total.
    EXPECT_NEAR(r.ipna_sum[1], r.ig_sum, 1e-12 * std::abs(r.ig_sum));
  }
}

TEST(TangentForm, AdditiveOverEveryPartition) {
  // Linear in the box: a 2x2 and a 4x1 grid give the same neuron-wise sums, whose total is IG's.
  const SplitModel m = net();
  auto sum_over = [&](const std::vector<Box>& grid) {
    AttributionResult r = run(m, 8, grid, IpnaForm::Tangent);
    std::vector<double> s(r.ipna[0].size(), 0.0);
    for (const auto& map : r.ipna)
      for (size_t j = 0; j < map.size(); ++j) s[j] += map[j];
    EXPECT_NEAR(std::accumulate(s.begin(), s.end(), 0.0), r.ig_sum, 1e-12 * std::abs(r.ig_sum));
    return s;
  };
  const auto a = sum_over(grid_boxes(16, 16, 2, 2)), b = sum_over(grid_boxes(16, 16, 4, 1));
  EXPECT_LT(rel_err(a, b), 1e-12);
}

TEST(TangentForm, TheTwoFormsMeetAsStepsGrow) {
  // Both are Riemann sums of the same integral: their distance shrinks with m.
  const SplitModel m = net();
  const std::vector<Box> box{{2, 3, 9, 12}};
  std::vector<double> dist;
  for (int steps : {16, 256, 4096}) {
    AttributionResult d = run(m, steps, box, IpnaForm::Difference), t = run(m, steps, box, IpnaForm::Tangent);
    dist.push_back(rel_err(d.ipna[0], t.ipna[0]));
    std::printf("m=%5d  |IPNA - IPNA^t| / |IPNA^t| = %.3e\n", steps, dist.back());
  }
  EXPECT_LT(dist[1], dist[0] / 4);
  EXPECT_LT(dist[2], dist[1] / 4);
  EXPECT_LT(dist[2], 1e-3);
}

// Both forms. A cone reads only the window its patch reaches, so it must reproduce the whole-plane
// pass but for rounding. The tangent form sums no differences: both agree to float64 rounding. The
// difference form subtracts h(x_{k-1}) from h at the patch point, and its rounding error is magnified
// by the conditioning of that difference, which is poor where a global op (a squeeze-excitation gate)
// spreads tiny changes over whole planes. The cone computes the change of each windowed convolution
// directly (exactly zero where the patch does not reach), so it rounds differently, and the yardstick
// is the whole-plane pass's own error: float32's error against float64 measures the conditioning, and
// scaled by the ratio of the unit roundoffs, 2^-29, it bounds float64's. A cone may stray from the
// float64 whole-plane pass at most 4 times as far as that pass's error (estimated so), with floors of
// 1e-12 (float64) and 2e-5 (float32, about 170 unit roundoffs). Both forms' cones also window the
// per-position ops (the difference form as f(base + change) - f(base)) and keep values compact, and
// the difference form makes some base values from kept inputs instead of keeping them: all must
// happen on these models for the check to cover them.
TEST(TangentForm, ConesEqualWholePlanePassesOnTheReferenceModels) {
  if (!fixtures_present()) return;
  int compact_values = 0, per_position = 0, trimmed_stores = 0, made_values = 0, compact_outputs = 0,
      compact_inputs = 0;
  for (const char* name : {"lenet", "vgg_avg", "resnet18", "mbv2_block", "tiny224", "mobilenet_v3_small",
                           "efficientnet_b0", "densenet121", "shufflenet_v2_x0_5", "convnext_tiny"}) {
    const std::string dir = fixture_dir() + "/" + name;
    if (!std::ifstream(dir + "/meta.json")) {
      ADD_FAILURE() << "missing fixture " << name;
      continue;
    }
    const auto meta = read_json(dir + "/meta.json");
    const SplitModel m = load_split_model(dir + "/model.onnx", meta["split"].get<std::string>());
    const int H = static_cast<int>(m.input_shape().height()), W = static_cast<int>(m.input_shape().width());
    const std::vector<Box> boxes{{0, 0, 3, 4}, {H - 5, W - 2, H, W}, {H / 3, W / 4, H / 2, W / 2}, {0, 0, H, W}};
    CpuBackend<double> cpu;
    const GraphPlan<double> plan(m.f1, cpu);
    for (const Box& box : boxes) {
      const Cone cone = plan.cone(box);
      compact_values += static_cast<int>(std::count(cone.compact.begin(), cone.compact.end(), true));
      for (size_t li = 0; li < cone.windowed.size(); ++li)
        per_position += cone.windowed[li] && m.f1.nodes[li].kind != OpKind::Conv;
      int64_t every_value = 0;  // the difference form's store keeps only the base values it reads
      for (const Value& v : m.f1.values) every_value += v.shape.numel();
      const GraphPlan<double>::StoreLayout layout = plan.store_layout({cone});
      trimmed_stores += layout.elems < every_value;
      // values whose base is made from a kept input (a ReLU's output read by a max pool), not kept
      made_values += static_cast<int>(
          std::count_if(layout.made_by.begin(), layout.made_by.end(), [](int node) { return node >= 0; }));
      compact_outputs += plan.cone(box, /*compact_output=*/true).compact[m.f1.output];      // IPNA on the split window
      compact_inputs += plan.cone(box, false, /*compact_input=*/true).compact[m.f1.input];  // the direction on the box
    }
    const auto x = npy(dir + "/x.npy"), x0 = npy(dir + "/baseline.npy");
    for (IpnaForm form : {IpnaForm::Tangent, IpnaForm::Difference}) {
      const char* form_name = form == IpnaForm::Tangent ? " tangent" : " difference";
      auto run = [&](Precision p, bool cones) {
        Attributor a(m, p);
        AttributionRequest r;
        r.target_class = meta["class"];
        r.steps = 4;
        r.boxes = boxes;
        r.ipna_form = form;
        r.receptive_field_cones = cones;
        return a.run(x, x0, r);
      };
      const AttributionResult whole64 = run(Precision::F64, false), cone64 = run(Precision::F64, true);
      const AttributionResult whole32 = run(Precision::F32, false), cone32 = run(Precision::F32, true);
      for (size_t b = 0; b < boxes.size(); ++b) {
        const double whole32_err = rel_err(whole32.ipna[b], whole64.ipna[b]);
        std::printf("%-19s %-11s box %zu: float32 error %.1e whole planes, %.1e cones; float64 cones vs whole %.1e\n",
                    name, form_name, b, whole32_err, rel_err(cone32.ipna[b], whole64.ipna[b]),
                    rel_err(cone64.ipna[b], whole64.ipna[b]));
        EXPECT_LT(rel_err(cone64.ipna[b], whole64.ipna[b]), std::max(4 * 0x1p-29 * whole32_err, 1e-12))
            << name << " box " << b << form_name << " f64 (whole-plane f32 error " << whole32_err << ")";
        EXPECT_LT(rel_err(cone32.ipna[b], whole64.ipna[b]), std::max(4 * whole32_err, 2e-5))
            << name << " box " << b << form_name << " f32 (whole-plane f32 error " << whole32_err << ")";
      }
    }
  }
  std::printf(
      "compact values %d, windowed per-position launches %d, trimmed stores %d, values made from kept ones %d, "
      "compact outputs %d, compact inputs %d\n",
      compact_values, per_position, trimmed_stores, made_values, compact_outputs, compact_inputs);
  EXPECT_GT(compact_values, 20);
  EXPECT_GT(per_position, 20);
  EXPECT_GT(trimmed_stores, 10);
  EXPECT_GE(made_values, 3);
  EXPECT_GT(compact_outputs, 5);
  EXPECT_GT(compact_inputs, 10);
}

// The groups of boxes take only the memory the chunk of steps leaves in the budget: under a budget the steps fill,
// the chunk is the one of one box a pass and the groups shrink (to single boxes at the tightest); with room to
// spare the groups form. The maps are the same either way.
TEST(TangentForm, BoxGroupsNeverShrinkTheChunkOfSteps) {
  const SplitModel m = net();
  const std::vector<Box> grid = grid_boxes(16, 16, 4, 4);
  CpuBackend<double> cpu;
  const GraphPlan<double> plan(m.f1, cpu);
  const Cone inner = plan.cone(grid[5], true, true);
  ASSERT_TRUE(plan.same_geometry(inner, plan.cone(grid[10], true, true)));  // the grid's inner boxes share one
  Attributor a(m, Precision::F64);
  AttributionRequest r;
  r.target_class = 2;
  r.steps = 16;
  r.boxes = grid;
  r.ipna_form = IpnaForm::Tangent;
  const std::vector<double> x = random_vector(3 * 16 * 16, 21), x0 = black_baseline(Shape{3, 16, 16});
  auto run_with = [&](int box_batch) {
    r.box_batch = box_batch;
    return a.run(x, x0, r);
  };
  const AttributionResult alone = run_with(1), roomy = run_with(4);
  ASSERT_EQ(alone.chunk, 16);
  EXPECT_EQ(roomy.chunk, 16);
  EXPECT_LT(roomy.patch_passes, 16);
  r.memory_budget = 5 * alone.workspace_bytes / 16 + 100;  // one box a pass fills it at 5 steps a chunk
  const AttributionResult tight_alone = run_with(1), tight = run_with(4);
  ASSERT_EQ(tight_alone.chunk, 5);
  EXPECT_EQ(tight.chunk, 5);
  EXPECT_EQ(tight.patch_passes, 16);
  EXPECT_LE(tight.workspace_bytes, r.memory_budget);
  for (size_t b = 0; b < grid.size(); ++b) {
    EXPECT_LT(rel_err(roomy.ipna[b], alone.ipna[b]), 1e-12) << b;
    EXPECT_LT(rel_err(tight.ipna[b], alone.ipna[b]), 1e-12) << b;
  }
}

// Boxes whose cones have the same geometry run their patch passes as one batch (ConeGroup, AttributionRequest::
// box_batch): the convolutions once on every box's samples, the ops reading the base pass per box at its position.
// Every box must come out as when it runs alone (float64 1e-12, float32 1e-5): a box reading another's masks, pool
// indices or base values, or its samples' results landing at another's place, is an error of order 1. A 4 x 4 grid,
// a box shifted by a multiple of the nets' strides, a duplicate and a box of another size; groups of up to 3 (so one
// kind splits unevenly), two chunks (the lanes' buffers reused), both forms, equal steps (a box's convolution of the
// input runs once per box) and a schedule (it does not), and a refinement (the difference form's passes from the coarse
// points).
TEST(TangentForm, BoxGroupsOnTheReferenceModelsGiveEveryBoxWhatItGetsAlone) {
  if (!fixtures_present()) return;
  int batched = 0, compared = 0;
  for (const char* name : {"vgg_avg", "resnet18", "mbv2_block", "tiny224", "mobilenet_v3_small", "efficientnet_b0"}) {
    const std::string dir = fixture_dir() + "/" + name;
    const auto meta = read_json(dir + "/meta.json");
    const SplitModel m = load_split_model(dir + "/model.onnx", meta["split"].get<std::string>());
    const int H = static_cast<int>(m.input_shape().height()), W = static_cast<int>(m.input_shape().width());
    std::vector<Box> boxes = grid_boxes(H, W, 4, 4);
    boxes.push_back({H / 4 + 8, W / 4 + 16, H / 2 + 8, W / 2 + 16});
    boxes.push_back(boxes[5]);
    boxes.push_back({1, 2, H / 4 + 3, W / 4 + 2});  // a size of its own
    CpuBackend<double> cpu;
    const GraphPlan<double> plan(m.f1, cpu);
    std::vector<Cone> cones;
    for (const Box& b : boxes) cones.push_back(plan.cone(b, true, true));
    int shared = 0;  // boxes with the geometry of an earlier one
    for (size_t b = 1; b < boxes.size(); ++b)
      shared +=
          std::any_of(cones.begin(), cones.begin() + b, [&](const Cone& c) { return plan.same_geometry(c, cones[b]); });
    EXPECT_GE(shared, 1) << name;  // at least the duplicate
    EXPECT_FALSE(plan.same_geometry(cones.back(), cones[5])) << name << ": boxes of two sizes";
    batched += shared;
    const auto x = npy(dir + "/x.npy"), x0 = npy(dir + "/baseline.npy");
    for (IpnaForm form : {IpnaForm::Tangent, IpnaForm::Difference})
      for (bool scheduled : {false, true}) {
        // The run, and the difference form's refinement from it to 8 steps, one box a pass or in groups of 3.
        auto runs = [&](Precision p, int box_batch) {
          Attributor a(m, p);
          AttributionRequest r;
          r.target_class = meta["class"];
          r.steps = 4;
          r.chunk = 2;
          if (scheduled) r.schedule = {0.0, 0.1, 0.35, 0.7, 1.0};
          r.boxes = boxes;
          r.ipna_form = form;
          r.keep_split_samples = true;
          r.box_batch = box_batch;
          std::vector<AttributionResult> out{a.run(x, x0, r)};
          if (form == IpnaForm::Difference && !scheduled) {
            r.steps = 8;
            out.push_back(a.refine(x, x0, r, out.front()));
          }
          return out;
        };
        const auto alone64 = runs(Precision::F64, 1), grouped64 = runs(Precision::F64, 3);
        const auto alone32 = runs(Precision::F32, 1), grouped32 = runs(Precision::F32, 3);
        EXPECT_EQ(alone64[0].patch_passes, static_cast<int>(boxes.size())) << name;
        EXPECT_LT(grouped64[0].patch_passes, static_cast<int>(boxes.size()) - shared / 2) << name << ": the groups";
        for (size_t i = 0; i < alone64.size(); ++i)
          for (size_t b = 0; b < boxes.size(); ++b) {
            const std::string what = std::string(name) + (form == IpnaForm::Tangent ? " tangent" : " difference") +
                                     (scheduled ? " scheduled" : "") + (i ? " refined" : "") + " box " +
                                     std::to_string(b);
            ASSERT_GT(std::abs(alone64[i].ipna_sum[b]), 0.0) << what;
            // The yardstick of ConesEqualWholePlanePassesOnTheReferenceModels: the batches' convolutions round
            // differently, which the difference form magnifies where a gate spreads tiny changes over whole planes.
            const double err32 = rel_err(alone32[i].ipna[b], alone64[i].ipna[b]);
            EXPECT_LT(rel_err(grouped64[i].ipna[b], alone64[i].ipna[b]), std::max(4 * 0x1p-29 * err32, 1e-12))
                << what << " f64 (float32's error " << err32 << ")";
            EXPECT_LT(rel_err(grouped32[i].ipna[b], alone32[i].ipna[b]), std::max(4 * err32, 1e-5))
                << what << " f32 (float32's error " << err32 << ")";
            ++compared;
          }
      }
  }
  std::printf("boxes batched with an earlier one: %d; maps compared: %d\n", batched, compared);
  EXPECT_GT(batched, 12);
}

}  // namespace
}  // namespace ipna::test
