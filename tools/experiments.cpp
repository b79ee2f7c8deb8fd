#include "tools/experiments.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <numeric>
#include <random>
#include <sstream>

#include "engine/error.h"
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
  if (schedule != "uniform" && schedule != "adaptive")
    throw UsageError("--schedule: expected uniform or adaptive, got '" + schedule + "'");
  if (quadrature != "right" && quadrature != "left" && quadrature != "middle" && quadrature != "trapezoid")
    throw UsageError("--quadrature: expected right, left, middle or trapezoid, got '" + quadrature + "'");
  if (!(tolerance > 0)) throw UsageError("--tol must be positive");
  if (max_steps < 16) throw UsageError("--max-steps must be at least 16 (auto starts there)");
}

StepPlan StepOptions::plan() const {
  check();
  StepPlan p;
  p.automatic = automatic();
  if (!p.automatic) p.steps = count();
  p.adaptive = schedule == "adaptive";
  p.quadrature = quadrature_of(quadrature);
  p.tolerance = tolerance;
  p.max_steps = max_steps;
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

json box_json(const Box& b) { return json::array({b.r0, b.c0, b.r1, b.c1}); }
std::vector<int64_t> dims(const Shape& s) { return s.dims; }
TargetKind target_of(const std::string& t) {
  if (t != "prob" && t != "logit") throw Error("--target must be prob or logit, got '" + t + "'");
  return t == "logit" ? TargetKind::Logit : TargetKind::Probability;
}
bool drawable(const Shape& s) { return s.rank() == 3 && s.height() >= 2 && s.width() >= 2; }
// The request both attribute and curve start from: class, target, steps, chunking, boxes.
AttributionRequest base_request(const AttributeArgs& a, const std::vector<Box>& boxes) {
  AttributionRequest req;
  req.target_class = a.cls;
  req.target = target_of(a.target);
  req.chunk = a.chunk;
  req.memory_budget = static_cast<size_t>(a.memory_budget_mb * (1 << 20));
  req.boxes = boxes;
  req.ipna_form = ipna_form_of(a.ipna_form);
  req.receptive_field_cones = !a.full_patch_forward;
  return req;
}

// --box boxes, then the --grid's.
std::vector<Box> all_boxes(const AttributeArgs& a, const Shape& in_shape) {
  std::vector<Box> boxes = parse_boxes(a.boxes);
  if (!a.grid.empty()) {
    if (in_shape.rank() != 3) throw Error("--grid needs an image input (C,H,W); the model input is " + in_shape.str());
    const auto [rows, cols] = parse_grid(a.grid);
    const auto g = grid_boxes(static_cast<int>(in_shape.height()), static_cast<int>(in_shape.width()), rows, cols);
    boxes.insert(boxes.end(), g.begin(), g.end());
  }
  return boxes;
}
Image with_boxes(Image img, const std::vector<Box>& boxes) {
  for (const Box& b : boxes) render::draw_box(img, b, render::kYellow);
  return img;
}

}  // namespace

