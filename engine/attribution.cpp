// The fused step loop of SPEC.md "Sharing": per chunk of steps k, one saving
// forward of f1 at x_k, f2 forward + backward there (g = dF/dh, shared by IG,
// conductance and every box), IG's backward through f1, and per box one
// non-saving f1 forward at the patch points x_{k-1} + d*1_S (difference form)
// or one tangent pass of f1 at x_k in direction d*1_S reusing the saved masks
// (tangent form, restricted to the box's receptive-field cone). h(x_{k-1}) is
// the previous step's h(x_k), carried across chunks, so conductance costs no
// extra f1 pass. The boxes' patch passes are independent: where the device has
// several lanes (the CPU: one per thread) they run at once, each lane with its
// own points, arena and windows.
#include "engine/attribution.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>

#include "engine/error.h"
#include "engine/imagenet.h"
#include "engine/plan.h"

namespace ipna {

struct SplitSamples {
  virtual ~SplitSamples() = default;
};

namespace {

// dF/dz for the logits z of one sample (target_value's gradient).
void target_gradient(TargetKind kind, const double* z, int classes, int y, double* g) {
  std::fill(g, g + classes, 0.0);
  if (kind == TargetKind::Logit) {
    g[y] = 1;
    return;
  }
  const double zmax = *std::max_element(z, z + classes);
  double s = 0;
  for (int i = 0; i < classes; ++i) s += std::exp(z[i] - zmax);
  const double py = std::exp(z[y] - zmax) / s;
  for (int i = 0; i < classes; ++i) g[i] = py * ((i == y ? 1.0 : 0.0) - std::exp(z[i] - zmax) / s);
}

// The secant rule's output gradients for n consecutive samples' logits: for sample i >= 1, F's
// gradient averaged over the step from z_{i-1} to z_i (Simpson's rule on the segment between
// them), then moved along the step so that its product with the step is F's change over it
// exactly; zero for sample 0, which only starts the first step.
std::vector<double> secant_target_gradients(TargetKind kind, const std::vector<double>& z, int n, int classes, int y) {
  std::vector<double> out(static_cast<size_t>(n) * classes, 0.0), mid(classes), g(classes);
  for (int i = 1; i < n; ++i) {
    const double* z0 = z.data() + static_cast<size_t>(i - 1) * classes;
    const double* z1 = z0 + classes;
    double* o = out.data() + static_cast<size_t>(i) * classes;
    for (int j = 0; j < classes; ++j) mid[j] = 0.5 * (z0[j] + z1[j]);
    for (const auto& [at, weight] :
         {std::pair{z0, 1.0}, std::pair{static_cast<const double*>(mid.data()), 4.0}, std::pair{z1, 1.0}}) {
      target_gradient(kind, at, classes, y, g.data());
      for (int j = 0; j < classes; ++j) o[j] += weight / 6 * g[j];
    }
    double along = 0, length2 = 0;
    for (int j = 0; j < classes; ++j) {
      along += o[j] * (z1[j] - z0[j]);
      length2 += (z1[j] - z0[j]) * (z1[j] - z0[j]);
    }
    const double change = target_value(kind, z1, classes, y) - target_value(kind, z0, classes, y);
    if (length2 > 0)
      for (int j = 0; j < classes; ++j) o[j] += (change - along) / length2 * (z1[j] - z0[j]);
  }
  return out;
}

template <typename T>
struct SamplesOf : SplitSamples {
  int points = 0;
  int64_t per_point = 0;
  std::vector<T> h, g;  // point i's values at i * per_point, points in the order of the schedule
};

// Where a box's IPNA sums at the split tensor: all `count` values, or (compact) the window `rect` of every
// channel's plane, laid out [C, rect height, rect width].
struct SplitWindow {
  int64_t count = 0;
  Cone::Rect rect;
  bool compact = false;
};

// A box's IPNA on its split window, placed on the whole split tensor (zero elsewhere).
std::vector<double> on_split_plane(std::vector<double> window, const SplitWindow& sw, const Shape& split) {
  if (!sw.compact) return window;
  std::vector<double> plane(static_cast<size_t>(split.numel()), 0.0);
  const int64_t h = split.height(), w = split.width(), wh = sw.rect.r1 - sw.rect.r0, ww = sw.rect.c1 - sw.rect.c0;
  for (int64_t ch = 0; ch < split.channels(); ++ch)
    for (int64_t r = 0; r < wh; ++r)
      std::copy_n(window.begin() + (ch * wh + r) * ww, ww, plane.begin() + (ch * h + sw.rect.r0 + r) * w + sw.rect.c0);
  return plane;
}

template <typename T>
struct Engine {
  std::unique_ptr<Backend<T>> be;
  GraphPlan<T> f1, f2;
  SplitModel model;
  Engine(const SplitModel& m, const std::string& device) : be(make_backend<T>(device)), f1(m.f1, *be), f2(m.f2, *be) {
    // The plans hold the weights on the device; keep only shapes here.
    model.f1 = m.f1.without_weights();
    model.f2 = m.f2.without_weights();
    model.split_name = m.split_name;
  }

  // The step loop's buffers and workspaces live across runs: a sweep of many
  // runs allocates (and page-faults) once, and nothing is allocated inside the loop.
  struct StepBuffers {
    DeviceBuffer points, dx, h, h_masked, dh, h_prev, h_next, g_next, h_patch, g_window, box_direction, logits, dlogits,
        fval, ig_acc, cond_acc, carry, zeros, value_store;
    std::vector<DeviceBuffer> ipna_acc;  // one per box
    template <typename F>
    void each(F&& f) {
      for (DeviceBuffer* b :
           {&points, &dx, &h, &h_masked, &dh, &h_prev, &h_next, &g_next, &h_patch, &g_window, &box_direction, &logits,
            &dlogits, &fval, &ig_acc, &cond_acc, &carry, &zeros, &value_store})
        f(*b);
      for (DeviceBuffer& b : ipna_acc) f(b);
    }
  } buffers;
  typename GraphPlan<T>::Workspace ws1, ws2;
  // What a patch pass writes, per patch lane with buffers of its own (Backend::run_concurrently runs the
  // passes of different boxes at once): every lane after the first, or every lane where boxes run in
  // groups (ConeGroup). Lane 0 of one box a pass writes the step loop's own points, h_patch, g_window,
  // box_direction and ws1's forward arena, and every lane reads ws1's saved state.
  struct PatchLaneBuffers {
    DeviceBuffer points, h_patch, g_window, box_direction;
    typename GraphPlan<T>::Workspace ws;
  };
  std::vector<PatchLaneBuffers> own_lanes;
  // Bytes this engine holds in reusable buffers and workspaces: free memory
  // plus these is what a run may plan with.
  size_t held_bytes() {
    size_t b = 0;
    buffers.each([&](DeviceBuffer& d) { b += d.bytes(); });
    std::vector<const typename GraphPlan<T>::Workspace*> workspaces{&ws1, &ws2};
    for (const PatchLaneBuffers& l : own_lanes) {
      for (const DeviceBuffer* d : {&l.points, &l.h_patch, &l.g_window, &l.box_direction}) b += d->bytes();
      workspaces.push_back(&l.ws);
    }
    for (const auto* ws : workspaces)
      b += ws->forward_arena.bytes() + ws->backward_arena.bytes() + ws->saved.bytes() + ws->window_in.bytes() +
           ws->window_out.bytes() + ws->window_aux.bytes() + ws->output_nhwc.bytes() + ws->transposed_in.bytes() +
           ws->transposed_out.bytes();
    return b;
  }
  // Frees all of it; the workspaces forget their capacity too, so they regrow at the next run's chunk.
  void release_held() {
    buffers.each([](DeviceBuffer& d) { d.reset(); });
    ws1 = {};
    ws2 = {};
    own_lanes.clear();
  }
  // `b` with room for `count` elements, grown (never shrunk) as needed.
  T* grow(DeviceBuffer& b, size_t count) {
    const size_t bytes = std::max<size_t>(count, 1) * sizeof(T);
    if (b.bytes() < bytes) {
      b.reset();
      b = DeviceBuffer(*be, bytes);
    }
    return b.as<T>();
  }

