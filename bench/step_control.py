#!/usr/bin/python3
"""Step control tables and plot from bench_steps' CSV files.

  build/bench/bench_steps small --fixtures build/fixtures --out bench/results/steps-small.csv
  build/bench/bench_steps effnet --out bench/results/steps-effnet.csv
  build/bench/bench_steps effnet --ig-only --schedules uniform gradient secant secant-gradient --min 8 --max 2048 \
      --reference 8192 --out bench/results/steps-effnet-error.csv
  /usr/bin/python3 bench/step_control.py bench/results/steps-small.csv bench/results/steps-effnet.csv \
      [bench/results/steps-effnet-error.csv]

Writes bench/results/step-control.md (the tables) and step-control.png (error
against evaluations, log-log, uniform against the adaptive and gradient schedules).

Small nets: for each model and quantity, the evaluations each schedule needs
to reach the uniform schedule's error at m = 256 (log-log interpolation
between measured points), and their ratio. EfficientNet-Lite0: the first m
from which the IG completeness gap stays under 1%, the patch completeness gap
under 5% and the IG map's change from the previous m under 1%, up to the
largest m measured (the gaps oscillate in m). Evaluations count the pilot's
(33 forwards, about a third of an evaluation each, for adaptive; 33 gradient
evaluations for gradient). The oracle column (when bench_steps wrote it) is
the best placement of steps over 32 equal intervals that the per-interval
errors measured against finer steps give, with no pilot counted: how much
any schedule could gain on that net. The "extrapolated" columns (IPNA, difference form) take each
schedule's IPNA extrapolated from m / 2 and m (extrapolate_ipna), at m's evaluations; for
EfficientNet-Lite0 the extrapolated patch gap gets its own column.
The secant columns are the secant rule (Quadrature::Secant; IPNA in the tangent
form, against the same difference-form reference, whose limit it shares) on
uniform steps and on the gradient schedule (its pilot counted), its evaluations
counting the point each chunk leads with. The optional third CSV (EfficientNet-Lite0, IG alone) gives the
evaluations each schedule needs for the IG map's error against a uniform
right-rule reference to stay under 1 % and 0.5 %.
"""
import csv
import math
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

small_csv, eff_csv = sys.argv[1], sys.argv[2]
err_csv = sys.argv[3] if len(sys.argv) > 3 else None
out_dir = os.path.dirname(os.path.abspath(small_csv))
small = list(csv.DictReader(open(small_csv)))
eff = list(csv.DictReader(open(eff_csv)))


def evals_to_reach(points, target):
    """Evaluations at which the error first falls to target, interpolated log-log; None if never."""
    points = sorted(points)
    for (e0, err0), (e1, err1) in zip(points, points[1:]):
        if err0 <= target:
            return e0
        if err1 <= target:
            t = (math.log(target) - math.log(err0)) / (math.log(err1) - math.log(err0))
            return math.exp(math.log(e0) + t * (math.log(e1) - math.log(e0)))
    return points[0][0] if points and points[0][1] <= target else None


SCHEDULES = [s for s in ("uniform", "adaptive", "gradient") if any(r["schedule"] == s for r in small + eff)]
# The oracle (small nets only): the piecewise-uniform schedule a perfect pilot would give, its pilot not counted.
OTHERS = [s for s in SCHEDULES if s != "uniform"] + (["oracle"] if any(r["schedule"] == "oracle" for r in small) else [])
# IPNA (difference form) extrapolated from m / 2 and m (small nets, IPNA rows only): m evaluations, as m's points
# hold m / 2's.
EXTRAPOLATED = [s + " extrapolated" for s in SCHEDULES if any(r["schedule"] == s + " extrapolated" for r in small)]
OTHERS += EXTRAPOLATED
SECANT = [s for s in ("secant", "secant-gradient") if any(r["schedule"] == s for r in small)]
OTHERS += SECANT
STYLE = {"uniform": "--", "adaptive": "-", "gradient": ":", "secant": "-.", "secant-gradient": (0, (5, 1, 1, 1, 1, 1))}

lines = ["#### Small nets, float64: evaluations to reach uniform m = 256's error", "",
         "| model | quantity | error at uniform m = 256 | uniform | " + " | ".join(
             "%s | ratio" % s for s in OTHERS) + " |",
         "|---|---|---:|---:|" + "---:|---:|" * len(OTHERS)]
