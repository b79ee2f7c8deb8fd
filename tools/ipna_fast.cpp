// ipna-fast: the command-line tool. `ipna-fast --help` and `ipna-fast CMD --help`.
// Exit codes: 0 success, 1 bad input or failed run (the message names the
// file, node or argument), 2 bad command line, 130 interrupted.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <unistd.h>
#include <iostream>
#include <nlohmann/json.hpp>

#include "engine/error.h"
#include "engine/experiments/sweep.h"
#include "engine/step_control.h"
#include "loaders/onnx_loader.h"
#include "tools/cli_util.h"
#include "tools/experiments.h"

using nlohmann::json;
using namespace ipna;
using namespace ipna::cli;

namespace {

int cmd_info(const std::string& model_path, bool as_json) {
  Graph g = load_onnx(model_path);
  json out = {{"model", model_path}, {"input", g.values[g.input].shape.dims},
              {"classes", g.values[g.output].shape.numel()}, {"gmac_per_sample", g.macs_per_sample() / 1e9},
              {"tensors", json::array()}};
  for (const SplitPoint& p : split_points(g)) {
    json t = {{"name", p.name},         {"op", p.op},           {"shape", p.shape.dims},
              {"neurons", p.shape.numel()}, {"aliases", p.aliases}, {"modules", p.modules},
              {"cuts", !p.not_a_cut}};
    if (p.not_a_cut) t["not_a_cut"] = *p.not_a_cut;
    out["tensors"].push_back(t);
  }
  if (as_json) {
    std::cout << out.dump(1) << "\n";
    return 0;
  }
  std::printf("%s: input %s, %lld classes, %.4g GMAC per sample\n", model_path.c_str(),
              g.values[g.input].shape.str().c_str(), static_cast<long long>(out["classes"].get<int64_t>()),
              out["gmac_per_sample"].get<double>());
  std::printf("Tensors of the model (--split NAME, or the module path in brackets); '-' marks those that do not cut\n"
              "the network (inside a residual block) and cannot be split at:\n");
  for (const auto& t : out["tensors"]) {
    std::printf("%c %-52s %-14s %-16s %9lld neurons", t["cuts"].get<bool>() ? ' ' : '-', t["name"].get<std::string>().c_str(),
                t["op"].get<std::string>().c_str(), Shape(t["shape"].get<std::vector<int64_t>>()).str().c_str(),
                static_cast<long long>(t["neurons"].get<int64_t>()));
    if (!t["modules"].empty()) std::printf("  [module %s]", t["modules"][0].get<std::string>().c_str());
    for (const auto& a : t["aliases"]) std::printf("  (also '%s')", a.get<std::string>().c_str());
    std::printf("\n");
  }
  return 0;
}

void print_attribute(const json& r) {
  std::printf("split %s %s on %s, class %d, %d steps (chunk %d)\n", r["split"].get<std::string>().c_str(),
              Shape(r["split_shape"].get<std::vector<int64_t>>()).str().c_str(),
              r["device"].get<std::string>().c_str(), r["class"].get<int>(), r["steps"].get<int>(),
              r["chunk"].get<int>());
  const auto& sc = r["step_control"];
  if (sc["mode"] == "auto")
    std::printf("steps auto (tolerance %g, %s schedule): %s\n", sc["tolerance"].get<double>(),
                sc["schedule"].get<std::string>().c_str(), sc["summary"].get<std::string>().c_str());
  std::printf("confidence F(x) = %.6g   F(baseline) = %.6g\n", r["confidence"].get<double>(),
              r["F_baseline"].get<double>());
  if (r.contains("ig"))
    std::printf("IG: sum %.6g (completeness gap %.3g)\n", r["ig"]["sum"].get<double>(),
                r["ig"]["completeness_gap"].get<double>());
  if (r.contains("conductance"))
    std::printf("conductance: sum %.6g (completeness gap %.3g)\n", r["conductance"]["sum"].get<double>(),
                r["conductance"]["completeness_gap"].get<double>());
  if (r.contains("boxes"))
    for (size_t i = 0; i < r["boxes"].size(); ++i) {
      const auto& b = r["boxes"][i];
      if (r["boxes"].size() > 8 && i == 4) {
        std::printf("... and %zu more boxes (report.json has them all)\n", r["boxes"].size() - 4);
        break;
      }
      std::printf("box %s: IPNA sum %.6g", b["box"].dump().c_str(), b["ipna_sum"].get<double>());
      if (b.contains("ig_inside"))
        std::printf(", IG inside %.6g, outside %.6g (patch completeness gap %.3g)", b["ig_inside"].get<double>(),
                    b["ig_outside"].get<double>(), b["patch_completeness_gap"].get<double>());
      std::printf("\n");
    }
  if (r.contains("grid")) {
    const auto& g = r["grid"];
    std::printf("grid %dx%d (%s form): IPNA total %.6g", g["rows"].get<int>(), g["cols"].get<int>(),
                r["ipna_form"].get<std::string>().c_str(), g["ipna_total"].get<double>());
    if (g.contains("ipna_total_minus_ig_total"))
      std::printf(", minus IG's total %.3g", g["ipna_total_minus_ig_total"].get<double>());
    std::printf("\n");
  }
  if (r.contains("pruned")) {
    const auto& p = r["pruned"];
    std::printf("after pruning the top %g%% (%lld neurons) by %s: confidence %.6g, IG sum %.6g",
                p["percent"].get<double>(), static_cast<long long>(p["pruned_neurons"].get<int64_t>()),
                p["ranking"].get<std::string>().c_str(), p["confidence"].get<double>(), p["ig_sum"].get<double>());
    if (p.contains("ig_inside"))
      std::printf(", inside %.6g, outside %.6g", p["ig_inside"].get<double>(), p["ig_outside"].get<double>());
    std::printf("\n");
  }
}

void print_class_window(const json& r, const std::string& out) {
  std::printf("class %d, window %s, mean over %d test images (accuracy over all %d of the class), %s steps\n",
              r["class"].get<int>(), r["window"].dump().c_str(), r["images"].get<int>(),
              r["class_test_images"].get<int>(), r["steps"].get<std::string>().c_str());
  std::printf("%4s | %-30s | %-30s | %-36s\n", "k", "IPNA ranking", "conductance ranking", "random (mean +- std)");
  std::printf("%4s | %9s %9s %9s | %9s %9s %9s | %11s %11s %11s\n", "", "IG in", "IG out", "acc", "IG in", "IG out",
              "acc", "IG in", "IG out", "acc");
  for (const auto& row : r["table"]) {
    const auto &a = row["ipna"], &c = row["conductance"], &d = row["random"];
    auto num = [](const json& v) { return v.is_number() ? v.get<double>() : NAN; };
    std::printf("%4d | %9.4f %9.4f %9.3f | %9.4f %9.4f %9.3f | %5.3f+-%.3f %5.3f+-%.3f %5.3f+-%.3f\n",
                row["k"].get<int>(), num(a["ig_inside"]), num(a["ig_outside"]), num(a["accuracy"]),
                num(c["ig_inside"]), num(c["ig_outside"]), num(c["accuracy"]), num(d["ig_inside"]),
                num(d["ig_inside_std"]), num(d["ig_outside"]), num(d["ig_outside_std"]), num(d["accuracy"]),
                num(d["accuracy_std"]));
  }
  std::printf("wrote %s/class_window.png, class_window.csv, report.json\n", out.c_str());
}


// The sweep's progress on stderr: a line redrawn on a terminal, a line per committed batch
// elsewhere (Slurm logs).
void print_sweep_progress(const SweepProgress& p) {
  check_interrupt();
  static const bool tty = isatty(fileno(stderr));
  if (!tty && !p.committed) return;
  const double eta = p.eta_seconds;
  char line[512];
  std::snprintf(line, sizeof line, "sweep %lld/%lld items (%lld failed), %.3g items/s, ETA %.0f:%02.0f, last: %s",
                static_cast<long long>(p.done), static_cast<long long>(p.total), static_cast<long long>(p.failed),
                p.items_per_second, std::floor(eta / 60), std::fmod(eta, 60.0), p.current.c_str());
  if (tty)
    std::fprintf(stderr, "\r\033[K%.*s", 160, line);
  else
    std::fprintf(stderr, "%s\n", line);
  if (tty && p.done == p.total) std::fputs("\r\033[K", stderr);
  std::fflush(stderr);
}

void print_sweep_summary(const SweepSummary& s) {
  if (s.already_complete) {
    std::printf("%s is already complete: %lld items (%lld failed)\n", s.output.c_str(),
                static_cast<long long>(s.items), static_cast<long long>(s.failed));
    return;
  }
  std::printf("%lld items (%lld ok, %lld failed", static_cast<long long>(s.items), static_cast<long long>(s.ok),
              static_cast<long long>(s.failed));
  if (s.resumed_items) std::printf(", %lld from the interrupted run", static_cast<long long>(s.resumed_items));
  std::printf(") in %.1f s: %.3g items/s, %.4g steps/s\n", s.seconds, s.items_per_second, s.steps_per_second);
  for (size_t i = 0; i < s.failures.size() && i < 10; ++i)
    std::printf("failed: %s: %s\n", s.failures[i].first.c_str(), s.failures[i].second.c_str());
  if (s.failures.size() > 10) std::printf("... and %zu more failed items (/items/error in the file)\n", s.failures.size() - 10);
  std::printf("wrote %s\n", s.output.c_str());
}

void add_model_options(CLI::App* app, ModelArgs& m, bool required = true) {
  auto* o = app->add_option("--model", m.files,
                            "ONNX file (with --split), or two files: the first part and the second part (the original's "
                            "two-model form)")
                ->expected(1, 2);
  if (required) o->required();
  app->add_option("--split", m.split, "Name of the split tensor (see `ipna-fast info MODEL`)");
  app->add_option("--precision", m.precision, "f32 or f64")->check(CLI::IsMember({"f32", "f64"}))->capture_default_str();
  app->add_option("--device", m.device,
                  "cpu (direct float32 convolutions), cpu/winograd (Winograd for 3x3 stride-1 convolutions: about half "
                  "their time, more rounding error), cpu/bf16 (convolutions read bf16 inputs and weights, "
                  "accumulate in float32, the values between them stored as bf16; gradients and sums float32; CPUs "
                  "with AVX-512 BF16 or AMX), or cuda[:N][/fp32|/tf32][/cap=MiB] (tf32 "
                  "default; cap limits GPU memory)")
      ->capture_default_str();
}

void add_input_options(CLI::App* app, InputArgs& in) {
  app->add_option("--image", in.image, "JPEG/PNG image: shorter side to 256, center crop 224, ImageNet normalisation");
  app->add_option("--input", in.npy, "Or a preprocessed input tensor (.npy) of the model's input shape");
  app->add_option("--baseline", in.baseline,
                  "black (the black image, normalised like the input), zeros, or a .npy file")
      ->capture_default_str();
  app->add_option("--mean", in.mean,
                  "Normalisation mean of --image and of the black baseline, one value per input channel (default: "
                  "ImageNet's for 3 channels, else 0)");
  app->add_option("--std", in.std,
                  "Normalisation std, one positive value per input channel (default: ImageNet's for 3 channels, else 1)");
}

const char* const kOutHelp =
    "Output folder: written completely or not at all; an existing folder is replaced only if an earlier ipna-fast "
    "run wrote it (or with --overwrite). '.', '/', your home and folders holding the current one are refused";

void add_out_option(CLI::App* app, std::string& out, bool& overwrite, bool required) {
  auto* o = app->add_option("-o,--out", out, kOutHelp);
  if (required)
    o->required();
  else
    o->capture_default_str();
  app->add_flag("--overwrite", overwrite,
                "Replace the output folder even if it holds files ipna-fast did not write (they are deleted)");
}

// -n (under `name`) and the options that shape the path's steps.
void add_step_options(CLI::App* app, StepOptions& s, const std::string& name) {
  app->add_option(name, s.steps,
                  "Riemann steps m, or auto: double m from 16 until the completeness gaps of IG, conductance and "
                  "every box (relative to |F(x) - F(baseline)|, a box's to its |IG inside|) and the change from the "
                  "previous m are all under --tol, or --max-steps is reached (the report says which). Each doubling "
                  "evaluates only the new points, unless IG uses the middle rule or (with conductance or the "
                  "difference form) the split values kept per point, m x 2 x the split tensor, outgrow " +
                      std::to_string(kSplitSamplesMaxBytes >> 20) + " MiB")
      ->check([](const std::string& v) {
        if (v == "auto") return std::string();
        try {
          size_t used = 0;
          if (std::stoi(v, &used) >= 1 && used == v.size()) return std::string();
        } catch (const std::exception&) {
        }
        return std::string("expected a positive count or auto, got '" + v + "'");
      })
      ->capture_default_str();
  app->add_option("--schedule", s.schedule,
                  "uniform (a_k = k/m, the original's); adaptive: a pilot of " +
                      std::to_string(PilotSpec{}.intervals + 1) +
                      " forward passes of F along the path, then steps placed so each carries about the same change "
                      "of F; or gradient: a pilot of " + std::to_string(PilotSpec{}.intervals + 1) +
                      " gradient evaluations, then more steps where the gradient turns faster (density "
                      "sqrt(|d/da (grad F * (x - x'))|), which minimises the right rule's error). Both spread a share "
                      "of " + std::to_string(static_cast<int>(100 * PilotSpec{}.floor)) +
                      "% of the steps uniformly. Default: uniform with a step count, gradient with -n auto")
      ->check(CLI::IsMember({"uniform", "adaptive", "gradient"}));
  app->add_option("--quadrature", s.quadrature,
                  "IG's rule over the steps: right (the original's), left, middle or trapezoid (as Captum's "
                  "riemann_*; trapezoid over m steps uses m + 1 points); conductance and IPNA keep the right rule. "
                  "Or secant: IG, conductance and IPNA through each nonlinearity's slope over each step "
                  "(DeepLIFT's Rescale rule per step): exact completeness at every m and far fewer steps for the "
                  "same error on ReLU nets; IPNA with --ipna-form tangent only, no LayerNorm, and -n auto runs "
                  "each step count afresh")
      ->check(CLI::IsMember({"right", "left", "middle", "trapezoid", "secant"}))
      ->capture_default_str();
  app->add_option("--tol", s.tolerance, "Tolerance of -n auto (relative, see -n)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app->add_option("--max-steps", s.max_steps, "Cap of -n auto")->check(CLI::Range(16, 1 << 20))->capture_default_str();
  app->add_flag("--extrapolate", s.extrapolate,
                "Richardson extrapolation of the difference form's IPNA: 2 P(m) - P(m/2) from m and m/2 steps on "
                "nested points (no more gradient evaluations than m), which removes the form's first-order bias "
                "(its patch sum then nears IG inside the box at far fewer steps); with -n auto every step count "
                "is extrapolated from the one before and the gaps are those of the extrapolated maps. Needs boxes, "
                "the difference form and, with a fixed -n, an even count");
}

void add_attribute_options(CLI::App* app, AttributeArgs& a) {
  add_model_options(app, a.model);
  add_input_options(app, a.input);
  app->add_option("--class", a.cls, "Target class index")->required();
  app->add_option("--box", a.boxes,
                  "IPNA patch X1 Y1 X2 Y2: rows X1:X2 and columns Y1:Y2 (half-open) of the model input, which is the "
                  "224x224 crop for --image, as in the original; repeat for more boxes (all in one pass)")
      ->expected(4)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  app->add_option("--grid", a.grid,
                  "ROWSxCOLS: IPNA for a grid of boxes over the input (the last row and column take the remainder), "
                  "in the same pass as any --box; writes grid_channels.png");
  app->add_option("--ipna-form", a.ipna_form,
                  "difference (the original's: h(x_{k-1} + d 1_S) - h(x_{k-1})) or tangent (J_h(x_k) d 1_S: sums to "
                  "IG inside the box at every step count, additive over boxes)")
      ->check(CLI::IsMember({"difference", "tangent"}))
      ->capture_default_str();
  app->add_flag("--full-patch-forward", a.full_patch_forward,
                "Run the patch passes on whole planes instead of each box's receptive-field cone (for comparison)");
  app->add_option("--box-batch", a.box_batch,
                  "On cones, run the patch passes of up to N boxes whose cones have the same geometry (a grid's inner "
                  "boxes) as one batch, as far as the memory budget left beside the chunk of steps allows; the maps "
                  "are the same as one box at a time (default 0: the device's choice, 1 on the CPU, 8 on CUDA)")
      ->check(CLI::NonNegativeNumber);
  add_step_options(app, a.steps, "-n,--steps");
  app->add_option("--target", a.target, "prob (softmax probability) or logit")
      ->check(CLI::IsMember({"prob", "logit"}))
      ->capture_default_str();
  app->add_option("--chunk", a.chunk, "Steps per batch, at least 1 (default: from the memory budget)")
      ->check(CLI::PositiveNumber);
  app->add_option("--memory-budget", a.memory_budget_mb,
                  "MiB for the batch buffers (default: min(256, free/4) on the CPU, 70% of free memory on a GPU)")
      ->check(CLI::PositiveNumber);
  add_out_option(app, a.out, a.overwrite, true);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "ipna-fast: integrated gradients, conductance and IPNA (image patch internal neuron attribution) for conv-net\n"
      "classifiers given as ONNX, split at a named internal tensor.\n"
      "Exit codes: 0 ok, 1 bad input or failed run, 2 bad command line, 130 interrupted."};
  app.require_subcommand(1);
  app.fallthrough();  // --json after the subcommand too
  bool as_json = false;
  app.add_flag("--json", as_json, "Machine-readable JSON on stdout (progress bars off)");

  std::string info_model;
  auto* info = app.add_subcommand("info", "List the tensors a model can be split at, with shapes and neuron counts");
  info->add_option("model", info_model, "ONNX model file")->required();

  AttributeArgs at;
  auto* attribute = app.add_subcommand(
      "attribute",
      "The original's main.py: IG of the input, conductance and IPNA at the split tensor, optional pruning of the top "
      "P% and IG of the pruned model; writes report.json, .npy maps and the IG pictures");
  add_attribute_options(attribute, at);
  attribute->add_flag("--no-ig", at.no_ig, "Skip integrated gradients of the input");
  attribute->add_flag("--no-conductance", at.no_conductance, "Skip conductance");
  attribute->add_option("-p,--prune-percent", at.prune_percent,
                        "Zero the top P percent of split neurons by --ranking and recompute IG of the pruned model")
      ->check(CLI::Range(0.0, 100.0));
  attribute->add_option("--ranking", at.ranking, "ipna (first box) or conductance")
      ->check(CLI::IsMember({"ipna", "conductance"}))
      ->capture_default_str();
  attribute->add_option("--granularity", at.granularity, "neuron or channel (filter) pruning")
      ->check(CLI::IsMember({"neuron", "channel"}))
      ->capture_default_str();

  // The original's positional command line.
  AttributeArgs mn;
  std::vector<std::string> main_pos;
  auto* main_cmd = app.add_subcommand(
      "main", "The original's command line: main IMAGE Y MODEL1 MODEL2 X1 Y1 X2 Y2 -n STEPS -p PERCENT (two-part "
              "ONNX models; same outputs as `attribute`, in --out, default ipna_out)");
  main_cmd->add_option("args", main_pos, "IMAGE Y MODEL1 MODEL2 X1 Y1 X2 Y2")->expected(8)->required();
  add_step_options(main_cmd, mn.steps, "-n,--num-steps");
  main_cmd->add_option("--ipna-form", mn.ipna_form, "difference (the original's) or tangent")
      ->check(CLI::IsMember({"difference", "tangent"}))
      ->capture_default_str();
  main_cmd->add_option("-p,--percent", mn.prune_percent, "Prune percent")->check(CLI::Range(0.0, 100.0));
  main_cmd->add_option("--ranking", mn.ranking, "ipna or conductance")
      ->check(CLI::IsMember({"ipna", "conductance"}))
      ->capture_default_str();
  mn.out = "ipna_out";
  add_out_option(main_cmd, mn.out, mn.overwrite, false);
  main_cmd->add_option("--precision", mn.model.precision, "f32 or f64")
      ->check(CLI::IsMember({"f32", "f64"}))
      ->capture_default_str();
  main_cmd->add_option("--device", mn.model.device, "cpu, cpu/winograd, cpu/bf16 or cuda[:N][/fp32|/tf32][/cap=MiB]")
      ->capture_default_str();

  CurveArgs cv;
  std::string fractions = "0,0.001,0.002,0.005,0.01,0.02,0.03,0.05,0.07,0.1,0.2,0.3,0.5,0.7,0.9,1";
  auto* curve = app.add_subcommand(
      "curve", "Progressive pruning (the original's trafficlight_plot): prune growing fractions by the IPNA ranking "
               "and by the conductance ranking, record IG inside, outside and total; writes curve.csv and curve.png");
  add_attribute_options(curve, cv.base);
  curve->add_option("--fractions", fractions, "Comma-separated fractions of split neurons to prune")->capture_default_str();

  ClassWindowArgs cw;
  auto* class_window = app.add_subcommand(
      "class-window",
      "The original's Fashion-MNIST experiment: average IPNA of a pixel window over N test images of a class, prune "
      "the top k hidden neurons for k = 0..K by IPNA, by conductance and at random; mean IG inside/outside the "
      "window and the class accuracy; writes class_window.csv/.png");
  add_model_options(class_window, cw.model, false);
  class_window->get_option("--model")->description(
      "ONNX model (default: the shipped models/fashion_cnn.onnx with --split hidden, its 64 hidden units)");
  class_window->add_option("--data", cw.data, "Folder with the IDX files (t10k-*)")->capture_default_str();
  class_window->add_option("--class", cw.cls, "Class index")->capture_default_str();
  class_window->add_option("--window", cw.window, "X1 Y1 X2 Y2: rows X1:X2, columns Y1:Y2")->expected(4)->capture_default_str();
  class_window->add_option("--images", cw.images, "Images of the class to average over")->capture_default_str();
  class_window->add_option("--k-max", cw.k_max, "Prune up to K neurons")->capture_default_str();
  add_step_options(class_window, cw.steps, "-n,--steps");
  class_window->add_option("--ipna-form", cw.ipna_form, "difference (the original's) or tangent")
      ->check(CLI::IsMember({"difference", "tangent"}))
      ->capture_default_str();
  class_window->add_option("--random-draws", cw.random_draws, "Random rankings to average")->capture_default_str();
  class_window->add_option("--seed", cw.seed, "Seed of the random rankings")->capture_default_str();
  add_out_option(class_window, cw.out, cw.overwrite, true);


  // Sweeps over datasets into HDF5, and merging shard files.
  SweepConfig sw;
  ModelArgs sw_model;
  StepOptions sw_steps;
  std::string sw_manifest, sw_folder, sw_idx, sw_class = "label", sw_grid, sw_target = "prob", sw_form = "difference",
                           sw_fractions, sw_ranking = "ipna", sw_maps = "float32", sw_shard = "0/1";
  std::vector<int> sw_boxes;
  bool sw_no_ig = false, sw_no_cond = false, sw_quiet = false;
  double sw_budget_mb = 0;
  auto* sweep = app.add_subcommand(
      "sweep",
      "Attribution over a whole dataset into one HDF5 file: IG, conductance and IPNA for boxes or a grid, optional "
      "pruning levels, per item; committed in batches (a killed sweep resumes with --resume), sharded with --shard "
      "I/N and joined with `ipna-fast merge`. Unreadable items are recorded as failed, with the reason");
  add_model_options(sweep, sw_model);
  sweep->add_option("--manifest", sw_manifest,
                    "CSV with a header: path (image or .npy, relative to the manifest), and optionally class (index "
                    "or predicted), label, boxes (\"X1 Y1 X2 Y2; ...\", the same number on every row)");
  sweep->add_option("--image-folder", sw_folder, "DIR/CLASS/IMAGE: one folder per class, labels in sorted order");
  sweep->add_option("--idx", sw_idx, "IDX folder (Fashion-MNIST: t10k-* and train-*)");
  sweep->add_option("--idx-set", sw.idx_split, "test or train (with --idx)")
      ->check(CLI::IsMember({"test", "train"}))
      ->capture_default_str();
  sweep->add_option("--limit", sw.limit, "Only the first N items of the dataset")->check(CLI::NonNegativeNumber);
  sweep->add_option("--class", sw_class,
                    "Class to attribute where the manifest names none: label (the dataset's), predicted, or an index")
      ->capture_default_str();
  sweep->add_option("--box", sw_boxes, "IPNA box X1 Y1 X2 Y2 (rows X1:X2, columns Y1:Y2 of the model input); repeat")
      ->expected(4)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  sweep->add_option("--grid", sw_grid, "ROWSxCOLS: IPNA for a grid of boxes over the input, after any --box");
  sweep->add_flag("--no-ig", sw_no_ig, "Skip integrated gradients of the input");
  sweep->add_flag("--no-conductance", sw_no_cond, "Skip conductance");
  sweep->add_option("--ipna-form", sw_form, "difference (the original's) or tangent")
      ->check(CLI::IsMember({"difference", "tangent"}))
      ->capture_default_str();
  sweep->add_option("--target", sw_target, "prob (softmax probability) or logit")
      ->check(CLI::IsMember({"prob", "logit"}))
      ->capture_default_str();
  add_step_options(sweep, sw_steps, "-n,--steps");
  sweep->add_option("--prune-fractions", sw_fractions,
                    "Comma-separated fractions of split neurons: per item, IG of the model pruned by each (the curve)");
  sweep->add_option("--ranking", sw_ranking, "Pruning ranking: ipna (first box) or conductance")
      ->check(CLI::IsMember({"ipna", "conductance"}))
      ->capture_default_str();
  sweep->add_option("--baseline", sw.baseline, "black (normalised like the input), zeros, or a .npy file")
      ->capture_default_str();
  sweep->add_option("--mean", sw.mean, "Normalisation mean per input channel (default: ImageNet's for 3 channels, else 0)");
  sweep->add_option("--std", sw.std, "Normalisation std per input channel (default: ImageNet's for 3 channels, else 1)");
  sweep->add_option("--maps", sw_maps, "Store the maps as float32, float16 (half the space) or none (tables only)")
      ->check(CLI::IsMember({"float32", "float16", "none"}))
      ->capture_default_str();
  sweep->add_option("--memory-budget", sw_budget_mb,
                    "MiB for the batch buffers (default: " + std::to_string(kSweepBudgetCpu >> 20) + " on the CPU, " +
                        std::to_string(kSweepBudgetGpu >> 20) +
                        " on a GPU); fixed, not taken from free memory, so every shard sums alike")
      ->check(CLI::PositiveNumber);
  sweep->add_option("--shard", sw_shard, "I/N: this process takes the I-th of N contiguous slices (0 <= I < N)")
      ->capture_default_str();
  sweep->add_option("--batch-items", sw.batch_items, "Items per committed batch: a killed sweep loses at most these")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  sweep->add_option("-o,--out", sw.output,
                    "The HDF5 file. It appears only when the sweep is complete; work in progress is in .NAME.partial "
                    "beside it")
      ->required();
  sweep->add_flag("--resume", sw.resume,
                  "Go on with an interrupted sweep of the same configuration (a finished one is left as it is)");
  sweep->add_flag("--overwrite", sw.overwrite, "Replace a finished output, or discard an interrupted sweep and start over");
  sweep->add_flag("--quiet", sw_quiet, "No progress on stderr");

  std::vector<std::string> merge_inputs;
  std::string merge_out;
  bool merge_overwrite = false;
  auto* merge = app.add_subcommand(
      "merge", "Join the shard files of a sweep into one file, identical to what a single process writes");
  merge->add_option("shards", merge_inputs, "The shard files (any order)")->required();
  merge->add_option("-o,--out", merge_out, "The merged HDF5 file")->required();
  merge->add_flag("--overwrite", merge_overwrite, "Replace an existing output file");

  std::string demo_out = "ipna_demo";
  bool demo_overwrite = false;
  auto* demo = app.add_subcommand(
      "demo", "The main job on its embedded default: class-window on the shipped Fashion-MNIST CNN (89% test accuracy) "
              "and Debian's dataset-fashion-mnist, class 0 (T-shirt/top), top-left quadrant");
  add_out_option(demo, demo_out, demo_overwrite, false);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  try {
    if (*info) return cmd_info(info_model, as_json);  // nothing to clean up: Ctrl-C ends it at once
    install_interrupt_handler();
    if (*attribute || *main_cmd) {
      AttributeArgs& a = *attribute ? at : mn;
      if (*main_cmd) {
        a.input.image = main_pos[0];
        a.cls = parse_int(main_pos[1], "main: Y (the class, second argument)");
        a.model.files = {main_pos[2], main_pos[3]};
        const char* coords[] = {"X1", "Y1", "X2", "Y2"};
        for (int i = 4; i < 8; ++i)
          a.boxes.push_back(parse_int(main_pos[i], std::string("main: ") + coords[i - 4] + " (a box coordinate)"));
        a.no_ig = false;
      }
      a.quiet = as_json;
      json r = run_attribute(a);
      if (as_json)
        std::cout << r.dump(1) << "\n";
      else {
        print_attribute(r);
        std::printf("wrote %s/\n", a.out.c_str());
      }
      return 0;
    }
    if (*curve) {
      cv.fractions = parse_double_list(fractions, "--fractions");
      cv.base.quiet = as_json;
      json r = run_curve(cv);
      if (as_json) {
        std::cout << r.dump(1) << "\n";
      } else {
        std::printf("%9s %-12s %10s %12s %12s %12s\n", "fraction", "ranking", "confidence", "IG inside", "IG outside",
                    "IG total");
        for (const auto& row : r["rows"])
          std::printf("%9.4g %-12s %10.4g %12.5g %12.5g %12.5g\n", row["fraction"].get<double>(),
                      row["ranking"].get<std::string>().c_str(), row["confidence"].get<double>(),
                      row["ig_inside"].get<double>(), row["ig_outside"].get<double>(), row["ig_total"].get<double>());
        std::printf("wrote %s/curve.png, curve.csv\n", cv.base.out.c_str());
      }
      return 0;
    }
    if (*sweep) {
      if ((!sw_manifest.empty()) + (!sw_folder.empty()) + (!sw_idx.empty()) != 1)
        throw UsageError("give exactly one of --manifest FILE, --image-folder DIR or --idx DIR");
      sw.dataset_kind = !sw_manifest.empty() ? DatasetKind::Manifest
                        : !sw_folder.empty() ? DatasetKind::ImageFolder : DatasetKind::Idx;
      sw.dataset = !sw_manifest.empty() ? sw_manifest : !sw_folder.empty() ? sw_folder : sw_idx;
      sw.model_files = sw_model.files;
      sw.split = sw_model.split;
      sw.precision = sw_model.prec();
      sw.device = sw_model.device;
      if (sw_class == "label")
        sw.class_rule = ClassRule::Label;
      else if (sw_class == "predicted")
        sw.class_rule = ClassRule::Predicted;
      else {
        sw.class_rule = ClassRule::Fixed;
        sw.fixed_class = parse_int(sw_class, "--class (label, predicted or an index)");
      }
      sw.boxes = parse_boxes(sw_boxes);
      if (!sw_grid.empty()) std::tie(sw.grid_rows, sw.grid_cols) = parse_grid(sw_grid);
      sw.integrated_gradients = !sw_no_ig;
      sw.conductance = !sw_no_cond;
      sw.ipna_form = ipna_form_of(sw_form);
      sw.target = sw_target == "logit" ? TargetKind::Logit : TargetKind::Probability;
      sw.steps = sw_steps.plan();
      if (!sw_fractions.empty()) sw.prune_fractions = parse_double_list(sw_fractions, "--prune-fractions");
      sw.ranking = sw_ranking == "conductance" ? Ranking::Conductance : Ranking::Ipna;
      sw.maps = sw_maps == "none" ? MapStorage::None : sw_maps == "float16" ? MapStorage::Float16 : MapStorage::Float32;
      sw.memory_budget = static_cast<size_t>(sw_budget_mb * (1 << 20));
      try {
        std::tie(sw.shard_index, sw.shard_count) = parse_shard(sw_shard);
      } catch (const Error& e) {
        throw UsageError(std::string("--") + e.what());
      }
      if (!sw_quiet) sw.progress = print_sweep_progress;
      sw.interrupt_check = check_interrupt;
      SweepSummary s;
      try {
        s = run_sweep(sw);
      } catch (const Interrupted&) {
        std::fprintf(stderr, "\nipna-fast: interrupted; the committed batches are kept: run the same command with "
                             "--resume to go on\n");
        return 130;
      }
      if (as_json)
        std::cout << s.to_json().dump(1) << "\n";
      else
        print_sweep_summary(s);
      return 0;
    }
    if (*merge) {
      const MergeSummary m = merge_sweeps(merge_inputs, merge_out, merge_overwrite);
      if (as_json)
        std::cout << m.to_json().dump(1) << "\n";
      else
        std::printf("merged %d shard files: %lld items (%lld failed) into %s\n", m.shards,
                    static_cast<long long>(m.items), static_cast<long long>(m.failed), m.output.c_str());
      return 0;
    }
    if (*class_window || *demo) {
      if (*demo) {
        cw = ClassWindowArgs();
        cw.out = demo_out;
        cw.overwrite = demo_overwrite;
      }
      if (cw.model.files.empty()) {
        cw.model.files = {default_model_path("fashion_cnn.onnx")};
        if (cw.model.split.empty()) cw.model.split = "hidden";
      }
      cw.quiet = as_json;
      json r = run_class_window(cw);
      if (as_json)
        std::cout << r.dump(1) << "\n";
      else
        print_class_window(r, cw.out);
      return 0;
    }
  } catch (const UsageError& e) {
    std::fprintf(stderr, "ipna-fast: error: %s\nRun with --help for more information.\n", e.what());
    return 2;
  } catch (const Error& e) {
    std::fprintf(stderr, "%sipna-fast: error: %s\n", Progress::line_open() ? "\n" : "", e.what());
    return g_interrupted ? 130 : 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "%sipna-fast: error: out of memory (lower --memory-budget or --chunk, or use a smaller model)\n",
                 Progress::line_open() ? "\n" : "");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%sipna-fast: error: %s\n", Progress::line_open() ? "\n" : "", e.what());
    return 1;
  }
  return 0;
}
