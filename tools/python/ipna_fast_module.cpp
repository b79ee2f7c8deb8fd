// The Python module ipna_fast: the library the CLI uses, for notebooks and
// PyTorch users. Conventions:
// - inputs are anything NumPy can read (arrays, PyTorch CPU tensors through
//   __array__, DLPack producers), converted to float64 C order; a sample is the
//   model's input shape, with or without a leading batch of 1;
// - results hold NumPy arrays (float64) shaped like the input, the split tensor
//   or [box, split...];
// - the library's errors are ipna_fast.Error with the library's message; wrong
//   argument types and shapes are TypeError / ValueError naming the argument;
// - long calls release the GIL, call `progress(done, total)` after each chunk
//   of steps, and stop with KeyboardInterrupt on Ctrl-C within a chunk.
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <csignal>
#include <optional>

#include "engine/attribution.h"
#include "engine/error.h"
#include "engine/experiments/attribute.h"
#include "engine/experiments/class_window.h"
#include "engine/experiments/sweep.h"
#include "loaders/idx.h"
#include "loaders/image.h"
#include "loaders/onnx_loader.h"

namespace py = pybind11;
using namespace ipna;

namespace {

// ---- arguments ----

std::string shape_str(const std::vector<int64_t>& d) {
  std::string s = "(";
  for (size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + (d.size() == 1 ? ",)" : ")");
}

// Any array-like as float64 C order; DLPack producers without __array__ through numpy.from_dlpack.
py::array_t<double> as_array(const py::object& obj, const char* name) {
  py::object o = obj;
  if (!py::hasattr(o, "__array__") && !py::isinstance<py::array>(o) && py::hasattr(o, "__dlpack__"))
    o = py::module_::import("numpy").attr("from_dlpack")(o);
  if (py::isinstance<py::str>(o) || py::isinstance<py::bytes>(o))
    throw py::type_error(std::string(name) + ": expected an array (NumPy, PyTorch tensor, ...), got a string");
  py::array a;
  try {
    a = py::array::ensure(o);
  } catch (const py::error_already_set& e) {
    throw py::type_error(std::string(name) + ": cannot be read as an array: " + e.what());
  }
  if (!a) throw py::type_error(std::string(name) + ": expected an array (NumPy, PyTorch tensor, ...), got " +
                               std::string(py::str(py::type::of(o).attr("__name__"))));
  const char kind = a.dtype().kind();
  if (kind != 'f' && kind != 'i' && kind != 'u' && kind != 'b')
    throw py::type_error(std::string(name) + ": expected real numbers, got dtype " +
                         std::string(py::str(a.dtype())));
  return py::array_t<double, py::array::c_style | py::array::forcecast>::ensure(a);
}

// One sample of `shape` (or [1, shape...]).
std::vector<double> sample(const py::object& obj, const Shape& shape, const char* name) {
  auto a = as_array(obj, name);
  std::vector<int64_t> d(a.shape(), a.shape() + a.ndim());
  std::vector<int64_t> core = d;
  if (core.size() == shape.rank() + 1 && core[0] == 1) core.erase(core.begin());
  if (core != shape.dims)
    throw py::value_error(std::string(name) + ": shape " + shape_str(d) + " does not match the model input " +
                          shape_str(shape.dims) + " (or (1, ...) of it)");
  return std::vector<double>(a.data(), a.data() + a.size());
}

std::vector<double> of_size(const py::object& obj, const Shape& shape, const char* name) {
  auto a = as_array(obj, name);
  if (static_cast<int64_t>(a.size()) != shape.numel())
    throw py::value_error(std::string(name) + ": " + std::to_string(a.size()) + " values, expected " +
                          std::to_string(shape.numel()) + " (shape " + shape_str(shape.dims) + ")");
  return std::vector<double>(a.data(), a.data() + a.size());
}

py::array_t<double> to_array(const std::vector<double>& v, std::vector<int64_t> shape) {
  py::array_t<double> a(std::vector<py::ssize_t>(shape.begin(), shape.end()));
  std::copy(v.begin(), v.end(), a.mutable_data());
  return a;
}

std::vector<Box> boxes_of(const std::optional<std::vector<std::vector<int>>>& b) {
  std::vector<Box> out;
  if (!b) return out;
  for (const auto& v : *b) {
    if (v.size() != 4)
      throw py::value_error("boxes: each box is (X1, Y1, X2, Y2): rows X1:X2, columns Y1:Y2; got " +
                            std::to_string(v.size()) + " numbers");
    out.push_back({v[0], v[1], v[2], v[3]});
  }
  return out;
}

template <class E>
E choice(const std::string& value, const char* name, std::initializer_list<std::pair<const char*, E>> options) {
  std::string names;
  for (const auto& [n, e] : options) {
    if (value == n) return e;
    names += (names.empty() ? "" : ", ") + std::string(n);
  }
  throw py::value_error(std::string(name) + ": expected one of " + names + ", got '" + value + "'");
}
TargetKind target_of(const std::string& t) {
  return choice<TargetKind>(t, "target", {{"prob", TargetKind::Probability}, {"logit", TargetKind::Logit}});
}
IpnaForm form_of(const std::string& f) {
  return choice<IpnaForm>(f, "ipna_form", {{"difference", IpnaForm::Difference}, {"tangent", IpnaForm::Tangent}});
}
Quadrature quadrature_arg(const std::string& q) {
  return choice<Quadrature>(q, "quadrature",
                            {{"right", Quadrature::Right},
                             {"left", Quadrature::Left},
                             {"middle", Quadrature::Middle},
                             {"trapezoid", Quadrature::Trapezoid},
                             {"secant", Quadrature::Secant}});
}
Ranking ranking_of(const std::string& r) {
  return choice<Ranking>(r, "ranking", {{"ipna", Ranking::Ipna}, {"conductance", Ranking::Conductance}});
}
Granularity granularity_of(const std::string& g) {
  return choice<Granularity>(g, "granularity", {{"neuron", Granularity::Neuron}, {"channel", Granularity::Channel}});
}

// steps: a count or "auto"; schedule "uniform", "adaptive", "gradient" or None (default_schedule).
StepPlan plan_of(const py::object& steps, const std::optional<std::string>& schedule, const std::string& quadrature,
                 double tol, int max_steps, bool extrapolate) {
  StepPlan p;
  if (py::isinstance<py::str>(steps)) {
    if (steps.cast<std::string>() != "auto")
      throw py::value_error("steps: expected a positive count or 'auto', got '" + steps.cast<std::string>() + "'");
    p.automatic = true;
  } else {
    try {
      p.steps = steps.cast<int>();
    } catch (const py::cast_error&) {
      throw py::type_error("steps: expected a positive count or 'auto'");
    }
    if (p.steps < 1) throw py::value_error("steps: expected a positive count, got " + std::to_string(p.steps));
  }
  p.schedule = !schedule ? default_schedule(p.automatic)
                          : choice<ScheduleKind>(*schedule, "schedule",
                                                 {{"uniform", ScheduleKind::Uniform},
                                                  {"adaptive", ScheduleKind::Adaptive},
                                                  {"gradient", ScheduleKind::Gradient}});
  p.quadrature = quadrature_arg(quadrature);
  p.tolerance = tol;
  p.max_steps = max_steps;
  p.extrapolate = extrapolate;
  return p;
}

std::pair<int, int> grid_of(const py::object& grid) {
  if (grid.is_none()) return {0, 0};
  if (py::isinstance<py::str>(grid)) {
    const std::string g = grid.cast<std::string>();
    const size_t x = g.find('x');
    try {
      if (x != std::string::npos) return {std::stoi(g.substr(0, x)), std::stoi(g.substr(x + 1))};
    } catch (const std::exception&) {
    }
    throw py::value_error("grid: expected 'RxC' such as '7x7' or a pair (rows, cols), got '" + g + "'");
  }
  try {
    auto p = grid.cast<std::pair<int, int>>();
    if (p.first < 1 || p.second < 1) throw py::value_error("grid: rows and columns must be positive");
    return p;
  } catch (const py::cast_error&) {
    throw py::type_error("grid: expected 'RxC' or a pair (rows, cols)");
  }
}

// ---- progress and Ctrl-C while the GIL is released ----

// Called by the engine after each chunk: takes the GIL, runs Python's signal
// handlers (Ctrl-C stops the run) and the user's callback.
// The engine copies its callbacks where the GIL is released: they hold the Python
// object through a shared_ptr, so copies never touch Python reference counts.
std::function<void(int, int)> chunk_callback(const py::object& progress) {
  auto held = std::make_shared<py::object>(progress);
  return [held](int done, int total) {
    py::gil_scoped_acquire gil;
    if (PyErr_CheckSignals() != 0) throw py::error_already_set();
    if (!held->is_none()) (*held)(done, total);
  };
}

py::object json_of(const nlohmann::json& j) { return py::module_::import("json").attr("loads")(j.dump()); }

// ---- results ----

struct PyModel {
  std::shared_ptr<SplitModel> m;
};

struct PyResult {
  AttributionResult r;
  std::vector<Box> boxes;
  int steps = 0;                // m of the result; with steps='auto', the step count it stopped at
  nlohmann::json step_report;   // run_steps' report (mode, schedule, step counts tried, convergence)
};

py::dict grid_dict(const GridSummary& g) {
  py::dict d;
  d["rows"] = g.rows;
  d["cols"] = g.cols;
  d["first_box"] = g.first_box;
  d["ipna_total"] = g.ipna_total;
  d["ipna_total_minus_ig_total"] = g.ipna_total_minus_ig_total;
  d["neuronwise_distance_to_conductance"] = g.neuronwise_distance_to_conductance;
  d["top_channels"] = g.top_channels;
  return d;
}

struct PyAttributor {
  std::shared_ptr<SplitModel> model;
  std::unique_ptr<Attributor> engine;
};

AttributionRequest request(const PyAttributor& a, int target_class, const std::string& target,
                           const std::optional<std::vector<std::vector<int>>>& boxes, const py::object& grid, bool ig,
                           bool conductance, const std::string& ipna_form, bool cones, int box_batch, int chunk,
                           double memory_budget_mb) {
  AttributionRequest req;
  req.target_class = target_class;
  req.target = target_of(target);
  req.boxes = boxes_of(boxes);
  const auto [rows, cols] = grid_of(grid);
  if (rows > 0) {
    const Shape in = a.model->input_shape();
    if (in.rank() != 3) throw py::value_error("grid: needs an image input (C, H, W); the model input is " + in.str());
    const auto g = grid_boxes(static_cast<int>(in.height()), static_cast<int>(in.width()), rows, cols);
    req.boxes.insert(req.boxes.end(), g.begin(), g.end());
  }
  req.integrated_gradients = ig;
  req.conductance = conductance;
  req.ipna_form = form_of(ipna_form);
  req.receptive_field_cones = cones;
  if (box_batch < 0) throw py::value_error("box_batch: must be >= 0 (0: the device's choice)");
  req.box_batch = box_batch;
  if (chunk < 0) throw py::value_error("chunk: must be >= 0 (0: from the memory budget)");
  if (memory_budget_mb < 0) throw py::value_error("memory_budget_mb: must be >= 0 (0: the device's default)");
  req.chunk = chunk;
  req.memory_budget = static_cast<size_t>(memory_budget_mb * (1 << 20));
  return req;
}

std::vector<double> baseline_of(const PyAttributor& a, const py::object& baseline) {
  const Shape in = a.model->input_shape();
  if (baseline.is_none()) return black_baseline(in);
  if (py::isinstance<py::str>(baseline)) {
    const std::string b = baseline.cast<std::string>();
    if (b != "black" && b != "zeros")
      throw py::value_error("baseline: expected 'black', 'zeros' or an array, got '" + b + "'");
    return baseline_input(b, in, normalization_for(in));
  }
  return sample(baseline, in, "baseline");
}

}  // namespace

PYBIND11_MODULE(ipna_fast, m) {
  m.doc() =
      "ipna-fast: integrated gradients, conductance and IPNA (image patch internal neuron attribution) for conv-net "
      "classifiers given as ONNX, split at a named internal tensor.";
  static py::exception<Error> error(m, "Error", PyExc_RuntimeError);
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const Interrupted&) {
      PyErr_SetNone(PyExc_KeyboardInterrupt);
    } catch (const Error& e) {
      error(e.what());
    }
  });
  m.attr("FASHION_MNIST") = kFashionMnistDir;
  m.def(
      "load_image",
      [](const std::string& path) {
        std::vector<double> x;
        {
          py::gil_scoped_release nogil;
          x = imagenet_preprocess(load_image_rgb(path));
        }
        return to_array(x, {3, 224, 224});
      },
      py::arg("path"),
      "A JPEG or PNG as the command line's --image prepares it: shorter side to 256, centre crop 224, [0, 1], "
      "ImageNet's mean and std; a (3, 224, 224) float64 array.");

  py::class_<PyModel>(m, "Model", "A model split at a named tensor: f1 (input to split) and f2 (split to logits).")
      .def_property_readonly("input_shape", [](const PyModel& s) { return s.m->input_shape().dims; })
      .def_property_readonly("split_shape", [](const PyModel& s) { return s.m->split_shape().dims; })
      .def_property_readonly("split", [](const PyModel& s) { return s.m->split_name; })
      .def_property_readonly("num_classes", [](const PyModel& s) { return s.m->num_classes(); })
      .def("__repr__", [](const PyModel& s) {
        return "<ipna_fast.Model split '" + s.m->split_name + "', input " + s.m->input_shape().str() + ", split " +
               s.m->split_shape().str() + ", " + std::to_string(s.m->num_classes()) + " classes>";
      });

  m.def(
      "load",
      [](const std::string& path, const std::optional<std::string>& split, const std::optional<std::string>& second) {
        if (split && second) throw py::value_error("give split= (one ONNX file) or second= (the two-part form), not both");
        if (!split && !second)
          throw py::value_error("split: name the tensor to split at (ipna_fast.info(path) lists them), or give "
                                "second= for the two-part form");
        py::gil_scoped_release nogil;
        auto model = std::make_shared<SplitModel>(second ? load_two_part_model(path, *second)
                                                         : load_split_model(path, *split));
        return PyModel{model};
      },
      py::arg("path"), py::arg("split") = py::none(), py::arg("second") = py::none(),
      "Load an ONNX model split at the tensor `split` (a tensor name or a module path such as 'layer2'), or the "
      "original's two-part form: load(first_part, second=second_part).");

  m.def(
      "info",
      [](const std::string& path) {
        Graph g = load_onnx(path);
        py::list out;
        for (const SplitPoint& p : split_points(g)) {
          py::dict d;
          d["name"] = p.name;
          d["op"] = p.op;
          d["shape"] = p.shape.dims;
          d["neurons"] = p.shape.numel();
          d["aliases"] = p.aliases;
          d["modules"] = p.modules;
          d["cuts"] = !p.not_a_cut;
          d["not_a_cut"] = p.not_a_cut ? py::object(py::str(*p.not_a_cut)) : py::object(py::none());
          out.append(d);
        }
        return out;
      },
      py::arg("path"),
      "The tensors of an ONNX model that it can be split at: one dict per tensor (name, op, shape, neurons, "
      "aliases, modules, cuts, not_a_cut).");

  py::class_<PyResult>(m, "Result",
                       "What Attributor.run computed. Maps are NumPy float64 arrays: ig shaped like the input, "
                       "conductance like the split tensor, ipna [box, split...]; None where not computed.")
      .def_property_readonly("ig",
                             [](const PyResult& s) -> py::object {
                               return s.r.ig.empty() ? py::none() : py::object(to_array(s.r.ig, s.r.input_shape.dims));
                             })
      .def_property_readonly(
          "conductance",
          [](const PyResult& s) -> py::object {
            return s.r.conductance.empty() ? py::none() : py::object(to_array(s.r.conductance, s.r.split_shape.dims));
          })
      .def_property_readonly("ipna",
                             [](const PyResult& s) -> py::object {
                               if (s.r.ipna.empty()) return py::none();
                               std::vector<double> all;
                               for (const auto& v : s.r.ipna) all.insert(all.end(), v.begin(), v.end());
                               auto d = s.r.split_shape.dims;
                               d.insert(d.begin(), static_cast<int64_t>(s.r.ipna.size()));
                               return to_array(all, d);
                             })
      .def_property_readonly("boxes",
                             [](const PyResult& s) {
                               std::vector<std::tuple<int, int, int, int>> b;
                               for (const Box& x : s.boxes) b.emplace_back(x.r0, x.c0, x.r1, x.c1);
                               return b;
                             })
      .def_property_readonly(
          "f_input", [](const PyResult& s) { return s.r.f_input; }, "F(x)")
      .def_property_readonly(
          "f_baseline", [](const PyResult& s) { return s.r.f_baseline; }, "F(baseline)")
      .def_property_readonly("ig_sum", [](const PyResult& s) { return s.r.ig_sum; })
      .def_property_readonly(
          "ig_gap", [](const PyResult& s) { return s.r.ig_gap; }, "sum IG - (F(x) - F(x'))")
      .def_property_readonly("conductance_sum", [](const PyResult& s) { return s.r.conductance_sum; })
      .def_property_readonly("conductance_gap", [](const PyResult& s) { return s.r.conductance_gap; })
      .def_property_readonly(
          "ipna_sum", [](const PyResult& s) { return s.r.ipna_sum; }, "per box")
      .def_property_readonly(
          "ig_in_box", [](const PyResult& s) { return s.r.ig_in_box; }, "per box (with IG)")
      .def_property_readonly(
          "ipna_gap", [](const PyResult& s) { return s.r.ipna_gap; }, "per box: sum IPNA - IG inside (with IG)")
      .def_property_readonly(
          "evaluations", [](const PyResult& s) { return s.r.evaluations; },
          "gradient evaluations (of the last step count with steps='auto', its new points)")
      .def_property_readonly(
          "steps", [](const PyResult& s) { return s.steps; },
          "m of the result: with steps='auto', where step control stopped")
      .def_property_readonly(
          "step_control",
          [](const PyResult& s) -> py::object { return s.step_report.is_null() ? py::none() : json_of(s.step_report); },
          "with steps='auto': 'converged', 'summary', 'evaluations' (over all step counts) and 'levels', each "
          "step count tried with its gaps, change, evaluations and the points it reused; None otherwise")
      .def_property_readonly("chunk", [](const PyResult& s) { return s.r.chunk; })
      .def_property_readonly(
          "patch_passes", [](const PyResult& s) { return s.r.patch_passes; }, "per step (box_batch)")
      .def_property_readonly("seconds", [](const PyResult& s) { return s.r.seconds; })
      .def("__repr__", [](const PyResult& s) {
        return "<ipna_fast.Result F(x)=" + std::to_string(s.r.f_input) + ", " + std::to_string(s.r.ipna.size()) +
               " boxes, " + std::to_string(s.r.evaluations) + " evaluations>";
      });

  py::class_<PyAttributor>(m, "Attributor", "The engine for one model on one device; buffers are kept across calls.")
      .def(py::init([](const PyModel& model, const std::string& device, const std::string& precision) {
             const Precision p = choice<Precision>(precision, "precision", {{"f32", Precision::F32}, {"f64", Precision::F64}});
             PyAttributor a{model.m, nullptr};
             a.engine = std::make_unique<Attributor>(*model.m, p, device);
             return a;
           }),
           py::arg("model"), py::arg("device") = "cpu", py::arg("precision") = "f32",
           "model: from ipna_fast.load. device: 'cpu' (direct float32 convolutions), 'cpu/winograd' (Winograd "
           "for 3x3 stride-1 convolutions: faster, less accurate), 'cpu/bf16' (bf16 convolutions, float32 "
           "accumulation, the values between convolutions stored as bf16; AVX-512 BF16 or AMX), or "
           "'cuda[:N][/fp32|/tf32][/cap=MiB]'. precision: 'f32' or 'f64' (the "
           "CPU's float64 reference).")
      .def_property_readonly("device", [](const PyAttributor& a) { return a.engine->device_name(); })
      .def_property_readonly("model", [](const PyAttributor& a) { return PyModel{a.model}; })
      .def(
          "run",
          [](PyAttributor& a, const py::object& x, const py::object& baseline, int target_class,
             const py::object& steps, const std::string& target,
             const std::optional<std::vector<std::vector<int>>>& boxes, const py::object& grid, bool ig,
             bool conductance, const std::string& ipna_form, bool cones, int box_batch,
             const std::optional<std::string>& schedule, const std::string& quadrature, double tol, int max_steps,
             bool extrapolate, const py::object& split_mask, int chunk, double memory_budget_mb,
             const py::object& progress) {
            const Shape in = a.model->input_shape();
            const std::vector<double> xv = sample(x, in, "x"), x0 = baseline_of(a, baseline);
            AttributionRequest req = request(a, target_class, target, boxes, grid, ig, conductance, ipna_form, cones,
                                             box_batch, chunk, memory_budget_mb);
            if (!split_mask.is_none()) req.split_mask = of_size(split_mask, a.model->split_shape(), "split_mask");
            const StepPlan plan = plan_of(steps, schedule, quadrature, tol, max_steps, extrapolate);
            req.progress = chunk_callback(progress);
            PyResult out;
            out.boxes = req.boxes;
            {
              py::gil_scoped_release nogil;
              StepRun run = run_steps(*a.engine, xv, x0, req, plan);
              out.r = std::move(run.result);
              out.steps = run.steps;
              if (plan.automatic || plan.extrapolate) out.step_report = std::move(run.report);
            }
            return out;
          },
          py::arg("x"), py::arg("baseline") = py::none(), py::kw_only(), py::arg("target_class"),
          py::arg("steps") = 256, py::arg("target") = "prob", py::arg("boxes") = py::none(),
          py::arg("grid") = py::none(), py::arg("ig") = true, py::arg("conductance") = true,
          py::arg("ipna_form") = "difference", py::arg("cones") = true, py::arg("box_batch") = 0,
          py::arg("schedule") = py::none(), py::arg("quadrature") = "right", py::arg("tol") = 0.01,
          py::arg("max_steps") = 4096, py::arg("extrapolate") = false, py::arg("split_mask") = py::none(),
          py::arg("chunk") = 0, py::arg("memory_budget_mb") = 0.0, py::arg("progress") = py::none(),
          R"(IG of the input, conductance and IPNA at the split tensor, in one pass along the path.

x, baseline: one sample (the model's input shape, or (1, ...) of it), any array-like; baseline None or
  'black' is the black image normalised like ImageNet inputs for 3 channels (zeros otherwise), 'zeros'.
target_class: the class whose output F is attributed. target: 'prob' (softmax probability) or 'logit'.
steps: the Riemann steps m, or 'auto': doubled from 16 until the completeness gaps are under tol
  (relative) or max_steps is reached. schedule: 'uniform', 'adaptive' (steps placed where F changes) or 'gradient' (where the gradient turns);
  None: 'uniform' for a count, 'gradient' for 'auto'.
quadrature: IG's rule, 'right' (the original's), 'left', 'middle', 'trapezoid', or 'secant' (IG, conductance and
  the tangent form's IPNA through each nonlinearity's slope over each step: exact completeness, far fewer steps
  on ReLU nets).
extrapolate: the difference form's IPNA extrapolated from m / 2 and m steps (Richardson: 2 P(m) - P(m / 2),
  no more gradient evaluations than m; an even count), and with 'auto' from each step count and the one before.
