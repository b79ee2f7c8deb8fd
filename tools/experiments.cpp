#include "tools/experiments.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <numeric>
#include <random>
#include <sstream>

#include "engine/error.h"
#include "engine/experiments/attribute.h"
#include "engine/experiments/class_window.h"
#include "engine/experiments/inputs.h"
#include "engine/step_control.h"
#include "loaders/idx.h"
#include "loaders/npy.h"
#include "loaders/onnx_loader.h"
#include "tools/render.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace ipna::cli {

SplitModel ModelArgs::load() const {
  if (files.size() == 2) return load_two_part_model(files[0], files[1]);
  if (files.size() != 1) throw Error("give one model file (with --split) or two (the first and second part)");
  if (split.empty()) throw Error("--split NAME is required with a single model file (see `ipna-fast info " + files[0] + "`)");
  return load_split_model(files[0], split);
}

void InputArgs::load(const Shape& shape, std::vector<double>& x, std::vector<double>& x0, Image* crop) const {
  if (image.empty() == npy.empty()) throw UsageError("give exactly one of --image FILE or --input FILE.npy");
  if (!is_baseline_kind(baseline))
    throw UsageError("--baseline: expected black, zeros or a .npy file, got '" + baseline + "'");
  if (mean.empty() != std.empty()) throw UsageError("give both --mean and --std, or neither");
  Normalization n;
  try {
    n = normalization_for(shape, mean, std);
  } catch (const Error& e) {
    throw UsageError(std::string("--mean/--std: ") + e.what());
  }
  x = image.empty() ? read_sample(npy, shape, "the input") : image_input(image, shape, n, crop);
  x0 = baseline_input(baseline, shape, n);
}

std::pair<int, int> parse_grid(const std::string& spec) {
  const size_t x = spec.find('x');
  if (x == std::string::npos) throw UsageError("--grid: expected ROWSxCOLS such as 7x7, got '" + spec + "'");
  return {parse_int(spec.substr(0, x), "--grid rows"), parse_int(spec.substr(x + 1), "--grid columns")};
}

IpnaForm ipna_form_of(const std::string& form) {
  if (form == "difference") return IpnaForm::Difference;
  if (form == "tangent") return IpnaForm::Tangent;
  throw UsageError("--ipna-form: expected difference or tangent, got '" + form + "'");
}

int StepOptions::count() const {
  size_t used = 0;
  int m = 0;
  try {
    m = std::stoi(steps, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != steps.size() || m < 1) throw UsageError("--steps: expected a positive count or auto, got '" + steps + "'");
  return m;
}

void StepOptions::check() const {
  if (!automatic()) count();
  try {
    if (!schedule.empty()) parse_schedule(schedule, "--schedule");
  } catch (const Error& e) {
    throw UsageError(e.what());
  }
  if (quadrature != "right" && quadrature != "left" && quadrature != "middle" && quadrature != "trapezoid" &&
      quadrature != "secant")
    throw UsageError("--quadrature: expected right, left, middle, trapezoid or secant, got '" + quadrature + "'");
  if (!(tolerance > 0)) throw UsageError("--tol must be positive");
  if (max_steps < 16) throw UsageError("--max-steps must be at least 16 (auto starts there)");
  if (extrapolate && !automatic() && count() % 2)
    throw UsageError("--extrapolate with a fixed --steps needs an even count (it extrapolates from m / 2), got " +
                     steps);
}

StepPlan StepOptions::plan() const {
  check();
  StepPlan p;
  p.automatic = automatic();
  if (!p.automatic) p.steps = count();
  p.schedule = schedule.empty() ? default_schedule(p.automatic) : parse_schedule(schedule, "--schedule");
  p.quadrature = quadrature_of(quadrature);
  p.tolerance = tolerance;
  p.max_steps = max_steps;
  p.extrapolate = extrapolate;
  return p;
}

std::vector<Box> parse_boxes(const std::vector<int>& flat) {
  if (flat.size() % 4) throw Error("a box takes four numbers: X1 Y1 X2 Y2 (rows X1:X2, columns Y1:Y2)");
  std::vector<Box> out;
  for (size_t i = 0; i < flat.size(); i += 4) out.push_back({flat[i], flat[i + 1], flat[i + 2], flat[i + 3]});
  return out;
}

std::string default_model_path(const std::string& file) {
  std::vector<fs::path> candidates;
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    candidates.push_back(exe.parent_path() / "models" / file);
    candidates.push_back(exe.parent_path().parent_path() / "models" / file);
    candidates.push_back(exe.parent_path().parent_path() / "share" / "ipna-fast" / "models" / file);
  }
#ifdef IPNA_SOURCE_DIR
  candidates.push_back(fs::path(IPNA_SOURCE_DIR) / "models" / file);
#endif
  for (const auto& c : candidates)
    if (fs::exists(c)) return c.string();
  throw Error("cannot find the shipped model " + file + " (looked beside the executable and in the source tree)");
}

