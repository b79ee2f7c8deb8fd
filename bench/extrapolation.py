#!/usr/bin/python3
"""What extrapolating from m / 2 and m (Richardson, `extrapolate` of the library) does to each map's error.

  /usr/bin/python3 bench/extrapolation.py [--python-dir build/python] [--fixtures build/fixtures]
      [--effnet build/models/efficientnet_lite0.onnx] [--out bench/results/extrapolation.md]

fixtures (float64): IG, conductance and the difference form's IPNA at m and extrapolated from m / 2 and m,
against a uniform m = 16384 run, on three test fixtures: the extrapolation pays for IPNA only.
EfficientNet-Lite0 traffic light (float32, box 45 100 90 130, uniform and gradient schedules): the
difference form's patch completeness gap and its IPNA map's error against the tangent form at m = 4096
(the common limit of both forms), plain and extrapolated.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

ap = argparse.ArgumentParser()
ap.add_argument("--python-dir", default="build/python")
ap.add_argument("--fixtures", default="build/fixtures")
ap.add_argument("--effnet", default="build/models/efficientnet_lite0.onnx")
ap.add_argument("--out", default="bench/results/extrapolation.md")
a = ap.parse_args()
sys.path.insert(0, a.python_dir)
import ipna_fast  # noqa: E402


def rel(p, q):
    return np.linalg.norm(np.asarray(p) - np.asarray(q)) / np.linalg.norm(np.asarray(q))


lines = ["#### Test fixtures, float64: relative L2 error against uniform m = 16384, plain / extrapolated", "",
         "| model | m | IG | conductance | IPNA (difference form) |", "|---|---:|---:|---:|---:|"]
for name in ("lenet", "vgg_avg", "resnet18"):
    d = os.path.join(a.fixtures, name)
    meta = json.load(open(os.path.join(d, "meta.json")))
    x, x0 = np.load(os.path.join(d, "x.npy")), np.load(os.path.join(d, "baseline.npy"))
    eng = ipna_fast.Attributor(ipna_fast.load(os.path.join(d, "model.onnx"), split=meta["split"]), precision="f64")
    kw = dict(target_class=meta["class"], boxes=[meta["boxes"][0]])
    ref = eng.run(x, x0, steps=16384, **kw)
    half = eng.run(x, x0, steps=128, **kw)
    for m in (256, 512, 1024):
        r = eng.run(x, x0, steps=m, **kw)
        cells = []
        for q in ("ig", "conductance", "ipna"):
            p, h, want = np.asarray(getattr(r, q)), np.asarray(getattr(half, q)), np.asarray(getattr(ref, q))
            cells.append("%.2e / %.2e" % (rel(p, want), rel(2 * p - h, want)))
        lines.append("| %s | %d | %s |" % (name, m, " | ".join(cells)))
        half = r
    print("\n".join(lines[-3:]), flush=True)

if os.path.exists(a.effnet):
    x = ipna_fast.load_image(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data",
                                          "traffic_light.JPEG"))
    eng = ipna_fast.Attributor(ipna_fast.load(a.effnet, split="blocks.7"))
    kw = dict(target_class=920, boxes=[(45, 100, 90, 130)], conductance=False)
    limit = np.asarray(eng.run(x, "black", steps=4096, ipna_form="tangent", schedule="gradient", **kw).ipna[0])
    lines += ["", "#### EfficientNet-Lite0 traffic light, float32: difference form, plain / extrapolated", "",
              "| schedule | m | patch gap | IPNA error against the tangent form at m = 4096 |", "|---|---:|---:|---:|"]
    for schedule in ("uniform", "gradient"):
        half = None
        for m in (128, 256, 512, 1024, 2048):
            t0 = time.time()
            r = eng.run(x, "black", steps=m, schedule=schedule, **kw)
            p, inside = np.asarray(r.ipna[0]), r.ig_in_box[0]
            if half is not None:
                e = 2 * p - half
                lines.append("| %s | %d | %.2e / %.2e | %.2e / %.2e |" % (
                    schedule, m, abs(p.sum() - inside) / abs(inside), abs(e.sum() - inside) / abs(inside),
                    rel(p, limit), rel(e, limit)))
                print(lines[-1], "(%.0f s)" % (time.time() - t0), flush=True)
            half = p
open(a.out, "w").write("\n".join(lines) + "\n")