json run_attribute(const AttributeArgs& a) {
  OutputDir out(a.out, a.overwrite);
  SplitModel model = a.model.load();
  const Shape in_shape = model.input_shape();
  std::vector<double> x, x0;
  Image crop;
  a.input.load(in_shape, x, x0, &crop);
  const bool have_image = !a.input.image.empty();
  const std::vector<Box> boxes = all_boxes(a, in_shape);
  const int grid_first = static_cast<int>(a.boxes.size() / 4);  // the grid's boxes follow the --box ones
  const bool prune = a.prune_percent >= 0;
  if (prune && a.prune_percent > 100) throw Error("--prune-percent must be in [0, 100]");
  if (a.ranking != "ipna" && a.ranking != "conductance") throw Error("--ranking must be ipna or conductance");
  if (a.granularity != "neuron" && a.granularity != "channel") throw Error("--granularity must be neuron or channel");
  if (prune && a.ranking == "ipna" && boxes.empty()) throw Error("--ranking ipna needs a --box (or use --ranking conductance)");

  Attributor engine(model, a.model.prec(), a.model.device);
  AttributionRequest req = base_request(a, boxes);
  req.integrated_gradients = !a.no_ig || prune;
  req.conductance = !a.no_conductance || (prune && a.ranking == "conductance");
  Progress bar("attribution", !a.quiet);
  req.progress = std::ref(bar);
  const StepRun run = run_steps(engine, x, x0, req, a.steps.plan());
  const AttributionResult& r = run.result;

  json rep = {{"model", a.model.files}, {"split", model.split_name}, {"split_shape", r.split_shape.dims},
              {"device", engine.device_name()}, {"class", a.cls}, {"target", a.target}, {"steps", run.steps},
              {"step_control", run.report},
              {"baseline", a.input.baseline}, {"input", have_image ? a.input.image : a.input.npy},
              {"confidence", r.f_input}, {"F_baseline", r.f_baseline}, {"chunk", r.chunk},
              {"workspace_bytes", r.workspace_bytes}, {"seconds", {{"attribution", r.seconds}}}};
  if (req.integrated_gradients) {
    write_npy(out.path("ig.npy"), r.ig, dims(r.input_shape));
    rep["ig"] = {{"sum", r.ig_sum}, {"completeness_gap", r.ig_gap}};
  }
  if (req.conductance) {
    write_npy(out.path("conductance.npy"), r.conductance, dims(r.split_shape));
    rep["conductance"] = {{"sum", r.conductance_sum}, {"completeness_gap", r.conductance_gap}};
  }
  if (!boxes.empty()) {
    std::vector<double> all;
    for (auto& m : r.ipna) all.insert(all.end(), m.begin(), m.end());
    auto d = dims(r.split_shape);
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
    if (!a.grid.empty()) {
      // Additivity over the grid's partition: in tangent form the IPNA sums add up to IG's total
      // exactly, and neuron by neuron equal any other partition's; in difference form they approach
      // conductance as m grows.
      const auto [rows, cols] = parse_grid(a.grid);
      std::vector<double> sum(r.ipna[grid_first].size(), 0.0);
      double total = 0;
      for (size_t b = grid_first; b < boxes.size(); ++b) {
        total += r.ipna_sum[b];
        for (size_t j = 0; j < sum.size(); ++j) sum[j] += r.ipna[b][j];
      }
      json gj = {{"rows", rows}, {"cols", cols}, {"first_box", grid_first}, {"ipna_total", total}};
      if (req.integrated_gradients) gj["ipna_total_minus_ig_total"] = total - r.ig_sum;
      if (req.conductance) {
        double num = 0, den = 0;
        for (size_t j = 0; j < sum.size(); ++j) {
          num += (sum[j] - r.conductance[j]) * (sum[j] - r.conductance[j]);
          den += r.conductance[j] * r.conductance[j];
        }
        gj["neuronwise_distance_to_conductance"] = den > 0 ? std::sqrt(num / den) : 0.0;
      }
      rep["grid"] = gj;
    }
  }
  rep["ipna_form"] = a.ipna_form;
  rep["receptive_field_cones"] = !a.full_patch_forward;
  AttributionResult p;
  if (prune) {
    const auto& scores = a.ranking == "ipna" ? r.ipna[0] : r.conductance;
    auto mask = prune_mask(scores, r.split_shape,
                           {a.prune_percent, -1, a.granularity == "channel" ? Granularity::Channel : Granularity::Neuron});
    AttributionRequest pr = on_path(req, run);  // IG of the pruned model on the same path
    pr.integrated_gradients = true;
    pr.conductance = false;
    pr.boxes.clear();
    pr.split_mask = mask;
    Progress bar2("IG of the pruned model", !a.quiet);
    pr.progress = std::ref(bar2);
    p = engine.run(x, x0, pr);
    write_npy(out.path("ig_pruned.npy"), p.ig, dims(p.input_shape));
    write_npy(out.path("prune_mask.npy"), mask, dims(p.split_shape));
    const int64_t pruned = std::count(mask.begin(), mask.end(), 0.0);
    json pj = {{"percent", a.prune_percent}, {"ranking", a.ranking}, {"granularity", a.granularity},
               {"pruned_neurons", pruned}, {"confidence", p.f_input}, {"ig_sum", p.ig_sum},
               {"completeness_gap", p.ig_gap}};
    if (!boxes.empty()) {
      const double inside = sum_in_box(p.ig, p.input_shape, boxes[0]);
      pj["ig_inside"] = inside;
      pj["ig_outside"] = p.ig_sum - inside;
    }
    rep["pruned"] = pj;
    rep["seconds"]["pruned_ig"] = p.seconds;
  }

  // Pictures (SPEC.md "Drawing IG"); the pruned maps use the unpruned thresholds.
  json files = json::array();
  if (req.integrated_gradients && drawable(in_shape)) {
    const Image* bg = have_image ? &crop : nullptr;
    Image boxed = have_image ? with_boxes(crop, boxes) : Image();
    const render::IgScale scale = render::ig_scale(r.ig, in_shape);
    rep["ig_scale"] = {{"positive", {scale.pos_low, scale.pos_high}}, {"negative", {scale.neg_low, scale.neg_high}}};
    auto save = [&](const std::string& name, const Image& img) {
      write_png(out.path(name), img);
      files.push_back(name);
    };
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
    if (prune) {
      render::IgPictures pg = render::draw_ig(p.ig, in_shape, scale, bg);
      render::IgPictures pg_box = render::draw_ig(p.ig, in_shape, scale, have_image ? &boxed : nullptr);
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
  if (!a.grid.empty() && r.split_shape.rank() == 3) {
    // Which patch drives which channel: per channel, the grid of its IPNA sums over the channel's
    // plane, for the channels with the largest total over the grid.
    const auto [rows, cols] = parse_grid(a.grid);
    const int64_t channels = r.split_shape.channels(), plane = r.split_shape.plane();
    std::vector<std::vector<double>> cell(channels, std::vector<double>(static_cast<size_t>(rows) * cols, 0.0));
    std::vector<double> total(channels, 0.0);
    for (int64_t ch = 0; ch < channels; ++ch)
      for (int g = 0; g < rows * cols; ++g) {
        const auto& map = r.ipna[grid_first + g];
        for (int64_t p = 0; p < plane; ++p) cell[ch][g] += map[ch * plane + p];
        total[ch] += cell[ch][g];
      }
    std::vector<int64_t> order(channels);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int64_t p, int64_t q) { return total[p] > total[q]; });
    order.resize(std::min<int64_t>(channels, 8));
    double scale = 0;
    for (int64_t ch : order)
      for (double v : cell[ch]) scale = std::max(scale, std::abs(v));
    std::vector<Image> panels;
    std::vector<std::string> captions;
    const int px = std::max(8, 160 / std::max(rows, cols));
    for (int64_t ch : order) {
      panels.push_back(render::heatmap(cell[ch], rows, cols, px, scale));
      char cap[64];
      std::snprintf(cap, sizeof cap, "channel %lld: %.3g", static_cast<long long>(ch), total[ch]);
      captions.push_back(cap);
    }
    write_png(out.path("grid_channels.png"), render::grid(panels, captions, 4));
    files.push_back("grid_channels.png");
    rep["grid"]["top_channels"] = order;
  }
  rep["files"] = files;
  write_text(out.path("report.json"), rep.dump(1) + "\n");
  out.commit();
  return rep;
}

