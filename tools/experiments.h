// The original's experiments as functions the CLI (and the tests) call:
// attribute (main.py: IG, IPNA, pruning, IG of the pruned model, pictures),
// curve (progressive pruning by IPNA and by conductance) and class-window
// (Fashion-MNIST: average IPNA over a class, prune the top k).
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/attribution.h"
#include "engine/experiments/steps.h"
#include "loaders/idx.h"
#include "loaders/image.h"
#include "tools/cli_util.h"

namespace ipna::cli {

struct ModelArgs {
  std::vector<std::string> files;  // one ONNX file (with split) or the two-part form
  std::string split;
  std::string precision = "f32", device = "cpu";
  SplitModel load() const;
  Precision prec() const { return precision == "f64" ? Precision::F64 : Precision::F32; }
};

struct InputArgs {
  std::string image;  // JPEG/PNG, ImageNet preprocessing
  std::string npy;    // or a normalised tensor
  std::string baseline = "black";
  std::vector<double> mean, std;  // default ImageNet
  // Fills x and, for images, the 224x224 crop used for drawing.
  void load(const Shape& input_shape, std::vector<double>& x, std::vector<double>& x0, Image* crop) const;
};

// The path's steps: a fixed count m on a uniform, adaptive or gradient schedule, or "auto":
// step control to a tolerance (engine/step_control.h).
struct StepOptions {
  std::string steps = "256";  // a count, or auto
  std::string schedule;  // uniform, adaptive or gradient (engine/step_control.h); empty: default_schedule
  std::string quadrature = "right";  // IG's rule: right, left, middle, trapezoid
  double tolerance = 0.01;
  int max_steps = 4096;
  bool extrapolate = false;  // the difference form's IPNA from the last two step counts (StepPlan::extrapolate)
  bool automatic() const { return steps == "auto"; }
  int count() const;  // the fixed m
  void check() const;
  StepPlan plan() const;  // checked
};

struct AttributeArgs {
  ModelArgs model;
  InputArgs input;
  StepOptions steps;
  int cls = -1, chunk = 0;
  std::vector<int> boxes;  // flattened x1 y1 x2 y2
  std::string target = "prob", ranking = "ipna", granularity = "neuron";
  double prune_percent = -1, memory_budget_mb = 0;
  bool no_ig = false, no_conductance = false, quiet = false;
  std::string ipna_form = "difference";  // or tangent
  std::string grid;                      // "RxC": a grid of boxes over the input, after any --box
  bool full_patch_forward = false;       // patch passes on whole planes instead of receptive-field cones
  int box_batch = 0;                     // boxes of one cone geometry per patch pass (0: the device's choice)
  std::string out;
  bool overwrite = false;  // replace an existing --out folder that ipna-fast did not write
};
nlohmann::json run_attribute(const AttributeArgs& a);

struct CurveArgs {
  AttributeArgs base;  // model, input, class, box, steps, target
  std::vector<double> fractions;
};
nlohmann::json run_curve(const CurveArgs& a);

struct ClassWindowArgs {
  ModelArgs model;
  std::string ipna_form = "difference";
  std::string data = kFashionMnistDir;
  StepOptions steps{"64"};
  int cls = 0, images = 100, k_max = 16, random_draws = 5, seed = 1;
  std::vector<int> window{0, 0, 14, 14};
  std::string target = "prob";
  bool quiet = false;
  std::string out;
  bool overwrite = false;
};
nlohmann::json run_class_window(const ClassWindowArgs& a);

std::vector<Box> parse_boxes(const std::vector<int>& flat);
// "7x7" -> rows 7, cols 7.
std::pair<int, int> parse_grid(const std::string& spec);
IpnaForm ipna_form_of(const std::string& form);
std::string default_model_path(const std::string& file);  // models/ beside the executable or the source tree

}  // namespace ipna::cli
