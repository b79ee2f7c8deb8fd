// The original's experiments on one input, as library calls with typed
// results (each with a JSON form for report files):
//   attribute       main.py: IG, conductance and IPNA along one path, optional
//                   pruning of the top P% by a ranking and IG of the pruned model;
//   pruning_curve   trafficlight_plot: IG inside/outside a box as growing fractions
//                   are pruned by the IPNA and by the conductance ranking;
// and class_window (engine/experiments/class_window.h) over a class of a dataset.
// Every value is checked here; callers only translate their own options.
#pragma once
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "engine/attribution.h"
#include "engine/experiments/steps.h"

namespace ipna {

enum class Ranking { Ipna, Conductance };  // by the first box's IPNA, or by conductance
const char* ranking_name(Ranking r);
const char* target_name(TargetKind t);
const char* ipna_form_name(IpnaForm f);

struct AttributeSpec {
  int target_class = -1;
  TargetKind target = TargetKind::Probability;
  std::vector<Box> boxes;
  int grid_rows = 0, grid_cols = 0;  // a grid of boxes over the input, after `boxes`
  bool integrated_gradients = true, conductance = true;
  IpnaForm ipna_form = IpnaForm::Difference;
  bool receptive_field_cones = true;
  int box_batch = 0;  // AttributionRequest::box_batch
  StepPlan steps;
  int chunk = 0;
  size_t memory_budget = 0;
  // Pruning: the top `prune_percent` (< 0: none) of the split units by `ranking`,
  // then IG of the pruned model on the same path.
  double prune_percent = -1;
  Ranking ranking = Ranking::Ipna;
  Granularity granularity = Granularity::Neuron;
  std::function<void(int, int)> progress, pruned_progress;  // per chunk of steps; may throw

  // The boxes, then the grid's (needs a C,H,W input).
  std::vector<Box> all_boxes(const Shape& input_shape) const;
  void check(const Shape& input_shape) const;
};

// Additivity over the grid's partition and which patch drives which channel.
struct GridSummary {
  int rows = 0, cols = 0, first_box = 0;
  double ipna_total = 0;
  double ipna_total_minus_ig_total = NAN;           // with IG
  double neuronwise_distance_to_conductance = NAN;  // ||sum_boxes IPNA - conductance|| / ||conductance||
  // C,H,W split tensors: per channel, its IPNA summed over its plane for each grid cell (row major),
  // and the channels with the largest totals (at most 8), largest first.
  std::vector<std::vector<double>> channel_cells;
  std::vector<double> channel_totals;
  std::vector<int64_t> top_channels;
};

struct PrunedRun {
  std::vector<double> mask;  // split-shaped 0/1
  AttributionResult result;
  int64_t pruned_units = 0;
  double ig_inside = NAN;    // in the first box
};

struct AttributeResult {
  AttributeSpec spec;        // as run (callbacks cleared)
  std::vector<Box> boxes;
  StepRun run;
  std::optional<GridSummary> grid;
  std::optional<PrunedRun> pruned;
  // The report's numbers: class, steps, F, sums and gaps, boxes, grid, pruning.
  nlohmann::json to_json() const;
};

AttributeResult attribute(Attributor& engine, const std::vector<double>& x, const std::vector<double>& x0,
                          const AttributeSpec& spec);

struct CurveRow {
  double fraction = 0;
  Ranking ranking = Ranking::Ipna;
  int64_t pruned_units = 0;
  double confidence = 0, ig_inside = 0, ig_outside = 0, ig_total = 0;
};
struct CurveResult {
  Box box;
  StepRun run;
  std::vector<CurveRow> rows;  // the fractions by the IPNA ranking, then by conductance
  nlohmann::json to_json() const;
  std::string to_csv() const;
};
// spec: one box, no grid; IG and conductance are computed whatever spec asks.
CurveResult pruning_curve(Attributor& engine, const std::vector<double>& x, const std::vector<double>& x0,
                          AttributeSpec spec, const std::vector<double>& fractions,
                          const std::function<void(int, int)>& level_progress = nullptr);

}  // namespace ipna