models = sorted({r["model"] for r in small}, key=lambda m: [r["model"] for r in small].index(m))
ratios = {s: [] for s in OTHERS}
for model in models:
    for q in ("IG", "conductance", "IPNA"):
        rows = [r for r in small if r["model"] == model and r["quantity"] == q]
        pts = {s: [(int(r["evaluations"]), float(r["error"])) for r in rows if r["schedule"] == s]
               for s in SCHEDULES + OTHERS}
        target = [float(r["error"]) for r in rows if r["schedule"] == "uniform" and int(r["steps"]) == 256][0]
        u = evals_to_reach(pts["uniform"], target)
        cells = []
        for s in OTHERS:
            if not pts[s]:
                cells.append("- | -")
                continue
            a = evals_to_reach(pts[s], target)
            ratio = u / a if u and a else None
            if ratio:
                ratios[s].append(ratio)
            cells.append("%s | %s" % ("%.0f" % a if a else "> %d" % max(e for e, _ in pts[s]),
                                      "%.2fx" % ratio if ratio else "-"))
        lines.append("| %s | %s | %.2e | %s | %s |" % (model, q, target, "%.0f" % u if u else "-", " | ".join(cells)))
lines.append("")
for s in OTHERS:
    if ratios[s]:
        lines.append("Geometric mean ratio, %s: %.2fx (range %.2fx to %.2fx)." % (
            s, math.exp(sum(math.log(r) for r in ratios[s]) / len(ratios[s])), min(ratios[s]), max(ratios[s])))

IPNA_OTHERS = [s for s in OTHERS if s != "oracle" and s not in SECANT]
if EXTRAPOLATED:  # extrapolation is of higher order: it gains more where more accuracy is asked
    lines += ["", "#### Small nets, float64: IPNA (difference form), evaluations to reach uniform m = 1024's error", "",
              "| model | error at uniform m = 1024 | " + " | ".join("%s | ratio" % s for s in IPNA_OTHERS)
              + " |", "|---|---:|" + "---:|---:|" * len(IPNA_OTHERS)]
    for model in models:
        rows = [r for r in small if r["model"] == model and r["quantity"] == "IPNA"]
        target = [float(r["error"]) for r in rows if r["schedule"] == "uniform" and int(r["steps"]) == 1024][0]
        cells = []
        for s in IPNA_OTHERS:
            a = evals_to_reach([(int(r["evaluations"]), float(r["error"])) for r in rows if r["schedule"] == s], target)
            cells.append("%s | %s" % ("%.0f" % a if a else "-", "%.2fx" % (1024 / a) if a else "-"))
        lines.append("| %s | %.2e | %s |" % (model, target, " | ".join(cells)))

has_change = "ig_change" in eff[0]
has_extra = "patch_gap_extrapolated" in eff[0]
lines += ["", "#### EfficientNet-Lite0 traffic light, float32: the m from which each stays under (to its largest m measured)",
          "",
          "| schedule | IG gap <= 1% | patch gap <= 5% (difference form) |" + (
              " IG change <= 1% | evaluations for IG gap and change |" if has_change else "") + (
              " patch gap <= 5%, extrapolated |" if has_extra else ""),
          "|---|---:|---:|" + ("---:|---:|" if has_change else "") + ("---:|" if has_extra else "")]
for s in SCHEDULES:
    rows = [r for r in eff if r["schedule"] == s]

    def first(pred):  # the first m from which pred holds, to the largest m measured
        for i, r in enumerate(rows):
            if all(pred(q) for q in rows[i:]):
                return r
        return None
    ok = lambda v, t: v not in ("", "nan") and float(v) <= t
    ig = first(lambda r: ok(r["ig_gap"], 0.01))
    pa = first(lambda r: ok(r["patch_gap"], 0.05))
    cell = lambda r: r["steps"] if r else "> %s" % rows[-1]["steps"]
    row = "| %s | %s | %s |" % (s, cell(ig), cell(pa))
    if has_change:
        ch = first(lambda r: ok(r["ig_change"], 0.01))
        both = first(lambda r: ok(r["ig_gap"], 0.01) and ok(r["ig_change"], 0.01))
        row += " %s | %s |" % (cell(ch), both["evaluations"] if both else "-")
    if has_extra:
        row += " %s |" % cell(first(lambda r: ok(r["patch_gap_extrapolated"], 0.05)))
    lines.append(row)
keys = ("ig_gap", "patch_gap") + (("ig_change",) if has_change else ()) + (("patch_gap_extrapolated",) if has_extra else ())
cols = [(s, k) for k in keys for s in SCHEDULES]
lines += ["", "| m | " + " | ".join("%s %s" % (s, k.replace("_", " ")) for s, k in cols) + " |",
          "|---:|" + "---:|" * len(cols)]
for m in sorted({int(r["steps"]) for r in eff}):
    at = {s: ([r for r in eff if r["schedule"] == s and int(r["steps"]) == m] or [{}])[0] for s in SCHEDULES}
    lines.append("| %d | " % m + " | ".join(
        "-" if at[s].get(k, "") in ("", "nan") else "%.2e" % float(at[s][k]) for s, k in cols) + " |")
