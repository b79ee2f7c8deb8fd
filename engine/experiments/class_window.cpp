#include "engine/experiments/class_window.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "engine/error.h"
#include "engine/experiments/attribute.h"

namespace ipna {

using nlohmann::json;

ClassWindowResult class_window(Attributor& engine, const IdxDataset& ds, const ClassWindowSpec& a) {
  const SplitModel& model = engine.model();
  const Shape in_shape = model.input_shape();
  const int rows = ds.images.rows, cols = ds.images.cols, per = rows * cols;
  if (in_shape != Shape{1, rows, cols})
    throw Error("the model takes " + in_shape.str() + ", the dataset has 1x" + std::to_string(rows) + "x" +
                std::to_string(cols) + " images");
  const int classes = model.num_classes();
  if (a.cls < 0 || a.cls >= classes)
    throw Error("class " + std::to_string(a.cls) + " is out of range: the model has " + std::to_string(classes) + " outputs");
  const Box& win = a.window;
  if (win.r0 < 0 || win.c0 < 0 || win.r1 > rows || win.c1 > cols || win.r0 >= win.r1 || win.c0 >= win.c1)
    throw Error("the window must satisfy 0 <= X1 < X2 <= " + std::to_string(rows) + " and 0 <= Y1 < Y2 <= " +
                std::to_string(cols));
  if (a.images < 1) throw Error("the number of images must be at least 1");
  a.steps.check();
  if (a.random_draws < 0) throw Error("the number of random draws must be >= 0");
  const int64_t units = model.split_shape().numel();
  if (a.k_max < 0 || a.k_max > units)
    throw Error("the most units to prune must be in [0, " + std::to_string(units) + "] (the split tensor's neurons)");

  ClassWindowResult out;
  out.spec = a;
  out.spec.progress = nullptr;
  out.spec.interrupt_check = nullptr;
  out.split_shape = model.split_shape();
  out.rows = rows;
  out.cols = cols;
  // The class's test images: the first N for attribution, all for accuracy.
  std::vector<double> all_x;
  for (int i = 0; i < ds.images.count; ++i)
    if (ds.labels[i] == a.cls)
      for (int j = 0; j < per; ++j) all_x.push_back(ds.images.pixels[static_cast<size_t>(i) * per + j] / 255.0);
  const int n_class = static_cast<int>(all_x.size() / per);
  const int n = std::min(a.images, n_class);
  if (n == 0) throw Error("the dataset has no test images of class " + std::to_string(a.cls));
  out.images = n;
  out.class_test_images = n_class;
  out.first_image.assign(all_x.begin(), all_x.begin() + per);
  auto image = [&](int i) { return std::vector<double>(all_x.begin() + i * per, all_x.begin() + (i + 1) * per); };
  const std::vector<double> x0(per, 0.0);  // black

  AttributionRequest req;
  req.target_class = a.cls;
  req.target = a.target;
  req.integrated_gradients = true;
  req.conductance = true;
  req.boxes = {win};
  req.ipna_form = a.ipna_form;
  if (a.interrupt_check) req.progress = [&](int, int) { a.interrupt_check(); };
  const int k_levels = a.k_max + 1, rankings = 2 + a.random_draws;
  const int total = n + k_levels * rankings * n;
  int done = 0;
  auto tick = [&] {
    ++done;
    if (a.progress) a.progress(done, total);
  };
  out.avg_ipna.assign(units, 0.0);
  out.avg_conductance.assign(units, 0.0);
  std::vector<StepRun> paths;  // each image's path, for IG of the pruned models
  for (int i = 0; i < n; ++i) {
    StepRun run = run_steps(engine, image(i), x0, req, a.steps);
    const AttributionResult r = std::move(run.result);
    out.step_reports.push_back(run.report);
    paths.push_back(std::move(run));
    for (int64_t j = 0; j < units; ++j) {
      out.avg_ipna[j] += r.ipna[0][j] / n;
      out.avg_conductance[j] += r.conductance[j] / n;
    }
    tick();
  }
  // Rankings: IPNA, conductance, and random orders.
  std::vector<std::vector<int64_t>> orders;
  auto by_score = [&](const std::vector<double>& s) {
    std::vector<int64_t> o(units);
    std::iota(o.begin(), o.end(), 0);
    std::stable_sort(o.begin(), o.end(), [&](int64_t p, int64_t q) { return s[p] > s[q]; });
    return o;
  };
  orders.push_back(by_score(out.avg_ipna));
  orders.push_back(by_score(out.avg_conductance));
  std::mt19937 rng(a.seed);
  for (int d = 0; d < a.random_draws; ++d) {
    std::vector<int64_t> o(units);
    std::iota(o.begin(), o.end(), 0);
    std::shuffle(o.begin(), o.end(), rng);
    orders.push_back(o);
  }
  out.levels.assign(orders.size(), std::vector<WindowLevel>(k_levels));
  AttributionRequest ig_req = req;
  ig_req.conductance = false;
  ig_req.boxes.clear();
  for (size_t o = 0; o < orders.size(); ++o)
    for (int k = 0; k < k_levels; ++k) {
      if (k == 0 && o > 0) {  // nothing pruned: the same for every ranking
        out.levels[o][0] = out.levels[0][0];
        for (int i = 0; i < n; ++i) tick();
        continue;
      }
      std::vector<double> mask(units, 1.0);
      for (int i = 0; i < k; ++i) mask[orders[o][i]] = 0.0;
      ig_req.split_mask = mask;
      WindowLevel lv;
      for (int i = 0; i < n; ++i) {
        AttributionResult p = engine.run(image(i), x0, on_path(ig_req, paths[i]));
        const double inside = sum_in_box(p.ig, in_shape, win);
        lv.ig_inside += inside / n;
        lv.ig_outside += (p.ig_sum - inside) / n;
        tick();
      }
      std::vector<double> z = engine.logits(all_x, mask, n_class);
      int right = 0;
      for (int i = 0; i < n_class; ++i)
        right += std::max_element(z.begin() + i * classes, z.begin() + (i + 1) * classes) - (z.begin() + i * classes) == a.cls;
      lv.accuracy = static_cast<double>(right) / n_class;
      out.levels[o][k] = lv;
    }
  return out;
}

MeanSpread ClassWindowResult::random(int k, double WindowLevel::*f) const {
  const int R = spec.random_draws;
  MeanSpread s;
  if (!R) return s;
  s.mean = 0;
  for (int d = 0; d < R; ++d) s.mean += levels[2 + d][k].*f / R;
  double v = 0;
  for (int d = 0; d < R; ++d) v += std::pow(levels[2 + d][k].*f - s.mean, 2) / std::max(1, R - 1);
  s.std = std::sqrt(v);
  return s;
}

json ClassWindowResult::to_json() const {
  json table = json::array();
  for (int k = 0; k <= spec.k_max; ++k) {
    const WindowLevel &ip = levels[0][k], &co = levels[1][k];
    const MeanSpread ri = random(k, &WindowLevel::ig_inside), ro = random(k, &WindowLevel::ig_outside),
                     ra = random(k, &WindowLevel::accuracy);
    table.push_back({{"k", k},
                     {"ipna", {{"ig_inside", ip.ig_inside}, {"ig_outside", ip.ig_outside}, {"accuracy", ip.accuracy}}},
                     {"conductance", {{"ig_inside", co.ig_inside}, {"ig_outside", co.ig_outside}, {"accuracy", co.accuracy}}},
                     {"random", {{"ig_inside", ri.mean}, {"ig_inside_std", ri.std}, {"ig_outside", ro.mean},
                                 {"ig_outside_std", ro.std}, {"accuracy", ra.mean}, {"accuracy_std", ra.std}}}});
  }
  const Box& w = spec.window;
  return {{"class", spec.cls}, {"images", images}, {"class_test_images", class_test_images},
          {"window", json::array({w.r0, w.c0, w.r1, w.c1})}, {"step_control", step_reports},
          {"k_max", spec.k_max}, {"random_draws", spec.random_draws}, {"seed", spec.seed},
          {"ipna_form", ipna_form_name(spec.ipna_form)}, {"target", target_name(spec.target)}, {"table", table}};
}

std::string ClassWindowResult::to_csv() const {
  std::string csv =
      "k,ipna_ig_inside,ipna_ig_outside,ipna_accuracy,cond_ig_inside,cond_ig_outside,cond_accuracy,"
      "random_ig_inside,random_ig_inside_std,random_ig_outside,random_ig_outside_std,random_accuracy,random_accuracy_std\n";
  for (int k = 0; k <= spec.k_max; ++k) {
    const WindowLevel &ip = levels[0][k], &co = levels[1][k];
    const MeanSpread ri = random(k, &WindowLevel::ig_inside), ro = random(k, &WindowLevel::ig_outside),
                     ra = random(k, &WindowLevel::accuracy);
    char line[512];
    std::snprintf(line, sizeof line, "%d,%.9g,%.9g,%.6g,%.9g,%.9g,%.6g,%.9g,%.9g,%.9g,%.9g,%.6g,%.6g\n", k,
                  ip.ig_inside, ip.ig_outside, ip.accuracy, co.ig_inside, co.ig_outside, co.accuracy, ri.mean, ri.std,
                  ro.mean, ro.std, ra.mean, ra.std);
    csv += line;
  }
  return csv;
}

}  // namespace ipna
