#include "engine/experiments/sweep.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <unistd.h>

#include "engine/device_options.h"
#include "engine/error.h"
#include "loaders/onnx_loader.h"

#ifndef IPNA_VERSION
#define IPNA_VERSION "unknown"
#endif

namespace fs = std::filesystem;
using nlohmann::json;

namespace ipna {

namespace {

constexpr const char* kWorkMarker = ".ipna-fast-sweep";

// FNV-1a over the file: the configuration names the model's content, not just its path.
std::string file_digest(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path + ": cannot read the model file");
  uint64_t h = 1469598103934665603ull;
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    for (std::streamsize i = 0; i < in.gcount(); ++i) h = (h ^ static_cast<unsigned char>(buf[i])) * 1099511628211ull;
  }
  char s[17];
  std::snprintf(s, sizeof s, "%016llx", static_cast<unsigned long long>(h));
  return s;
}

const char* dataset_kind_name(DatasetKind k) {
  return k == DatasetKind::Manifest ? "manifest" : k == DatasetKind::ImageFolder ? "image_folder" : "idx";
}
const char* maps_name(MapStorage m) {
  return m == MapStorage::None ? "none" : m == MapStorage::Float16 ? "float16" : "float32";
}
json box_json(const Box& b) { return json::array({b.r0, b.c0, b.r1, b.c1}); }

Dataset read_dataset(const SweepConfig& c) {
  Dataset d = c.dataset_kind == DatasetKind::Manifest ? read_manifest(c.dataset)
              : c.dataset_kind == DatasetKind::ImageFolder ? read_image_folder(c.dataset)
                                                           : read_idx_items(c.dataset, c.idx_split);
  if (c.limit >= 0 && static_cast<int64_t>(d.items.size()) > c.limit) d.items.resize(c.limit);
  return d;
}

SplitModel load_model(const SweepConfig& c) {
  if (c.model_files.size() == 2) return load_two_part_model(c.model_files[0], c.model_files[1]);
  if (c.model_files.size() != 1) throw Error("a sweep needs one model file (with a split tensor) or two (the parts)");
  if (c.split.empty()) throw Error(c.model_files[0] + ": name the tensor to split the model at");
  return load_split_model(c.model_files[0], c.split);
}

// Where a key of two configurations differs, for errors that say what changed.
std::string first_difference(const json& a, const json& b) {
  for (auto it = a.begin(); it != a.end(); ++it)
    if (!b.contains(it.key()) || b[it.key()] != it.value())
      return it.key() + " (" + it.value().dump() + " vs " + (b.contains(it.key()) ? b[it.key()].dump() : "none") + ")";
  for (auto it = b.begin(); it != b.end(); ++it)
    if (!a.contains(it.key())) return it.key() + " (none vs " + it.value().dump() + ")";
  return "";
}

void write_file_atomically(const fs::path& path, const std::string& text) {
  const fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream f(tmp);
    f << text;
    if (!f) throw Error(tmp.string() + ": cannot write");
  }
  fs::rename(tmp, path);
}

// The working folder's committed batches, in order, checked to follow each other from 0.
struct Batch {
  int64_t start, items, failed;
  fs::path path;
};
std::vector<Batch> committed_batches(const fs::path& work) {
  std::vector<Batch> out;
  for (const auto& e : fs::directory_iterator(work)) {
    const std::string name = e.path().filename();
    if (name.rfind("batch-", 0) != 0) continue;
    if (name.size() < 4 || name.substr(name.size() - 3) != ".h5") {
      fs::remove(e.path());  // a batch that was being written when the run stopped
      continue;
    }
    const SweepFileInfo info = read_sweep_info(e.path());
    out.push_back({std::stoll(name.substr(6)), info.items, info.failed, e.path()});
  }
  std::sort(out.begin(), out.end(), [](const Batch& a, const Batch& b) { return a.start < b.start; });
  int64_t next = 0;
  for (const Batch& b : out) {
    if (b.start != next)
      throw Error(work.string() + ": the committed batches do not follow each other (item " + std::to_string(next) +
                  " is missing); start the sweep over");
    next += b.items;
  }
  return out;
}