err = list(csv.DictReader(open(err_csv))) if err_csv else []
ERR_SCHEDULES = ("uniform", "adaptive", "gradient", "secant", "secant-gradient")
if err:
    ref_m = 8192
    lines += ["", "#### EfficientNet-Lite0 traffic light, float32, IG alone: the IG map's error against uniform m = %d" % ref_m,
              "", "| schedule | evaluations, error <= 1% | evaluations, error <= 0.5% | IG gap at those m |",
              "|---|---:|---:|---|"]
    for s in [s for s in ERR_SCHEDULES if any(r["schedule"] == s for r in err)]:
        rows = [r for r in err if r["schedule"] == s]

        def reach(t):  # the first row from which the error stays under t, to the largest m measured
            for i, r in enumerate(rows):
                if all(float(q["ig_error"]) <= t for q in rows[i:]):
                    return r
            return None
        hits = [reach(0.01), reach(0.005)]
        lines.append("| %s | %s | %s | %s |" % (s, *["%s (m = %s)" % (h["evaluations"], h["steps"]) if h else "-"
                                                      for h in hits],
                                               ", ".join("%.1e" % float(h["ig_gap"]) for h in hits if h)))
    present = [s for s in ERR_SCHEDULES if any(r["schedule"] == s for r in err)]
    lines += ["", "| m | " + " | ".join("%s error" % s for s in present) + " |", "|---:|" + "---:|" * len(present)]
    for m in sorted({int(r["steps"]) for r in err}):
        at = {r["schedule"]: r for r in err if int(r["steps"]) == m}
        lines.append("| %d | " % m + " | ".join("%.2e" % float(at[s]["ig_error"]) if s in at else "-"
                                                for s in present) + " |")
open(os.path.join(out_dir, "step-control.md"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))

fig, axes = plt.subplots(1, 4, figsize=(16, 4.2), dpi=110)
for ax, q in zip(axes, ("IG", "conductance", "IPNA")):
    for i, model in enumerate(models):
        for s in SCHEDULES + SECANT:
            rows = [r for r in small if r["model"] == model and r["quantity"] == q and r["schedule"] == s]
            ax.plot([int(r["evaluations"]) for r in rows], [float(r["error"]) for r in rows], linestyle=STYLE[s],
                    color="C%d" % i, label=model if s == "uniform" else None)
        if q == "IPNA":
            for s in ("uniform extrapolated", "gradient extrapolated"):
                rows = [r for r in small if r["model"] == model and r["quantity"] == q and r["schedule"] == s]
                ax.plot([int(r["evaluations"]) for r in rows], [float(r["error"]) for r in rows],
                        linestyle="-." if s[0] == "u" else (0, (1, 3)), color="C%d" % i, linewidth=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_title("%s, float64" % q, fontsize=9)
    ax.set_xlabel("gradient evaluations (+ pilot)")
    ax.grid(alpha=0.3)
axes[0].set_ylabel("relative L2 error vs uniform m = 16384")
axes[0].legend(fontsize=7)
ax = axes[3]
for s in SCHEDULES:
    rows = [r for r in eff if r["schedule"] == s]
    ev = [int(r["evaluations"]) for r in rows]
    ax.plot(ev, [float(r["ig_gap"]) for r in rows], linestyle=STYLE[s], color="C0", label="IG gap, " + s)
    ax.plot(ev, [float(r["patch_gap"]) for r in rows], linestyle=STYLE[s], color="C3", label="patch gap, " + s)
    if has_change:
        ax.plot(ev, [float(r["ig_change"]) for r in rows], linestyle=STYLE[s], color="C2", label="IG change, " + s)
    if has_extra:
        ax.plot(ev, [float(r["patch_gap_extrapolated"]) if r["patch_gap_extrapolated"] not in ("", "nan") else float("nan")
                     for r in rows], linestyle=STYLE[s], color="C4", label="patch gap extrapolated, " + s)
for s in [s for s in ERR_SCHEDULES if any(r["schedule"] == s for r in err)]:
    rows = [r for r in err if r["schedule"] == s]
    ax.plot([int(r["evaluations"]) for r in rows], [float(r["ig_error"]) for r in rows], linestyle=STYLE[s], color="C1",
            linewidth=1.6, label="IG error (IG alone), " + s)
ax.set_xscale("log")
ax.set_yscale("log")
ax.set_title("EfficientNet-Lite0 traffic light, float32", fontsize=9)
ax.set_xlabel("gradient evaluations (+ pilot)")
ax.grid(alpha=0.3)
ax.legend(fontsize=6)
fig.suptitle("- - uniform, - adaptive, : gradient" + (", -. secant rule, -.. secant rule on the gradient schedule"
                                                       if SECANT else "") + "; IPNA's thin lines: extrapolated",
             fontsize=9)
fig.tight_layout()
fig.savefig(os.path.join(out_dir, "step-control.png"))
