// Step control (SPEC.md "Non-uniform paths"): schedules that put the path's
// steps where F changes, and runs that grow the number of steps until the
// completeness gaps and the change between step counts are under a tolerance.
#pragma once
#include <string>
#include <vector>

#include "engine/attribution.h"

namespace ipna {

// A monotone piecewise-linear map of [0, 1] onto itself, u -> a. Schedules
// a_k = warp(k/m) for m, 2m, 4m, ... are nested: each keeps every point of the one before.
class PathWarp {
 public:
  PathWarp();  // the identity: uniform steps
  // From F at pilot points 0 = p_0 < ... < p_n = 1: interval i gets the share
  // (1 - floor) |F(p_i) - F(p_{i-1})| / sum_j |F(p_j) - F(p_{j-1})| + floor (p_i - p_{i-1})
  // of u, so the steps carry about equal changes of F while a `floor` share of
  // them spreads uniformly (flat stretches keep some steps). A flat F gives the identity.
  PathWarp(const std::vector<double>& pilot_points, const std::vector<double>& pilot_f, double floor);
  // Interval i of the pilot points gets the share (1 - floor) w_i / sum_j w_j + floor (p_i - p_{i-1})
  // of u, w_i >= 0 (interval_weights[i - 1]); all zero: the identity.
  static PathWarp from_weights(const std::vector<double>& pilot_points, const std::vector<double>& interval_weights,
                               double floor);
  double operator()(double u) const;
  std::vector<double> schedule(int m) const;  // a_0 .. a_m; exactly k/m for the identity
  bool identity() const { return identity_; }
  // The warp through this one's schedule of m steps, linear between its points.
  // Its schedules of m, 2m, 4m, ... split every step of the one before into two
  // equal halves, so a doubling keeps each point with half its weight: what lets
  // step control reuse the sums of earlier step counts (Attributor::refine). The
  // identity stays the identity.
  PathWarp subdividing(int m) const;