void check_box(const Box& b, const Shape& in, const std::string& where) {
  if (in.rank() != 3) throw Error(where + ": boxes need an image input (C,H,W); the model input is " + in.str());
  if (b.r0 < 0 || b.c0 < 0 || b.r1 > in.height() || b.c1 > in.width() || b.r0 >= b.r1 || b.c0 >= b.c1)
    throw Error(where + ": box " + box_json(b).dump() + " is not inside the " + std::to_string(in.height()) + "x" +
                std::to_string(in.width()) + " input (0 <= X1 < X2 <= H, 0 <= Y1 < Y2 <= W)");
}

}  // namespace

std::pair<int, int> parse_shard(const std::string& spec) {
  const std::string usage = "shard: expected I/N with 0 <= I < N (shards are numbered from 0), got '" + spec + "'";
  const size_t slash = spec.find('/');
  if (slash == std::string::npos) throw Error(usage);
  int i = 0, n = 0;
  try {
    i = parse_non_negative(spec.substr(0, slash), "shard");
    n = parse_non_negative(spec.substr(slash + 1), "shard");
  } catch (const Error&) {
    throw Error(usage);
  }
  if (n < 1 || i >= n) throw Error(usage);
  return {i, n};
}

json SweepConfig::describe() const {
  json models = json::array();
  for (const auto& f : model_files) models.push_back({{"file", f}, {"fnv1a64", file_digest(f)}});
  json boxes_j = json::array();
  for (const Box& b : boxes) boxes_j.push_back(box_json(b));
  json steps_j = {{"mode", steps.automatic ? "auto" : "fixed"}, {"schedule", schedule_name(steps.schedule)},
                  {"quadrature", quadrature_name(steps.quadrature)}};
  if (steps.automatic)
    steps_j.update({{"tolerance", steps.tolerance}, {"max_steps", steps.max_steps}});
  else
    steps_j["steps"] = steps.steps;
  return {{"model", models},
          {"split", split},
          {"precision", precision == Precision::F64 ? "f64" : "f32"},
          {"device", device},
          {"dataset", {{"kind", dataset_kind_name(dataset_kind)}, {"path", dataset}, {"idx_split", idx_split},
                       {"limit", limit}}},
          {"class", class_rule == ClassRule::Label ? json("label")
                    : class_rule == ClassRule::Predicted ? json("predicted") : json(fixed_class)},
          {"baseline", baseline},
          {"mean", mean},
          {"std", std},
          {"boxes", boxes_j},
          {"grid", {grid_rows, grid_cols}},
          {"integrated_gradients", integrated_gradients},
          {"conductance", conductance},
          {"ipna_form", ipna_form == IpnaForm::Tangent ? "tangent" : "difference"},
          {"receptive_field_cones", receptive_field_cones},
          {"target", target == TargetKind::Logit ? "logit" : "prob"},
          {"steps", steps_j},
          {"prune_fractions", prune_fractions},
          {"ranking", ranking == Ranking::Ipna ? "ipna" : "conductance"},
          {"maps", maps_name(maps)},
          {"memory_budget", effective_memory_budget()},
          {"chunk", chunk}};
}

void SweepConfig::check() const {
  steps.check();
  if (shard_count < 1 || shard_index < 0 || shard_index >= shard_count)
    throw Error("shard " + std::to_string(shard_index) + "/" + std::to_string(shard_count) +
                ": expected 0 <= I < N");
  if (batch_items < 1) throw Error("items per batch must be at least 1, got " + std::to_string(batch_items));
  if ((grid_rows > 0) != (grid_cols > 0) || grid_rows < 0 || grid_cols < 0)
    throw Error("a grid needs positive rows and columns");
  for (double f : prune_fractions)
    if (!(f >= 0 && f <= 1)) throw Error("pruning fractions must lie in [0, 1], got " + std::to_string(f));
  if (!is_baseline_kind(baseline)) throw Error("baseline: expected black, zeros or a .npy file, got '" + baseline + "'");
  if (class_rule == ClassRule::Fixed && fixed_class < 0) throw Error("the fixed class must be >= 0");
  if (output.empty()) throw Error("the sweep needs an output file");
}

size_t SweepConfig::effective_memory_budget() const {
  if (memory_budget) return memory_budget;
  return parse_device(device).cuda ? kSweepBudgetGpu : kSweepBudgetCpu;
}