json run_curve(const CurveArgs& a) {
  const AttributeArgs& b = a.base;
  OutputDir out(b.out, b.overwrite);
  SplitModel model = b.model.load();
  const Shape in_shape = model.input_shape();
  std::vector<double> x, x0;
  a.base.input.load(in_shape, x, x0, nullptr);
  const std::vector<Box> boxes = parse_boxes(b.boxes);
  if (boxes.size() != 1) throw Error("curve needs exactly one --box");
  if (!b.grid.empty()) throw UsageError("--grid: curve prunes by one box's IPNA; give one --box");
  if (a.fractions.empty()) throw Error("--fractions is empty");
  for (double f : a.fractions)
    if (!(f >= 0 && f <= 1)) throw Error("--fractions must lie in [0, 1], got " + std::to_string(f));

  Attributor engine(model, b.model.prec(), b.model.device);
  AttributionRequest req = base_request(b, boxes);
  req.integrated_gradients = true;
  req.conductance = true;
  Progress bar0("IPNA and conductance", !b.quiet);
  req.progress = std::ref(bar0);
  const StepRun run = run_steps(engine, x, x0, req, b.steps.plan());
  const AttributionResult& r = run.result;

  AttributionRequest ig_req = on_path(req, run);
  ig_req.conductance = false;
  ig_req.boxes.clear();
  ig_req.progress = [](int, int) { check_interrupt(); };
  const int total = static_cast<int>(2 * a.fractions.size());
  Progress bar("pruning levels", !b.quiet);
  std::string csv = "fraction,ranking,pruned_neurons,confidence,ig_inside,ig_outside,ig_total\n";
  json rows = json::array();
  std::vector<render::Panel> panels;
  int done = 0;
  for (const std::string ranking : {"ipna", "conductance"}) {
    const auto& scores = ranking == "ipna" ? r.ipna[0] : r.conductance;
    render::Series in{"sum IG, inside", {}, {}, {}, render::kBlue}, outside{"sum IG, outside", {}, {}, {}, render::kOrange},
        all{"sum IG, all", {}, {}, {}, render::kGold};
    for (double f : a.fractions) {
      ig_req.split_mask = prune_mask(scores, r.split_shape, {f * 100, -1, Granularity::Neuron});
      AttributionResult p = engine.run(x, x0, ig_req);
      const double inside = sum_in_box(p.ig, in_shape, boxes[0]);
      const int64_t pruned = std::count(ig_req.split_mask.begin(), ig_req.split_mask.end(), 0.0);
      char line[256];
      std::snprintf(line, sizeof line, "%.6g,%s,%lld,%.9g,%.9g,%.9g,%.9g\n", f, ranking.c_str(),
                    static_cast<long long>(pruned), p.f_input, inside, p.ig_sum - inside, p.ig_sum);
      csv += line;
      rows.push_back({{"fraction", f}, {"ranking", ranking}, {"pruned_neurons", pruned}, {"confidence", p.f_input},
                      {"ig_inside", inside}, {"ig_outside", p.ig_sum - inside}, {"ig_total", p.ig_sum}});
      for (auto* s : {&in, &outside, &all}) s->x.push_back(f);
      in.y.push_back(inside);
      outside.y.push_back(p.ig_sum - inside);
      all.y.push_back(p.ig_sum);
      bar(++done, total);
    }
    panels.push_back({ranking == "ipna" ? "Pruned by IPNA (IG inside box)" : "Pruned by conductance (IG global)",
                      "proportion of pruned neurons", "IG", {in, outside, all}});
  }
  write_text(out.path("curve.csv"), csv);
  write_png(out.path("curve.png"), render::plot(panels));
  json rep = {{"model", b.model.files}, {"split", model.split_name}, {"class", b.cls}, {"steps", run.steps},
              {"step_control", run.report},
              {"box", box_json(boxes[0])}, {"confidence", r.f_input}, {"ig_sum", r.ig_sum},
              {"ig_inside", r.ig_in_box[0]}, {"rows", rows}, {"files", {"curve.csv", "curve.png"}}};
  write_text(out.path("report.json"), rep.dump(1) + "\n");
  out.commit();
  return rep;
}

