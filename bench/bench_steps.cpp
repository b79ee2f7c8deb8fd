// Step control: error against gradient evaluations, uniform against adaptive (F-based) and
// gradient schedules (engine/step_control.h).
//
//   build/bench/bench_steps small --fixtures DIR [--reference 16384] [--out FILE.csv]
//   build/bench/bench_steps effnet [--model build/models/efficientnet_lite0.onnx] [--min 16] [--max 2048]
//                                  [--schedules uniform adaptive gradient] [--out FILE.csv]
//
// small: float64 on the test fixtures (tools/make_fixtures.py) and the
// shipped Fashion-MNIST CNN (first test image of class 0): the relative L2
// error of IG, conductance and IPNA (first box, difference form) against a
// uniform m = --reference run, at m = 8 .. 2048, the three schedules, and an oracle: the
// piecewise-uniform schedule a perfect pilot would give (oracle_warps), to show how much any
// placement of steps can gain on each net; and the secant rule (Quadrature::Secant) on uniform
// steps, its IPNA in the tangent form (--schedules picks which to run).
// effnet: float32 on the traffic-light example: the IG completeness gap
// (relative to |F(x) - F(x')|) and the patch completeness gap of the box
// 45 100 90 130 (difference form, relative to IG inside) and the IG map's relative change from the
// same schedule's previous m, at m = --min .. --max, the schedules asked for (secant: the secant
// rule on uniform steps, IPNA in the tangent form), and with --reference N the IG map's error against N
// uniform steps.
//   build/bench/bench_steps auto [--form tangent|difference] [--tol 0.01] [--max 2048] [--initial 16] --out FILE.csv
//
// auto: float32, the traffic-light example, IG, conductance and IPNA of the box
// (--form tangent or difference), run_to_tolerance with and without reusing earlier points, on
// --schedules, side by side: step counts, evaluations, seconds.
// Evaluations count the gradient evaluations (m) plus the pilot's: forward passes for the adaptive
// schedule (each about a third of an evaluation), gradient evaluations for the gradient schedule.
// Rows go to --out as CSV; the plot and the tables come from bench/step_control.py.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/attribution.h"
#include "engine/step_control.h"
#include "loaders/idx.h"
#include "loaders/image.h"
#include "loaders/npy.h"
#include "loaders/onnx_loader.h"

using namespace ipna;

namespace {

double rel(const std::vector<double>& a, const std::vector<double>& b) {
  double n = 0, d = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    n += (a[i] - b[i]) * (a[i] - b[i]);
    d += b[i] * b[i];
  }
  return std::sqrt(n / d);
}

struct Case {
  std::string name;
  SplitModel model;
  std::vector<double> x, x0;
  int cls;
  Box box;
};

// The traffic-light example: the image, the black baseline, class 920 and the box of the original's README.
struct TrafficLight {
  SplitModel model;
  std::vector<double> x, x0;
  explicit TrafficLight(const std::string& onnx)
      : model(load_split_model(onnx, "blocks.7")),
        x(imagenet_preprocess(load_image_rgb(IPNA_SOURCE_DIR "/tests/data/traffic_light.JPEG"))),
        x0(black_baseline(model.input_shape())) {}
  static AttributionRequest request() {
    AttributionRequest r;
    r.target_class = 920;
    r.integrated_gradients = true;
    r.boxes = {{45, 100, 90, 130}};
    return r;
  }
};

constexpr const char* kQuantities[] = {"IG", "conductance", "IPNA"};
const std::vector<double>& quantity(const AttributionResult& r, int q) {
  return q == 0 ? r.ig : q == 1 ? r.conductance : r.ipna[0];
}

