// A run along a path whose steps are chosen by a StepPlan: a fixed m on a
// uniform, adaptive or gradient schedule, or step control to a tolerance
// (engine/step_control.h). Every experiment takes its steps from here, and
// reruns the same path (m, schedule, IG's rule) on pruned models with on_path().
#pragma once
#include <nlohmann/json.hpp>
#include <vector>

#include "engine/attribution.h"
#include "engine/step_control.h"

namespace ipna {

struct StepPlan {
  int steps = 256;         // m, when not automatic
  bool automatic = false;  // double m from 16 until the gaps are under `tolerance`
  ScheduleKind schedule = ScheduleKind::Uniform;  // the CLI and Python pass default_schedule(automatic) if none is named
  Quadrature quadrature = Quadrature::Right;
  double tolerance = 0.01;
  int max_steps = 4096;
  // The difference form's IPNA extrapolated from the last two step counts (extrapolate_ipna): with a
  // fixed m (even), from m / 2 and m on nested points, which costs no more gradient evaluations than m.
  bool extrapolate = false;
  void check() const;  // throws Error naming the value at fault
};
const char* quadrature_name(Quadrature q);
Quadrature quadrature_of(const std::string& name);  // right, left, middle, trapezoid

// The result, the path it took (empty schedule: uniform) and a report of the
// steps (mode, levels of step control, evaluations) for report files.
struct StepRun {
  AttributionResult result;
  int steps = 0;
  std::vector<double> schedule;
  Quadrature quadrature = Quadrature::Right;
  nlohmann::json report;
};
StepRun run_steps(Attributor& engine, const std::vector<double>& x, const std::vector<double>& x0,
                  AttributionRequest req, const StepPlan& plan);
// req on the path of an earlier run (its m, schedule and IG rule).
AttributionRequest on_path(AttributionRequest req, const StepRun& run);

}  // namespace ipna