namespace {

std::vector<int64_t> dims(const Shape& s) { return s.dims; }
bool drawable(const Shape& s) { return s.rank() == 3 && s.height() >= 2 && s.width() >= 2; }
Image with_boxes(Image img, const std::vector<Box>& boxes) {
  for (const Box& b : boxes) render::draw_box(img, b, render::kYellow);
  return img;
}

// The library's spec from the command line's values (each already checked by CLI11 or here).
AttributeSpec spec_of(const AttributeArgs& a) {
  AttributeSpec s;
  s.target_class = a.cls;
  s.target = a.target == "logit" ? TargetKind::Logit : TargetKind::Probability;
  s.boxes = parse_boxes(a.boxes);
  if (!a.grid.empty()) std::tie(s.grid_rows, s.grid_cols) = parse_grid(a.grid);
  s.integrated_gradients = !a.no_ig;
  s.conductance = !a.no_conductance;
  s.ipna_form = ipna_form_of(a.ipna_form);
  s.receptive_field_cones = !a.full_patch_forward;
  s.box_batch = a.box_batch;
  s.steps = a.steps.plan();
  s.chunk = a.chunk;
  s.memory_budget = static_cast<size_t>(a.memory_budget_mb * (1 << 20));
  s.prune_percent = a.prune_percent;
  s.ranking = a.ranking == "conductance" ? Ranking::Conductance : Ranking::Ipna;
  s.granularity = a.granularity == "channel" ? Granularity::Channel : Granularity::Neuron;
  return s;
}

}  // namespace

