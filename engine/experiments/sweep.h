// Sweeps: attribution over a whole dataset into HDF5 (layout in
// engine/experiments/sweep_file.h), crash-safe, resumable and sharded.
//
// A sweep writes items in batches, each a small HDF5 file renamed into a
// working folder beside the output (".NAME.partial") once complete, so a
// killed sweep loses at most the batch in flight; resuming checks that the
// configuration is the same and goes on after the last batch. When every item
// is done the batches are joined into the output, which appears only then, in
// one rename. Shards take contiguous slices of the items; merging shard files
// in order gives the file a single process writes (same rows, same values; the
// per-item seconds aside).
#pragma once
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/attribution.h"
#include "engine/experiments/attribute.h"
#include "engine/experiments/dataset.h"
#include "engine/experiments/steps.h"
#include "engine/experiments/sweep_file.h"

namespace ipna {

struct SweepProgress {
  int64_t done = 0, total = 0;  // items of this shard, including those of a resumed run
  int64_t failed = 0;
  std::string current;          // the item just finished
  double items_per_second = 0, eta_seconds = 0;
  bool committed = false;       // a batch was just written
};

enum class DatasetKind { Manifest, ImageFolder, Idx };
enum class ClassRule { Label, Predicted, Fixed };

struct SweepConfig {
  // The model: one ONNX file and a split tensor, or the two parts.
  std::vector<std::string> model_files;
  std::string split;
  Precision precision = Precision::F32;
  std::string device = "cpu";
  // The items.
  DatasetKind dataset_kind = DatasetKind::Idx;
  std::string dataset;              // manifest file, folder of class folders, or IDX folder
  std::string idx_split = "test";
  int64_t limit = -1;               // the first N items only
  ClassRule class_rule = ClassRule::Label;  // where the manifest names no class
  int fixed_class = -1;
  std::string baseline = "black";   // black, zeros or a .npy
  std::vector<double> mean, std;    // empty: ImageNet's for 3 channels, identity otherwise
  // What to compute.
  std::vector<Box> boxes;           // the same for every item (the manifest may give its own instead)
  int grid_rows = 0, grid_cols = 0; // a grid of boxes after `boxes`
  bool integrated_gradients = true, conductance = true;
  IpnaForm ipna_form = IpnaForm::Difference;
  bool receptive_field_cones = true;
  TargetKind target = TargetKind::Probability;
  StepPlan steps;
  std::vector<double> prune_fractions;  // IG of the model pruned by each fraction of the ranking
  Ranking ranking = Ranking::Ipna;      // by the first box's IPNA, or by conductance
  MapStorage maps = MapStorage::Float32;
  // Fixed, not taken from free memory: the chunk of steps changes the order of
  // sums, and results must not depend on what else the machine is doing. 0: the
  // device's sweep budget (kSweepBudgetCpu, kSweepBudgetGpu).
  size_t memory_budget = 0;
  int chunk = 0;
  // The run.
  std::string output;               // the .h5 file
  int shard_index = 0, shard_count = 1;
  int batch_items = 16;             // items per committed batch
  bool resume = false, overwrite = false;
  std::function<void(const SweepProgress&)> progress;  // after each item; may throw Interrupted
  std::function<void()> interrupt_check;                // between chunks of steps; may throw Interrupted

  // What the numbers depend on (the file's config attribute), and the checks
  // that run before any work.
  nlohmann::json describe() const;
  void check() const;
  // memory_budget, or the device's sweep budget where it is 0.
  size_t effective_memory_budget() const;
};

// A sweep's default memory budgets: fixed, not taken from free memory. The CPU's is the
// engine's (kHostBatchBudget); a GPU needs chunks of tens of steps to fill it (ResNet-152
// at 224 with a 4x4 grid takes about 80 MB a step: 256 MiB would give chunks of 3 steps,
// a tenth of the speed), and 8 GiB leaves room on cards of 16 GB.
constexpr size_t kSweepBudgetCpu = kHostBatchBudget;
constexpr size_t kSweepBudgetGpu = size_t(8) << 30;

struct SweepSummary {
  std::string output;
  int64_t items = 0, ok = 0, failed = 0;
  int64_t resumed_items = 0;      // done by an earlier, interrupted run
  bool already_complete = false;  // resume found the output finished
  double seconds = 0, items_per_second = 0, steps_per_second = 0;  // this run's items
  int64_t evaluations = 0;
  std::vector<std::pair<std::string, std::string>> failures;  // item, reason (this run's)
  nlohmann::json to_json() const;
};

// "I/N" with 0 <= I < N.
std::pair<int, int> parse_shard(const std::string& spec);

SweepSummary run_sweep(const SweepConfig& config);

// Joins shard files into `output` (not existing, or replaced where `overwrite`):
// the same configuration, slices that tile the dataset without gap or overlap.
struct MergeSummary {
  std::string output;
  int64_t items = 0, failed = 0;
  int shards = 0;
  nlohmann::json to_json() const;
};
MergeSummary merge_sweeps(std::vector<std::string> inputs, const std::string& output, bool overwrite);

}  // namespace ipna