  DeviceBuffer upload(const std::vector<double>& v) {
    std::vector<T> h(v.begin(), v.end());
    DeviceBuffer b(*be, std::max<size_t>(h.size(), 1) * sizeof(T));
    if (!h.empty()) be->copy_to_device(b.as<void>(), h.data(), h.size() * sizeof(T));
    return b;
  }
  std::vector<double> download(const T* p, size_t count) {
    if (!count) return {};  // a box whose cone never reaches the split tensor
    std::vector<T> h(count);
    be->copy_to_host(h.data(), p, count * sizeof(T));
    return {h.begin(), h.end()};
  }
  std::vector<double> download(const DeviceBuffer& b, size_t count) { return download(b.as<T>(), count); }

  // Logits for a batch of points already on the device.
  std::vector<double> forward_logits(const DeviceBuffer& x, int n, const std::vector<double>& mask) {
    const int64_t hn = f1.output_numel(), classes = f2.output_numel();
    f1.reserve(ws1, n, false);
    f2.reserve(ws2, n, false);
    DeviceBuffer h(*be, n * hn * sizeof(T)), z(*be, n * classes * sizeof(T));
    f1.forward(n, x.as<T>(), h.as<T>(), ws1, false);
    if (!mask.empty()) {
      DeviceBuffer m = upload(mask);
      be->scale_by_mask(hn, n, m.as<T>(), h.as<T>());
    }
    f2.forward(n, h.as<T>(), z.as<T>(), ws2, false);
    return download(z, n * classes);
  }

  std::vector<double> split(const std::vector<double>& x) {
    DeviceBuffer xd = upload(x);
    f1.reserve(ws1, 1, false);
    DeviceBuffer h(*be, f1.output_numel() * sizeof(T));
    f1.forward(1, xd.as<T>(), h.as<T>(), ws1, false);
    return download(h, f1.output_numel());
  }