json SweepSummary::to_json() const {
  json f = json::array();
  for (const auto& [item, why] : failures) f.push_back({{"item", item}, {"reason", why}});
  return {{"output", output},       {"items", items},
          {"ok", ok},               {"failed", failed},
          {"resumed_items", resumed_items}, {"already_complete", already_complete},
          {"seconds", seconds},     {"items_per_second", items_per_second},
          {"steps_per_second", steps_per_second}, {"evaluations", evaluations},
          {"failures", f}};
}

json MergeSummary::to_json() const {
  return {{"output", output}, {"items", items}, {"failed", failed}, {"shards", shards}};
}

namespace {

// The output's location: refuses what must not be replaced; the working folder beside it.
struct OutputPlan {
  fs::path out, work;
  bool out_exists = false;
};
OutputPlan plan_output(const std::string& output) {
  OutputPlan p;
  p.out = fs::absolute(output).lexically_normal();
  if (p.out.filename().empty()) throw Error(output + ": the output must be a file name (NAME.h5)");
  const fs::path parent = p.out.parent_path();
  std::error_code ec;
  if (!fs::is_directory(parent, ec)) throw Error(output + ": the folder " + parent.string() + " does not exist");
  const auto st = fs::symlink_status(p.out, ec);
  if (fs::exists(st)) {
    if (!fs::is_regular_file(st)) throw Error(output + ": exists and is not a regular file; it is left alone");
    p.out_exists = true;
  }
  p.work = parent / ("." + p.out.filename().string() + ".partial");
  return p;
}

// A temporary file beside `final`, renamed over it on success, removed otherwise.
struct PendingFile {
  fs::path tmp, final;
  bool done = false;
  // Named by the process, so it is never a file someone else wrote (HDF5 creates it exclusively).
  explicit PendingFile(const fs::path& f)
      : tmp(f.parent_path() / ("." + f.filename().string() + ".tmp-" + std::to_string(getpid()))), final(f) {}
  ~PendingFile() {
    std::error_code ec;
    if (!done) fs::remove(tmp, ec);
  }
  void commit() {
    fs::rename(tmp, final);
    done = true;
  }
};

}  // namespace

