#!/usr/bin/python3
"""Step control tables and plot from bench_steps' CSV files.

  build/bench/bench_steps small --fixtures build/fixtures --out bench/results/steps-small.csv
  build/bench/bench_steps effnet --out bench/results/steps-effnet.csv
  /usr/bin/python3 bench/step_control.py bench/results/steps-small.csv bench/results/steps-effnet.csv

Writes bench/results/step-control.md (the tables) and step-control.png (error
against evaluations, log-log, uniform against adaptive).

Small nets: for each model and quantity, the evaluations each schedule needs
to reach the uniform schedule's error at m = 256 (log-log interpolation
between measured points), and their ratio. EfficientNet-Lite0: the first m
from which the IG completeness gap stays under 1% and the patch completeness
gap under 5% up to the largest m measured (both oscillate in m).
"""
import csv
import math
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

small_csv, eff_csv = sys.argv[1], sys.argv[2]
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


lines = ["#### Small nets, float64: evaluations to reach uniform m = 256's error", "",
         "| model | quantity | error at uniform m = 256 | uniform | adaptive | ratio |", "|---|---|---:|---:|---:|---:|"]
models = sorted({r["model"] for r in small}, key=lambda m: [r["model"] for r in small].index(m))
ratios = []
for model in models:
    for q in ("IG", "conductance", "IPNA"):
        rows = [r for r in small if r["model"] == model and r["quantity"] == q]
        pts = {s: [(int(r["evaluations"]), float(r["error"])) for r in rows if r["schedule"] == s]
               for s in ("uniform", "adaptive")}
        target = [e for (n, e), r in zip(pts["uniform"], [r for r in rows if r["schedule"] == "uniform"])
                  if int(r["steps"]) == 256][0]
        u, a = evals_to_reach(pts["uniform"], target), evals_to_reach(pts["adaptive"], target)
        ratio = u / a if u and a else None
        if ratio:
            ratios.append(ratio)
        lines.append("| %s | %s | %.2e | %s | %s | %s |" % (model, q, target, "%.0f" % u if u else "-",
                                                            "%.0f" % a if a else "> 2081",
                                                            "%.2fx" % ratio if ratio else "-"))
if ratios:
    lines.append("")
    lines.append("Geometric mean ratio: %.2fx (range %.2fx to %.2fx)." % (
        math.exp(sum(math.log(r) for r in ratios) / len(ratios)), min(ratios), max(ratios)))

lines += ["", "#### EfficientNet-Lite0 traffic light, float32: the m from which the gaps stay under", "",
          "| schedule | IG gap <= 1% | patch gap <= 5% (difference form) | both | evaluations for both |",
          "|---|---:|---:|---:|---:|"]
for s in ("uniform", "adaptive"):
    rows = [r for r in eff if r["schedule"] == s]

    def first(pred):  # the first m from which the gaps stay under, to the largest m measured
        for i, r in enumerate(rows):
            if all(pred(q) for q in rows[i:]):
                return r
        return None
    ig = first(lambda r: float(r["ig_gap"]) <= 0.01)
    pa = first(lambda r: float(r["patch_gap"]) <= 0.05)
    both = first(lambda r: float(r["ig_gap"]) <= 0.01 and float(r["patch_gap"]) <= 0.05)
    cell = lambda r: r["steps"] if r else "> %s" % rows[-1]["steps"]
    lines.append("| %s | %s | %s | %s | %s |" % (s, cell(ig), cell(pa), cell(both), both["evaluations"] if both else "-"))
lines += ["", "| m | uniform IG gap | adaptive IG gap | uniform patch gap | adaptive patch gap |", "|---:|---:|---:|---:|---:|"]
for m in sorted({int(r["steps"]) for r in eff}):
    u = [r for r in eff if r["schedule"] == "uniform" and int(r["steps"]) == m][0]
    a = [r for r in eff if r["schedule"] == "adaptive" and int(r["steps"]) == m][0]
    lines.append("| %d | %.2e | %.2e | %.2e | %.2e |" % (m, float(u["ig_gap"]), float(a["ig_gap"]),
                                                         float(u["patch_gap"]), float(a["patch_gap"])))
open(os.path.join(out_dir, "step-control.md"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))

fig, axes = plt.subplots(1, 4, figsize=(16, 3.8), dpi=110)
for ax, q in zip(axes, ("IG", "conductance", "IPNA")):
    for i, model in enumerate(models):
        for s, style in (("uniform", "--"), ("adaptive", "-")):
            rows = [r for r in small if r["model"] == model and r["quantity"] == q and r["schedule"] == s]
            ax.plot([int(r["evaluations"]) for r in rows], [float(r["error"]) for r in rows], style, color="C%d" % i,
                    label=model if s == "adaptive" else None)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_title("%s, float64 (dashed: uniform)" % q, fontsize=9)
    ax.set_xlabel("gradient evaluations (+ pilot)")
    ax.grid(alpha=0.3)
axes[0].set_ylabel("relative L2 error vs uniform m = 16384")
axes[0].legend(fontsize=7)
ax = axes[3]
for s, style in (("uniform", "--"), ("adaptive", "-")):
    rows = [r for r in eff if r["schedule"] == s]
    ev = [int(r["evaluations"]) for r in rows]
    ax.plot(ev, [float(r["ig_gap"]) for r in rows], style, color="C0", label="IG gap, " + s)
    ax.plot(ev, [float(r["patch_gap"]) for r in rows], style, color="C3", label="patch gap, " + s)
ax.set_xscale("log")
ax.set_yscale("log")
ax.set_title("EfficientNet-Lite0 traffic light, float32", fontsize=9)
ax.set_xlabel("gradient evaluations (+ pilot)")
ax.grid(alpha=0.3)
ax.legend(fontsize=7)
fig.tight_layout()
fig.savefig(os.path.join(out_dir, "step-control.png"))
