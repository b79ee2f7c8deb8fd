// Times the attribution workloads of the GPU check on any device (it runs on
// the CPU too, for trying it out on small models): each workload once to warm
// up (that run pays cuDNN's algorithm search, reported apart), then `--runs`
// timed runs; prints one JSON object per workload, and all of them to --out.
//
// Workloads (SPEC.md, m steps, f1/f2 MACs per sample from the graph):
//   ig         IG of the input:                      f1 fwd + f2 fwd + f2 bwd + f1 bwd   = 2 (f1 + f2) m MACs
//   ipna_cond  IPNA (one box) and conductance:       f1 fwd + f2 fwd + f2 bwd + f1 patch = (2 f1 + 2 f2) m
//   main       the original's main.py: IG + conductance + IPNA in one pass, pruning the
//              top 1% by IPNA, and IG of the pruned model:    (3 f1 + 2 f2) m + 2 (f1 + f2) m
//   grid_{cone,full}_{tangent,difference}
//              IG + conductance + IPNA of every box of --grid, in one pass, the patch passes
//              on receptive-field cones or on whole planes, in either IPNA form: counted as
//              2 (f1 + f2) m + boxes * f1 m whole-plane MACs (cones do fewer)
// An input-gradient backward costs about one forward (no weight gradients), so
// these are the honest FLOP counts (2 FLOP per MAC).
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/attribution.h"
#include "engine/error.h"
#include "loaders/npy.h"
#include "loaders/onnx_loader.h"

using namespace ipna;
using nlohmann::json;

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Times IG, IPNA + conductance and the original's main.py workload on one device"};
  std::string model_path, split = "layer2", input, device = "cuda:0/tf32", out, target = "prob";
  std::vector<std::string> workloads{"ig", "ipna_cond", "main"};
  std::vector<int> box{45, 100, 90, 130};
  int steps = 256, cls = 920, runs = 5, box_batch = 0;
  std::string grid_spec = "7x7";
  app.add_option("--model", model_path, "ONNX model")->required();
  app.add_option("--split", split, "Split tensor")->capture_default_str();
  app.add_option("--input", input, "Input .npy (default: the black baseline plus 1 everywhere)");
  app.add_option("--device", device, "Device string")->capture_default_str();
  app.add_option("--target", target, "prob or logit")->check(CLI::IsMember({"prob", "logit"}))->capture_default_str();
  app.add_option("--workloads", workloads, "ig, ipna_cond, main, grid_{cone,full}_{tangent,difference}")
      ->delimiter(',');
  app.add_option("--grid", grid_spec, "Rows x columns of the grid workloads' boxes")->capture_default_str();
  app.add_option("--box", box, "X1 Y1 X2 Y2")->expected(4);
  app.add_option("--box-batch", box_batch, "Boxes of one cone geometry per patch pass (0: the device's choice)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("-n,--steps", steps, "Steps")->capture_default_str();
  app.add_option("--class", cls, "Class (taken modulo the model's classes)")->capture_default_str();
  app.add_option("--runs", runs, "Timed runs after the warm-up")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--out", out, "Also write the results to this JSON file");
  CLI11_PARSE(app, argc, argv);
  try {
    const Graph g = load_onnx(model_path);
    const SplitModel model = split_graph(g, split);
    const double gmac_f1 = model.f1.macs_per_sample() / 1e9, gmac_f2 = model.f2.macs_per_sample() / 1e9;
    std::vector<double> x0 = black_baseline(model.input_shape()), x = x0;
    if (!input.empty())
      x = read_npy(input).data;
    else
      for (double& v : x) v += 1.0;
    Attributor engine(model, Precision::F32, device);
    AttributionRequest base;
    base.target_class = cls % model.num_classes();
    base.target = target == "logit" ? TargetKind::Logit : TargetKind::Probability;
    base.steps = steps;
    base.box_batch = box_batch;
    const Box b{box[0], box[1], box[2], box[3]};
    int grid_rows = 0, grid_cols = 0;
    if (std::sscanf(grid_spec.c_str(), "%dx%d", &grid_rows, &grid_cols) != 2 || grid_rows < 1 || grid_cols < 1)
      throw Error("--grid '" + grid_spec + "': expected ROWSxCOLS, e.g. 7x7");
    const Shape& in = model.input_shape();
    const std::vector<Box> grid = grid_boxes(static_cast<int>(in.height()), static_cast<int>(in.width()), grid_rows, grid_cols);
    json all = json::array();
    for (const std::string& w : workloads) {
      const bool is_grid = w == "grid_cone_tangent" || w == "grid_full_tangent" || w == "grid_cone_difference" ||
                           w == "grid_full_difference";
      if (w != "ig" && w != "ipna_cond" && w != "main" && !is_grid) throw Error("unknown workload '" + w + "'");
      AttributionRequest req = base;
      req.integrated_gradients = w != "ipna_cond";
      req.conductance = w != "ig";
      if (w != "ig") req.boxes = {b};
      double gmac = 2 * (gmac_f1 + gmac_f2) * steps;
      if (w == "ipna_cond") gmac = (2 * gmac_f1 + 2 * gmac_f2) * steps;
      if (w == "main") gmac = (3 * gmac_f1 + 2 * gmac_f2) * steps + 2 * (gmac_f1 + gmac_f2) * steps;
      if (is_grid) {
        req.boxes = grid;
        req.receptive_field_cones = w.find("_cone_") != std::string::npos;
        req.ipna_form = w.find("_tangent") != std::string::npos ? IpnaForm::Tangent : IpnaForm::Difference;
        gmac = 2 * (gmac_f1 + gmac_f2) * steps + double(req.boxes.size()) * gmac_f1 * steps;
      }
      // One sample of the workload; returns seconds, algorithm search seconds and the chunk.
      int patch_passes = 0;
      auto once = [&](double& search, int& chunk) {
        const auto t0 = std::chrono::steady_clock::now();
        AttributionResult r = engine.run(x, x0, req);
        search = r.algorithm_search_seconds;
        chunk = r.chunk;
        patch_passes = r.patch_passes;
        if (w == "main") {
          AttributionRequest pr = base;
          pr.integrated_gradients = true;
          pr.split_mask = prune_mask(r.ipna[0], r.split_shape, {1.0, -1, Granularity::Neuron});
          search += engine.run(x, x0, pr).algorithm_search_seconds;
        }
        return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      };
      double search = 0, s2 = 0;
      int chunk = 0;
      const double first = once(search, chunk);
      std::vector<double> times;
      for (int i = 0; i < runs; ++i) times.push_back(once(s2, chunk));
      const double med = median(times);
      json j = {{"workload", w},
                {"boxes", req.boxes.size()},
                {"device", engine.device_name()},
                {"steps", steps},
                {"chunk", chunk},
                {"patch_passes", patch_passes},
                {"median_s", med},
                {"min_s", *std::min_element(times.begin(), times.end())},
                {"runs_s", times},
                {"first_run_s", first},
                {"algorithm_search_s", search},
                {"later_search_s", s2},
                {"tflop", 2 * gmac / 1e3},
                {"tflop_per_s", 2 * gmac / 1e3 / med},
                {"gmac_f1", gmac_f1},
                {"gmac_f2", gmac_f2}};
      std::printf("%s\n", j.dump().c_str());
      std::fflush(stdout);
      all.push_back(j);
    }
    if (!out.empty()) std::ofstream(out) << all.dump(1) << "\n";
  } catch (const Error& e) {
    std::fprintf(stderr, "gpu_bench: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
