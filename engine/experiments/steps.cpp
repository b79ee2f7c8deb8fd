#include "engine/experiments/steps.h"

#include <cmath>

#include "engine/error.h"
#include "engine/step_control.h"

namespace ipna {

using nlohmann::json;

void StepPlan::check() const {
  if (!automatic && steps < 1) throw Error("steps must be a positive count, got " + std::to_string(steps));
  if (!(tolerance > 0)) throw Error("the step tolerance must be positive, got " + std::to_string(tolerance));
  if (extrapolate && !automatic && (steps < 2 || steps % 2))
    throw Error("extrapolation from m / 2 steps needs an even step count, got " + std::to_string(steps));
  if (automatic && max_steps < 16)
    throw Error("the most steps of step control must be at least 16 (it starts there), got " + std::to_string(max_steps));
}

const char* quadrature_name(Quadrature q) {
  switch (q) {
    case Quadrature::Left: return "left";
    case Quadrature::Middle: return "middle";
    case Quadrature::Trapezoid: return "trapezoid";
    case Quadrature::Secant:
      return "secant";
    default: return "right";
  }
}

Quadrature quadrature_of(const std::string& q) {
  for (Quadrature r :
       {Quadrature::Right, Quadrature::Left, Quadrature::Middle, Quadrature::Trapezoid, Quadrature::Secant})
    if (q == quadrature_name(r)) return r;
  throw Error("quadrature: expected right, left, middle, trapezoid or secant, got '" + q + "'");
}

StepRun run_steps(Attributor& engine, const std::vector<double>& x, const std::vector<double>& x0,
                  AttributionRequest req, const StepPlan& plan) {
  plan.check();
  req.quadrature = plan.quadrature;
  StepRun out;
  out.quadrature = req.quadrature;
  json rep = {{"schedule", schedule_name(plan.schedule)}, {"quadrature", quadrature_name(plan.quadrature)}};
  if (plan.automatic) {
    StepControl c;
    c.tolerance = plan.tolerance;
    c.max_steps = plan.max_steps;
    c.schedule = plan.schedule;
    c.extrapolate = plan.extrapolate;
    ControlledResult cr = run_to_tolerance(engine, x, x0, req, c);
    const std::string summary = cr.summary();
    out.result = std::move(cr.result);
    out.steps = cr.levels.back().steps;
    out.schedule = cr.schedule;
    json levels = json::array();
    for (const StepLevel& l : cr.levels) {
      json j = {{"steps", l.steps},   {"evaluations", l.evaluations}, {"reused", l.reused},
                {"ig_gap", l.ig_gap}, {"seconds", l.seconds}};
      if (req.conductance) j["conductance_gap"] = l.conductance_gap;
      if (!l.patch_gap.empty()) j["patch_gaps"] = l.patch_gap;
      if (std::isfinite(l.change)) j["change"] = l.change;
      levels.push_back(j);
    }
    rep.update({{"mode", "auto"}, {"tolerance", plan.tolerance}, {"max_steps", plan.max_steps},
                {"converged", cr.converged}, {"evaluations", cr.evaluations}, {"pilot_forwards", cr.pilot_forwards},
                {"pilot_evaluations", cr.pilot_evaluations},
                {"levels", levels}, {"summary", summary}});
    if (plan.extrapolate) rep["extrapolated_from"] = cr.levels.size() > 1 ? cr.levels[cr.levels.size() - 2].steps : 0;
  } else if (plan.extrapolate) {
    // m / 2 then m on the schedule's warp through m / 2 points, each step halved (nested), as step control does.
    StepControl c;
    c.initial_steps = plan.steps / 2;
    c.max_steps = plan.steps;
    c.schedule = plan.schedule;
    c.extrapolate = true;
    c.stop_at_tolerance = false;
    ControlledResult cr = run_to_tolerance(engine, x, x0, req, c);
    out.result = std::move(cr.result);
    out.steps = plan.steps;
    out.schedule = cr.schedule;
    rep.update({{"mode", "fixed"}, {"evaluations", cr.evaluations}, {"extrapolated_from", plan.steps / 2}});
    if (cr.pilot_forwards) rep["pilot_forwards"] = cr.pilot_forwards;
    if (cr.pilot_evaluations) rep["pilot_evaluations"] = cr.pilot_evaluations;
  } else {
    const int m = plan.steps;
    if (plan.schedule != ScheduleKind::Uniform) {
      int forwards = 0, evaluations = 0;
      req.schedule = schedule_warp(plan.schedule, engine, x, x0, req, PilotSpec{}, &forwards, &evaluations).schedule(m);
      if (forwards) rep["pilot_forwards"] = forwards;
      if (evaluations) rep["pilot_evaluations"] = evaluations;
    }
    req.steps = m;
    out.result = engine.run(x, x0, req);
    out.steps = m;
    out.schedule = req.schedule;
    rep.update({{"mode", "fixed"}, {"evaluations", out.result.evaluations}});
  }
  rep["steps"] = out.steps;
  out.report = rep;
  return out;
}

AttributionRequest on_path(AttributionRequest req, const StepRun& run) {
  req.steps = run.steps;
  req.schedule = run.schedule;
  req.quadrature = run.quadrature;
  return req;
}

}  // namespace ipna
