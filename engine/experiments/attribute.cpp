#include "engine/experiments/attribute.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "engine/error.h"

namespace ipna {

using nlohmann::json;

const char* ranking_name(Ranking r) { return r == Ranking::Ipna ? "ipna" : "conductance"; }
const char* target_name(TargetKind t) { return t == TargetKind::Logit ? "logit" : "prob"; }
const char* ipna_form_name(IpnaForm f) { return f == IpnaForm::Tangent ? "tangent" : "difference"; }

namespace {
json box_json(const Box& b) { return json::array({b.r0, b.c0, b.r1, b.c1}); }

AttributionRequest request_of(const AttributeSpec& s, const std::vector<Box>& boxes) {
  AttributionRequest req;
  req.target_class = s.target_class;
  req.target = s.target;
  req.chunk = s.chunk;
  req.memory_budget = s.memory_budget;
  req.boxes = boxes;
  req.ipna_form = s.ipna_form;
  req.receptive_field_cones = s.receptive_field_cones;
  req.box_batch = s.box_batch;
  req.progress = s.progress;
  return req;
}

GridSummary summarise_grid(const AttributeSpec& s, const AttributionResult& r, int first) {
  GridSummary g;
  g.rows = s.grid_rows;
  g.cols = s.grid_cols;
  g.first_box = first;
  // In tangent form the IPNA sums add up to IG's total exactly, and neuron by neuron equal any
  // other partition's; in difference form they approach conductance as m grows.
  std::vector<double> sum(r.ipna[first].size(), 0.0);
  for (size_t b = first; b < r.ipna.size(); ++b) {
    g.ipna_total += r.ipna_sum[b];
    for (size_t j = 0; j < sum.size(); ++j) sum[j] += r.ipna[b][j];
  }
  if (!r.ig.empty()) g.ipna_total_minus_ig_total = g.ipna_total - r.ig_sum;
  if (!r.conductance.empty()) {
    double num = 0, den = 0;
    for (size_t j = 0; j < sum.size(); ++j) {
      num += (sum[j] - r.conductance[j]) * (sum[j] - r.conductance[j]);
      den += r.conductance[j] * r.conductance[j];
    }
    g.neuronwise_distance_to_conductance = den > 0 ? std::sqrt(num / den) : 0.0;
  }
  if (r.split_shape.rank() == 3) {
    const int64_t channels = r.split_shape.channels(), plane = r.split_shape.plane();
    const int cells = g.rows * g.cols;
    g.channel_cells.assign(channels, std::vector<double>(cells, 0.0));
    g.channel_totals.assign(channels, 0.0);
    for (int64_t ch = 0; ch < channels; ++ch)
      for (int c = 0; c < cells; ++c) {
        const auto& map = r.ipna[first + c];
        for (int64_t p = 0; p < plane; ++p) g.channel_cells[ch][c] += map[ch * plane + p];
        g.channel_totals[ch] += g.channel_cells[ch][c];
      }
    g.top_channels.resize(channels);
    std::iota(g.top_channels.begin(), g.top_channels.end(), 0);
    std::stable_sort(g.top_channels.begin(), g.top_channels.end(),
                     [&](int64_t p, int64_t q) { return g.channel_totals[p] > g.channel_totals[q]; });
    g.top_channels.resize(std::min<int64_t>(channels, 8));
  }
  return g;
}
}  // namespace

std::vector<Box> AttributeSpec::all_boxes(const Shape& in) const {
  std::vector<Box> out = boxes;
  if (grid_rows > 0 || grid_cols > 0) {
    if (in.rank() != 3) throw Error("a grid of boxes needs an image input (C,H,W); the model input is " + in.str());
    const auto g = grid_boxes(static_cast<int>(in.height()), static_cast<int>(in.width()), grid_rows, grid_cols);
    out.insert(out.end(), g.begin(), g.end());
  }
  return out;
}

void AttributeSpec::check(const Shape& in) const {
  steps.check();
  if (prune_percent > 100) throw Error("the prune percent must be in [0, 100], got " + std::to_string(prune_percent));
  if (prune_percent >= 0 && ranking == Ranking::Ipna && all_boxes(in).empty())
    throw Error("pruning by the IPNA ranking needs a box (or rank by conductance)");
}

AttributeResult attribute(Attributor& engine, const std::vector<double>& x, const std::vector<double>& x0,
                          const AttributeSpec& spec) {
  const Shape in = engine.model().input_shape();
  spec.check(in);
  AttributeResult out;
  out.spec = spec;
  out.spec.progress = out.spec.pruned_progress = nullptr;
  out.boxes = spec.all_boxes(in);
  const bool prune = spec.prune_percent >= 0;
  AttributionRequest req = request_of(spec, out.boxes);
  req.integrated_gradients = spec.integrated_gradients || prune;
  req.conductance = spec.conductance || (prune && spec.ranking == Ranking::Conductance);
  out.run = run_steps(engine, x, x0, req, spec.steps);
  const AttributionResult& r = out.run.result;
  if (spec.grid_rows > 0) out.grid = summarise_grid(spec, r, static_cast<int>(spec.boxes.size()));
  if (prune) {
    PrunedRun p;
    const auto& scores = spec.ranking == Ranking::Ipna ? r.ipna[0] : r.conductance;
    p.mask = prune_mask(scores, r.split_shape, {spec.prune_percent, -1, spec.granularity});
    AttributionRequest pr = on_path(req, out.run);  // IG of the pruned model on the same path
    pr.integrated_gradients = true;
    pr.conductance = false;
    pr.boxes.clear();
    pr.split_mask = p.mask;
    pr.progress = spec.pruned_progress;
    p.result = engine.run(x, x0, pr);
    p.pruned_units = std::count(p.mask.begin(), p.mask.end(), 0.0);
    if (!out.boxes.empty()) p.ig_inside = sum_in_box(p.result.ig, p.result.input_shape, out.boxes[0]);
    out.pruned = std::move(p);
  }
  return out;
}

json AttributeResult::to_json() const {
  const AttributionResult& r = run.result;
  const bool ig = !r.ig.empty(), cond = !r.conductance.empty();
  json rep = {{"split_shape", r.split_shape.dims}, {"class", spec.target_class}, {"target", target_name(spec.target)},
              {"steps", run.steps}, {"step_control", run.report}, {"confidence", r.f_input},
              {"F_baseline", r.f_baseline}, {"chunk", r.chunk}, {"workspace_bytes", r.workspace_bytes},
              {"seconds", {{"attribution", r.seconds}}}, {"ipna_form", ipna_form_name(spec.ipna_form)},
              {"receptive_field_cones", spec.receptive_field_cones}};
  if (!boxes.empty()) rep["patch_passes"] = r.patch_passes;
  if (ig && spec.integrated_gradients) rep["ig"] = {{"sum", r.ig_sum}, {"completeness_gap", r.ig_gap}};
  if (cond && spec.conductance)
    rep["conductance"] = {{"sum", r.conductance_sum}, {"completeness_gap", r.conductance_gap}};
  if (!boxes.empty()) {
    rep["boxes"] = json::array();
    for (size_t b = 0; b < boxes.size(); ++b) {
      json j = {{"box", box_json(boxes[b])}, {"ipna_sum", r.ipna_sum[b]}};
      if (ig) {
        j["ig_inside"] = r.ig_in_box[b];
        j["ig_outside"] = r.ig_sum - r.ig_in_box[b];
        j["patch_completeness_gap"] = r.ipna_gap[b];
      }
      rep["boxes"].push_back(j);
    }
  }
  if (grid) {
    json gj = {{"rows", grid->rows}, {"cols", grid->cols}, {"first_box", grid->first_box},
               {"ipna_total", grid->ipna_total}};
    if (std::isfinite(grid->ipna_total_minus_ig_total)) gj["ipna_total_minus_ig_total"] = grid->ipna_total_minus_ig_total;
    if (std::isfinite(grid->neuronwise_distance_to_conductance))
      gj["neuronwise_distance_to_conductance"] = grid->neuronwise_distance_to_conductance;
    if (!grid->top_channels.empty()) gj["top_channels"] = grid->top_channels;
    rep["grid"] = gj;
  }
  if (pruned) {
    const AttributionResult& p = pruned->result;
    json pj = {{"percent", spec.prune_percent}, {"ranking", ranking_name(spec.ranking)},
               {"granularity", spec.granularity == Granularity::Channel ? "channel" : "neuron"},
               {"pruned_neurons", pruned->pruned_units}, {"confidence", p.f_input}, {"ig_sum", p.ig_sum},
               {"completeness_gap", p.ig_gap}};
    if (std::isfinite(pruned->ig_inside)) {
      pj["ig_inside"] = pruned->ig_inside;
      pj["ig_outside"] = p.ig_sum - pruned->ig_inside;
    }
    rep["pruned"] = pj;
    rep["seconds"]["pruned_ig"] = p.seconds;
  }
  return rep;
}

CurveResult pruning_curve(Attributor& engine, const std::vector<double>& x, const std::vector<double>& x0,
                          AttributeSpec spec, const std::vector<double>& fractions,
                          const std::function<void(int, int)>& level_progress) {
  const Shape in = engine.model().input_shape();
  if (spec.boxes.size() != 1 || spec.grid_rows > 0)
    throw Error("the pruning curve ranks by one box's IPNA: give exactly one box and no grid");
  if (fractions.empty()) throw Error("the pruning curve needs at least one fraction");
  for (double f : fractions)
    if (!(f >= 0 && f <= 1)) throw Error("pruning fractions must lie in [0, 1], got " + std::to_string(f));
  spec.steps.check();
  CurveResult out;
  out.box = spec.boxes[0];
  AttributionRequest req = request_of(spec, spec.boxes);
  req.integrated_gradients = true;
  req.conductance = true;
  out.run = run_steps(engine, x, x0, req, spec.steps);
  const AttributionResult& r = out.run.result;
  AttributionRequest ig_req = on_path(req, out.run);
  ig_req.conductance = false;
  ig_req.boxes.clear();
  const int total = static_cast<int>(2 * fractions.size());
  int done = 0;
  for (Ranking ranking : {Ranking::Ipna, Ranking::Conductance}) {
    const auto& scores = ranking == Ranking::Ipna ? r.ipna[0] : r.conductance;
    for (double f : fractions) {
      ig_req.split_mask = prune_mask(scores, r.split_shape, {f * 100, -1, Granularity::Neuron});
      const AttributionResult p = engine.run(x, x0, ig_req);
      CurveRow row;
      row.fraction = f;
      row.ranking = ranking;
      row.pruned_units = std::count(ig_req.split_mask.begin(), ig_req.split_mask.end(), 0.0);
      row.confidence = p.f_input;
      row.ig_inside = sum_in_box(p.ig, in, out.box);
      row.ig_outside = p.ig_sum - row.ig_inside;
      row.ig_total = p.ig_sum;
      out.rows.push_back(row);
      if (level_progress) level_progress(++done, total);
    }
  }
  return out;
}

json CurveResult::to_json() const {
  const AttributionResult& r = run.result;
  json rows_j = json::array();
  for (const CurveRow& w : rows)
    rows_j.push_back({{"fraction", w.fraction}, {"ranking", ranking_name(w.ranking)},
                      {"pruned_neurons", w.pruned_units}, {"confidence", w.confidence}, {"ig_inside", w.ig_inside},
                      {"ig_outside", w.ig_outside}, {"ig_total", w.ig_total}});
  return {{"steps", run.steps}, {"step_control", run.report}, {"box", box_json(box)}, {"confidence", r.f_input},
          {"ig_sum", r.ig_sum}, {"ig_inside", r.ig_in_box[0]}, {"rows", rows_j}};
}

std::string CurveResult::to_csv() const {
  std::string csv = "fraction,ranking,pruned_neurons,confidence,ig_inside,ig_outside,ig_total\n";
  for (const CurveRow& w : rows) {
    char line[256];
    std::snprintf(line, sizeof line, "%.6g,%s,%lld,%.9g,%.9g,%.9g,%.9g\n", w.fraction, ranking_name(w.ranking),
                  static_cast<long long>(w.pruned_units), w.confidence, w.ig_inside, w.ig_outside, w.ig_total);
    csv += line;
  }
  return csv;
}

}  // namespace ipna