json run_attribute(const AttributeArgs& a) {
  AttributeSpec spec = spec_of(a);
  OutputDir out(a.out, a.overwrite);
  SplitModel model = a.model.load();
  const Shape in_shape = model.input_shape();
  std::vector<double> x, x0;
  Image crop;
  a.input.load(in_shape, x, x0, &crop);
  const bool have_image = !a.input.image.empty();

  Attributor engine(model, a.model.prec(), a.model.device);
  Progress bar("attribution", !a.quiet), bar2("IG of the pruned model", !a.quiet);
  spec.progress = std::ref(bar);
  spec.pruned_progress = std::ref(bar2);
  const AttributeResult res = attribute(engine, x, x0, spec);
  const AttributionResult& r = res.run.result;
  const std::vector<Box>& boxes = res.boxes;

  json rep = res.to_json();
  rep.update({{"model", a.model.files}, {"split", model.split_name}, {"device", engine.device_name()},
              {"baseline", a.input.baseline}, {"input", have_image ? a.input.image : a.input.npy}});
  if (!r.ig.empty()) write_npy(out.path("ig.npy"), r.ig, dims(r.input_shape));
  if (!r.conductance.empty()) write_npy(out.path("conductance.npy"), r.conductance, dims(r.split_shape));
  if (!boxes.empty()) {
    std::vector<double> all;
    for (auto& m : r.ipna) all.insert(all.end(), m.begin(), m.end());
    auto d = dims(r.split_shape);
    d.insert(d.begin(), static_cast<int64_t>(boxes.size()));
    write_npy(out.path("ipna.npy"), all, d);
  }
  const AttributionResult* p = res.pruned ? &res.pruned->result : nullptr;
  if (p) {
    write_npy(out.path("ig_pruned.npy"), p->ig, dims(p->input_shape));
    write_npy(out.path("prune_mask.npy"), res.pruned->mask, dims(p->split_shape));
  }

  // Pictures (SPEC.md "Drawing IG"); the pruned maps use the unpruned thresholds.
  json files = json::array();
  auto save = [&](const std::string& name, const Image& img) {
    write_png(out.path(name), img);
    files.push_back(name);
  };
  if (!r.ig.empty() && drawable(in_shape)) {
    const Image* bg = have_image ? &crop : nullptr;
    Image boxed = have_image ? with_boxes(crop, boxes) : Image();
    const render::IgScale scale = render::ig_scale(r.ig, in_shape);
    rep["ig_scale"] = {{"positive", {scale.pos_low, scale.pos_high}}, {"negative", {scale.neg_low, scale.neg_high}}};
    render::IgPictures ig = render::draw_ig(r.ig, in_shape, scale, bg);
    render::IgPictures ig_box = render::draw_ig(r.ig, in_shape, scale, have_image ? &boxed : nullptr);
    if (!have_image)
      for (const Box& b : boxes) render::draw_box(ig_box.overlay, b, render::kYellow);
    const bool with_box = !boxes.empty();  // the *_box pictures only when there is a box to draw
    if (have_image) save("image.png", crop);
    if (have_image && with_box) save("image_box.png", boxed);
    save("ig_positive.png", ig.positive);
    save("ig_negative.png", ig.negative);
    save("ig_overlay.png", ig.overlay);
    if (with_box) save("ig_overlay_box.png", ig_box.overlay);
    std::vector<Image> panels;
    std::vector<std::string> captions;
    if (have_image) {
      panels.push_back(boxed);
      captions.push_back(with_box ? "image with patch" : "image");
    }
    panels.push_back(ig_box.overlay);
    captions.push_back("IG");
    if (p) {
      render::IgPictures pg = render::draw_ig(p->ig, in_shape, scale, bg);
      render::IgPictures pg_box = render::draw_ig(p->ig, in_shape, scale, have_image ? &boxed : nullptr);
      if (!have_image)
        for (const Box& b : boxes) render::draw_box(pg_box.overlay, b, render::kYellow);
      save("pruned_positive.png", pg.positive);
      save("pruned_negative.png", pg.negative);
      save("pruned_overlay.png", pg.overlay);
      if (with_box) save("pruned_overlay_box.png", pg_box.overlay);
      panels.push_back(pg_box.overlay);
      std::ostringstream cap;
      cap << "IG after top-" << a.prune_percent << "% prune (" << a.ranking << ")";
      captions.push_back(cap.str());
    }
    if (in_shape.height() < 100)
      for (auto& im : panels) im = render::upscale(im, 224 / static_cast<int>(in_shape.height()));
    save("figure.png", render::grid(panels, captions, static_cast<int>(panels.size())));
  }
  if (res.grid && !res.grid->top_channels.empty()) {
    // Which patch drives which channel: per top channel, the grid of its IPNA sums over its plane.
    const GridSummary& g = *res.grid;
    double scale = 0;
    for (int64_t ch : g.top_channels)
      for (double v : g.channel_cells[ch]) scale = std::max(scale, std::abs(v));
    std::vector<Image> panels;
    std::vector<std::string> captions;
    const int px = std::max(8, 160 / std::max(g.rows, g.cols));
    for (int64_t ch : g.top_channels) {
      panels.push_back(render::heatmap(g.channel_cells[ch], g.rows, g.cols, px, scale));
      char cap[64];
      std::snprintf(cap, sizeof cap, "channel %lld: %.3g", static_cast<long long>(ch), g.channel_totals[ch]);
      captions.push_back(cap);
    }
    save("grid_channels.png", render::grid(panels, captions, 4));
  }
  rep["files"] = files;
  write_text(out.path("report.json"), rep.dump(1) + "\n");
  out.commit();
  return rep;
}

json run_curve(const CurveArgs& a) {
  const AttributeArgs& b = a.base;
  if (!b.grid.empty()) throw UsageError("--grid: curve prunes by one box's IPNA; give one --box");
  if (b.boxes.size() != 4) throw UsageError("curve needs exactly one --box");
  AttributeSpec spec = spec_of(b);
  OutputDir out(b.out, b.overwrite);
  SplitModel model = b.model.load();
  std::vector<double> x, x0;
  b.input.load(model.input_shape(), x, x0, nullptr);

  Attributor engine(model, b.model.prec(), b.model.device);
  Progress bar0("IPNA and conductance", !b.quiet), bar("pruning levels", !b.quiet);
  spec.progress = std::ref(bar0);
  const CurveResult res = pruning_curve(engine, x, x0, spec, a.fractions, std::ref(bar));

  std::vector<render::Panel> panels;
  for (Ranking ranking : {Ranking::Ipna, Ranking::Conductance}) {
    render::Series in{"sum IG, inside", {}, {}, {}, render::kBlue}, outside{"sum IG, outside", {}, {}, {}, render::kOrange},
        all{"sum IG, all", {}, {}, {}, render::kGold};
    for (const CurveRow& row : res.rows) {
      if (row.ranking != ranking) continue;
      for (auto* s : {&in, &outside, &all}) s->x.push_back(row.fraction);
      in.y.push_back(row.ig_inside);
      outside.y.push_back(row.ig_outside);
      all.y.push_back(row.ig_total);
    }
    panels.push_back({ranking == Ranking::Ipna ? "Pruned by IPNA (IG inside box)" : "Pruned by conductance (IG global)",
                      "proportion of pruned neurons", "IG", {in, outside, all}});
  }
  write_text(out.path("curve.csv"), res.to_csv());
  write_png(out.path("curve.png"), render::plot(panels));
  json rep = res.to_json();
  rep.update({{"model", b.model.files}, {"split", model.split_name}, {"class", b.cls},
              {"files", {"curve.csv", "curve.png"}}});
  write_text(out.path("report.json"), rep.dump(1) + "\n");
  out.commit();
  return rep;
}

