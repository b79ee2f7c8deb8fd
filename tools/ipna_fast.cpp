// ipna-fast: the command-line tool.
//   ipna-fast info MODEL.onnx
//   ipna-fast attribute --model M.onnx --split NAME --input X.npy --class Y --box X1 Y1 X2 Y2 ... --out DIR
// Exit codes: 0 success, 1 bad input or failed run (the message says which
// file, node or argument), 2 bad command line, 130 interrupted.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "engine/attribution.h"
#include "engine/error.h"
#include "loaders/npy.h"
#include "loaders/onnx_loader.h"

namespace fs = std::filesystem;
using nlohmann::json;
using namespace ipna;

namespace {

volatile std::sig_atomic_t g_interrupted = 0;

// A one-line progress bar on stderr, only when stderr is a terminal.
class Progress {
 public:
  explicit Progress(std::string label) : label_(std::move(label)), tty_(isatty(fileno(stderr))) {}
  void operator()(int done, int total) {
    if (g_interrupted) throw Error("interrupted");
    if (!tty_) return;
    const int width = 30, fill = total ? done * width / total : width;
    std::fprintf(stderr, "\r%-22s [%.*s%*s] %d/%d", label_.c_str(), fill, "##############################",
                 width - fill, "", done, total);
    if (done == total) std::fputc('\n', stderr);
    std::fflush(stderr);
  }

 private:
  std::string label_;
  bool tty_;
};

// Outputs go to a sibling temporary folder that is renamed into place at the
// end, so an error or Ctrl-C never leaves a half-written output folder.
class OutputDir {
 public:
  explicit OutputDir(const std::string& final_dir) : final_(final_dir) {
    tmp_ = final_.string() + ".partial-" + std::to_string(getpid());
    fs::remove_all(tmp_);
    fs::create_directories(tmp_);
  }
  ~OutputDir() {
    if (!committed_) fs::remove_all(tmp_);
  }
  std::string path(const std::string& name) const { return (tmp_ / name).string(); }
  void commit() {
    fs::remove_all(final_);
    fs::rename(tmp_, final_);
    committed_ = true;
  }

