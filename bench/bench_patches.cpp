// What IPNA's patch passes cost: receptive-field cones against whole-plane
// passes, both forms, side by side in one run (float32 unless --precision).
//
//   build/bench/bench_patches [--repeats 5] [--steps 32] [--grid-steps 16] [--grid-only]
//                             [--box-batches 1 8]
//
// Models: the pretrained EfficientNet-Lite0 split at blocks.7 (tools/setup.sh
// exports build/models/efficientnet_lite0.onnx) and ResNet-18 at 224 split at
// layer2 (random weights; bench/prepare_models.py build/bench_models). Three
// tables, medians of --repeats runs that alternate the configurations:
//  1. one box: the time of the patch passes alone, the run with the box less
//     the run with conductance only (the same base pass and f2) just before it,
//     cone vs whole plane; the box is given kBoxCopies times and the difference
//     divided by that, since one box's passes are small next to the noise of the
//     base run (the median of those paired differences);
//  2. a 7x7 grid, IPNA only, whole run: cones vs whole planes;
//  3. a 7x7 grid with conductance and IG, whole run, against IG alone.
// --grid-only runs the third table on cones alone (a few seconds): how far this machine drifts
// between processes shows in its ratio from one process to the next. --box-batches runs that grid on
// cones alone too, once per batch of boxes of one cone geometry (AttributionRequest::box_batch), both
// forms: what batching the boxes changes on this device.
// Memory is the engine's batch buffers (AttributionResult::workspace_bytes),
// which the chunk is sized to.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "engine/attribution.h"
#include "engine/cpu/cpu_backend.h"
#include "engine/plan.h"
#include "loaders/image.h"
#include "loaders/onnx_loader.h"

using namespace ipna;

