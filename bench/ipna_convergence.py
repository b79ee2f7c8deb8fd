#!/usr/bin/python3
"""Convergence of IPNA in m: the patch sum of both forms against IG inside the box.

  /usr/bin/python3 bench/ipna_convergence.py [--build build] [--steps 16,32,...] [--out bench/results]

Runs `ipna-fast attribute` on the traffic-light example (the pretrained
EfficientNet-Lite0 split at blocks.7, box 45 100 90 130, class 920) at each m
in both forms and writes ipna-convergence.csv, ipna-convergence.md (the table)
and ipna-convergence.png (the plot) into --out. Patch completeness says the
patch sum should equal IG inside the box; the tangent form holds it at every m,
the difference form only as m grows.
"""
import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)
ap = argparse.ArgumentParser()
ap.add_argument("--build", default=os.path.join(root, "build"))
ap.add_argument("--steps", default="16,32,64,128,256,512,1024")
ap.add_argument("--model", default=None, help="default: BUILD/models/efficientnet_lite0.onnx (tools/setup.sh exports it)")
ap.add_argument("--out", default=os.path.join(here, "results"))
a = ap.parse_args()
model = a.model or os.path.join(a.build, "models", "efficientnet_lite0.onnx")
if not os.path.exists(model):
    sys.exit("%s is missing: export it with\n  /usr/bin/python3 tools/export_onnx.py efficientnet_lite0 --split blocks.7 "
             "--out %s" % (model, model))
steps = [int(s) for s in a.steps.split(",")]
rows = []
with tempfile.TemporaryDirectory() as tmp:
    for m in steps:
        for form in ("difference", "tangent"):
            out = os.path.join(tmp, "%s-%d" % (form, m))
            cmd = [os.path.join(a.build, "ipna-fast"), "attribute", "--model", model, "--split", "blocks.7",
                   "--image", os.path.join(root, "tests", "data", "traffic_light.JPEG"), "--class", "920",
                   "--box", "45", "100", "90", "130", "-n", str(m), "--ipna-form", form, "-o", out]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            rep = json.load(open(os.path.join(out, "report.json")))
            box = rep["boxes"][0]
            rows.append({"steps": m, "form": form, "ipna_sum": box["ipna_sum"], "ig_inside": box["ig_inside"],
                         "gap": box["ipna_sum"] - box["ig_inside"], "seconds": rep["seconds"]["attribution"]})
            print("m=%5d %-10s patch sum %+.5f  IG inside %+.5f  (%.1f s)" %
                  (m, form, box["ipna_sum"], box["ig_inside"], rows[-1]["seconds"]), flush=True)

os.makedirs(a.out, exist_ok=True)
with open(os.path.join(a.out, "ipna-convergence.csv"), "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
by = {(r["steps"], r["form"]): r for r in rows}
lines = ["| m | IG inside | patch sum, difference form | patch sum, tangent form |", "|---:|---:|---:|---:|"]
for m in steps:
    d, t = by[(m, "difference")], by[(m, "tangent")]
    lines.append("| %d | %.4f | %.4f | %.4f |" % (m, t["ig_inside"], d["ipna_sum"], t["ipna_sum"]))
open(os.path.join(a.out, "ipna-convergence.md"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

fig, ax = plt.subplots(figsize=(6, 3.6), dpi=120)
ax.plot(steps, [by[(m, "tangent")]["ig_inside"] for m in steps], "k--", label="IG inside the box")
ax.plot(steps, [by[(m, "difference")]["ipna_sum"] for m in steps], "o-", label="IPNA patch sum, difference form")
ax.plot(steps, [by[(m, "tangent")]["ipna_sum"] for m in steps], "s-", label="IPNA patch sum, tangent form")
ax.set_xscale("log", base=2)
ax.set_xlabel("Riemann steps m")
ax.set_ylabel("sum over the split neurons")
ax.set_title("EfficientNet-Lite0, traffic light, box 45 100 90 130")
ax.legend(fontsize=8)
ax.grid(alpha=0.3)
fig.tight_layout()
fig.savefig(os.path.join(a.out, "ipna-convergence.png"))