 private:
  std::vector<double> u_, a_;  // knots: warp(u_[i]) = a_[i]
  bool identity_ = true;
};

// How a run places its steps:
//  Uniform   a_k = k/m, the original's;
//  Adaptive  each step carries about the same change of F (a pilot of forward passes of F);
//  Gradient  the step density follows sqrt(|v'(a)|), v(a) = grad F(x(a)) * (x - x') the IG
//            integrand (a pilot of gradient evaluations): the right rule's error over a step of
//            length d is about d^2 |v'| / 2, and for a given number of steps the sum of those is
//            smallest with that density. It keeps steps where the gradient turns even where F is
//            flat, which the change of F cannot see.
enum class ScheduleKind { Uniform, Adaptive, Gradient };
const char* schedule_name(ScheduleKind kind);
// "uniform", "adaptive" or "gradient"; anything else throws, naming `what` and the accepted words.
ScheduleKind parse_schedule(const std::string& name, const std::string& what);
// The schedule when none is named: uniform steps for a fixed m (the original's arithmetic, bit for bit),
// the gradient schedule for step control, which met the tolerance with the fewest gradient evaluations
// of the three on every model measured (README "Steps").
ScheduleKind default_schedule(bool step_control);

struct PilotSpec {
  int intervals = 32;  // the pilot's points: intervals + 1, evenly spaced
  double floor = 0.2;
};
// The adaptive warp of a run: F along the straight path from x0 to x (of the
// model pruned by split_mask when it is not empty), then PathWarp.
PathWarp adaptive_warp(Attributor& engine, const std::vector<double>& x, const std::vector<double>& x0,
                       const AttributionRequest& req, const PilotSpec& pilot);
// The gradient warp of a run: v at the pilot's points (one gradient evaluation each, of the
// request's target and pruned model), interval i weighted sqrt(|v_i - v_{i-1}|) (L2 norm).
PathWarp gradient_warp(Attributor& engine, const std::vector<double>& x, const std::vector<double>& x0,
                       const AttributionRequest& req, const PilotSpec& pilot);
// The warp of `kind` (the identity for Uniform). What its pilot cost goes to pilot_forwards
// (Adaptive) or pilot_evaluations (Gradient); either may be null.
PathWarp schedule_warp(ScheduleKind kind, Attributor& engine, const std::vector<double>& x,
                       const std::vector<double>& x0, const AttributionRequest& req, const PilotSpec& pilot,
                       int* pilot_forwards, int* pilot_evaluations);

// The difference form's IPNA at m steps pairs g at x_k with f1's change taken from x_{k-1}: besides the
// discretisation error that every Riemann sum has, each step adds about g(x_k) (J(x_{k-1}) - J(x_k)) d_k 1_S
// (J: f1's Jacobian), a first-order bias C / m whose C barely depends on m once m suits the schedule (the
// traffic-light example's patch sum on the gradient schedule: C within 10 % from m = 256 on). Richardson's
// extrapolation (r P(m) - P(m / r)) / (r - 1) removes it; what is left is the Riemann sums' own error.
// fine: the run at m steps, coarse: at m / ratio on the same path (ratio > 1). Returns `fine` with every
// box's IPNA map, sum and patch gap extrapolated; IG and conductance stay fine's. Throws unless both runs
// hold the difference form's IPNA of the same boxes.
AttributionResult extrapolate_ipna(AttributionResult fine, const AttributionResult& coarse, double ratio);

struct StepControl {
  double tolerance = 0.01;
  int initial_steps = 16, max_steps = 4096;  // the step counts tried: initial, 2 initial, ... up to max
  // Report each step count's IPNA (difference form) extrapolated from it and the step count before
  // (extrapolate_ipna); its gaps and change are then those of the extrapolated maps. The first step count
  // has none before it and is reported as run.
  bool extrapolate = false;
  // false: run every step count up to max_steps whatever the gaps (a fixed m from m / 2, to extrapolate).
  bool stop_at_tolerance = true;
  // Schedules from the pilot's warp through its initial_steps points (PathWarp::subdividing).
  ScheduleKind schedule = default_schedule(true);
  // Doublings evaluate only the new points where the sums allow it; false: every step count is a whole run
  // (the same results up to rounding, for comparison).
  bool reuse_points = true;
  PilotSpec pilot;
};

// One step count of a controlled run. Gaps are relative: IG's and conductance's
// to |F(x) - F(x')|, each box's patch completeness gap to |IG inside| (or to
// |F(x) - F(x')| where IG inside is under 1% of it). change: the largest
// relative L2 change of a requested map (IG, conductance, each box's IPNA)
// from the previous step count (infinite for the first).
struct StepLevel {
  int steps = 0, evaluations = 0;
  int reused = 0;  // points whose gradients this step count took from the one before (Attributor::refine)
  double ig_gap = 0, conductance_gap = 0, change = 0, seconds = 0;
  std::vector<double> patch_gap;
  double worst() const;  // the largest of the gaps and the change
};

struct ControlledResult {
  AttributionResult result;  // at the last step count
  std::vector<double> schedule;  // its a_0..a_m (to rerun the same path, e.g. on a pruned model)
  std::vector<StepLevel> levels;
  bool converged = false;    // every criterion under the tolerance at the last step count
  int evaluations = 0;       // gradient evaluations over all step counts (reused points not counted again)
  int pilot_forwards = 0;    // forward passes of the adaptive schedule's pilot
  int pilot_evaluations = 0; // gradient evaluations of the gradient schedule's pilot (not in `evaluations`)
  bool extrapolated = false;  // result.ipna extrapolated from the last two step counts (StepControl::extrapolate)
  double seconds = 0;
  std::string summary() const;  // one line: the steps used, the gaps, or what stopped it short
};

// Grows m (doubling, nested schedules) until every criterion of StepLevel is
// under the tolerance, or max_steps. IG is computed whatever req asks (every
// gap needs it); req.steps and req.schedule are replaced. With control.extrapolate,
// req must ask for the difference form's IPNA of one or more boxes (Error otherwise). A doubling evaluates
// only the new points (Attributor::refine) unless IG takes the midpoint rule
// or, with conductance or the difference form, the split samples kept at
// every point outgrow kSplitSamplesMaxBytes; then the step count is a whole run.
// req.progress sees the points of all step counts so far (done and total grow
// with every step count).
ControlledResult run_to_tolerance(Attributor& engine, const std::vector<double>& x, const std::vector<double>& x0,
                                  AttributionRequest req, const StepControl& control);

}  // namespace ipna