  // With `coarse`: Attributor::refine, the points at odd a_k only, plus half of coarse's sums.
  AttributionResult run(const std::vector<double>& x, const std::vector<double>& x0, const AttributionRequest& req,
                        const AttributionResult* coarse = nullptr);
};

void check_finite(const std::vector<double>& v, const char* what) {
  for (size_t i = 0; i < v.size(); ++i)
    if (!std::isfinite(v[i]))
      throw Error(std::string(what) + " has a NaN or Inf value at element " + std::to_string(i));
}

// The points of a run in units of d = (x - x')/m: gradients are taken at x' + t d, and s is the
// weight there (IG) and the length of the step into it (conductance, IPNA), also in units of d.
struct PathPoints {
  std::vector<double> t, s;
  // Where each point's step starts (the point before it; for the right rule,
  // a_{k-1}), and for a refinement's new points (right rule) the length of
  // the step from the point to the coarse point after it.
  std::vector<double> before, s_after;
  bool unit = true;  // every s is 1: IG sums without weights and patches add d itself
};

// new_only: the points at a_k with odd k, those a schedule of half as many steps lacks.
PathPoints path_points(int m, std::vector<double> a, Quadrature q, bool new_only) {
  PathPoints p;
  bool uniform = true;  // a schedule of k/m is the default one, arithmetic included
  for (size_t k = 0; k < a.size() && uniform; ++k) uniform = a[k] == static_cast<double>(k) / m;
  if (uniform) a.clear();
  // a_k in units of d; the uniform schedule keeps integer positions, the original's arithmetic.
  auto at = [&](int k) { return a.empty() ? static_cast<double>(k) : m * a[k]; };
  auto len = [&](int k) { return a.empty() ? 1.0 : m * (a[k] - a[k - 1]); };  // step k, from a_{k-1} to a_k
  for (int k = 1; k <= m; ++k) {
    if (new_only && (q == Quadrature::Right ? k : k - 1) % 2 == 0) continue;
    switch (q) {
      case Quadrature::Right:
      case Quadrature::Secant:
        p.t.push_back(at(k));
        p.before.push_back(at(k - 1));
        if (new_only) p.s_after.push_back(len(k + 1));
        break;
      case Quadrature::Left:
        p.t.push_back(at(k - 1));
        break;
      case Quadrature::Middle:
        p.t.push_back(a.empty() ? k - 0.5 : 0.5 * (at(k - 1) + at(k)));
        break;
      case Quadrature::Trapezoid:
        break;
    }
    if (q != Quadrature::Trapezoid) p.s.push_back(len(k));
  }
  if (q == Quadrature::Trapezoid)  // the nodes a_0..a_m, each weighing half of each step beside it
    for (int k = new_only ? 1 : 0; k <= m; k += new_only ? 2 : 1) {
      p.t.push_back(at(k));
      p.s.push_back(0.5 * ((k > 0 ? len(k) : 0.0) + (k < m ? len(k + 1) : 0.0)));
    }
  if (q != Quadrature::Right && q != Quadrature::Secant)
    for (size_t i = 0; i < p.t.size(); ++i) p.before.push_back(i == 0 ? 0.0 : p.t[i - 1]);
  for (const auto* v : {&p.s, &p.s_after})
    for (double s : *v) p.unit = p.unit && s == 1.0;
  return p;
}

void check_schedule(const std::vector<double>& a, int steps) {
  if (a.empty()) return;
  const int m = static_cast<int>(a.size()) - 1;
  if (m < 1) throw Error("a schedule needs at least 2 values (a_0 = 0 and a_m = 1), got " + std::to_string(a.size()));
  if (steps != 0 && steps != m)
    throw Error("the schedule has " + std::to_string(a.size()) + " values, so " + std::to_string(m) + " steps, but " +
                std::to_string(steps) + " steps were asked for");
  if (a.front() != 0.0 || a.back() != 1.0)
    throw Error("a schedule runs from a_0 = 0 to a_m = 1; got " + std::to_string(a.front()) + " to " +
                std::to_string(a.back()));
  for (int k = 1; k <= m; ++k)
    if (!(a[k] > a[k - 1]))
      throw Error("a schedule must increase strictly: a_" + std::to_string(k) + " = " + std::to_string(a[k]) +
                  " after a_" + std::to_string(k - 1) + " = " + std::to_string(a[k - 1]));
}

// What Attributor::refine needs of its request and of the coarse run.
void check_refinable(const AttributionRequest& req, int m, const AttributionResult& coarse, int64_t xn, int64_t hn) {
  if (req.quadrature == Quadrature::Secant)
    throw Error("the secant rule cannot be refined from a coarser run: each step's slopes change with its ends");
  if (req.integrated_gradients && req.quadrature == Quadrature::Middle)
    throw Error("the midpoint rule cannot be refined from a coarser run: its points are not nested");
  if ((req.conductance || !req.boxes.empty()) && !req.integrated_gradients && req.quadrature != Quadrature::Right)
    throw Error(
        "conductance and IPNA are refined on the right rule's points; without IG the request's rule applies "
        "to them");
  if (m < 2 || m % 2)
    throw Error("a refined run needs an even number of steps (twice the coarse run's), got " + std::to_string(m));
  const std::vector<double>& a = req.schedule;
  for (size_t k = 2; k < a.size(); k += 2) {
    const double first = a[k - 1] - a[k - 2], second = a[k] - a[k - 1];
    if (std::abs(first - second) > 1e-9 * (first + second))
      throw Error("the schedule does not split the coarse run's steps into equal halves: steps " +
                  std::to_string(k - 1) + " and " + std::to_string(k) + " are " + std::to_string(first) + " and " +
                  std::to_string(second) + " long");
  }
  if (req.integrated_gradients && static_cast<int64_t>(coarse.ig.size()) != xn)
    throw Error("the coarse run's integrated gradients have " + std::to_string(coarse.ig.size()) +
                " values, the input " + std::to_string(xn));
  if (coarse.ipna.size() != req.boxes.size())
    throw Error("the coarse run has " + std::to_string(coarse.ipna.size()) + " IPNA maps, the request " +
                std::to_string(req.boxes.size()) + " boxes");
  for (const std::vector<double>& map : coarse.ipna)
    if (static_cast<int64_t>(map.size()) != hn)
      throw Error("the coarse run's IPNA maps have " + std::to_string(map.size()) + " values, the split tensor " +
                  std::to_string(hn));
}

void add_box_sums(AttributionResult& r, const std::vector<Box>& boxes) {
  r.ig_in_box.clear();
  r.ipna_gap.clear();
  if (r.ig.empty()) return;
  for (size_t b = 0; b < boxes.size(); ++b) {
    r.ig_in_box.push_back(sum_in_box(r.ig, r.input_shape, boxes[b]));
    r.ipna_gap.push_back(r.ipna_sum[b] - r.ig_in_box.back());
  }
}

template <typename T>
AttributionResult Engine<T>::run(const std::vector<double>& x, const std::vector<double>& x0,
                                 const AttributionRequest& req, const AttributionResult* coarse) {
  const bool path_quantities = req.conductance || !req.boxes.empty();
  if (req.integrated_gradients && req.quadrature != Quadrature::Right && req.quadrature != Quadrature::Secant &&
      path_quantities) {
    // IG at its own points; conductance and IPNA on the path's steps.
    AttributionRequest ig_req = req, path_req = req;
    ig_req.conductance = false;
    ig_req.boxes.clear();
    path_req.integrated_gradients = false;
    path_req.quadrature = Quadrature::Right;
    int first_total = 0;
    if (req.progress) {
      path_req.progress = [&](int done, int total) {
        first_total = total;
        req.progress(done, 2 * total);
      };
      ig_req.progress = [&](int done, int total) { req.progress(first_total + done, first_total + total); };
    }
    AttributionResult path_coarse, ig_coarse;  // each run refines its own part of the coarse run
    if (coarse) {
      path_coarse.ipna = coarse->ipna;
      path_coarse.split_samples = coarse->split_samples;
      ig_coarse.ig = coarse->ig;
    }
    AttributionResult r = run(x, x0, path_req, coarse ? &path_coarse : nullptr);
    const AttributionResult g = run(x, x0, ig_req, coarse ? &ig_coarse : nullptr);
    r.ig = g.ig;
    r.ig_sum = g.ig_sum;
    r.ig_gap = g.ig_gap;
    add_box_sums(r, req.boxes);
    r.evaluations += g.evaluations;
    r.chunk = std::min(r.chunk, g.chunk);
    r.workspace_bytes = std::max(r.workspace_bytes, g.workspace_bytes);
    r.seconds += g.seconds;
    r.algorithm_search_seconds += g.algorithm_search_seconds;
    return r;
  }
  const auto t_start = std::chrono::steady_clock::now();
  const double search_start = be->algorithm_search_seconds();
  const Shape in_shape = model.input_shape(), h_shape = model.split_shape();
  const int64_t xn = in_shape.numel(), hn = h_shape.numel();
  const int classes = model.num_classes();
  check_schedule(req.schedule, req.steps);
  const int m = req.schedule.empty() ? req.steps : static_cast<int>(req.schedule.size()) - 1;
  // Refined conductance and difference form pair each new point with the coarse points on either side,
  // whose h and g the coarse run kept (SplitSamples).
  const bool pairs_points = req.conductance || (!req.boxes.empty() && req.ipna_form == IpnaForm::Difference);
  const SamplesOf<T>* coarse_samples = nullptr;
  if (coarse) {
    check_refinable(req, m, *coarse, xn, hn);
    if (pairs_points) {
      coarse_samples = dynamic_cast<const SamplesOf<T>*>(coarse->split_samples.get());
      if (!coarse_samples)
        throw Error(
            "conductance and the difference form can be refined only from a coarse run that kept its split "
            "activations and gradients (AttributionRequest::keep_split_samples) in the same precision");
      if (coarse_samples->points != m / 2 || coarse_samples->per_point != hn)
        throw Error("the coarse run kept " + std::to_string(coarse_samples->points) + " points of " +
                    std::to_string(coarse_samples->per_point) + " split values; refining to " + std::to_string(m) +
                    " steps needs " + std::to_string(m / 2) + " of " + std::to_string(hn));
    }
  }

  // --- validate everything before any work ---
  if (static_cast<int64_t>(x.size()) != xn)
    throw Error("input has " + std::to_string(x.size()) + " values, the model expects " + in_shape.str() + " = " +
                std::to_string(xn));
  if (static_cast<int64_t>(x0.size()) != xn)
    throw Error("baseline has " + std::to_string(x0.size()) + " values, the model expects " + std::to_string(xn));
  check_finite(x, "the input");
  check_finite(x0, "the baseline");
  if (m <= 0) throw Error("steps must be positive, got " + std::to_string(m));
  if (req.box_batch < 0)
    throw Error("the batch of boxes must be 0 (the device's choice) or more, got " + std::to_string(req.box_batch));
  if (req.target_class < 0 || req.target_class >= classes)
    throw Error("class " + std::to_string(req.target_class) + " is out of range: the model has " +
                std::to_string(classes) + " outputs (0.." + std::to_string(classes - 1) + ")");
  if (!req.integrated_gradients && !req.conductance && req.boxes.empty())
    throw Error("nothing to compute: ask for integrated gradients, conductance or at least one IPNA box");
  const int H = static_cast<int>(in_shape.height()), W = static_cast<int>(in_shape.width());
  for (size_t b = 0; b < req.boxes.size(); ++b) {
    const Box& s = req.boxes[b];
    if (in_shape.rank() != 3)
      throw Error("IPNA boxes need an image input (C,H,W); the model input is " + in_shape.str());
    if (s.r0 < 0 || s.c0 < 0 || s.r1 > H || s.c1 > W || s.r0 >= s.r1 || s.c0 >= s.c1)
      throw Error("box " + std::to_string(b) + " (" + std::to_string(s.r0) + " " + std::to_string(s.c0) + " " +
                  std::to_string(s.r1) + " " + std::to_string(s.c1) + ") must satisfy 0 <= x1 < x2 <= " +
                  std::to_string(H) + " (rows) and 0 <= y1 < y2 <= " + std::to_string(W) + " (columns)");
  }
  if (!req.split_mask.empty()) {
    if (static_cast<int64_t>(req.split_mask.size()) != hn)
      throw Error("pruning mask has " + std::to_string(req.split_mask.size()) + " values, the split tensor has " +
                  std::to_string(hn));
    check_finite(req.split_mask, "the pruning mask");
  }
  const bool secant = req.quadrature == Quadrature::Secant;
  if (secant) {
    if (!req.boxes.empty() && req.ipna_form != IpnaForm::Tangent)
      throw Error(
          "the secant rule computes IPNA in the tangent form only: the difference form's patch points have no "
          "slopes of their own");
    for (const GraphPlan<T>* plan : {&f1, &f2})
      if (const Node* node = plan->without_secant())
        throw Error("node '" + node->name + "' (" + op_name(node->kind) +
                    "): the secant rule has slopes for elementwise nonlinearities, max pools and products only");
  }
  const bool ig = req.integrated_gradients, path = path_quantities;
  const PathPoints P = path_points(m, req.schedule, req.quadrature, coarse != nullptr);
  const int npoints = static_cast<int>(P.t.size());
  const bool tangent = !req.boxes.empty() && req.ipna_form == IpnaForm::Tangent;
  const bool keep_f1 = ig || tangent;  // what f1's backward (or tangent pass) needs, saved by its forward
  // The difference form on cones carries each patch point's changes from the base point's values.
  // (The secant rule's tangent passes run on whole planes: their max pools share each output between two argmaxes.)
  const bool patch_cones = !req.boxes.empty() && req.receptive_field_cones && !secant;
  const bool value_store = patch_cones && !tangent;
  // A refinement's patch passes from the coarse points read those points' values, recomputed into a second
  // set of store slots.
  const bool store_coarse = value_store && coarse;
  // The path's points make f1's head (a first convolution) from x' and d alone (GraphPlan::prepare_line), except
  // in the difference form's whole-plane patch passes: they run the head on the whole patched input, whose
  // values would then differ from the base point's by rounding outside the box's cone, where the form needs
  // them equal (on cones the head adds the patch's change to the base point's value).
  const bool head_on_line = req.boxes.empty() || tangent || value_store;
  std::vector<Cone> cones;
  int64_t cone_window = 0;
  // A box's patch pass leaves the split tensor compact on its cone window where it can: outside it
  // the tangent is zero and the patched value equals the base, so IPNA sums over the window only.
  std::vector<SplitWindow> split_window(req.boxes.size(), SplitWindow{hn, {}, false});
  int64_t widest_split_window = 0;
  if (patch_cones)
    for (size_t b = 0; b < req.boxes.size(); ++b) {
      cones.push_back(f1.cone(req.boxes[b], /*compact_output=*/true, /*compact_input=*/true));
      cone_window = std::max(cone_window, cones.back().window_elems);
      if (cones.back().compact[f1.graph().output]) {
        const Cone::Rect& rect = cones.back().rect[f1.graph().output];
        split_window[b] = {h_shape.channels() * rect.area(), rect, true};
        widest_split_window = std::max(widest_split_window, split_window[b].count);
      }
    }
  const bool masked = !req.split_mask.empty();
  using StoreLayout = typename GraphPlan<T>::StoreLayout;
  const StoreLayout layout = value_store ? f1.store_layout(cones) : StoreLayout();

  // On cones, boxes of the same cone geometry (kinds) run in groups, one patch pass a group, each kind split
  // into groups of near-equal size; otherwise one box a pass.
  const size_t batch =
      !patch_cones ? 1 : static_cast<size_t>(req.box_batch ? req.box_batch : be->boxes_per_patch_pass());
  std::vector<std::vector<size_t>> kinds;
  for (size_t b = 0; b < req.boxes.size(); ++b) {
    auto kind = std::find_if(kinds.begin(), kinds.end(), [&](const std::vector<size_t>& k) {
      return batch > 1 && f1.same_geometry(cones[k.front()], cones[b]);
    });
    if (kind == kinds.end())
      kinds.push_back({b});
    else
      kind->push_back(b);
  }
  auto groups_of = [&](size_t most) {
    std::vector<std::vector<size_t>> g;
    for (const std::vector<size_t>& kind : kinds) {
      const size_t count = kind.size(), parts = (count + most - 1) / most;
      for (size_t p = 0, from = 0; p < parts; ++p) {
        const size_t to = from + (count - from) / (parts - p);
        g.emplace_back(kind.begin() + from, kind.begin() + to);
        from = to;
      }
    }
    return g;
  };
  // Patch passes of different groups on cones run at once where the device allows it, each lane with its own
  // buffers: their cone-window launches are too small to share well between threads. Whole-plane passes keep
  // the threads inside each launch (on the CPU they measured 1.15x to 1.3x slower per box in lanes, each
  // thread then streaming its own whole planes).
  auto lanes_of = [&](const std::vector<std::vector<size_t>>& g) {
    return patch_cones && g.size() > 1 ? std::min<int>(be->concurrent_lanes(), static_cast<int>(g.size())) : 1;
  };
  // Lanes with buffers of their own: lane 0 of one box a pass shares the step loop's.
  auto lanes_owning_of = [&](const std::vector<std::vector<size_t>>& g, size_t widest_group) {
    return widest_group > 1 ? lanes_of(g) : lanes_of(g) - 1;
  };
  auto widest_of = [](const std::vector<std::vector<size_t>>& g) {
    size_t w = 1;
    for (const std::vector<size_t>& members : g) w = std::max(w, members.size());
    return w;
  };

  // --- chunk of steps from the memory budget ---
  const size_t t = sizeof(T);
  // Bytes a step takes with groups of up to `most` boxes.
  auto per_step_of = [&](size_t most) {
    const std::vector<std::vector<size_t>> g = groups_of(most);
    const size_t widest_group = widest_of(g);
    return f1.bytes_per_sample(keep_f1, secant) + f2.bytes_per_sample(true, secant) +
           (ig && !f1.has_line_head() ? 2 : 1) * xn * t /* points, dx */ +
           3 * cone_window * t /* a convolution's cone window: in, out, the base point's */ +
           (store_coarse ? 2 : 1) * layout.elems * t /* the base points' values the patch passes read */ +
           (3 + (masked ? 1 : 0)) * hn * t /* h, h_prev, h_patch, masked h */ + hn * t /* dh */ +
           widest_split_window * t /* a gradient's window on a box's cone */ +
           (coarse_samples ? 2 : 0) * hn * t /* the coarse points' h and g after each new point */ + 2 * classes * t +
           2 * t +
           lanes_owning_of(g, widest_group) *
               (widest_group * (f1.bytes_per_sample(false) + (xn + hn + 3 * cone_window) * t) + widest_split_window * t)
        /* each owning lane's points, h_patch, forward arena and cone windows for its group, gradient window */;
  };
  const size_t available = be->memory_available() + held_bytes();
  // The secant rule's batch leads with the point before the chunk's first, where its first step starts (a row
  // over the budget, which is for the steps; not over the memory there is).
  const int lead = secant ? 1 : 0;
  size_t budget = req.memory_budget;
  if (!budget) budget = be->default_memory_budget(available);
  int chunk = req.chunk;
  if (chunk <= 0) chunk = static_cast<int>(std::clamp<size_t>(budget / per_step_of(1), 1, size_t(npoints)));
  chunk = std::min(chunk, npoints);
  // cuDNN's legacy descriptors and the kernels' launch sizes count elements in
  // 32 bits: no tensor of a batch may reach 2^31 elements.
  const int64_t widest = std::max({f1.max_value_numel(), f2.max_value_numel(), xn, hn});
  chunk = static_cast<int>(std::min<int64_t>(chunk, std::numeric_limits<int32_t>::max() / widest - lead));
  if (chunk < 1)
    throw Error("one sample's tensors of " + std::to_string(widest) + " elements exceed the 2^31 a batch may hold");
  const int rows = chunk + lead;
  // The groups take what the budget leaves beside the chunk: batching boxes never shrinks the chunk of steps.
  size_t most = 1;
  for (const std::vector<size_t>& kind : kinds) most = std::max(most, std::min(batch, kind.size()));
  while (most > 1 && per_step_of(most) * rows > std::max(budget, per_step_of(1) * rows)) --most;
  const std::vector<std::vector<size_t>> groups = groups_of(most);
  const size_t widest_group = widest_of(groups);
  const int lanes = lanes_of(groups), lanes_owning = lanes_owning_of(groups, widest_group);
  const size_t per_step = per_step_of(most);
  if (per_step * rows > available)
    throw Error("not enough memory on " + be->name() + ": one chunk of " + std::to_string(chunk) + " steps needs " +
                std::to_string((per_step * rows) >> 20) + " MiB");
  // The chunk counted every held buffer as free, but growing keeps the ones this
  // run does not use (IG's backward arena when IPNA alone follows IG, say): where
  // the run does not fit beside them, all go, and what it needs comes back at its size.
  if (per_step * rows > be->memory_available()) release_held();

  // --- device state ---
  std::vector<double> d(xn);
  for (int64_t j = 0; j < xn; ++j) d[j] = (x[j] - x0[j]) / m;
  DeviceBuffer x0_dev = upload(x0), d_dev = upload(d);
  DeviceBuffer mask_dev = masked ? upload(req.split_mask) : DeviceBuffer();
  // f2 runs forward and backward only; f1 also the patch passes, which read its saved state by planes.
  // (The secant rule reads each nonlinearity's input and output as they are stored: float32, not bf16.)
  const bool layouts = !(secant && be->stores_bf16());
  ws1.channels_last = req.boxes.empty() && layouts;
  ws2.channels_last = layouts;
  ws1.secant = ws2.secant = secant;
  f1.reserve(ws1, rows, keep_f1);
  f2.reserve(ws2, rows, true);
  StepBuffers& B = buffers;
  T* pts = grow(B.points, rows * xn);
  T* dx = ig && !f1.has_line_head() ? grow(B.dx, rows * xn) : nullptr;
  T* h_cur = grow(B.h, rows * hn);
  T* h_f2 = masked ? grow(B.h_masked, rows * hn) : nullptr;
  T* dh = grow(B.dh, rows * hn);
  T* h_prev = path ? grow(B.h_prev, chunk * hn) : nullptr;
  T* h_next = coarse_samples ? grow(B.h_next, chunk * hn) : nullptr;
  T* g_next = coarse_samples ? grow(B.g_next, chunk * hn) : nullptr;
  // Samples of this run's points: a whole run's in order, a refined run's new points between the coarse ones.
  const int level_points = coarse ? 2 * npoints : npoints;
  std::shared_ptr<SamplesOf<T>> samples;
  if (req.keep_split_samples && pairs_points && !secant && size_t(level_points) * hn * 2 * t <= kSplitSamplesMaxBytes) {
    samples = std::make_shared<SamplesOf<T>>();
    samples->points = level_points;
    samples->per_point = hn;
    samples->h.resize(size_t(level_points) * hn);
    samples->g.resize(size_t(level_points) * hn);
  }
  T* h_patch = req.boxes.empty() ? nullptr : grow(B.h_patch, rows * hn);
  T* g_window = widest_split_window ? grow(B.g_window, chunk * widest_split_window) : nullptr;
  // d on a box alone, for a box whose cone windows are all that read the input (make_patch_points).
  int64_t widest_box = 0;
  for (const Cone& cone : cones)
    if (cone.compact[f1.graph().input])
      widest_box = std::max(widest_box, in_shape.channels() * cone.rect[f1.graph().input].area());
  T* box_direction = widest_box ? grow(B.box_direction, widest_box) : nullptr;
  // What a patch pass writes, per lane: lane 0 of one box a pass the step loop's own buffers.
  struct PatchLane {
    T *pts, *h_patch, *g_window, *box_direction;
    typename GraphPlan<T>::Workspace* ws;
  };
  std::vector<PatchLane> lane;
  if (lanes_owning < lanes) lane.push_back({pts, h_patch, g_window, box_direction, &ws1});
  if (own_lanes.size() < size_t(lanes_owning)) own_lanes.resize(lanes_owning);
  const int group_rows = rows * static_cast<int>(widest_group);
  for (int l = 0; l < lanes_owning; ++l) {
    PatchLaneBuffers& e = own_lanes[l];
    f1.reserve(e.ws, group_rows, false);
    lane.push_back({grow(e.points, group_rows * xn), grow(e.h_patch, group_rows * hn),
                    widest_split_window ? grow(e.g_window, chunk * widest_split_window) : nullptr,
                    widest_box ? grow(e.box_direction, widest_box) : nullptr, &e.ws});
  }
  // Box b's part of a gradient g of the chunk's points: g itself, or its window on b's cone, gathered.
  const int split_h = h_shape.rank() == 3 ? static_cast<int>(h_shape.height()) : 0;
  const int split_w = h_shape.rank() == 3 ? static_cast<int>(h_shape.width()) : 0;
  auto gradient_on = [&](size_t b, const T* g, int n, const PatchLane& L) -> const T* {
    const SplitWindow& sw = split_window[b];
    if (!sw.compact) return g;
    const int wh = sw.rect.r1 - sw.rect.r0, ww = sw.rect.c1 - sw.rect.c0;
    be->copy_window(n, static_cast<int>(h_shape.channels()), g, split_h, split_w, sw.rect.r0, sw.rect.c0, L.g_window,
                    wh, ww, 0, 0, wh, ww);
    return L.g_window;
  };
  T* logits = grow(B.logits, rows * classes);
  T* dlogits = grow(B.dlogits, rows * classes);
  T* fval = grow(B.fval, rows);
  T* ig_acc = ig ? grow(B.ig_acc, xn) : nullptr;
  T* cond_acc = req.conductance ? grow(B.cond_acc, hn) : nullptr;
  T* carry = path ? grow(B.carry, hn) : nullptr;
  T* zeros = tangent || patch_cones ? grow(B.zeros, xn) : nullptr;
  // Slot 0: the carried base point, slots 1..chunk: this chunk's points; refining, chunk + 1..2 chunk: the
  // coarse points before them.
  typename GraphPlan<T>::ValueStore store;
  if (value_store) {
    const int slots = chunk + 1 + (store_coarse ? chunk : 0);
    store = {grow(B.value_store, std::max<int64_t>(1, layout.elems) * slots), slots, 0, &layout};
  }
  const typename GraphPlan<T>::ValueStore new_points{store.data, store.slots, 1, store.layout},
      coarse_points{store.data, store.slots, chunk + 1, store.layout};
  if (zeros) be->zero(zeros, xn * t);
  // Box b's patch points into pts: x' + k d + s d 1_S (the tangent form: base zeros, k = 0), or where only
  // cone windows read the input, the patch alone, s d on the box ([n, C, box]): the tangent there, and the
  // difference form's change of the input.
  // Returns whether every point is the same (the box alone, equal steps), which the patch pass then exploits.
  auto make_patch_points = [&](size_t b, const PointBatch& patch, const T* base, const PatchLane& L, T* pts) -> bool {
    if (cones.empty() || !cones[b].compact[f1.graph().input]) {
      be->make_points(in_shape, base, d_dev.as<T>(), patch, pts);
      return false;
    }
    const Cone::Rect& box = cones[b].rect[f1.graph().input];
    const int bh = box.r1 - box.r0, bw = box.c1 - box.c0;
    be->copy_window(1, static_cast<int>(in_shape.channels()), d_dev.as<T>(), H, W, box.r0, box.c0, L.box_direction, bh,
                    bw, 0, 0, bh, bw);
    PointBatch scaled;  // zeros + s d
    scaled.k = patch.patch_scale.empty() ? std::vector<double>(patch.k.size(), 1.0) : patch.patch_scale;
    be->make_points(Shape{in_shape.channels(), bh, bw}, zeros, L.box_direction, scaled, pts);
    return std::all_of(scaled.k.begin(), scaled.k.end(), [&](double s) { return s == scaled.k.front(); });
  };
  if (B.ipna_acc.size() < req.boxes.size()) B.ipna_acc.resize(req.boxes.size());
  std::vector<T*> ipna_acc;
  for (size_t b = 0; b < req.boxes.size(); ++b) {
    ipna_acc.push_back(grow(B.ipna_acc[b], split_window[b].count));
    be->zero(ipna_acc.back(), split_window[b].count * t);
  }
  if (ig) be->zero(ig_acc, xn * t);
  if (req.conductance) be->zero(cond_acc, hn * t);
  size_t workspace = per_step * rows;

  AttributionResult r;
  r.input_shape = in_shape;
  r.split_shape = h_shape;
  r.chunk = chunk;
  r.patch_passes = static_cast<int>(groups.size());
  r.workspace_bytes = workspace;
  r.evaluations = npoints + (secant ? (npoints + chunk - 1) / chunk : 0);  // each chunk's leading point

  // F(x') and F(x) on the same path arithmetic as the steps; F(x) from the logits of the last step
  // where that step is at x (the right rule's last point, unless refining).
  const bool last_at_x = !coarse && P.t.back() == static_cast<double>(m);
  {
    PointBatch ends;
    ends.k = {0.0};
    if (!last_at_x) ends.k.push_back(static_cast<double>(m));
    const int count = static_cast<int>(ends.k.size());
    DeviceBuffer e(*be, count * xn * t);
    be->make_points(in_shape, x0_dev.as<T>(), d_dev.as<T>(), ends, e.as<T>());
    std::vector<double> z = forward_logits(e, count, req.split_mask);
    r.f_baseline = target_value(req.target, z.data(), classes, req.target_class);
    if (!last_at_x) r.f_input = target_value(req.target, z.data() + classes, classes, req.target_class);
  }

  if (head_on_line) f1.prepare_line(x0, d, ws1);  // after the last reserve of ws1, which would drop it

  // h(x_0), carried as h(x_{k-1}) into the first chunk (the secant rule's batches carry it themselves).
  if (path && !secant) {
    PointBatch p0;
    p0.k = {0.0};
    be->make_points(in_shape, x0_dev.as<T>(), d_dev.as<T>(), p0, pts);
    f1.forward(1, pts, carry, ws1, false, store, head_on_line ? &p0.k : nullptr);  // store slot 0
  }
  for (int first = 0; first < npoints; first += chunk) {  // this chunk's points: x_k, k = first + 1 + i
    const int c = std::min(chunk, npoints - first);
    const int n = c + lead;  // the batch: under the secant rule, the first step's start, then the chunk's points
    PointBatch cur;
    if (secant) cur.k.push_back(P.before[first]);
    cur.k.insert(cur.k.end(), P.t.begin() + first, P.t.begin() + first + c);
    std::vector<double> step;  // s_k of the batch's points (empty: all 1; the secant rule's lead has no gradient)
    if (!P.unit) {
      step.assign(lead, 0.0);
      step.insert(step.end(), P.s.begin() + first, P.s.begin() + first + c);
    }
    be->make_points(in_shape, x0_dev.as<T>(), d_dev.as<T>(), cur, pts);
    f1.forward(n, pts, h_cur, ws1, keep_f1, new_points, head_on_line ? &cur.k : nullptr);
    T* f2_in = h_cur;
    if (masked) {
      be->copy_on_device(h_f2, h_cur, n * hn * t);
      be->scale_by_mask(hn, n, mask_dev.as<T>(), h_f2);
      f2_in = h_f2;
    }
    f2.forward(n, f2_in, logits, ws2, true);
    if (secant) {
      const std::vector<double> g =
          secant_target_gradients(req.target, download(logits, n * classes), n, classes, req.target_class);
      const std::vector<T> gt(g.begin(), g.end());
      be->copy_to_device(dlogits, gt.data(), gt.size() * t);
    } else {
      be->target_forward_backward(req.target, classes, req.target_class, logits, fval, dlogits, c);
    }
    if (last_at_x && first + c == npoints) {
      const std::vector<double> z = download(logits + (n - 1) * classes, classes);
      r.f_input = target_value(req.target, z.data(), classes, req.target_class);
    }
    f2.backward(n, dlogits, dh, ws2);
    if (masked) be->scale_by_mask(hn, n, mask_dev.as<T>(), dh);
    if (ig) {
      f1.backward_sum(n, dh, step, dx, ig_acc, ws1);
    }
    if (path && !coarse && !secant) {
      // h_prev[i] = h(x_{k-1}) of the chunk's point i: the carry, then this chunk's h shifted by one.
      be->copy_on_device(h_prev, carry, hn * t);
      if (c > 1) be->copy_on_device(h_prev + hn, h_cur, (c - 1) * hn * t);
      be->copy_on_device(carry, h_cur + (c - 1) * hn, hn * t);
    } else if (coarse_samples) {
      // New point k = first + i + 1 sits at a_{2k-1}, between the coarse points k - 1 (at a_{2k-2}; x_0 for
      // k = 1) and k (at a_{2k}), and splits the coarse step between them: each of its terms, g_{2k} (h_{2k} -
      // h_{2k-2}) in conductance, becomes g_{2k-1} (h_{2k-1} - h_{2k-2}) + g_{2k} (h_{2k} - h_{2k-1}).
      const T* old_h = coarse_samples->h.data();
      if (store_coarse) {  // the patch passes from the coarse points before read their values: f1 there again
        PointBatch before;
        before.k.assign(P.before.begin() + first, P.before.begin() + first + c);
        be->make_points(in_shape, x0_dev.as<T>(), d_dev.as<T>(), before, pts);
        f1.forward(c, pts, h_prev, ws1, false, coarse_points, head_on_line ? &before.k : nullptr);
      } else {
        const int lead = first == 0 ? 1 : 0;
        if (lead) be->copy_on_device(h_prev, carry, hn * t);  // h(x_0)
        if (c > lead) be->copy_to_device(h_prev + lead * hn, old_h + (first + lead - 1) * hn, (c - lead) * hn * t);
      }
      be->copy_to_device(h_next, old_h + first * hn, c * hn * t);
      be->copy_to_device(g_next, coarse_samples->g.data() + first * hn, c * hn * t);
      if (req.conductance) be->accumulate_path_product(hn, c, g_next, h_next, h_cur, cond_acc);
    }
    if (samples)
      for (int i = 0; i < c; ++i) {
        const size_t at = size_t(coarse ? 2 * (first + i) : first + i) * hn;
        be->copy_to_host(samples->h.data() + at, h_cur + i * hn, hn * t);
        be->copy_to_host(samples->g.data() + at, dh + i * hn, hn * t);
        if (coarse_samples) {  // the coarse point after it
          const auto from = size_t(first + i) * hn;
          std::copy_n(coarse_samples->h.begin() + from, hn, samples->h.begin() + at + hn);
          std::copy_n(coarse_samples->g.begin() + from, hn, samples->g.begin() + at + hn);
        }
      }
    if (path) {
      if (req.conductance && secant)  // each point's gradient times the step from the batch's point before it
        be->accumulate_path_product(hn, c, dh + hn, h_cur + hn, h_cur, cond_acc);
      else if (req.conductance)
        be->accumulate_path_product(hn, c, dh, h_cur, h_prev, cond_acc);
      // One group's patch pass on lane l; boxes write only their own accumulators, so lanes run groups at once.
      // Box j of the group has samples j n .. j n + n - 1 of the pass (n = c in the difference form).
      auto patch_pass = [&](int g, int l) {
        const std::vector<size_t>& group = groups[static_cast<size_t>(g)];
        const PatchLane& L = lane[static_cast<size_t>(l)];
        ConeGroup group_cones;
        if (!cones.empty())
          for (size_t b : group) group_cones.push_back(&cones[b]);
        // Every box's patch points, each at its place in the pass; whether every point is the same within each box.
        auto make_group_points = [&](const std::vector<double>& k, const std::vector<double>& scale, const T* base) {
          bool equal = true;
          for (size_t j = 0; j < group.size(); ++j) {
            PointBatch patch;
            patch.boxes = req.boxes;
            patch.patch_scale = scale;
            patch.k = k;
            patch.box_index.assign(k.size(), static_cast<int>(group[j]));
            const Cone* cone = cones.empty() ? nullptr : &cones[group[j]];
            const int64_t per_point = cone && cone->compact[f1.graph().input]
                                          ? in_shape.channels() * cone->rect[f1.graph().input].area()
                                          : xn;
            equal = make_patch_points(group[j], patch, base, L, L.pts + j * k.size() * per_point) && equal;
          }
          return equal;
        };
        // IPNA of box j += g . (the patch pass's box j), its output `count` values a sample (from `skip` on).
        auto accumulate = [&](const T* g_split, int skip, const T* before) {
          for (size_t j = 0; j < group.size(); ++j) {
            const size_t b = group[j];
            const int64_t count = split_window[b].count;
            be->accumulate_path_product(count, c, gradient_on(b, g_split, c, L), L.h_patch + (j * n + skip) * count,
                                        split_window[b].compact ? nullptr : before, ipna_acc[b]);
          }
        };
        if (tangent) {  // IPNA^t += g(x_k) * J_h(x_k) (d_k * 1_S); the secant rule's lead row has no gradient
          const bool equal = make_group_points(std::vector<double>(n, 0.0), step, zeros);
          f1.tangent(n, L.pts, L.h_patch, *L.ws, group_cones, &ws1, equal);
          accumulate(dh + lead * hn, lead, nullptr);
          return;
        }
        // IPNA += g(x_k) * (h(x_{k-1} + d_k * 1_S) - h(x_{k-1})); on a compact window h_patch holds the change.
        auto patch_forward = [&](const std::vector<double>& k, const std::vector<double>& scale,
                                 const typename GraphPlan<T>::ValueStore& base) {
          const bool equal = make_group_points(k, scale, x0_dev.as<T>());
          if (value_store)  // base x_{k-1}: store slot i, or refining, the coarse point's slot
            f1.patched_forward(c, L.pts, L.h_patch, *L.ws, group_cones, base, equal);
          else
            f1.forward(c, L.pts, L.h_patch, *L.ws, false);
        };
        patch_forward(std::vector<double>(P.before.begin() + first, P.before.begin() + first + c), step,
                      coarse ? coarse_points : store);
        accumulate(dh, 0, h_prev);
        if (coarse) {  // IPNA += g_{2k} (h(x_{2k-1} + d_{2k} * 1_S) - h(x_{2k-1})): the step on to the coarse point
          patch_forward(std::vector<double>(P.t.begin() + first, P.t.begin() + first + c),
                        P.unit ? std::vector<double>()
                               : std::vector<double>(P.s_after.begin() + first, P.s_after.begin() + first + c),
                        new_points);
          accumulate(g_next, 0, h_cur);
        }
      };
      be->run_concurrently(static_cast<int>(groups.size()), lanes, patch_pass);
      if (value_store && !coarse) f1.carry_store(store, c);  // the chunk's last point, the next chunk's first base
    }
    if (req.progress) req.progress(first + c, npoints);
  }
  be->synchronize();

  // --- results and diagnostics ---
  const double dF = r.f_input - r.f_baseline;
  if (ig) {
    r.ig = download(ig_acc, xn);
    for (int64_t j = 0; j < xn; ++j) r.ig[j] *= d[j];
    if (coarse)
      for (int64_t j = 0; j < xn; ++j) r.ig[j] += 0.5 * coarse->ig[j];
    r.ig_sum = std::accumulate(r.ig.begin(), r.ig.end(), 0.0);
    r.ig_gap = r.ig_sum - dF;
  }
  if (req.conductance) {
    r.conductance = download(cond_acc, hn);
    r.conductance_sum = std::accumulate(r.conductance.begin(), r.conductance.end(), 0.0);
    r.conductance_gap = r.conductance_sum - dF;
  }
  for (size_t b = 0; b < req.boxes.size(); ++b) {
    r.ipna.push_back(on_split_plane(download(ipna_acc[b], split_window[b].count), split_window[b], h_shape));
    if (coarse && tangent)  // the difference form's terms were all recomputed, on the split steps
      for (int64_t j = 0; j < hn; ++j) r.ipna[b][j] += 0.5 * coarse->ipna[b][j];
    r.ipna_sum.push_back(std::accumulate(r.ipna.back().begin(), r.ipna.back().end(), 0.0));
  }
  add_box_sums(r, req.boxes);
  r.split_samples = std::move(samples);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  r.algorithm_search_seconds = be->algorithm_search_seconds() - search_start;
  return r;
}

}  // namespace

struct Attributor::Impl {
  std::unique_ptr<Engine<float>> f32;
  std::unique_ptr<Engine<double>> f64;
  const SplitModel& model() const { return f32 ? f32->model : f64->model; }
  template <typename F>
  auto visit(F&& f) {
    return f32 ? f(*f32) : f(*f64);
  }
};

Attributor::Attributor(const SplitModel& model, Precision precision, const std::string& device)
    : impl_(std::make_unique<Impl>()) {
  if (precision == Precision::F32)
    impl_->f32 = std::make_unique<Engine<float>>(model, device);
  else
    impl_->f64 = std::make_unique<Engine<double>>(model, device);
}
Attributor::~Attributor() = default;

const SplitModel& Attributor::model() const { return impl_->model(); }
std::string Attributor::device_name() const {
  return impl_->visit([](auto& e) { return e.be->name(); });
}

AttributionResult Attributor::run(const std::vector<double>& x, const std::vector<double>& baseline,
                                  const AttributionRequest& req) {
  return impl_->visit([&](auto& e) { return e.run(x, baseline, req); });
}

AttributionResult Attributor::refine(const std::vector<double>& x, const std::vector<double>& baseline,
                                     const AttributionRequest& req, const AttributionResult& coarse) {
  return impl_->visit([&](auto& e) { return e.run(x, baseline, req, &coarse); });
}

std::vector<double> Attributor::logits(const std::vector<double>& x, const std::vector<double>& split_mask, int n) {
  return impl_->visit([&](auto& e) {
    const int64_t per = e.f1.input_numel();
    if (n < 1 || static_cast<int64_t>(x.size()) != n * per)
      throw Error("input has " + std::to_string(x.size()) + " values, expected " + std::to_string(n) + " x " +
                  std::to_string(per));
    if (!split_mask.empty() && static_cast<int64_t>(split_mask.size()) != e.f1.output_numel())
      throw Error("pruning mask size does not match the split tensor");
    check_finite(x, "the input");
    std::vector<double> out;
    constexpr int kBatch = 256;  // bounded workspace however many samples come
    for (int s0 = 0; s0 < n; s0 += kBatch) {
      const int c = std::min(kBatch, n - s0);
      DeviceBuffer xd = e.upload(std::vector<double>(x.begin() + s0 * per, x.begin() + (s0 + c) * per));
      std::vector<double> z = e.forward_logits(xd, c, split_mask);
      out.insert(out.end(), z.begin(), z.end());
    }
    return out;
  });
}

std::vector<double> Attributor::split_activations(const std::vector<double>& x) {
  return impl_->visit([&](auto& e) {
    if (static_cast<int64_t>(x.size()) != e.f1.input_numel()) throw Error("input size does not match the model");
    check_finite(x, "the input");
    return e.split(x);
  });
}

double target_value(TargetKind kind, const double* z, int classes, int y) {
  if (kind == TargetKind::Logit) return z[y];
  double zmax = *std::max_element(z, z + classes), s = 0;
  for (int i = 0; i < classes; ++i) s += std::exp(z[i] - zmax);
  return std::exp(z[y] - zmax) / s;
}

std::vector<double> channel_scores(const std::vector<double>& s, const Shape& shape) {
  const int64_t c = shape.channels(), plane = shape.plane();
  if (static_cast<int64_t>(s.size()) != shape.numel())
    throw Error("scores do not match the split shape " + shape.str());
  std::vector<double> out(c, 0.0);
  for (int64_t i = 0; i < c; ++i)
    for (int64_t j = 0; j < plane; ++j) out[i] += s[i * plane + j];
  return out;
}

std::vector<double> prune_mask(const std::vector<double>& scores, const Shape& shape, const PruneSpec& spec) {
  const bool by_channel = spec.granularity == Granularity::Channel;
  std::vector<double> units = by_channel ? channel_scores(scores, shape) : scores;
  if (!by_channel && static_cast<int64_t>(units.size()) != shape.numel())
    throw Error("scores do not match the split shape " + shape.str());
  const int64_t total = static_cast<int64_t>(units.size());
  int64_t k;
  if (spec.count >= 0) {
    if (spec.count > total)
      throw Error("cannot prune " + std::to_string(spec.count) + " of " + std::to_string(total) + " units");
    k = spec.count;
  } else {
    if (!(spec.percent >= 0 && spec.percent <= 100))
      throw Error("prune percent must be in [0, 100], got " + std::to_string(spec.percent));
    k = std::llround(spec.percent / 100.0 * static_cast<double>(total));
  }
  std::vector<int64_t> order(total);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return units[a] > units[b]; });
  std::vector<double> mask(shape.numel(), 1.0);
  const int64_t plane = by_channel ? shape.plane() : 1;
  for (int64_t i = 0; i < k; ++i)
    for (int64_t j = 0; j < plane; ++j) mask[order[i] * plane + j] = 0.0;
  return mask;
}