SweepSummary run_sweep(const SweepConfig& c) {
  using clock = std::chrono::steady_clock;
  c.check();
  const OutputPlan op = plan_output(c.output);
  SplitModel model = load_model(c);
  const Shape in = model.input_shape(), split_shape = model.split_shape();
  const int classes = model.num_classes();
  const Normalization norm = normalization_for(in, c.mean, c.std);
  const std::vector<double> x0 = baseline_input(c.baseline, in, norm);
  Dataset data = read_dataset(c);
  const json config = [&] {
    json j = c.describe();
    j["dataset_items"] = data.items.size();
    return j;
  }();

  // Every check that does not need an item's pixels, before any work.
  std::vector<Box> boxes = c.boxes;
  if (c.grid_rows > 0) {
    if (in.rank() != 3) throw Error("a grid needs an image input (C,H,W); the model input is " + in.str());
    const auto g = grid_boxes(static_cast<int>(in.height()), static_cast<int>(in.width()), c.grid_rows, c.grid_cols);
    boxes.insert(boxes.end(), g.begin(), g.end());
  }
  if (data.has_boxes && !boxes.empty())
    throw Error(data.origin + " gives each item its boxes; the sweep cannot add boxes of its own");
  for (const Box& b : boxes) check_box(b, in, "sweep");
  for (const DatasetItem& it : data.items) {
    for (const Box& b : it.boxes) check_box(b, in, it.source);
    if (it.cls && *it.cls >= classes)
      throw Error(it.source + ": class " + std::to_string(*it.cls) + " is out of range: the model has " +
                  std::to_string(classes) + " outputs");
  }
  const int B = data.has_boxes ? static_cast<int>(data.items[0].boxes.size()) : static_cast<int>(boxes.size());
  if (c.class_rule == ClassRule::Fixed && c.fixed_class >= classes)
    throw Error("class " + std::to_string(c.fixed_class) + " is out of range: the model has " +
                std::to_string(classes) + " outputs");
  if (c.class_rule == ClassRule::Label && !data.has_labels)
    for (const DatasetItem& it : data.items)
      if (!it.cls && !it.predicted)
        throw Error(data.origin + " has no labels: give each item a class, or attribute a fixed or the predicted class");
  const bool prune = !c.prune_fractions.empty();
  if (prune && c.ranking == Ranking::Ipna && B == 0)
    throw Error("pruning by the IPNA ranking needs a box (or rank by conductance)");
  if (!c.integrated_gradients && !c.conductance && B == 0 && !prune)
    throw Error("nothing to compute: ask for integrated gradients, conductance or IPNA boxes");

  const int64_t n_all = static_cast<int64_t>(data.items.size());
  const int64_t first = n_all * c.shard_index / c.shard_count, last = n_all * (c.shard_index + 1) / c.shard_count;
  SweepLayout layout{in, split_shape, B, static_cast<int>(c.prune_fractions.size()),
                     c.integrated_gradients, c.conductance, c.maps};
  SweepFileInfo info;
  info.config = config;
  info.first_index = first;
  info.dataset_items = n_all;
  info.shard = std::to_string(c.shard_index) + "/" + std::to_string(c.shard_count);

  SweepSummary sum;
  sum.output = op.out.string();
  sum.items = last - first;

  // The output and the working folder: what exists decides between a fresh start, a resume and a refusal.
  if (op.out_exists) {
    if (c.resume) {
      const SweepFileInfo done = read_sweep_info(op.out);
      const std::string diff = first_difference(done.config, config);
      if (!diff.empty()) throw Error(c.output + " is a finished sweep of another configuration: " + diff);
      if (done.shard != info.shard)
        throw Error(c.output + " is a finished sweep of shard " + done.shard + ", not " + info.shard);
      sum.already_complete = true;
      sum.resumed_items = sum.items;
      sum.failed = done.failed;
      sum.ok = done.items - done.failed;
      return sum;
    }
    if (!c.overwrite)
      throw Error(c.output + " already exists: a finished sweep is replaced only when overwriting is asked for");
  }
  std::vector<Batch> batches;
  std::error_code ec;
  if (fs::exists(fs::symlink_status(op.work, ec))) {
    if (!fs::is_directory(fs::symlink_status(op.work)) || !fs::exists(op.work / kWorkMarker))
      throw Error(op.work.string() + " exists and was not written by ipna-fast; move it away first");
    if (c.resume) {
      json old;
      try {
        old = json::parse(std::ifstream(op.work / "config.json"));
      } catch (const std::exception&) {
        throw Error((op.work / "config.json").string() + ": unreadable; start the sweep over");
      }
      const std::string diff = first_difference(old["config"], config);
      if (!diff.empty())
        throw Error("the interrupted sweep in " + op.work.string() + " has another configuration: " + diff);
      if (old["shard"] != info.shard)
        throw Error("the interrupted sweep in " + op.work.string() + " is shard " + old["shard"].get<std::string>() +
                    ", not " + info.shard);
      batches = committed_batches(op.work);
    } else if (c.overwrite) {
      fs::remove_all(op.work);
    } else {
      throw Error("an interrupted sweep of " + c.output + " is in " + op.work.string() +
                  ": resume it, or start over by overwriting");
    }
  }
  if (!fs::exists(op.work)) {
    if (!fs::create_directory(op.work, ec))
      throw Error(op.work.string() + ": cannot create the working folder (" + ec.message() + ")");
    std::ofstream(op.work / kWorkMarker) << "a sweep of ipna-fast in progress: resume it, or delete this folder\n";
    write_file_atomically(op.work / "config.json", json{{"config", config}, {"shard", info.shard}}.dump(1));
  }
  int64_t next = 0;
  for (const Batch& b : batches) next += b.items;
  sum.resumed_items = next;

  Attributor engine(model, c.precision, c.device);
  info.versions = {{"ipna_fast", IPNA_VERSION}, {"hdf5", hdf5_version()}, {"device", engine.device_name()}};
  AttributionRequest base;
  base.target = c.target;
  base.ipna_form = c.ipna_form;
  base.receptive_field_cones = c.receptive_field_cones;
  base.memory_budget = c.effective_memory_budget();
  base.chunk = c.chunk;
  if (c.interrupt_check) base.progress = [&](int, int) { c.interrupt_check(); };
  const auto t_start = clock::now();
  int64_t done_here = 0, failed_total = 0;
  for (const Batch& b : batches) failed_total += b.failed;

  std::vector<SweepRecord> pending;
  auto commit = [&] {
    if (pending.empty()) return;
    SweepFileInfo bi = info;
    bi.first_index = pending.front().index;
    bi.items = static_cast<int64_t>(pending.size());
    bi.failed = std::count_if(pending.begin(), pending.end(), [](const SweepRecord& r) { return !r.ok; });
    char name[64];
    std::snprintf(name, sizeof name, "batch-%012lld.h5", static_cast<long long>(pending.front().index - first));
    const fs::path final = op.work / name, tmp = op.work / (std::string(name) + ".tmp");
    fs::remove(tmp, ec);
    write_sweep_file(tmp, layout, bi, pending);
    fs::rename(tmp, final);
    batches.push_back({pending.front().index - first, bi.items, bi.failed, final});
    pending.clear();
  };

  for (int64_t i = first + next; i < last; ++i) {
    const DatasetItem& item = data.items[i];
    const auto t0 = clock::now();
    SweepRecord r;
    r.index = i;
    r.source = item.source;
    r.label = item.label;
    const std::vector<Box>& item_boxes = data.has_boxes ? item.boxes : boxes;
    for (const Box& b : item_boxes) r.boxes.push_back({b.r0, b.c0, b.r1, b.c1});
    try {
      const std::vector<double> x = load_item(data, item, in, norm);
      const std::vector<double> z = engine.logits(x);
      r.predicted = static_cast<int>(std::max_element(z.begin(), z.end()) - z.begin());
      r.cls = item.cls              ? *item.cls
              : item.predicted      ? r.predicted
              : c.class_rule == ClassRule::Label ? item.label
              : c.class_rule == ClassRule::Predicted ? r.predicted : c.fixed_class;
      if (r.cls < 0 || r.cls >= classes)
        throw Error("class " + std::to_string(r.cls) + " is out of range: the model has " + std::to_string(classes) +
                    " outputs");
      AttributionRequest req = base;
      req.target_class = r.cls;
      req.boxes = item_boxes;
      req.integrated_gradients = c.integrated_gradients || prune;
      req.conductance = c.conductance || (prune && c.ranking == Ranking::Conductance);
      const StepRun run = run_steps(engine, x, x0, req, c.steps);
      const AttributionResult& a = run.result;
      r.f_input = a.f_input;
      r.f_baseline = a.f_baseline;
      if (c.integrated_gradients) {
        r.ig_sum = a.ig_sum;
        r.ig_gap = a.ig_gap;
        if (c.maps != MapStorage::None) r.ig.assign(a.ig.begin(), a.ig.end());
      }
      if (c.conductance) {
        r.conductance_sum = a.conductance_sum;
        r.conductance_gap = a.conductance_gap;
        if (c.maps != MapStorage::None) r.conductance.assign(a.conductance.begin(), a.conductance.end());
      }
      r.ipna_sum = a.ipna_sum;
      if (req.integrated_gradients) {
        r.ig_inside = a.ig_in_box;
        for (double v : a.ig_in_box) r.ig_outside.push_back(a.ig_sum - v);
        r.ipna_gap = a.ipna_gap;
      }
      if (c.maps != MapStorage::None)
        for (const auto& m : a.ipna) r.ipna.insert(r.ipna.end(), m.begin(), m.end());
      r.steps = run.steps;
      r.evaluations = a.evaluations;
      if (prune) {
        const std::vector<double>& scores = c.ranking == Ranking::Ipna ? a.ipna[0] : a.conductance;
        AttributionRequest pr = on_path(req, run);
        pr.integrated_gradients = true;
        pr.conductance = false;
        pr.boxes.clear();
        for (double f : c.prune_fractions) {
          pr.split_mask = prune_mask(scores, split_shape, {f * 100, -1, Granularity::Neuron});
          const AttributionResult p = engine.run(x, x0, pr);
          r.pruned_confidence.push_back(p.f_input);
          r.pruned_ig_total.push_back(p.ig_sum);
          r.pruned_ig_inside.push_back(item_boxes.empty() ? NAN : sum_in_box(p.ig, in, item_boxes[0]));
          r.evaluations += p.evaluations;
        }
      }
      r.ok = true;
    } catch (const Interrupted&) {
      throw;
    } catch (const Error& e) {
      r.f_input = r.f_baseline = r.ig_sum = r.ig_gap = r.conductance_sum = r.conductance_gap = NAN;
      r.ig.clear();
      r.conductance.clear();
      r.ipna.clear();
      r.ipna_sum.clear();
      r.ig_inside.clear();
      r.ig_outside.clear();
      r.ipna_gap.clear();
      r.pruned_confidence.clear();
      r.pruned_ig_inside.clear();
      r.pruned_ig_total.clear();
      r.ok = false;
      r.error = e.what();
      sum.failures.push_back({item.source, r.error});
      ++failed_total;
    }
    r.seconds = std::chrono::duration<double>(clock::now() - t0).count();
    sum.evaluations += r.evaluations;
    pending.push_back(std::move(r));
    ++done_here;
    const bool batch_full = static_cast<int>(pending.size()) >= c.batch_items || i + 1 == last;
    if (batch_full) commit();
    if (c.progress) {
      SweepProgress p;
      p.done = next + done_here;
      p.total = sum.items;
      p.failed = failed_total;
      p.current = item.source;
      const double el = std::chrono::duration<double>(clock::now() - t_start).count();
      p.items_per_second = el > 0 ? done_here / el : 0;
      p.eta_seconds = p.items_per_second > 0 ? (p.total - p.done) / p.items_per_second : 0;
      p.committed = batch_full;
      c.progress(p);
    }
  }
  commit();
  sum.seconds = std::chrono::duration<double>(clock::now() - t_start).count();
  sum.items_per_second = sum.seconds > 0 ? done_here / sum.seconds : 0;
  sum.steps_per_second = sum.seconds > 0 ? sum.evaluations / sum.seconds : 0;
  sum.failed = failed_total;
  sum.ok = sum.items - failed_total;

  // Join the batches into the output; it appears in one rename.
  std::vector<std::string> paths;
  for (const Batch& b : batches) paths.push_back(b.path);
  info.items = sum.items;
  PendingFile result(op.out);
  if (paths.empty())
    write_sweep_file(result.tmp, layout, info, {});
  else
    concat_sweep_files(paths, result.tmp, info);
  result.commit();
  fs::remove_all(op.work, ec);
  return sum;
}