// The best piecewise-uniform schedule over `intervals` equal intervals of the path that a perfect pilot could
// give, per quantity (IG, conductance, IPNA): a bound on what any pilot-based schedule can reach, not a schedule
// the engine offers. Interval i's error with n steps, e_i(n), is measured as the change of the quantity when the
// interval alone goes from kCoarse to kFine steps (every other interval one step, the same in both runs). Where
// e_i falls as C_i / n (the integrand jumps: ReLU and max-pool switches), the total squared error
// sum_i C_i^2 / n_i^2 is smallest for n_i proportional to C_i^(2/3), and then uniform steps need
// K sqrt(sum C_i^2) / (sum C_i^(2/3))^(3/2) times as many evaluations: printed as the predicted gain.
std::array<PathWarp, 3> oracle_warps(Attributor& a, const std::vector<double>& x, const std::vector<double>& x0,
                                     AttributionRequest r, int intervals, const std::string& name) {
  constexpr int kCoarse = 4, kFine = 128;
  const int k = intervals;
  std::vector<double> points(k + 1);
  for (int i = 0; i <= k; ++i) points[i] = static_cast<double>(i) / k;
  auto run_with = [&](int i, int n) {
    std::vector<double> s{0.0};
    for (int j = 0; j < k; ++j) {
      const int steps = j == i ? n : 1;
      for (int t = 1; t <= steps; ++t) s.push_back(points[j] + (points[j + 1] - points[j]) * t / steps);
    }
    s.back() = 1.0;
    r.steps = static_cast<int>(s.size()) - 1;
    r.schedule = s;
    return a.run(x, x0, r);
  };
  std::array<std::vector<double>, 3> c;  // C_i per quantity
  for (int i = 0; i < k; ++i) {
    const AttributionResult fine = run_with(i, kFine), coarse = run_with(i, kCoarse);
    for (int q = 0; q < 3; ++q) {
      const std::vector<double>&f = quantity(fine, q), &g = quantity(coarse, q);
      double e = 0;
      for (size_t j = 0; j < f.size(); ++j) e += (f[j] - g[j]) * (f[j] - g[j]);
      c[q].push_back(std::sqrt(e) * kCoarse);
    }
  }
  std::array<PathWarp, 3> warps;
  for (int q = 0; q < 3; ++q) {
    double sum_sq = 0, sum_23 = 0;
    std::vector<double> w;
    for (double ci : c[q]) {
      sum_sq += ci * ci;
      sum_23 += std::cbrt(ci * ci);
      w.push_back(std::cbrt(ci * ci));
    }
    std::fprintf(stderr, "%s %s: oracle predicted gain %.2fx\n", name.c_str(), kQuantities[q],
                 k * std::sqrt(sum_sq) / std::pow(sum_23, 1.5));
    warps[q] = PathWarp::from_weights(points, w, 1e-6);  // (the floor must be positive)
  }
  return warps;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("Step control: error against evaluations, uniform against adaptive and gradient schedules");
  app.require_subcommand(1);
  std::string fixtures, out, effnet = "build/models/efficientnet_lite0.onnx";
  int reference = 16384, max_steps = 2048;
  auto* small = app.add_subcommand("small", "float64, fixtures and the Fashion-MNIST CNN, against a uniform reference");
  small->add_option("--fixtures", fixtures, "tools/make_fixtures.py output")->required();
  small->add_option("--reference", reference, "steps of the uniform reference")->capture_default_str();
  auto* eff = app.add_subcommand("effnet", "float32, the traffic-light example's completeness gaps");
  eff->add_option("--model", effnet, "EfficientNet-Lite0 ONNX with the tensor blocks.7")->capture_default_str();
  eff->add_option("--max", max_steps, "largest m")->capture_default_str();
  int min_steps = 16;
  eff->add_option("--min", min_steps, "smallest m (its IG change is left empty)")->capture_default_str();
  std::vector<std::string> eff_schedules{"uniform", "adaptive", "gradient"};
  eff->add_option("--schedules", eff_schedules, "schedules to run")
      ->check(CLI::IsMember({"uniform", "adaptive", "gradient", "secant", "secant-gradient"}))
      ->capture_default_str();
  bool ig_only = false;
  eff->add_flag("--ig-only", ig_only, "IG alone, no IPNA box (the patch gaps empty)");
  auto* autom = app.add_subcommand("auto", "float32, the traffic-light example: step control with and without reuse");
  autom->add_option("--model", effnet, "EfficientNet-Lite0 ONNX with the tensor blocks.7")->capture_default_str();
  autom->add_option("--max", max_steps, "step cap")->capture_default_str();
  double tol = 0.01;
  autom->add_option("--tol", tol, "tolerance")->capture_default_str();
  std::string form = "tangent";
  int initial = StepControl{}.initial_steps;
  autom->add_option("--initial", initial, "first step count (the adaptive warp runs through its points)")
      ->capture_default_str();
  std::vector<std::string> schedules{"uniform", "adaptive"}, reuses{"yes", "no"};
  autom->add_option("--schedules", schedules, "schedules to run")->capture_default_str();
  autom->add_option("--reuse", reuses, "yes and/or no")->capture_default_str();
  autom->add_option("--form", form, "IPNA's form")
      ->check(CLI::IsMember({"tangent", "difference"}))
      ->capture_default_str();
  PilotSpec pilot;
  std::vector<std::string> only;
  small->add_option("--models", only, "only these (default: all)");
  std::vector<std::string> small_schedules{"uniform", "adaptive", "gradient", "oracle", "secant", "secant-gradient"};
  small
      ->add_option("--schedules", small_schedules,
                   "schedules to run (secant: the secant rule on uniform steps; secant-gradient: on the gradient "
                   "schedule)")
      ->check(CLI::IsMember({"uniform", "adaptive", "gradient", "oracle", "secant", "secant-gradient"}))
      ->capture_default_str();
  int eff_reference = 0;
  eff->add_option("--reference", eff_reference,
                  "steps of a uniform right-rule IG run to measure each row's IG error against (0: none)")
      ->capture_default_str();
  for (auto* s : {small, eff, autom}) {
    s->add_option("--out", out, "CSV file of the rows")->required();
    s->add_option("--pilot-intervals", pilot.intervals, "intervals of the adaptive and gradient pilots")
        ->capture_default_str();
    s->add_option("--floor", pilot.floor, "uniform share of the adaptive and gradient schedules")
        ->capture_default_str();
  }
  CLI11_PARSE(app, argc, argv);
  std::ofstream csv(out);

  if (small->parsed()) {
    csv << "model,quantity,schedule,steps,evaluations,error\n";
    std::vector<Case> cases;
    for (const char* name : {"lenet", "vgg_avg", "mbv2_block", "resnet18", "tiny224"}) {
      const std::string d = fixtures + "/" + name;
      auto meta = nlohmann::json::parse(std::ifstream(d + "/meta.json"));
      const auto& b = meta["boxes"][0];
      cases.push_back({name, load_split_model(d + "/model.onnx", meta["split"].get<std::string>()),
                       read_npy(d + "/x.npy").data, read_npy(d + "/baseline.npy").data, meta["class"].get<int>(),
                       Box{b[0], b[1], b[2], b[3]}});
    }
    {  // the shipped Fashion-MNIST CNN on the first test image of class 0, window of the original's demo
      IdxDataset ds = read_idx_dataset(kFashionMnistDir, "test");
      int i = 0;
      while (ds.labels[i] != 0) ++i;
      std::vector<double> x(784);
      for (int j = 0; j < 784; ++j) x[j] = ds.images.pixels[i * 784 + j] / 255.0;
      cases.push_back({"fashion_cnn", load_split_model(IPNA_SOURCE_DIR "/models/fashion_cnn.onnx", "hidden"), x,
                       std::vector<double>(784, 0.0), 0, Box{0, 0, 14, 14}});
    }
    for (Case& c : cases) {
      if (!only.empty() && std::find(only.begin(), only.end(), c.name) == only.end()) continue;
      Attributor a(c.model, Precision::F64);
      AttributionRequest r;
      r.target_class = c.cls;
      r.integrated_gradients = r.conductance = true;
      r.boxes = {c.box};
      r.steps = reference;
      const AttributionResult ref = a.run(c.x, c.x0, r);
      auto wanted = [&](const char* schedule) {
        return std::find(small_schedules.begin(), small_schedules.end(), schedule) != small_schedules.end();
      };
      const PathWarp warp = adaptive_warp(a, c.x, c.x0, r, pilot);
      const PathWarp gwarp = gradient_warp(a, c.x, c.x0, r, pilot);
      std::fprintf(stderr, "%s: reference in %.1f s, F %.4f -> %.4f\n", c.name.c_str(), ref.seconds, ref.f_baseline,
                   ref.f_input);
      const std::array<PathWarp, 3> owarps =
          wanted("oracle") ? oracle_warps(a, c.x, c.x0, r, pilot.intervals, c.name) : std::array<PathWarp, 3>{};
      std::array<AttributionResult, 3> before;  // uniform, adaptive, gradient at m / 2: what IPNA extrapolates from
      for (int m = 8; m <= 2048; m *= 2)
        for (const char* schedule : {"uniform", "adaptive", "gradient", "oracle", "secant", "secant-gradient"}) {
          if (!wanted(schedule)) continue;
          if (schedule[0] == 's') {  // the secant rule, IPNA in the tangent form; evaluations with the leading point
            const bool warped = schedule[6] == '-';
            AttributionRequest sr = r;
            sr.ipna_form = IpnaForm::Tangent;
            sr.quadrature = Quadrature::Secant;
            sr.steps = m;
            sr.schedule = warped ? gwarp.schedule(m) : std::vector<double>{};
            const AttributionResult got = a.run(c.x, c.x0, sr);
            for (int q = 0; q < 3; ++q)
              csv << c.name << "," << kQuantities[q] << "," << schedule << "," << m << ","
                  << got.evaluations + (warped ? pilot.intervals + 1 : 0) << ","
                  << rel(quantity(got, q), quantity(ref, q)) << "\n";
            csv.flush();
            continue;
          }
          const bool adaptive = schedule[0] == 'a' || schedule[0] == 'g';
          const AttributionResult* one = nullptr;
          AttributionResult res;
          std::array<AttributionResult, 3> per_quantity;  // the oracle: one schedule per quantity
          r.steps = m;
          if (schedule[0] == 'o') {
            for (int q = 0; q < 3; ++q) {
              r.schedule = owarps[q].schedule(m);
              per_quantity[q] = a.run(c.x, c.x0, r);
            }
          } else {
            r.schedule = !adaptive ? std::vector<double>{} : schedule[0] == 'a' ? warp.schedule(m) : gwarp.schedule(m);
            res = a.run(c.x, c.x0, r);
            one = &res;
          }
          // the oracle's measurement (oracle_warps) is not counted: it bounds what a pilot could tell
          const int evals = m + (adaptive ? pilot.intervals + 1 : 0);
          for (int q = 0; q < 3; ++q) {
            const AttributionResult& got = one ? *one : per_quantity[q];
            csv << c.name << "," << kQuantities[q] << "," << schedule << "," << m << "," << evals << ","
                << rel(quantity(got, q), quantity(ref, q)) << "\n";
          }
          if (one) {  // IPNA extrapolated from m / 2 and m (extrapolate_ipna), whose points m's include
            AttributionResult& half = before[schedule[0] == 'u' ? 0 : schedule[0] == 'a' ? 1 : 2];
            if (!half.ipna.empty())
              csv << c.name << ",IPNA," << schedule << " extrapolated," << m << "," << evals << ","
                  << rel(extrapolate_ipna(*one, half, 2).ipna[0], ref.ipna[0]) << "\n";
            half = *one;
          }
          csv.flush();
        }
    }
  } else if (autom->parsed()) {
    csv << "form,schedule,reuse,steps,converged,evaluations,reused,pilot_forwards,pilot_evaluations,seconds\n";
    const TrafficLight t(effnet);
    const std::vector<double>&x = t.x, &x0 = t.x0;
    Attributor a(t.model, Precision::F32);
    AttributionRequest r = TrafficLight::request();
    r.conductance = true;
    r.ipna_form = form == "tangent" ? IpnaForm::Tangent : IpnaForm::Difference;
    a.run(x, x0, [&] {  // warm-up: first-touch of the buffers, oneDNN's primitives
      AttributionRequest w = r;
      w.steps = 16;
      return w;
    }());
    for (const std::string& schedule : schedules)
      for (const std::string& reuse_s : reuses) {
        const bool reuse = reuse_s == "yes";
        StepControl c;
        c.initial_steps = initial;
        c.tolerance = tol;
        c.max_steps = max_steps;
        c.schedule = parse_schedule(schedule, "--schedules");
        c.reuse_points = reuse;
        c.pilot = pilot;
        const ControlledResult cr = run_to_tolerance(a, x, x0, r, c);
        int reused = 0;
        for (const StepLevel& l : cr.levels) reused += l.reused;
        csv << form << "," << schedule << "," << reuse_s << "," << cr.levels.back().steps << ","
            << (cr.converged ? "yes" : "no") << "," << cr.evaluations << "," << reused << "," << cr.pilot_forwards
            << "," << cr.pilot_evaluations << "," << cr.seconds << "\n";
        csv.flush();
        std::fprintf(stderr, "%-8s reuse %-3s %.1f s: %s\n", schedule.c_str(), reuse_s.c_str(), cr.seconds,
                     cr.summary().c_str());
      }
  } else {
    // ig_change: the IG map's relative L2 change from the same schedule's previous m (what -n auto also checks).
    // ig_error: against a uniform right-rule run of --reference steps (empty without one). The secant rule's
    // IPNA is the tangent form's, whose patch gap is rounding.
    csv << "schedule,steps,evaluations,ig_gap,patch_gap,ig_change,patch_gap_extrapolated,ig_error,seconds\n";
    const TrafficLight t(effnet);
    const std::vector<double>&x = t.x, &x0 = t.x0;
    Attributor a(t.model, Precision::F32);
    AttributionRequest r = TrafficLight::request();
    if (ig_only) r.boxes.clear();
    std::vector<double> reference;
    if (eff_reference > 0) {
      AttributionRequest ref = r;
      ref.boxes.clear();
      ref.steps = eff_reference;
      reference = a.run(x, x0, ref).ig;
    }
    const bool warped = std::any_of(eff_schedules.begin(), eff_schedules.end(), [](const std::string& s) {
      return s == "adaptive" || s == "gradient" || s == "secant-gradient";
    });
    const PathWarp warp = warped ? adaptive_warp(a, x, x0, r, pilot) : PathWarp();
    const PathWarp gwarp = warped ? gradient_warp(a, x, x0, r, pilot) : PathWarp();
    std::vector<std::vector<double>> previous(5);
    std::array<AttributionResult, 5> half;  // each schedule at m / 2, for the extrapolated patch gap
    constexpr const char* kEffSchedules[] = {"uniform", "adaptive", "gradient", "secant", "secant-gradient"};
    for (int m = min_steps; m <= max_steps; m *= 2)
      for (int s = 0; s < 5; ++s) {
        const char* schedule = kEffSchedules[s];
        if (std::find(eff_schedules.begin(), eff_schedules.end(), schedule) == eff_schedules.end()) continue;
        AttributionRequest rs = r;
        rs.steps = m;
        rs.schedule = s == 1 ? warp.schedule(m) : s == 2 || s == 4 ? gwarp.schedule(m) : std::vector<double>{};
        if (s >= 3) {
          rs.ipna_form = IpnaForm::Tangent;
          rs.quadrature = Quadrature::Secant;
        }
        const AttributionResult res = a.run(x, x0, rs);
        const double dF = std::abs(res.f_input - res.f_baseline);
        const double change = previous[s].empty() ? NAN : rel(res.ig, previous[s]);
        previous[s] = res.ig;
        double extrapolated = NAN;
        if (!half[s].ipna.empty()) {
          const AttributionResult e = extrapolate_ipna(res, half[s], 2);
          extrapolated = std::abs(e.ipna_gap[0] / e.ig_in_box[0]);
        }
        half[s] = res;
        const double patch_gap = res.ipna.empty() ? NAN : std::abs(res.ipna_gap[0] / res.ig_in_box[0]);
        const double error = reference.empty() ? NAN : rel(res.ig, reference);
        const int evaluations = res.evaluations + (s == 1 || s == 2 || s == 4 ? pilot.intervals + 1 : 0);
        csv << schedule << "," << m << "," << evaluations << "," << std::abs(res.ig_gap) / dF << "," << patch_gap << ","
            << change << "," << extrapolated << "," << error << "," << res.seconds << "\n";
        csv.flush();
        std::fprintf(stderr,
                     "m=%5d %-8s IG gap %.3e patch gap %.3e (extrapolated %.3e) IG change %.3e IG error %.3e "
                     "(%.1f s)\n",
                     m, schedule, std::abs(res.ig_gap) / dF, patch_gap, extrapolated, change, error, res.seconds);
      }
  }
  return 0;
}