std::vector<double> black_baseline(const Shape& shape, std::vector<double> mean, std::vector<double> std) {
  const int64_t c = shape.channels(), plane = shape.plane();
  if (mean.empty() && std.empty()) {
    if (c == 3) {
      mean = kImagenetMean;
      std = kImagenetStd;
    } else {
      mean.assign(c, 0.0);
      std.assign(c, 1.0);
    }
  }
  if (static_cast<int64_t>(mean.size()) != c || static_cast<int64_t>(std.size()) != c)
    throw Error("mean and std need one value per input channel (" + std::to_string(c) + ")");
  std::vector<double> out(shape.numel());
  for (int64_t i = 0; i < c; ++i)
    for (int64_t j = 0; j < plane; ++j) out[i * plane + j] = (0.0 - mean[i]) / std[i];
  return out;
}

std::vector<Box> grid_boxes(int h, int w, int rows, int cols) {
  if (rows < 1 || cols < 1 || rows > h || cols > w)
    throw Error("a grid of " + std::to_string(rows) + "x" + std::to_string(cols) + " boxes needs 1.." +
                std::to_string(h) + " rows and 1.." + std::to_string(w) + " columns of boxes for a " +
                std::to_string(h) + "x" + std::to_string(w) + " input");
  const int bh = h / rows, bw = w / cols;
  std::vector<Box> out;
  for (int i = 0; i < rows; ++i)
    for (int j = 0; j < cols; ++j)
      out.push_back({i * bh, j * bw, i + 1 == rows ? h : (i + 1) * bh, j + 1 == cols ? w : (j + 1) * bw});
  return out;
}

double sum_in_box(const std::vector<double>& map, const Shape& shape, const Box& box) {
  const int64_t c = shape.channels(), h = shape.height(), w = shape.width();
  double s = 0;
  for (int64_t ch = 0; ch < c; ++ch)
    for (int64_t r = box.r0; r < box.r1; ++r)
      for (int64_t col = box.c0; col < box.c1; ++col) s += map[(ch * h + r) * w + col];
  return s;
}

}  // namespace ipna