MergeSummary merge_sweeps(std::vector<std::string> inputs, const std::string& output, bool overwrite) {
  if (inputs.empty()) throw Error("merge needs the shard files");
  const OutputPlan op = plan_output(output);
  if (op.out_exists && !overwrite)
    throw Error(output + " already exists: it is replaced only when overwriting is asked for");
  std::vector<std::pair<SweepFileInfo, std::string>> shards;
  for (const auto& p : inputs) {
    if (fs::absolute(p).lexically_normal() == op.out) throw Error(p + " is both an input and the output");
    shards.push_back({read_sweep_info(p), p});
  }
  std::sort(shards.begin(), shards.end(),
            [](const auto& a, const auto& b) { return a.first.first_index < b.first.first_index; });
  const SweepFileInfo& f0 = shards[0].first;
  int64_t next = 0;
  for (const auto& [info, path] : shards) {
    const std::string diff = first_difference(f0.config, info.config);
    if (!diff.empty()) throw Error(path + " is a sweep of another configuration than " + shards[0].second + ": " + diff);
    if (info.dataset_items != f0.dataset_items)
      throw Error(path + " covers a dataset of " + std::to_string(info.dataset_items) + " items, " +
                  shards[0].second + " one of " + std::to_string(f0.dataset_items));
    if (info.first_index != next)
      throw Error(info.first_index > next
                      ? "items " + std::to_string(next) + " to " + std::to_string(info.first_index - 1) +
                            " are in none of the shard files (" + path + " starts at " +
                            std::to_string(info.first_index) + ")"
                      : path + " overlaps the shard before it (it starts at item " +
                            std::to_string(info.first_index) + ", expected " + std::to_string(next) + ")");
    next += info.items;
  }
  if (next != f0.dataset_items)
    throw Error("the shard files hold items 0 to " + std::to_string(next - 1) + " of " +
                std::to_string(f0.dataset_items) + ": items " + std::to_string(next) + " on are missing");
  SweepFileInfo info = f0;
  info.first_index = 0;
  info.shard = "0/1";
  std::vector<std::string> paths;
  for (const auto& s : shards) paths.push_back(s.second);
  PendingFile result(op.out);
  concat_sweep_files(paths, result.tmp, info);
  result.commit();
  MergeSummary m;
  m.output = op.out.string();
  m.shards = static_cast<int>(paths.size());
  const SweepFileInfo done = read_sweep_info(op.out);
  m.items = done.items;
  m.failed = done.failed;
  return m;
}

}  // namespace ipna