json run_class_window(const ClassWindowArgs& a) {
  if (a.window.size() != 4) throw UsageError("--window takes four numbers: X1 Y1 X2 Y2");
  ClassWindowSpec spec;
  spec.cls = a.cls;
  spec.window = {a.window[0], a.window[1], a.window[2], a.window[3]};
  spec.images = a.images;
  spec.k_max = a.k_max;
  spec.random_draws = a.random_draws;
  spec.seed = a.seed;
  spec.steps = a.steps.plan();
  spec.ipna_form = ipna_form_of(a.ipna_form);
  spec.target = a.target == "logit" ? TargetKind::Logit : TargetKind::Probability;
  OutputDir out(a.out, a.overwrite);
  SplitModel model = a.model.load();
  const IdxDataset ds = read_idx_dataset(a.data, "test");
  Attributor engine(model, a.model.prec(), a.model.device);
  Progress bar("class-window", !a.quiet);
  spec.progress = std::ref(bar);
  spec.interrupt_check = check_interrupt;
  const ClassWindowResult res = class_window(engine, ds, spec);

  render::Panel p_in{"IG inside the window", "neurons pruned (k)", "mean IG", {}},
      p_out{"IG outside the window", "neurons pruned (k)", "mean IG", {}},
      p_acc{"class accuracy", "neurons pruned (k)", "accuracy", {}};
  const char* names[3] = {"IPNA ranking", "conductance ranking", "random (mean, +-1 std)"};
  const render::Rgb colors[3] = {render::kBlue, render::kOrange, render::kGray};
  double WindowLevel::*fields[3] = {&WindowLevel::ig_inside, &WindowLevel::ig_outside, &WindowLevel::accuracy};
  render::Panel* panels[3] = {&p_in, &p_out, &p_acc};
  for (int rk = 0; rk < (a.random_draws ? 3 : 2); ++rk)
    for (int pnl = 0; pnl < 3; ++pnl) {
      render::Series s{names[rk], {}, {}, {}, colors[rk]};
      for (int k = 0; k <= a.k_max; ++k) {
        s.x.push_back(k);
        if (rk < 2) {
          s.y.push_back(res.levels[rk][k].*fields[pnl]);
        } else {
          const MeanSpread m = res.random(k, fields[pnl]);
          s.y.push_back(m.mean);
          s.spread.push_back(m.std);
        }
      }
      panels[pnl]->series.push_back(s);
    }
  write_text(out.path("class_window.csv"), res.to_csv());
  write_png(out.path("class_window.png"), render::plot({p_in, p_out, p_acc}, 360, 280));
  write_npy(out.path("avg_ipna.npy"), res.avg_ipna, dims(res.split_shape));
  write_npy(out.path("avg_conductance.npy"), res.avg_conductance, dims(res.split_shape));
  {
    Image ex;
    ex.width = res.cols;
    ex.height = res.rows;
    ex.channels = 3;
    for (double v : res.first_image)
      for (int c = 0; c < 3; ++c) ex.pixels.push_back(static_cast<uint8_t>(std::lround(v * 255)));
    Image big = render::upscale(ex, 8);
    const Box& w = spec.window;
    render::draw_box(big, {w.r0 * 8, w.c0 * 8, w.r1 * 8, w.c1 * 8}, render::kYellow);
    write_png(out.path("window_example.png"), big);
  }
  json rep = res.to_json();
  rep.update({{"model", a.model.files}, {"split", model.split_name}, {"steps", a.steps.steps},
              {"files", {"class_window.csv", "class_window.png", "avg_ipna.npy", "avg_conductance.npy",
                         "window_example.png"}}});
  write_text(out.path("report.json"), rep.dump(1) + "\n");
  out.commit();
  return rep;
}

}  // namespace ipna::cli