 private:
  fs::path final_, tmp_;
  bool committed_ = false;
};

std::vector<int64_t> dims_of(const Shape& s) { return s.dims; }

int cmd_info(const std::string& model_path, bool as_json) {
  Graph g = load_onnx(model_path);
  json out = {{"model", model_path}, {"input", g.values[g.input].shape.dims},
              {"classes", g.values[g.output].shape.numel()}, {"gmac_per_sample", g.macs_per_sample() / 1e9},
              {"tensors", json::array()}};
  std::map<int, std::vector<std::string>> alias_names;
  for (const auto& [name, v] : g.aliases) alias_names[v].push_back(name);
  for (const auto& n : g.nodes) {
    const Value& v = g.values[n.output];
    if (n.output == g.output) continue;
    out["tensors"].push_back({{"name", v.name}, {"op", op_name(n.kind)}, {"shape", v.shape.dims},
                              {"neurons", v.shape.numel()}, {"aliases", alias_names[n.output]}});
  }
  if (as_json) {
    std::cout << out.dump(1) << "\n";
    return 0;
  }
  std::cout << model_path << ": input " << g.values[g.input].shape.str() << ", " << out["classes"] << " classes, "
            << out["gmac_per_sample"].get<double>() << " GMAC per sample\n";
  std::cout << "Tensors you can split at (--split NAME):\n";
  for (const auto& t : out["tensors"]) {
    std::printf("  %-56s %-8s %-16s %10lld neurons", t["name"].get<std::string>().c_str(),
                t["op"].get<std::string>().c_str(), Shape(t["shape"].get<std::vector<int64_t>>()).str().c_str(),
                static_cast<long long>(t["neurons"].get<int64_t>()));
    for (const auto& a : t["aliases"]) std::printf("  (also '%s')", a.get<std::string>().c_str());
    std::printf("\n");
  }
  return 0;
}

struct AttributeArgs {
  std::vector<std::string> model;  // one file, or the two-part form
  std::string split, input, baseline = "black", out, target = "prob", ranking = "ipna", granularity = "neuron";
  std::string precision = "f32", device = "cpu";
  int cls = -1, steps = 256, chunk = 0;
  std::vector<int> boxes;  // flattened x1 y1 x2 y2 groups
  double prune_percent = -1, memory_budget_mb = 0;
  bool no_ig = false, no_conductance = false, as_json = false;
};

int cmd_attribute(const AttributeArgs& a) {
  SplitModel model;
  if (a.model.size() == 2) {
    model = load_two_part_model(a.model[0], a.model[1]);
  } else {
    if (a.split.empty()) throw Error("--split NAME is required with a single model file (see `ipna-fast info MODEL`)");
    model = load_split_model(a.model[0], a.split);
  }
  const Shape in_shape = model.input_shape();
  NpyArray x = read_npy(a.input);
  if (static_cast<int64_t>(x.data.size()) != in_shape.numel())
    throw Error(a.input + ": holds " + std::to_string(x.data.size()) + " values, the model input is " +
                in_shape.str());
  std::vector<double> x0;
  if (a.baseline == "black")
    x0 = black_baseline(in_shape);
  else if (a.baseline == "zeros")
    x0.assign(in_shape.numel(), 0.0);
  else
    x0 = read_npy(a.baseline).data;
  if (a.boxes.size() % 4) throw Error("--box takes four numbers: X1 Y1 X2 Y2 (rows X1:X2, columns Y1:Y2)");
  std::vector<Box> boxes;
  for (size_t i = 0; i < a.boxes.size(); i += 4) boxes.push_back({a.boxes[i], a.boxes[i + 1], a.boxes[i + 2], a.boxes[i + 3]});
  if (a.prune_percent >= 0 && a.ranking == "ipna" && boxes.empty())
    throw Error("--ranking ipna needs a --box (or use --ranking conductance)");

  OutputDir out(a.out);
  Attributor engine(model, a.precision == "f64" ? Precision::F64 : Precision::F32, a.device);
  AttributionRequest req;
  req.target_class = a.cls;
  req.target = a.target == "logit" ? TargetKind::Logit : TargetKind::Probability;
  req.steps = a.steps;
  req.integrated_gradients = !a.no_ig;
  req.conductance = !a.no_conductance || (a.prune_percent >= 0 && a.ranking == "conductance");
  req.boxes = boxes;
  req.chunk = a.chunk;
  req.memory_budget = static_cast<size_t>(a.memory_budget_mb * (1 << 20));
  Progress bar("attribution");
  req.progress = std::ref(bar);
  AttributionResult r = engine.run(x.data, x0, req);

  json rep = {{"model", a.model}, {"split", model.split_name}, {"split_shape", r.split_shape.dims},
              {"device", engine.device_name()}, {"class", a.cls}, {"target", a.target}, {"steps", a.steps},
              {"baseline", a.baseline}, {"F_x", r.f_input}, {"F_baseline", r.f_baseline}, {"chunk", r.chunk},
              {"workspace_bytes", r.workspace_bytes}, {"seconds", r.seconds}};
  auto box_json = [](const Box& b) { return json::array({b.r0, b.c0, b.r1, b.c1}); };
  if (req.integrated_gradients) {
    write_npy(out.path("ig.npy"), r.ig, dims_of(r.input_shape));
    rep["ig"] = {{"sum", r.ig_sum}, {"completeness_gap", r.ig_gap}};
  }
  if (req.conductance) {
    write_npy(out.path("conductance.npy"), r.conductance, dims_of(r.split_shape));
    rep["conductance"] = {{"sum", r.conductance_sum}, {"completeness_gap", r.conductance_gap}};
  }
  if (!boxes.empty()) {
    std::vector<double> all;
    for (auto& m : r.ipna) all.insert(all.end(), m.begin(), m.end());
    auto d = dims_of(r.split_shape);
    d.insert(d.begin(), static_cast<int64_t>(boxes.size()));
    write_npy(out.path("ipna.npy"), all, d);
    rep["boxes"] = json::array();
    for (size_t b = 0; b < boxes.size(); ++b) {
      json j = {{"box", box_json(boxes[b])}, {"ipna_sum", r.ipna_sum[b]}};
      if (req.integrated_gradients) {
        j["ig_inside"] = r.ig_in_box[b];
        j["ig_outside"] = r.ig_sum - r.ig_in_box[b];
        j["patch_completeness_gap"] = r.ipna_gap[b];
      }
      rep["boxes"].push_back(j);
    }
  }
  if (a.prune_percent >= 0) {
    const auto& scores = a.ranking == "ipna" ? r.ipna[0] : r.conductance;
    auto mask = prune_mask(scores, r.split_shape,
                           {a.prune_percent, -1, a.granularity == "channel" ? Granularity::Channel : Granularity::Neuron});
    AttributionRequest pr = req;
    pr.integrated_gradients = true;
    pr.conductance = false;
    pr.split_mask = mask;
    Progress bar2("IG of pruned model");
    pr.progress = std::ref(bar2);
    AttributionResult p = engine.run(x.data, x0, pr);
    write_npy(out.path("ig_pruned.npy"), p.ig, dims_of(p.input_shape));
    write_npy(out.path("prune_mask.npy"), mask, dims_of(p.split_shape));
    json pj = {{"percent", a.prune_percent}, {"ranking", a.ranking}, {"granularity", a.granularity},
               {"F_x", p.f_input}, {"ig_sum", p.ig_sum}, {"completeness_gap", p.ig_gap}};
    if (!boxes.empty()) {
      pj["ig_inside"] = p.ig_in_box[0];
      pj["ig_outside"] = p.ig_sum - p.ig_in_box[0];
    }
    rep["pruned"] = pj;
  }
  {
    std::ofstream f(out.path("report.json"));
    f << rep.dump(1) << "\n";
    if (!f) throw Error("failed writing report.json in " + a.out);
  }
  if (g_interrupted) throw Error("interrupted");
  out.commit();
  if (a.as_json) {
    std::cout << rep.dump(1) << "\n";
  } else {
    std::printf("model %s split %s %s, %s, class %d, %d steps (chunk %d), %.3f s\n", a.model[0].c_str(),
                model.split_name.c_str(), r.split_shape.str().c_str(), engine.device_name().c_str(), a.cls, a.steps,
                r.chunk, r.seconds);
    std::printf("F(x) = %.6g   F(baseline) = %.6g\n", r.f_input, r.f_baseline);
    if (req.integrated_gradients) std::printf("IG sum %.6g (completeness gap %.3g)\n", r.ig_sum, r.ig_gap);
    if (req.conductance)
      std::printf("conductance sum %.6g (completeness gap %.3g)\n", r.conductance_sum, r.conductance_gap);
    for (size_t b = 0; b < boxes.size(); ++b) {
      std::printf("box %zu: IPNA sum %.6g", b, r.ipna_sum[b]);
      if (req.integrated_gradients)
        std::printf(", IG inside %.6g outside %.6g (patch gap %.3g)", r.ig_in_box[b], r.ig_sum - r.ig_in_box[b],
                    r.ipna_gap[b]);
      std::printf("\n");
    }
    if (rep.contains("pruned")) {
      const auto& p = rep["pruned"];
      std::printf("pruned top %g%% by %s: F(x) = %.6g, IG sum %.6g", a.prune_percent, a.ranking.c_str(),
                  p["F_x"].get<double>(), p["ig_sum"].get<double>());
      if (p.contains("ig_inside"))
        std::printf(", inside %.6g outside %.6g", p["ig_inside"].get<double>(), p["ig_outside"].get<double>());
      std::printf("\n");
    }
    std::printf("wrote %s/\n", a.out.c_str());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGINT, [](int) { g_interrupted = 1; });
  CLI::App app{
      "ipna-fast: integrated gradients, conductance and IPNA (image patch internal neuron attribution) for\n"
      "conv-net classifiers given as ONNX, split at a named internal tensor.\n"
      "Exit codes: 0 ok, 1 bad input or failed run, 2 bad command line, 130 interrupted."};
  app.require_subcommand(1);

  std::string info_model;
  bool info_json = false;
  auto* info = app.add_subcommand("info", "List the tensors a model can be split at, with shapes and neuron counts");
  info->add_option("model", info_model, "ONNX model file")->required();
  info->add_flag("--json", info_json, "Machine-readable output");

  AttributeArgs a;
  auto* at = app.add_subcommand("attribute",
                                "IG of the input, conductance and IPNA at the split tensor, optional pruning and IG "
                                "of the pruned model; writes report.json and .npy maps to --out");
  at->add_option("--model", a.model, "ONNX file (with --split), or two files: the first part and the second part")
      ->required()
      ->expected(1, 2);
  at->add_option("--split", a.split, "Name of the split tensor (see `ipna-fast info MODEL`)");
  at->add_option("--input", a.input, "The input sample as .npy, already normalised, shape of the model input")
      ->required();
  at->add_option("--baseline", a.baseline,
                 "black (the black image normalised with ImageNet mean/std for 3 channels, zeros otherwise), zeros, "
                 "or a .npy file")
      ->capture_default_str();
  at->add_option("--class", a.cls, "Target class index")->required();
  at->add_option("--box", a.boxes,
                 "IPNA patch X1 Y1 X2 Y2: rows X1:X2, columns Y1:Y2 (half-open), as in the original; repeat for "
                 "more boxes")
      ->expected(4)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  at->add_option("-n,--steps", a.steps, "Riemann steps m")->capture_default_str();
  at->add_option("--target", a.target, "prob (softmax probability) or logit")
      ->check(CLI::IsMember({"prob", "logit"}))
      ->capture_default_str();
  at->add_flag("--no-ig", a.no_ig, "Skip integrated gradients of the input");
  at->add_flag("--no-conductance", a.no_conductance, "Skip conductance");
  at->add_option("-p,--prune-percent", a.prune_percent,
                 "Zero the top P percent of split neurons by --ranking and recompute IG of the pruned model")
      ->check(CLI::Range(0.0, 100.0));
  at->add_option("--ranking", a.ranking, "ipna (first box) or conductance")
      ->check(CLI::IsMember({"ipna", "conductance"}))
      ->capture_default_str();
  at->add_option("--granularity", a.granularity, "neuron or channel (filter) pruning")
      ->check(CLI::IsMember({"neuron", "channel"}))
      ->capture_default_str();
  at->add_option("--precision", a.precision, "f32 or f64")->check(CLI::IsMember({"f32", "f64"}))->capture_default_str();
  at->add_option("--device", a.device, "cpu (cuda comes with the CUDA backend)")->capture_default_str();
  at->add_option("--chunk", a.chunk, "Steps per batch (default: picked from the memory budget)");
  at->add_option("--memory-budget", a.memory_budget_mb, "MiB for the batch buffers (default: min(1024, free/4))");
  at->add_option("-o,--out", a.out, "Output folder (replaced atomically)")->required();
  at->add_flag("--json", a.as_json, "Print the report as JSON on stdout");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  try {
    if (*info) return cmd_info(info_model, info_json);
    if (*at) return cmd_attribute(a);
  } catch (const Error& e) {
    std::fprintf(stderr, "\nipna-fast: error: %s\n", e.what());
    return g_interrupted ? 130 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "\nipna-fast: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