namespace {

struct Model {
  std::string name;
  SplitModel model;
  std::vector<double> x, x0;
};

struct Timing {
  double seconds = 0;  // the median
  size_t workspace = 0;
  std::vector<double> runs;  // in the order they ran, alternating with the other configurations
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Runs each configuration `repeats` times, alternating, and keeps the medians.
std::map<std::string, Timing> measure(Attributor& engine, const Model& m,
                                      const std::vector<std::pair<std::string, AttributionRequest>>& configs,
                                      int repeats) {
  std::map<std::string, Timing> out;
  for (auto& [name, req] : configs) engine.run(m.x, m.x0, req);  // warm: buffers grown, weights transformed
  for (int r = 0; r < repeats; ++r)
    for (auto& [name, req] : configs) {
      const AttributionResult res = engine.run(m.x, m.x0, req);
      out[name].runs.push_back(res.seconds);
      out[name].workspace = std::max(out[name].workspace, res.workspace_bytes);
    }
  for (auto& [name, t] : out) t.seconds = median(t.runs);
  return out;
}

double mib(size_t b) { return b / 1048576.0; }

// Copies of the one box per run (each computed as a box of its own).
constexpr int kBoxCopies = 16;

// Per box: the median over repeats of (the run with the boxes - the base run just before it) / copies.
double per_box(const Timing& with_boxes, const Timing& base) {
  std::vector<double> d;
  for (size_t r = 0; r < with_boxes.runs.size(); ++r) d.push_back((with_boxes.runs[r] - base.runs[r]) / kBoxCopies);
  return median(d);
}

// The share of f1's convolution multiply-adds that a box's cone keeps (each convolution's output
// window against its whole plane): the most a cone can save on the convolutions of a patch pass that
// runs every convolution per step. With equal steps a convolution reading the input (the box's
// direction, the same at every step) runs once per chunk of steps; `without_input` leaves it out.
double cone_conv_share(const Graph& f1, const Box& box, bool without_input) {
  CpuBackend<float> cpu;
  const Cone cone = GraphPlan<float>(f1, cpu).cone(box);
  double whole = 0, kept = 0;
  for (const Node& node : f1.nodes) {
    if (node.kind != OpKind::Conv) continue;
    const Shape& in = f1.values[node.inputs[0]].shape;
    const Shape& out = f1.values[node.output].shape;
    const double per_position =
        static_cast<double>(out.channels()) * (in.channels() / node.groups) * node.win.kh * node.win.kw;
    whole += per_position * out.plane();
    if (!(without_input && node.inputs[0] == f1.input)) kept += per_position * cone.rect[node.output].area();
  }
  return kept / whole;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("IPNA patch passes: receptive-field cones against whole planes");
  std::string effnet = "build/models/efficientnet_lite0.onnx", resnet18 = "build/bench_models/resnet18_224/model.onnx",
              image = "tests/data/traffic_light.JPEG", precision = "f32";
  int repeats = 5, steps = 32, grid_steps = 16, grid_chunk = 0;
  bool grid_only = false;
  std::vector<int> box_batches;
  app.add_option("--effnet", effnet, "EfficientNet-Lite0 ONNX with the tensor blocks.7")->capture_default_str();
  app.add_option("--resnet18", resnet18, "ResNet-18 (224x224) ONNX with the tensor layer2")->capture_default_str();
  app.add_option("--image", image, "input image (ImageNet preprocessing)");
  app.add_option("--repeats", repeats, "runs per configuration (medians)");
  app.add_option("--steps", steps, "Riemann steps of the one-box table");
  app.add_option("--grid-steps", grid_steps, "Riemann steps of the grid tables");
  app.add_option("--grid-chunk", grid_chunk, "steps per batch of the grid runs (default: from the memory budget)");
  app.add_option("--precision", precision, "f32 or f64")->check(CLI::IsMember({"f32", "f64"}));
  app.add_flag("--grid-only", grid_only, "only the grid with conductance and IG against IG alone, on cones");
  app.add_option("--box-batches", box_batches,
                 "only the grid with conductance and IG on cones, once per batch of boxes given (0: the device's)")
      ->check(CLI::NonNegativeNumber);
  CLI11_PARSE(app, argc, argv);

  const std::vector<double> x = imagenet_preprocess(load_image_rgb(image));
  const std::vector<double> x0 = black_baseline(Shape{3, 224, 224});
  std::vector<Model> models;
  models.push_back({"EfficientNet-Lite0 (blocks.7)", load_split_model(effnet, "blocks.7"), x, x0});
  models.push_back({"ResNet-18 224 (layer2)", load_split_model(resnet18, "layer2"), x, x0});
  const Precision p = precision == "f64" ? Precision::F64 : Precision::F32;
  const Box box{45, 100, 90, 130};  // rows 45..90, columns 100..130: the traffic light's right lamp

  if (!box_batches.empty()) grid_only = true;
  if (!grid_only) {
    std::printf("## One box (45 100 90 130), %d steps: the patch passes alone (per box, from %d copies)\n\n", steps,
                kBoxCopies);
    std::printf("| model | form | whole planes (s) | cones (s) | speed-up | memory whole / cones (MiB) |\n");
    std::printf("|---|---|---:|---:|---:|---:|\n");
    for (const Model& m : models) {
      Attributor engine(m.model, p);
      AttributionRequest base;
      base.target_class = 920;
      base.steps = steps;
      base.integrated_gradients = false;
      std::vector<std::pair<std::string, AttributionRequest>> configs;
      AttributionRequest cond = base;
      cond.conductance = true;
      configs.push_back({"base", cond});
      for (IpnaForm form : {IpnaForm::Difference, IpnaForm::Tangent})
        for (bool cones : {false, true}) {
          AttributionRequest r = cond;
          r.boxes.assign(kBoxCopies, box);
          r.ipna_form = form;
          r.receptive_field_cones = cones;
          configs.push_back(
              {std::string(form == IpnaForm::Tangent ? "tangent" : "difference") + (cones ? "/cone" : "/whole"), r});
        }
      auto t = measure(engine, m, configs, repeats);
      for (const char* form : {"difference", "tangent"}) {
        const Timing& w = t[std::string(form) + "/whole"];
        const Timing& c = t[std::string(form) + "/cone"];
        const double pw = per_box(w, t["base"]), pc = per_box(c, t["base"]);
        std::printf("| %s | %s | %.3f | %.3f | %.2fx | %.0f / %.0f |\n", m.name.c_str(), form, pw, pc, pw / pc,
                    mib(w.workspace), mib(c.workspace));
      }
      std::fflush(stdout);
    }
    std::printf(
        "\nThe convolutions' share of multiply-adds on the cone of the box (the most a cone saves on them if every "
        "convolution runs per step; then without the one reading the image, which runs once per chunk of steps):");
    for (const Model& m : models) {
      const double share = cone_conv_share(m.model.f1, box, false), rest = cone_conv_share(m.model.f1, box, true);
      std::printf(" %s %.1f%% (at most %.2fx), %.1f%% (%.2fx);", m.name.c_str(), 100 * share, 1 / share, 100 * rest,
                  1 / rest);
    }
    std::printf("\n\n");
    std::fflush(stdout);
  }

  const Model& resnet = models[1];
  Attributor engine(resnet.model, p);
  const std::vector<Box> boxes = grid_boxes(224, 224, 7, 7);
  AttributionRequest base;
  base.target_class = 920;
  base.steps = grid_steps;
  base.chunk = grid_chunk;
  base.integrated_gradients = false;
  std::vector<std::pair<std::string, AttributionRequest>> configs;
  if (!box_batches.empty()) {
    for (IpnaForm form : {IpnaForm::Difference, IpnaForm::Tangent})
      for (int batch : box_batches) {
        AttributionRequest r = base;
        r.boxes = boxes;
        r.ipna_form = form;
        r.integrated_gradients = r.conductance = true;
        r.box_batch = batch;
        configs.push_back(
            {std::string(form == IpnaForm::Tangent ? "tangent/" : "difference/") + std::to_string(batch), r});
      }
    std::map<std::string, int> passes;
    for (auto& [name, req] : configs) passes[name] = engine.run(resnet.x, resnet.x0, req).patch_passes;
    auto t = measure(engine, resnet, configs, repeats);
    std::printf(
        "## 7x7 grid with conductance and IG on cones, ResNet-18 224 split after layer2, %d steps, by the "
        "batch of boxes\n\n| form | box batch | patch passes a step | seconds | memory (MiB) |\n"
        "|---|---:|---:|---:|---:|\n",
        grid_steps);
    for (auto& [name, req] : configs)
      std::printf("| %s | %d | %d | %.2f | %.0f |\n", name.substr(0, name.find('/')).c_str(), req.box_batch,
                  passes[name], t[name].seconds, mib(t[name].workspace));
    return 0;
  }
  for (IpnaForm form : {IpnaForm::Difference, IpnaForm::Tangent})
    for (bool cones : {false, true})
      for (bool all : {false, true}) {
        if (grid_only && !(cones && all)) continue;
        AttributionRequest r = base;
        r.boxes = boxes;
        r.ipna_form = form;
        r.receptive_field_cones = cones;
        r.integrated_gradients = r.conductance = all;
        configs.push_back({std::string(form == IpnaForm::Tangent ? "tangent" : "difference") +
                               (cones ? "/cone" : "/whole") + (all ? "/all" : "/ipna"),
                           r});
      }
  AttributionRequest ig = base;
  ig.integrated_gradients = true;
  configs.push_back({"ig", ig});
  auto t = measure(engine, resnet, configs, repeats);

  if (!grid_only) {
    std::printf("\n## 7x7 grid, ResNet-18 224 split after layer2, %d steps, IPNA only: whole run\n\n", grid_steps);
    std::printf(
        "| form | whole planes (s) | cones (s) | speed-up | memory whole / cones (MiB) |\n|---|---:|---:|---:|---:|\n");
    for (const char* form : {"difference", "tangent"}) {
      const Timing& w = t[std::string(form) + "/whole/ipna"];
      const Timing& c = t[std::string(form) + "/cone/ipna"];
      std::printf("| %s | %.2f | %.2f | %.2fx | %.0f / %.0f |\n", form, w.seconds, c.seconds, w.seconds / c.seconds,
                  mib(w.workspace), mib(c.workspace));
    }
  }
  std::printf("\n## 7x7 grid with conductance and IG, same model and steps, against IG alone (%.2f s, %.0f MiB)\n\n",
              t["ig"].seconds, mib(t["ig"].workspace));
  std::printf("| form | patch passes | seconds | times IG alone | memory (MiB) |\n|---|---|---:|---:|---:|\n");
  for (const char* form : {"difference", "tangent"})
    for (const char* where : {"whole", "cone"}) {
      if (grid_only && where[0] == 'w') continue;
      const Timing& a = t[std::string(form) + "/" + where + "/all"];
      std::printf("| %s | %s | %.2f | %.2fx | %.0f |\n", form, where[0] == 'c' ? "cones" : "whole planes", a.seconds,
                  a.seconds / t["ig"].seconds, mib(a.workspace));
    }
  return 0;
}