json run_class_window(const ClassWindowArgs& a) {
  OutputDir out(a.out, a.overwrite);
  SplitModel model = a.model.load();
  const Shape in_shape = model.input_shape();
  IdxDataset ds = read_idx_dataset(a.data, "test");
  const int rows = ds.images.rows, cols = ds.images.cols, per = rows * cols;
  if (in_shape != Shape{1, rows, cols})
    throw Error("the model takes " + in_shape.str() + ", the dataset has 1x" + std::to_string(rows) + "x" +
                std::to_string(cols) + " images");
  const int classes = model.num_classes();
  if (a.cls < 0 || a.cls >= classes)
    throw Error("class " + std::to_string(a.cls) + " is out of range: the model has " + std::to_string(classes) + " outputs");
  if (a.window.size() != 4) throw Error("--window takes four numbers: X1 Y1 X2 Y2");
  const Box win{a.window[0], a.window[1], a.window[2], a.window[3]};
  if (win.r0 < 0 || win.c0 < 0 || win.r1 > rows || win.c1 > cols || win.r0 >= win.r1 || win.c0 >= win.c1)
    throw Error("--window must satisfy 0 <= X1 < X2 <= " + std::to_string(rows) + " and 0 <= Y1 < Y2 <= " +
                std::to_string(cols));
  if (a.images < 1) throw Error("--images must be at least 1");
  a.steps.check();
  if (a.random_draws < 0) throw Error("--random-draws must be >= 0");
  const int64_t units = model.split_shape().numel();
  if (a.k_max < 0 || a.k_max > units)
    throw Error("--k-max must be in [0, " + std::to_string(units) + "] (the split tensor's neurons)");

  // The class's test images: the first N for attribution, all for accuracy.
  std::vector<double> all_x;
  for (int i = 0; i < ds.images.count; ++i)
    if (ds.labels[i] == a.cls)
      for (int j = 0; j < per; ++j) all_x.push_back(ds.images.pixels[static_cast<size_t>(i) * per + j] / 255.0);
  const int n_class = static_cast<int>(all_x.size() / per);
  const int n = std::min(a.images, n_class);
  if (n == 0) throw Error("the dataset has no test images of class " + std::to_string(a.cls));
  auto image = [&](int i) { return std::vector<double>(all_x.begin() + i * per, all_x.begin() + (i + 1) * per); };
  const std::vector<double> x0(per, 0.0);  // black

  Attributor engine(model, a.model.prec(), a.model.device);
  AttributionRequest req;
  req.target_class = a.cls;
  req.target = target_of(a.target);
  req.integrated_gradients = true;
  req.conductance = true;
  req.boxes = {win};
  req.ipna_form = ipna_form_of(a.ipna_form);
  req.progress = [](int, int) { check_interrupt(); };
  const int k_levels = a.k_max + 1, rankings = 2 + a.random_draws;
  const int total = n + k_levels * rankings * n;
  Progress bar("class-window", !a.quiet);
  int done = 0;
  std::vector<double> avg_ipna(units, 0.0), avg_cond(units, 0.0);
  std::vector<StepRun> paths;  // each image's path, for IG of the pruned models
  json step_reports = json::array();
  for (int i = 0; i < n; ++i) {
    StepRun run = run_steps(engine, image(i), x0, req, a.steps.plan());
    const AttributionResult r = std::move(run.result);
    step_reports.push_back(run.report);
    paths.push_back(std::move(run));
    for (int64_t j = 0; j < units; ++j) {
      avg_ipna[j] += r.ipna[0][j] / n;
      avg_cond[j] += r.conductance[j] / n;
    }
    bar(++done, total);
  }
  // Rankings: IPNA, conductance, and random orders.
  std::vector<std::vector<int64_t>> orders;
  auto by_score = [&](const std::vector<double>& s) {
    std::vector<int64_t> o(units);
    std::iota(o.begin(), o.end(), 0);
    std::stable_sort(o.begin(), o.end(), [&](int64_t p, int64_t q) { return s[p] > s[q]; });
    return o;
  };
  orders.push_back(by_score(avg_ipna));
  orders.push_back(by_score(avg_cond));
  std::mt19937 rng(a.seed);
  for (int d = 0; d < a.random_draws; ++d) {
    std::vector<int64_t> o(units);
    std::iota(o.begin(), o.end(), 0);
    std::shuffle(o.begin(), o.end(), rng);
    orders.push_back(o);
  }
  // For each k and ranking: mean IG inside/outside over the N images, class accuracy over all its images.
  struct Level {
    double inside, outside, accuracy;
  };
  std::vector<std::vector<Level>> levels(orders.size(), std::vector<Level>(k_levels));
  AttributionRequest ig_req = req;
  ig_req.conductance = false;
  ig_req.boxes.clear();
  for (size_t o = 0; o < orders.size(); ++o)
    for (int k = 0; k < k_levels; ++k) {
      if (k == 0 && o > 0) {  // nothing pruned: the same for every ranking
        levels[o][0] = levels[0][0];
        done += n;
        continue;
      }
      std::vector<double> mask(units, 1.0);
      for (int i = 0; i < k; ++i) mask[orders[o][i]] = 0.0;
      ig_req.split_mask = mask;
      Level lv{0, 0, 0};
      for (int i = 0; i < n; ++i) {
        AttributionResult p = engine.run(image(i), x0, on_path(ig_req, paths[i]));
        const double inside = sum_in_box(p.ig, in_shape, win);
        lv.inside += inside / n;
        lv.outside += (p.ig_sum - inside) / n;
        bar(++done, total);
      }
      std::vector<double> z = engine.logits(all_x, mask, n_class);
      int right = 0;
      for (int i = 0; i < n_class; ++i)
        right += std::max_element(z.begin() + i * classes, z.begin() + (i + 1) * classes) - (z.begin() + i * classes) == a.cls;
      lv.accuracy = static_cast<double>(right) / n_class;
      levels[o][k] = lv;
    }
  // Table: IPNA, conductance, random mean and spread (standard deviation over draws).
  auto random_stat = [&](int k, double Level::*f) {
    double m = 0, v = 0;
    const int R = a.random_draws;
    if (!R) return std::pair<double, double>{NAN, NAN};
    for (int d = 0; d < R; ++d) m += levels[2 + d][k].*f / R;
    for (int d = 0; d < R; ++d) v += std::pow(levels[2 + d][k].*f - m, 2) / std::max(1, R - 1);
    return std::pair<double, double>{m, std::sqrt(v)};
  };
  std::string csv =
      "k,ipna_ig_inside,ipna_ig_outside,ipna_accuracy,cond_ig_inside,cond_ig_outside,cond_accuracy,"
      "random_ig_inside,random_ig_inside_std,random_ig_outside,random_ig_outside_std,random_accuracy,random_accuracy_std\n";
  json table = json::array();
  render::Panel p_in{"IG inside the window", "neurons pruned (k)", "mean IG", {}},
      p_out{"IG outside the window", "neurons pruned (k)", "mean IG", {}},
      p_acc{"class accuracy", "neurons pruned (k)", "accuracy", {}};
  render::Series s[3][3];  // [panel][ranking]
  const char* names[3] = {"IPNA ranking", "conductance ranking", "random (mean, +-1 std)"};
  const render::Rgb colors[3] = {render::kBlue, render::kOrange, render::kGray};
  for (int pnl = 0; pnl < 3; ++pnl)
    for (int rk = 0; rk < 3; ++rk) s[pnl][rk] = {names[rk], {}, {}, {}, colors[rk]};
  for (int k = 0; k < k_levels; ++k) {
    const Level &ip = levels[0][k], &co = levels[1][k];
    auto [ri, ris] = random_stat(k, &Level::inside);
    auto [ro, ros] = random_stat(k, &Level::outside);
    auto [ra, ras] = random_stat(k, &Level::accuracy);
    char line[512];
    std::snprintf(line, sizeof line, "%d,%.9g,%.9g,%.6g,%.9g,%.9g,%.6g,%.9g,%.9g,%.9g,%.9g,%.6g,%.6g\n", k, ip.inside,
                  ip.outside, ip.accuracy, co.inside, co.outside, co.accuracy, ri, ris, ro, ros, ra, ras);
    csv += line;
    table.push_back({{"k", k},
                     {"ipna", {{"ig_inside", ip.inside}, {"ig_outside", ip.outside}, {"accuracy", ip.accuracy}}},
                     {"conductance", {{"ig_inside", co.inside}, {"ig_outside", co.outside}, {"accuracy", co.accuracy}}},
                     {"random", {{"ig_inside", ri}, {"ig_inside_std", ris}, {"ig_outside", ro}, {"ig_outside_std", ros},
                                 {"accuracy", ra}, {"accuracy_std", ras}}}});
    const double vals[3][3] = {{ip.inside, co.inside, ri}, {ip.outside, co.outside, ro}, {ip.accuracy, co.accuracy, ra}};
    const double spreads[3] = {ris, ros, ras};
    for (int pnl = 0; pnl < 3; ++pnl)
      for (int rk = 0; rk < (a.random_draws ? 3 : 2); ++rk) {
        s[pnl][rk].x.push_back(k);
        s[pnl][rk].y.push_back(vals[pnl][rk]);
        if (rk == 2) s[pnl][rk].spread.push_back(spreads[pnl]);
      }
  }
  for (int rk = 0; rk < (a.random_draws ? 3 : 2); ++rk) {
    p_in.series.push_back(s[0][rk]);
    p_out.series.push_back(s[1][rk]);
    p_acc.series.push_back(s[2][rk]);
  }
  write_text(out.path("class_window.csv"), csv);
  write_png(out.path("class_window.png"), render::plot({p_in, p_out, p_acc}, 360, 280));
  write_npy(out.path("avg_ipna.npy"), avg_ipna, dims(model.split_shape()));
  write_npy(out.path("avg_conductance.npy"), avg_cond, dims(model.split_shape()));
  {
    Image ex;
    ex.width = cols;
    ex.height = rows;
    ex.channels = 3;
    for (int j = 0; j < per; ++j)
      for (int c = 0; c < 3; ++c) ex.pixels.push_back(static_cast<uint8_t>(std::lround(all_x[j] * 255)));
    Image big = render::upscale(ex, 8);
    render::draw_box(big, {win.r0 * 8, win.c0 * 8, win.r1 * 8, win.c1 * 8}, render::kYellow);
    write_png(out.path("window_example.png"), big);
  }
  json rep = {{"model", a.model.files}, {"split", model.split_name}, {"class", a.cls}, {"images", n},
              {"class_test_images", n_class}, {"window", box_json(win)}, {"steps", a.steps.steps},
              {"step_control", step_reports}, {"k_max", a.k_max},
              {"random_draws", a.random_draws}, {"seed", a.seed}, {"table", table},
              {"files", {"class_window.csv", "class_window.png", "avg_ipna.npy", "avg_conductance.npy",
                         "window_example.png"}}};
  write_text(out.path("report.json"), rep.dump(1) + "\n");
  out.commit();
  return rep;
}

}  // namespace ipna::cli
