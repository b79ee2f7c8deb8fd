#include "engine/step_control.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>

#include "engine/error.h"

namespace ipna {

PathWarp::PathWarp() : u_{0.0, 1.0}, a_{0.0, 1.0} {}

PathWarp::PathWarp(const std::vector<double>& p, const std::vector<double>& f, double floor) : PathWarp() {
  if (p.size() < 2 || p.size() != f.size())
    throw Error("a path warp needs F at two or more pilot points, got " + std::to_string(p.size()) + " points and " +
                std::to_string(f.size()) + " values");
  std::vector<double> w(p.size() - 1);
  for (size_t i = 1; i < p.size(); ++i) {
    if (!std::isfinite(f[i]) || !std::isfinite(f[i - 1])) throw Error("F is not finite along the pilot path");
    w[i - 1] = std::abs(f[i] - f[i - 1]);
  }
  *this = from_weights(p, w, floor);
}

PathWarp PathWarp::from_weights(const std::vector<double>& p, const std::vector<double>& w, double floor) {
  if (p.size() < 2 || w.size() + 1 != p.size())
    throw Error("a path warp needs two or more pilot points and a weight per interval, got " +
                std::to_string(p.size()) + " points and " + std::to_string(w.size()) + " weights");
  if (!(floor > 0 && floor <= 1)) throw Error("the uniform share of an adaptive schedule must be in (0, 1]");
  if (p.front() != 0.0 || p.back() != 1.0) throw Error("pilot points must run from 0 to 1");
  double total = 0;
  for (size_t i = 1; i < p.size(); ++i) {
    if (!(p[i] > p[i - 1])) throw Error("pilot points must increase strictly");
    if (!(std::isfinite(w[i - 1]) && w[i - 1] >= 0)) throw Error("the pilot's interval weights must be finite and >= 0");
    total += w[i - 1];
  }
  PathWarp out;
  if (!(total > 0) || floor == 1) return out;  // nothing changes along the path: uniform steps
  out.u_ = {0.0};
  out.a_ = p;
  for (size_t i = 1; i < p.size(); ++i)
    out.u_.push_back(out.u_.back() + (1 - floor) * w[i - 1] / total + floor * (p[i] - p[i - 1]));
  out.u_.back() = 1.0;  // the shares sum to 1 up to rounding
  out.identity_ = false;
  return out;
}

double PathWarp::operator()(double u) const {
  if (u <= 0) return 0;
  if (u >= 1) return 1;
  const size_t i = std::upper_bound(u_.begin(), u_.end(), u) - u_.begin();  // u_[i-1] <= u < u_[i]
  const double w = (u - u_[i - 1]) / (u_[i] - u_[i - 1]);
  return a_[i - 1] + w * (a_[i] - a_[i - 1]);
}

std::vector<double> PathWarp::schedule(int m) const {
  if (m < 1) throw Error("a schedule needs at least one step, got " + std::to_string(m));
  std::vector<double> a(m + 1);
  for (int k = 0; k <= m; ++k) a[k] = identity_ ? static_cast<double>(k) / m : (*this)(static_cast<double>(k) / m);
  a[0] = 0.0;
  a[m] = 1.0;
  for (int k = 1; k <= m; ++k)
    if (!(a[k] > a[k - 1]))
      throw Error(std::to_string(m) + " steps are too many for this adaptive schedule: steps " + std::to_string(k - 1) +
                  " and " + std::to_string(k) + " coincide in double precision");
  return a;
}

PathWarp PathWarp::subdividing(int m) const {
  PathWarp w;
  if (identity_) return w;
  w.a_ = schedule(m);
  w.u_.resize(m + 1);
  // k/m as schedule() computes it, so that the points of every multiple of m land on these knots bit for bit.
  for (int k = 0; k <= m; ++k) w.u_[k] = static_cast<double>(k) / m;
  w.identity_ = false;
  return w;
}

PathWarp adaptive_warp(Attributor& engine, const std::vector<double>& x, const std::vector<double>& x0,
                       const AttributionRequest& req, const PilotSpec& pilot) {
  if (pilot.intervals < 1) throw Error("the pilot needs at least one interval");
  const int64_t n = static_cast<int64_t>(x.size());
  if (static_cast<int64_t>(x0.size()) != n) throw Error("input and baseline differ in size");
  const int points = pilot.intervals + 1;
  std::vector<double> p(points), along(static_cast<size_t>(points) * n);
  for (int i = 0; i < points; ++i) {
    p[i] = i == pilot.intervals ? 1.0 : static_cast<double>(i) / pilot.intervals;
    for (int64_t j = 0; j < n; ++j) along[i * n + j] = x0[j] + p[i] * (x[j] - x0[j]);
  }
  const std::vector<double> z = engine.logits(along, req.split_mask, points);
  const int classes = static_cast<int>(z.size() / points);
  if (req.target_class < 0 || req.target_class >= classes)
    throw Error("class " + std::to_string(req.target_class) + " is out of range: the model has " +
                std::to_string(classes) + " outputs");
  std::vector<double> f(points);
  for (int i = 0; i < points; ++i) f[i] = target_value(req.target, z.data() + i * classes, classes, req.target_class);
  return PathWarp(p, f, pilot.floor);
}

PathWarp gradient_warp(Attributor& engine, const std::vector<double>& x, const std::vector<double>& x0,
                       const AttributionRequest& req, const PilotSpec& pilot) {
  if (pilot.intervals < 1) throw Error("the pilot needs at least one interval");
  if (x.size() != x0.size()) throw Error("input and baseline differ in size");
  // v(p) as one left-rule step from x(p) to x(p) + (x - x'): the gradient at x(p) times x - x'.
  AttributionRequest r;
  r.target_class = req.target_class;
  r.target = req.target;
  r.split_mask = req.split_mask;
  r.integrated_gradients = true;
  r.quadrature = Quadrature::Left;
  r.steps = 1;
  r.memory_budget = req.memory_budget;
  std::vector<double> p(pilot.intervals + 1), w(pilot.intervals), from(x.size()), to(x.size()), before;
  for (int i = 0; i <= pilot.intervals; ++i) {
    p[i] = i == pilot.intervals ? 1.0 : static_cast<double>(i) / pilot.intervals;
    for (size_t j = 0; j < x.size(); ++j) {
      from[j] = x0[j] + p[i] * (x[j] - x0[j]);
      to[j] = from[j] + (x[j] - x0[j]);
    }
    std::vector<double> v = engine.run(to, from, r).ig;
    if (i > 0) {
      double d = 0;
      for (size_t j = 0; j < v.size(); ++j) d += (v[j] - before[j]) * (v[j] - before[j]);
      if (!std::isfinite(d)) throw Error("the gradient is not finite along the pilot path");
      w[i - 1] = std::sqrt(std::sqrt(d));
    }
    before = std::move(v);
  }
  return PathWarp::from_weights(p, w, pilot.floor);
}

PathWarp schedule_warp(ScheduleKind kind, Attributor& engine, const std::vector<double>& x,
                       const std::vector<double>& x0, const AttributionRequest& req, const PilotSpec& pilot,
                       int* pilot_forwards, int* pilot_evaluations) {
  if (kind == ScheduleKind::Adaptive) {
    if (pilot_forwards) *pilot_forwards = pilot.intervals + 1;
    return adaptive_warp(engine, x, x0, req, pilot);
  }
  if (kind == ScheduleKind::Gradient) {
    if (pilot_evaluations) *pilot_evaluations = pilot.intervals + 1;
    return gradient_warp(engine, x, x0, req, pilot);
  }
  return PathWarp();
}

const char* schedule_name(ScheduleKind kind) {
  return kind == ScheduleKind::Uniform ? "uniform" : kind == ScheduleKind::Adaptive ? "adaptive" : "gradient";
}

ScheduleKind parse_schedule(const std::string& name, const std::string& what) {
  for (ScheduleKind k : {ScheduleKind::Uniform, ScheduleKind::Adaptive, ScheduleKind::Gradient})
    if (name == schedule_name(k)) return k;
  throw Error(what + ": expected uniform, adaptive or gradient, got '" + name + "'");
}

ScheduleKind default_schedule(bool step_control) {
  return step_control ? ScheduleKind::Gradient : ScheduleKind::Uniform;
}

AttributionResult extrapolate_ipna(AttributionResult fine, const AttributionResult& coarse, double ratio) {
  if (!(ratio > 1)) throw Error("extrapolation needs the fine run to have more steps than the coarse one");
  if (fine.ipna.empty() || fine.ipna.size() != coarse.ipna.size())
    throw Error("extrapolation needs the difference form's IPNA of the same boxes at both step counts, got " +
                std::to_string(fine.ipna.size()) + " and " + std::to_string(coarse.ipna.size()) + " boxes");
  for (size_t b = 0; b < fine.ipna.size(); ++b) {
    std::vector<double>& f = fine.ipna[b];
    const std::vector<double>& c = coarse.ipna[b];
    if (f.size() != c.size()) throw Error("extrapolation: box " + std::to_string(b) + "'s maps differ in size");
    double sum = 0;
    for (size_t i = 0; i < f.size(); ++i) {
      f[i] = (ratio * f[i] - c[i]) / (ratio - 1);
      sum += f[i];
    }
    fine.ipna_sum[b] = sum;
    if (b < fine.ig_in_box.size()) fine.ipna_gap[b] = sum - fine.ig_in_box[b];
  }
  return fine;
}

double StepLevel::worst() const {
  double w = std::max({std::abs(ig_gap), std::abs(conductance_gap), change});
  for (double g : patch_gap) w = std::max(w, std::abs(g));
  return w;
}

namespace {

double relative_change(const std::vector<double>& now, const std::vector<double>& before) {
  double num = 0, den = 0;
  for (size_t i = 0; i < now.size(); ++i) {
    num += (now[i] - before[i]) * (now[i] - before[i]);
    den += now[i] * now[i];
  }
  return den > 0 ? std::sqrt(num / den) : (num > 0 ? std::numeric_limits<double>::infinity() : 0.0);
}

std::string percent(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g%%", 100 * v);
  return buf;
}

}  // namespace

std::string ControlledResult::summary() const {
  if (levels.empty()) return "no step count was run";
  const StepLevel& l = levels.back();
  std::string s = std::to_string(l.steps) + " steps: IG gap " + percent(l.ig_gap);
  if (!result.conductance.empty()) s += ", conductance gap " + percent(l.conductance_gap);
  for (size_t b = 0; b < l.patch_gap.size(); ++b)
    s += ", box " + std::to_string(b) + " patch gap " + percent(l.patch_gap[b]);
  s += ", change from " + (levels.size() > 1 ? std::to_string(levels[levels.size() - 2].steps) + " steps " +
                                                    percent(l.change)
                                              : std::string("nothing (one step count)"));
  if (extrapolated && levels.size() > 1)
    s += " (IPNA extrapolated from " + std::to_string(levels[levels.size() - 2].steps) + " and " +
         std::to_string(l.steps) + " steps)";
  s += converged ? " - all under the tolerance" : " - NOT under the tolerance: the step cap stopped it";
  int reused = 0;
  for (const StepLevel& level : levels) reused += level.reused;
  s += " (" + std::to_string(evaluations) + " gradient evaluations over " + std::to_string(levels.size()) +
       " step counts";
  if (reused) s += ", " + std::to_string(reused) + " points reused from earlier step counts";
  if (pilot_forwards) s += ", " + std::to_string(pilot_forwards) + " pilot forwards";
  if (pilot_evaluations) s += ", " + std::to_string(pilot_evaluations) + " pilot gradient evaluations";
  return s + ")";
}

ControlledResult run_to_tolerance(Attributor& engine, const std::vector<double>& x, const std::vector<double>& x0,
                                  AttributionRequest req, const StepControl& c) {
  if (!(c.tolerance > 0)) throw Error("the step tolerance must be positive");
  if (c.initial_steps < 1 || c.max_steps < c.initial_steps)
    throw Error("step control needs 1 <= initial steps (" + std::to_string(c.initial_steps) + ") <= the step cap (" +
                std::to_string(c.max_steps) + ")");
  if (c.extrapolate && (req.boxes.empty() || req.ipna_form != IpnaForm::Difference))
    throw Error(std::string("extrapolation applies to the difference form's IPNA of a box; this request has ") +
                (req.boxes.empty() ? "no boxes" : "the tangent form, whose patch sums hold at every step count"));
  const auto start = std::chrono::steady_clock::now();
  req.integrated_gradients = true;
  ControlledResult out;
  const PathWarp warp = schedule_warp(c.schedule, engine, x, x0, req, c.pilot, &out.pilot_forwards,
                                      &out.pilot_evaluations)
                            .subdividing(c.initial_steps);
  // Sums that are weighted sums over points keep every earlier point at half its weight; conductance and
  // the difference form pair each new point with the kept samples of the points on either side.
  const bool reusable = c.reuse_points && req.quadrature != Quadrature::Middle && req.quadrature != Quadrature::Secant;
  const bool pairs_points = req.conductance || (!req.boxes.empty() && req.ipna_form == IpnaForm::Difference);
  req.keep_split_samples = reusable && pairs_points;
  // Progress counts the points of every step count so far: one bar that never runs backwards.
  int evaluated = 0;
  if (const auto report = req.progress)
    req.progress = [report, &evaluated](int done, int total) { report(evaluated + done, evaluated + total); };
  // The previous step count as run, which refine continues from; out.result holds it as reported
  // (extrapolated), and it is kept apart only when extrapolating.
  AttributionResult as_run;
  out.extrapolated = c.extrapolate;
  for (int m = c.initial_steps;; m = std::min(2 * m, c.max_steps)) {
    req.schedule = warp.schedule(m);
    req.steps = m;
    const AttributionResult& before = c.extrapolate ? as_run : out.result;
    const bool refine =
        reusable && !out.levels.empty() && m == 2 * out.levels.back().steps && (!pairs_points || before.split_samples);
    AttributionResult r = refine ? engine.refine(x, x0, req, before) : engine.run(x, x0, req);
    if (c.extrapolate) {
      AttributionResult run = r;
      if (!out.levels.empty())
        r = extrapolate_ipna(std::move(r), as_run, static_cast<double>(m) / out.levels.back().steps);
      as_run = std::move(run);
    }
    StepLevel l;
    l.steps = m;
    l.evaluations = r.evaluations;
    if (refine) l.reused = out.levels.back().evaluations + out.levels.back().reused;
    l.seconds = r.seconds;
    const double dF = std::abs(r.f_input - r.f_baseline), unit = dF > 0 ? dF : 1.0;
    l.ig_gap = r.ig_gap / unit;
    if (req.conductance) l.conductance_gap = r.conductance_gap / unit;
    for (size_t b = 0; b < r.ipna_gap.size(); ++b)
      l.patch_gap.push_back(r.ipna_gap[b] / (std::abs(r.ig_in_box[b]) >= 0.01 * unit ? std::abs(r.ig_in_box[b]) : unit));
    if (out.levels.empty()) {
      l.change = std::numeric_limits<double>::infinity();
    } else {
      const AttributionResult& p = out.result;
      l.change = relative_change(r.ig, p.ig);
      if (req.conductance) l.change = std::max(l.change, relative_change(r.conductance, p.conductance));
      for (size_t b = 0; b < r.ipna.size(); ++b) l.change = std::max(l.change, relative_change(r.ipna[b], p.ipna[b]));
    }
    out.evaluations += r.evaluations;
    evaluated = out.evaluations;
    out.levels.push_back(l);
    out.result = std::move(r);
    out.schedule = req.schedule;
    out.converged = l.worst() <= c.tolerance;
    if ((out.converged && c.stop_at_tolerance) || m >= c.max_steps) break;
  }
  out.result.split_samples.reset();  // up to kSplitSamplesMaxBytes, of no use past the last step count
  as_run.split_samples.reset();
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return out;
}

}  // namespace ipna