boxes: IPNA boxes (X1, Y1, X2, Y2): rows X1:X2, columns Y1:Y2; grid: 'RxC' or (R, C), a grid of boxes
  after them. ig, conductance: what else to compute. ipna_form: 'difference' (the original's) or
  'tangent'. cones: patch passes on receptive-field cones (False: whole planes). box_batch: on cones, the
  patch passes of up to this many boxes whose cones have the same geometry run as one batch, as far as the memory
  budget left beside the chunk allows, with the same maps (0: the device's choice, 1 on the CPU, 8 on CUDA).
split_mask: split-shaped 0/1 mask: the pruned model (see prune_mask).
chunk, memory_budget_mb: steps per batch, or the budget it is chosen from (0: defaults).
progress: called as progress(done, total) after each chunk of steps. Ctrl-C raises KeyboardInterrupt.)")
      .def(
          "logits",
          [](PyAttributor& a, const py::object& x, const py::object& split_mask) {
            std::vector<double> xv = sample(x, a.model->input_shape(), "x"), mask;
            if (!split_mask.is_none()) mask = of_size(split_mask, a.model->split_shape(), "split_mask");
            std::vector<double> z;
            {
              py::gil_scoped_release nogil;
              z = a.engine->logits(xv, mask);
            }
            return to_array(z, {static_cast<int64_t>(z.size())});
          },
          py::arg("x"), py::arg("split_mask") = py::none(), "The model's logits at x (pruned by split_mask).");

  m.def(
      "prune_mask",
      [](const py::object& scores, const std::vector<int64_t>& split_shape, std::optional<double> percent,
         std::optional<int64_t> count, const std::string& granularity) {
        if (percent.has_value() == count.has_value()) throw py::value_error("give exactly one of percent= and count=");
        const Shape shape(split_shape);
        const auto s = of_size(scores, shape, "scores");
        const auto mask = prune_mask(s, shape, {percent.value_or(-1), count.value_or(-1), granularity_of(granularity)});
        return to_array(mask, shape.dims);
      },
      py::arg("scores"), py::arg("split_shape"), py::kw_only(), py::arg("percent") = py::none(),
      py::arg("count") = py::none(), py::arg("granularity") = "neuron",
      "A 0/1 mask zeroing the split units with the largest signed scores (the top `percent` percent, or `count` "
      "units); granularity 'channel' ranks channel sums and zeroes whole channels.");

  py::class_<AttributeResult>(m, "AttributeResult", "The original's main.py: attribution, grid and pruning.")
      .def_property_readonly("result", [](const AttributeResult& s) { return PyResult{s.run.result, s.boxes, s.run.steps}; })
      .def_property_readonly("steps", [](const AttributeResult& s) { return s.run.steps; })
      .def_property_readonly("grid", [](const AttributeResult& s) -> py::object {
        return s.grid ? py::object(grid_dict(*s.grid)) : py::object(py::none());
      })
      .def_property_readonly("pruned", [](const AttributeResult& s) -> py::object {
        return s.pruned ? py::cast(PyResult{s.pruned->result, {}}) : py::object(py::none());
      })
      .def_property_readonly("prune_mask", [](const AttributeResult& s) -> py::object {
        return s.pruned ? py::object(to_array(s.pruned->mask, s.run.result.split_shape.dims)) : py::object(py::none());
      })
      .def("to_json", [](const AttributeResult& s) { return json_of(s.to_json()); }, "The report's numbers as a dict.");

  m.def(
      "attribute",
      [](PyAttributor& a, const py::object& x, const py::object& baseline, int target_class, const py::object& steps,
         const std::optional<std::string>& schedule, const std::string& quadrature, double tol, int max_steps,
         bool extrapolate, const std::string& target, const std::optional<std::vector<std::vector<int>>>& boxes,
         const py::object& grid, bool ig, bool conductance, const std::string& ipna_form, bool cones,
         std::optional<double> prune_percent, const std::string& ranking, const std::string& granularity,
         const py::object& progress) {
        const std::vector<double> xv = sample(x, a.model->input_shape(), "x"), x0 = baseline_of(a, baseline);
        AttributeSpec s;
        s.target_class = target_class;
        s.target = target_of(target);
        s.boxes = boxes_of(boxes);
        std::tie(s.grid_rows, s.grid_cols) = grid_of(grid);
        s.integrated_gradients = ig;
        s.conductance = conductance;
        s.ipna_form = form_of(ipna_form);
        s.receptive_field_cones = cones;
        s.steps = plan_of(steps, schedule, quadrature, tol, max_steps, extrapolate);
        s.prune_percent = prune_percent.value_or(-1);
        s.ranking = ranking_of(ranking);
        s.granularity = granularity_of(granularity);
        s.progress = s.pruned_progress = chunk_callback(progress);
        py::gil_scoped_release nogil;
        return attribute(*a.engine, xv, x0, s);
      },
      py::arg("attributor"), py::arg("x"), py::arg("baseline") = py::none(), py::kw_only(), py::arg("target_class"),
      py::arg("steps") = 256, py::arg("schedule") = py::none(), py::arg("quadrature") = "right", py::arg("tol") = 0.01,
      py::arg("max_steps") = 4096, py::arg("extrapolate") = false, py::arg("target") = "prob",
      py::arg("boxes") = py::none(), py::arg("grid") = py::none(), py::arg("ig") = true, py::arg("conductance") = true,
      py::arg("ipna_form") = "difference", py::arg("cones") = true, py::arg("prune_percent") = py::none(),
      py::arg("ranking") = "ipna", py::arg("granularity") = "neuron", py::arg("progress") = py::none(),
      "The original's main.py: Attributor.run's quantities, the grid's additivity, and with prune_percent the top "
      "P% of split units by `ranking` ('ipna': the first box; 'conductance') pruned and IG of the pruned model on "
      "the same path.");

  py::class_<CurveResult>(m, "CurveResult", "Progressive pruning: one row per fraction and ranking.")
      .def_property_readonly("rows", [](const CurveResult& s) { return json_of(s.to_json()["rows"]); })
      .def_property_readonly("result", [](const CurveResult& s) { return PyResult{s.run.result, {s.box}, s.run.steps}; })
      .def("to_csv", &CurveResult::to_csv)
      .def("to_json", [](const CurveResult& s) { return json_of(s.to_json()); });

  m.def(
      "pruning_curve",
      [](PyAttributor& a, const py::object& x, const py::object& baseline, int target_class, std::vector<int> box,
         std::vector<double> fractions, const py::object& steps, const std::optional<std::string>& schedule,
         const std::string& quadrature, double tol, int max_steps, bool extrapolate, const std::string& target,
         const std::string& ipna_form, const py::object& progress) {
        const std::vector<double> xv = sample(x, a.model->input_shape(), "x"), x0 = baseline_of(a, baseline);
        AttributeSpec s;
        s.target_class = target_class;
        s.target = target_of(target);
        s.boxes = boxes_of(std::vector<std::vector<int>>{box});
        s.ipna_form = form_of(ipna_form);
        s.steps = plan_of(steps, schedule, quadrature, tol, max_steps, extrapolate);
        s.progress = chunk_callback(progress);
        const auto levels = chunk_callback(py::none());
        py::gil_scoped_release nogil;
        return pruning_curve(*a.engine, xv, x0, s, fractions, levels);
      },
      py::arg("attributor"), py::arg("x"), py::arg("baseline") = py::none(), py::kw_only(), py::arg("target_class"),
      py::arg("box"),
      py::arg("fractions") =
          std::vector<double>{0, 0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1},
      py::arg("steps") = 256, py::arg("schedule") = py::none(), py::arg("quadrature") = "right", py::arg("tol") = 0.01,
      py::arg("max_steps") = 4096, py::arg("extrapolate") = false, py::arg("target") = "prob",
      py::arg("ipna_form") = "difference", py::arg("progress") = py::none(),
      "The original's trafficlight_plot: prune growing fractions of the split units by the box's IPNA ranking and "
      "by conductance; IG inside, outside and in total of each pruned model.");

  py::class_<ClassWindowResult>(m, "ClassWindowResult", "The class-window experiment's table and averages.")
      .def_property_readonly("avg_ipna", [](const ClassWindowResult& s) { return to_array(s.avg_ipna, s.split_shape.dims); })
      .def_property_readonly("avg_conductance",
                             [](const ClassWindowResult& s) { return to_array(s.avg_conductance, s.split_shape.dims); })
      .def_property_readonly("table", [](const ClassWindowResult& s) { return json_of(s.to_json()["table"]); })
      .def("to_csv", &ClassWindowResult::to_csv)
      .def("to_json", [](const ClassWindowResult& s) { return json_of(s.to_json()); });

  m.def(
      "class_window",
      [](PyAttributor& a, const std::string& data, int cls, std::vector<int> window, int images, int k_max,
         int random_draws, int seed, const py::object& steps, const std::optional<std::string>& schedule,
         const std::string& quadrature, double tol, int max_steps, bool extrapolate, const std::string& ipna_form,
         const std::string& target, const py::object& progress) {
        if (window.size() != 4) throw py::value_error("window: (X1, Y1, X2, Y2)");
        ClassWindowSpec s;
        s.cls = cls;
        s.window = {window[0], window[1], window[2], window[3]};
        s.images = images;
        s.k_max = k_max;
        s.random_draws = random_draws;
        s.seed = seed;
        s.steps = plan_of(steps, schedule, quadrature, tol, max_steps, extrapolate);
        s.ipna_form = form_of(ipna_form);
        s.target = target_of(target);
        const auto check = chunk_callback(py::none());
        s.interrupt_check = [check] { check(0, 0); };
        s.progress = chunk_callback(progress);
        py::gil_scoped_release nogil;
        const IdxDataset ds = read_idx_dataset(data, "test");
        return class_window(*a.engine, ds, s);
      },
      py::arg("attributor"), py::kw_only(), py::arg("data") = kFashionMnistDir, py::arg("cls") = 0,
      py::arg("window") = std::vector<int>{0, 0, 14, 14}, py::arg("images") = 100, py::arg("k_max") = 16,
      py::arg("random_draws") = 5, py::arg("seed") = 1, py::arg("steps") = 64, py::arg("schedule") = py::none(),
      py::arg("quadrature") = "right", py::arg("tol") = 0.01, py::arg("max_steps") = 4096,
      py::arg("extrapolate") = false, py::arg("ipna_form") = "difference", py::arg("target") = "prob",
      py::arg("progress") = py::none(),
      "The original's Fashion-MNIST experiment: average IPNA of a window over `images` test images of class `cls`, "
      "prune the top k split units (k = 0..k_max) by IPNA, by conductance and at random; mean IG inside/outside "
      "the window and the class accuracy.");

  static const std::string sweep_doc =
      "Attribution over a dataset into one HDF5 file (the layout of `ipna-fast sweep`): model is a list of one or "
      "two ONNX files; one of manifest=, image_folder=, idx=; cls 'label', 'predicted' or an index; "
      "memory_budget_mb fixes the chunk of steps (0: " + std::to_string(kSweepBudgetCpu >> 20) + " MiB on the CPU, " +
      std::to_string(kSweepBudgetGpu >> 20) + " MiB on a GPU). Returns the summary as a dict.";
  m.def(
      "sweep",
      [](const std::vector<std::string>& model, const std::string& split, const std::string& output,
         const std::optional<std::string>& manifest, const std::optional<std::string>& image_folder,
         const std::optional<std::string>& idx, const std::string& idx_set, int64_t limit, const py::object& cls,
         const std::optional<std::vector<std::vector<int>>>& boxes, const py::object& grid, bool ig, bool conductance,
         const std::string& ipna_form, const std::string& target, const py::object& steps,
         const std::optional<std::string>& schedule, const std::string& quadrature, double tol, int max_steps,
         bool extrapolate, std::vector<double> prune_fractions, const std::string& ranking, const std::string& maps,
         const std::string& shard, int batch_items, bool resume, bool overwrite, const std::string& device,
         const std::string& precision, double memory_budget_mb, const py::object& progress) {
        if (memory_budget_mb < 0)
          throw py::value_error("memory_budget_mb: must be >= 0 (0: the device's sweep budget)");
        SweepConfig c;
        c.memory_budget = static_cast<size_t>(memory_budget_mb * (1 << 20));
        c.model_files = model;
        c.split = split;
        c.precision = choice<Precision>(precision, "precision", {{"f32", Precision::F32}, {"f64", Precision::F64}});
        c.device = device;
        if (manifest.has_value() + image_folder.has_value() + idx.has_value() != 1)
          throw py::value_error("give exactly one of manifest=, image_folder= and idx=");
        c.dataset_kind = manifest ? DatasetKind::Manifest : image_folder ? DatasetKind::ImageFolder : DatasetKind::Idx;
        c.dataset = manifest ? *manifest : image_folder ? *image_folder : *idx;
        c.idx_split = idx_set;
        c.limit = limit;
        if (py::isinstance<py::str>(cls)) {
          c.class_rule = choice<ClassRule>(cls.cast<std::string>(), "cls",
                                           {{"label", ClassRule::Label}, {"predicted", ClassRule::Predicted}});
        } else {
          c.class_rule = ClassRule::Fixed;
          c.fixed_class = cls.cast<int>();
        }
        c.boxes = boxes_of(boxes);
        std::tie(c.grid_rows, c.grid_cols) = grid_of(grid);
        c.integrated_gradients = ig;
        c.conductance = conductance;
        c.ipna_form = form_of(ipna_form);
        c.target = target_of(target);
        c.steps = plan_of(steps, schedule, quadrature, tol, max_steps, extrapolate);
        c.prune_fractions = std::move(prune_fractions);
        c.ranking = ranking_of(ranking);
        c.maps = choice<MapStorage>(maps, "maps", {{"float32", MapStorage::Float32}, {"float16", MapStorage::Float16},
                                                   {"none", MapStorage::None}});
        std::tie(c.shard_index, c.shard_count) = parse_shard(shard);
        c.batch_items = batch_items;
        c.resume = resume;
        c.overwrite = overwrite;
        c.output = output;
        const auto check = chunk_callback(py::none());
        c.interrupt_check = [check] { check(0, 0); };
        if (!progress.is_none()) {
          const auto items = chunk_callback(progress);
          c.progress = [items](const SweepProgress& p) { items(static_cast<int>(p.done), static_cast<int>(p.total)); };
        }
        SweepSummary s;
        {
          py::gil_scoped_release nogil;
          s = run_sweep(c);
        }
        return json_of(s.to_json());
      },
      py::kw_only(), py::arg("model"), py::arg("split"), py::arg("output"), py::arg("manifest") = py::none(),
      py::arg("image_folder") = py::none(), py::arg("idx") = py::none(), py::arg("idx_set") = "test",
      py::arg("limit") = -1, py::arg("cls") = "label", py::arg("boxes") = py::none(), py::arg("grid") = py::none(),
      py::arg("ig") = true, py::arg("conductance") = true, py::arg("ipna_form") = "difference",
      py::arg("target") = "prob", py::arg("steps") = 256, py::arg("schedule") = py::none(),
      py::arg("quadrature") = "right", py::arg("tol") = 0.01, py::arg("max_steps") = 4096,
      py::arg("extrapolate") = false, py::arg("prune_fractions") = std::vector<double>{}, py::arg("ranking") = "ipna",
      py::arg("maps") = "float32", py::arg("shard") = "0/1", py::arg("batch_items") = 16, py::arg("resume") = false,
      py::arg("overwrite") = false, py::arg("device") = "cpu", py::arg("precision") = "f32",
      py::arg("memory_budget_mb") = 0.0, py::arg("progress") = py::none(), sweep_doc.c_str());

  m.def(
      "merge",
      [](const std::vector<std::string>& shards, const std::string& output, bool overwrite) {
        MergeSummary s;
        {
          py::gil_scoped_release nogil;
          s = merge_sweeps(shards, output, overwrite);
        }
        return json_of(s.to_json());
      },
      py::arg("shards"), py::arg("output"), py::arg("overwrite") = false,
      "Join sweep shard files into one file, identical to a single-process sweep; returns the summary as a dict.");
}
