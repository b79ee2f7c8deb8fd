// Sweeps (engine/experiments/sweep.h): every row against a direct run of the
// engine and SPEC.md's properties, shards merged against one process, a
// resumed sweep against an uninterrupted one, failed items, and the refusals
// that must come before any work. On the shipped Fashion-MNIST CNN and
// Debian's dataset-fashion-mnist.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "engine/error.h"
#include "engine/experiments/sweep.h"
#include "loaders/npy.h"
#include "loaders/onnx_loader.h"

namespace fs = std::filesystem;

namespace ipna {
namespace {

const std::string kModel = std::string(IPNA_TEST_DATA) + "/../models/fashion_cnn.onnx";

fs::path scratch(const std::string& name) {
  const fs::path d = fs::temp_directory_path() / "ipna_sweep_test" / name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

SweepConfig small_config(const fs::path& out) {
  SweepConfig c;
  c.model_files = {kModel};
  c.split = "hidden";
  c.precision = Precision::F64;
  c.dataset_kind = DatasetKind::Idx;
  c.dataset = kFashionMnistDir;
  c.limit = 10;
  c.boxes = {{0, 0, 14, 14}, {10, 5, 28, 20}};
  c.steps.steps = 16;
  c.prune_fractions = {0.1, 0.5};
  c.batch_items = 3;
  c.output = out.string();
  return c;
}

// Every dataset of two sweep files equal, value for value (the per-item seconds aside).
void expect_same_files(const std::string& a, const std::string& b) {
  const SweepFileInfo ia = read_sweep_info(a), ib = read_sweep_info(b);
  EXPECT_EQ(ia.config, ib.config);
  EXPECT_EQ(ia.items, ib.items);
  EXPECT_EQ(ia.failed, ib.failed);
  for (const char* name : {"items/index", "items/label", "items/class", "items/predicted", "items/ok", "items/f_input",
                           "items/f_baseline", "items/ig_sum", "items/ig_gap", "items/conductance_sum",
                           "items/conductance_gap", "items/steps", "items/evaluations", "items/boxes",
                           "items/ipna_sum", "items/ig_inside", "items/ig_outside", "items/ipna_gap",
                           "items/pruned_confidence", "items/pruned_ig_inside", "items/pruned_ig_total", "maps/ig",
                           "maps/conductance", "maps/ipna"}) {
    std::vector<int64_t> sa, sb;
    const auto va = read_sweep_numbers(a, name, &sa), vb = read_sweep_numbers(b, name, &sb);
    ASSERT_EQ(sa, sb) << name;
    for (size_t i = 0; i < va.size(); ++i)
      ASSERT_TRUE(va[i] == vb[i] || (std::isnan(va[i]) && std::isnan(vb[i]))) << name << " element " << i;
  }
  EXPECT_EQ(read_sweep_strings(a, "items/source"), read_sweep_strings(b, "items/source"));
  EXPECT_EQ(read_sweep_strings(a, "items/error"), read_sweep_strings(b, "items/error"));
}

TEST(Sweep, RowsMatchDirectRunsAndTheProperties) {
  const fs::path dir = scratch("rows");
  SweepConfig c = small_config(dir / "s.h5");
  c.ipna_form = IpnaForm::Tangent;
  const SweepSummary s = run_sweep(c);
  EXPECT_EQ(s.items, 10);
  EXPECT_EQ(s.failed, 0);
  EXPECT_FALSE(fs::exists(dir / ".s.h5.partial"));  // the working folder goes once the file is in place

  const std::string f = c.output;
  std::vector<int64_t> ig_shape, ipna_shape;
  const auto ig = read_sweep_numbers(f, "maps/ig", &ig_shape), ipna = read_sweep_numbers(f, "maps/ipna", &ipna_shape);
  const auto cond = read_sweep_numbers(f, "maps/conductance");
  EXPECT_EQ(ig_shape, (std::vector<int64_t>{10, 1, 28, 28}));
  EXPECT_EQ(ipna_shape, (std::vector<int64_t>{10, 2, 64}));
  const auto cls = read_sweep_numbers(f, "items/class"), label = read_sweep_numbers(f, "items/label");
  const auto ig_sum = read_sweep_numbers(f, "items/ig_sum"), ig_gap = read_sweep_numbers(f, "items/ig_gap");
  const auto fx = read_sweep_numbers(f, "items/f_input"), fb = read_sweep_numbers(f, "items/f_baseline");
  const auto ipna_sum = read_sweep_numbers(f, "items/ipna_sum"), inside = read_sweep_numbers(f, "items/ig_inside");
  const auto pruned = read_sweep_numbers(f, "items/pruned_ig_total");
  const auto pruned_conf = read_sweep_numbers(f, "items/pruned_confidence");

  const IdxDataset ds = read_idx_dataset(kFashionMnistDir, "test");
  const SplitModel model = load_split_model(kModel, "hidden");
  Attributor engine(model, Precision::F64);
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(label[i], ds.labels[i]);
    EXPECT_EQ(cls[i], ds.labels[i]);  // the default class is the label
    std::vector<double> x(784), x0(784, 0.0);
    for (int j = 0; j < 784; ++j) x[j] = ds.images.pixels[i * 784 + j] / 255.0;
    AttributionRequest req;
    req.target_class = ds.labels[i];
    req.steps = 16;
    req.integrated_gradients = req.conductance = true;
    req.boxes = c.boxes;
    req.ipna_form = IpnaForm::Tangent;
    req.memory_budget = c.effective_memory_budget();
    const AttributionResult r = engine.run(x, x0, req);
    EXPECT_EQ(fx[i], r.f_input);
    EXPECT_EQ(ig_sum[i], r.ig_sum);
    // SPEC.md: the gap is sum IG - (F(x) - F(x')), and the tangent form sums to IG inside the box.
    EXPECT_NEAR(ig_gap[i], ig_sum[i] - (fx[i] - fb[i]), 1e-12);
    for (int b = 0; b < 2; ++b) {
      EXPECT_NEAR(ipna_sum[i * 2 + b], inside[i * 2 + b], 1e-10);
      for (int j = 0; j < 64; ++j)  // float32 storage of the maps
        EXPECT_NEAR(ipna[(i * 2 + b) * 64 + j], r.ipna[b][j], 1e-6 * (1 + std::abs(r.ipna[b][j])));
    }
    for (int j = 0; j < 784; ++j) EXPECT_NEAR(ig[i * 784 + j], r.ig[j], 1e-6 * (1 + std::abs(r.ig[j])));
    for (int j = 0; j < 64; ++j) EXPECT_NEAR(cond[i * 64 + j], r.conductance[j], 1e-6 * (1 + std::abs(r.conductance[j])));
    // Pruning level 2: the top half of the hidden units by the first box's IPNA.
    AttributionRequest pr = req;
    pr.conductance = false;
    pr.boxes.clear();
    pr.split_mask = prune_mask(r.ipna[0], model.split_shape(), {50, -1, Granularity::Neuron});
    const AttributionResult p = engine.run(x, x0, pr);
    EXPECT_EQ(pruned[i * 2 + 1], p.ig_sum);
    EXPECT_EQ(pruned_conf[i * 2 + 1], p.f_input);
  }
}

// The budget that picks the chunk (and so the order of the sums) is fixed per kind of device, whatever
// memory is free, and the file's configuration records the budget used.
TEST(Sweep, TheMemoryBudgetIsFixedPerKindOfDevice) {
  SweepConfig c = small_config(scratch("budget") / "s.h5");
  EXPECT_EQ(c.effective_memory_budget(), kSweepBudgetCpu);
  EXPECT_EQ(c.describe()["memory_budget"].get<size_t>(), kSweepBudgetCpu);
  c.device = "cuda:0/tf32";  // parsed only: no GPU needed
  EXPECT_EQ(c.effective_memory_budget(), kSweepBudgetGpu);
  EXPECT_EQ(c.describe()["memory_budget"].get<size_t>(), kSweepBudgetGpu);
  c.memory_budget = size_t(3) << 20;
  EXPECT_EQ(c.effective_memory_budget(), size_t(3) << 20);
  EXPECT_EQ(c.describe()["memory_budget"].get<size_t>(), size_t(3) << 20);
  c.memory_budget = 0;
  c.device = "tpu";
  EXPECT_THROW(c.effective_memory_budget(), Error);
}

TEST(Sweep, ShardsMergeIntoTheSingleProcessFile) {
  const fs::path dir = scratch("shards");
  SweepConfig c = small_config(dir / "all.h5");
  c.precision = Precision::F32;
  run_sweep(c);
  std::vector<std::string> parts;
  for (int i = 0; i < 3; ++i) {
    SweepConfig s = c;
    s.shard_index = i;
    s.shard_count = 3;
    s.output = (dir / ("part" + std::to_string(i) + ".h5")).string();
    run_sweep(s);
    parts.push_back(s.output);
  }
  EXPECT_EQ(read_sweep_info(parts[1]).first_index, 3);  // 10 items: 3, 3, 4
  EXPECT_EQ(read_sweep_info(parts[2]).items, 4);
  const MergeSummary m = merge_sweeps({parts[2], parts[0], parts[1]}, (dir / "merged.h5").string(), false);
  EXPECT_EQ(m.items, 10);
  expect_same_files(c.output, m.output);
  EXPECT_EQ(read_sweep_info(m.output).shard, "0/1");

  // Gaps, overlaps and other configurations are refused, naming the items or the setting.
  EXPECT_THROW(merge_sweeps({parts[0], parts[2]}, (dir / "gap.h5").string(), false), Error);
  EXPECT_THROW(merge_sweeps({parts[0], parts[1], parts[2], c.output}, (dir / "over.h5").string(), false), Error);
  SweepConfig other = c;
  other.steps.steps = 32;
  other.shard_index = 2;
  other.shard_count = 3;
  other.output = (dir / "other2.h5").string();
  run_sweep(other);
  try {
    merge_sweeps({parts[0], parts[1], other.output}, (dir / "mixed.h5").string(), false);
    ADD_FAILURE() << "shards of different step counts were merged";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("steps"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(dir / "gap.h5"));
  EXPECT_FALSE(fs::exists(dir / "mixed.h5"));
  EXPECT_THROW(merge_sweeps(parts, m.output, false), Error);  // an existing output stays
}

TEST(Sweep, AResumedSweepEqualsAnUninterruptedOne) {
  const fs::path dir = scratch("resume");
  SweepConfig c = small_config(dir / "whole.h5");
  c.precision = Precision::F32;
  run_sweep(c);

  SweepConfig k = c;
  k.output = (dir / "killed.h5").string();
  k.progress = [](const SweepProgress& p) {
    if (p.done == 7) throw Interrupted();  // batches of 3: items 0-5 are committed, item 6 is lost
  };
  EXPECT_THROW(run_sweep(k), Interrupted);
  EXPECT_FALSE(fs::exists(k.output));
  const fs::path work = dir / ".killed.h5.partial";
  ASSERT_TRUE(fs::exists(work));
  int batches = 0;
  for (const auto& e : fs::directory_iterator(work)) batches += e.path().extension() == ".h5";
  EXPECT_EQ(batches, 2);

  k.progress = nullptr;
  EXPECT_THROW(run_sweep(k), Error);  // neither resumed nor overwritten: refused
  SweepConfig changed = k;
  changed.resume = true;
  changed.target = TargetKind::Logit;
  EXPECT_THROW(run_sweep(changed), Error);  // another configuration cannot resume it
  k.resume = true;
  const SweepSummary s = run_sweep(k);
  EXPECT_EQ(s.resumed_items, 6);
  EXPECT_EQ(s.items, 10);
  expect_same_files(c.output, k.output);
  EXPECT_FALSE(fs::exists(work));
  const SweepSummary again = run_sweep(k);  // resuming a finished sweep does nothing
  EXPECT_TRUE(again.already_complete);
}

TEST(Sweep, UnreadableItemsAreRecordedAndTheSweepGoesOn) {
  const fs::path dir = scratch("failed");
  {
    std::ofstream(dir / "not_an_image.png") << "hello";
    std::ofstream m(dir / "list.csv");
    m << "path,class,boxes\n"
      << "missing.npy,1,0 0 14 14\n"
      << "not_an_image.png,predicted,0 0 28 28\n";
  }
  // A valid item too: an IDX image saved as .npy.
  const IdxDataset ds = read_idx_dataset(kFashionMnistDir, "test");
  {
    std::vector<double> x(784);
    for (int j = 0; j < 784; ++j) x[j] = ds.images.pixels[j] / 255.0;
    write_npy((dir / "good.npy").string(), x, {1, 28, 28});
    std::ofstream(dir / "list.csv", std::ios::app) << "\"good.npy\",predicted,\"3 3 20 20\"\n";
  }
  SweepConfig c = small_config(dir / "s.h5");
  c.dataset_kind = DatasetKind::Manifest;
  c.dataset = (dir / "list.csv").string();
  c.boxes.clear();
  c.prune_fractions.clear();
  const SweepSummary s = run_sweep(c);
  EXPECT_EQ(s.items, 3);
  EXPECT_EQ(s.failed, 2);
  ASSERT_EQ(s.failures.size(), 2u);
  const auto ok = read_sweep_numbers(c.output, "items/ok"), fx = read_sweep_numbers(c.output, "items/f_input");
  const auto err = read_sweep_strings(c.output, "items/error");
  EXPECT_EQ(ok, (std::vector<double>{0, 0, 1}));
  EXPECT_NE(err[0].find("missing.npy"), std::string::npos) << err[0];
  EXPECT_NE(err[1].find("not_an_image.png"), std::string::npos) << err[1];
  EXPECT_TRUE(std::isnan(fx[0]));
  EXPECT_FALSE(std::isnan(fx[2]));
  const auto boxes = read_sweep_numbers(c.output, "items/boxes");
  EXPECT_EQ(std::vector<double>(boxes.begin() + 8, boxes.end()), (std::vector<double>{3, 3, 20, 20}));
  EXPECT_EQ(read_sweep_info(c.output).failed, 2);
}

TEST(Sweep, ImageFolderPngsGiveTheIdxNumbers) {
  const fs::path dir = scratch("folder");
  const IdxDataset ds = read_idx_dataset(kFashionMnistDir, "test");
  for (int i = 0; i < 4; ++i) {  // class folders named so that sorting keeps the labels
    Image im;
    im.width = im.height = 28;
    im.channels = 3;
    for (int j = 0; j < 784; ++j)
      for (int ch = 0; ch < 3; ++ch) im.pixels.push_back(ds.images.pixels[i * 784 + j]);
    const fs::path cls = dir / "data" / ("class" + std::to_string(ds.labels[i]));
    fs::create_directories(cls);
    write_png((cls / ("item" + std::to_string(i) + ".png")).string(), im);
  }
  SweepConfig c = small_config(dir / "folder.h5");
  c.dataset_kind = DatasetKind::ImageFolder;
  c.dataset = (dir / "data").string();
  c.class_rule = ClassRule::Fixed;
  c.fixed_class = 0;
  c.prune_fractions.clear();
  c.maps = MapStorage::Float16;
  run_sweep(c);
  SweepConfig r = small_config(dir / "idx.h5");
  r.limit = 4;
  r.class_rule = ClassRule::Fixed;
  r.fixed_class = 0;
  r.prune_fractions.clear();
  run_sweep(r);
  const auto src = read_sweep_strings(c.output, "items/source");
  const auto a = read_sweep_numbers(c.output, "items/ig_sum"), b = read_sweep_numbers(r.output, "items/ig_sum");
  const auto ma = read_sweep_numbers(c.output, "maps/ig"), mb = read_sweep_numbers(r.output, "maps/ig");
  for (int i = 0; i < 4; ++i) {
    const int j = static_cast<int>(src[i].back() == 'g' ? src[i][src[i].size() - 5] - '0' : -1);  // itemJ.png
    ASSERT_GE(j, 0);
    EXPECT_EQ(a[i], b[j]);
    for (int p = 0; p < 784; ++p)  // float16 maps: half precision of the float32 ones
      EXPECT_NEAR(ma[i * 784 + p], mb[j * 784 + p], 1e-3 * std::abs(mb[j * 784 + p]) + 1e-7);
  }
}

TEST(Sweep, BadInputIsRefusedBeforeAnyWork) {
  const fs::path dir = scratch("refused");
  auto refused = [&](SweepConfig c, const std::string& expect) {
    try {
      run_sweep(c);
      ADD_FAILURE() << "accepted; expected an error mentioning '" << expect << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(expect), std::string::npos) << e.what();
    }
    EXPECT_FALSE(fs::exists(c.output)) << c.output;
    EXPECT_FALSE(fs::exists(fs::path(c.output).parent_path() / ("." + fs::path(c.output).filename().string() + ".partial")));
  };
  std::ofstream(dir / "cols.csv") << "path,weight\nx.npy,1\n";
  SweepConfig c = small_config(dir / "out.h5");
  c.dataset_kind = DatasetKind::Manifest;
  c.dataset = (dir / "cols.csv").string();
  refused(c, "unknown column 'weight'");
  std::ofstream(dir / "box.csv") << "path,boxes\nx.npy,0 0 14 40\n";
  c.dataset = (dir / "box.csv").string();
  c.boxes.clear();
  refused(c, "not inside the 28x28 input");
  c = small_config(dir / "no_such_folder" / "out.h5");
  refused(c, "does not exist");
  c = small_config(dir / "out.h5");
  c.shard_index = 3;
  c.shard_count = 2;
  refused(c, "3/2");
  EXPECT_THROW(parse_shard("3/2"), Error);
  EXPECT_THROW(parse_shard("1/0"), Error);
  EXPECT_THROW(parse_shard("1"), Error);
  EXPECT_EQ(parse_shard("2/3"), (std::pair<int, int>{2, 3}));
  c = small_config(dir / "out.h5");
  c.fixed_class = 10;
  c.class_rule = ClassRule::Fixed;
  refused(c, "class 10 is out of range");
  // An existing file is never replaced without overwrite, whoever wrote it.
  std::ofstream(dir / "mine.h5") << "a user's file";
  c = small_config(dir / "mine.h5");
  EXPECT_THROW(run_sweep(c), Error);
  std::ifstream in(dir / "mine.h5");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(text, "a user's file");
  // A folder in the way is never touched, even with overwrite.
  fs::create_directories(dir / ".busy.h5.partial");
  std::ofstream(dir / ".busy.h5.partial" / "notes.txt") << "keep";
  c = small_config(dir / "busy.h5");
  c.overwrite = true;
  EXPECT_THROW(run_sweep(c), Error);
  EXPECT_TRUE(fs::exists(dir / ".busy.h5.partial" / "notes.txt"));
}

}  // namespace
}  // namespace ipna
