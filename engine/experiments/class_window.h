// The original's Fashion-MNIST experiment as a library call: average IPNA of a
// pixel window over N test images of a class, rank the split units by it, by
// conductance and at random, prune the top k for k = 0..K, and measure the mean
// IG inside and outside the window over those images and the accuracy over all
// the class's test images.
#pragma once
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/attribution.h"
#include "engine/experiments/steps.h"
#include "loaders/idx.h"

namespace ipna {

struct ClassWindowSpec {
  int cls = 0;
  Box window{0, 0, 14, 14};
  int images = 100, k_max = 16, random_draws = 5, seed = 1;
  StepPlan steps{64};
  IpnaForm ipna_form = IpnaForm::Difference;
  TargetKind target = TargetKind::Probability;
  std::function<void(int, int)> progress;  // after each image and each image's pruned run; may throw
  std::function<void()> interrupt_check;   // between chunks of steps; may throw
};

struct WindowLevel {
  double ig_inside = 0, ig_outside = 0, accuracy = 0;
};
struct MeanSpread {
  double mean = NAN, std = NAN;  // over the random draws (sample standard deviation)
};

struct ClassWindowResult {
  ClassWindowSpec spec;
  int images = 0, class_test_images = 0;
  std::vector<double> avg_ipna, avg_conductance;  // split-shaped
  Shape split_shape;
  // levels[ranking][k]: rankings IPNA, conductance, then the random draws.
  std::vector<std::vector<WindowLevel>> levels;
  std::vector<nlohmann::json> step_reports;       // per image
  std::vector<double> first_image;                // pixels in [0, 1] of the first image attributed
  int rows = 0, cols = 0;
  MeanSpread random(int k, double WindowLevel::*field) const;
  nlohmann::json to_json() const;  // the table and the settings
  std::string to_csv() const;
};

ClassWindowResult class_window(Attributor& engine, const IdxDataset& data, const ClassWindowSpec& spec);

}  // namespace ipna
