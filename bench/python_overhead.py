#!/usr/bin/python3
"""The Python module's call overhead on the LeNet workload (256 steps, IG + conductance + IPNA for
one box): wall time of Attributor.run against the engine's own time of the same call (Result.seconds),
and against the CLI's attribution time (`ipna-fast attribute --json`, seconds.attribution) and its
whole process; medians of --repeats calls, in one run.

  /usr/bin/python3 bench/python_overhead.py [--build build] [--repeats 50]
Writes bench/results/python-overhead.md.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ap = argparse.ArgumentParser()
ap.add_argument("--build", default="build")
ap.add_argument("--repeats", type=int, default=50)
a = ap.parse_args()
here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(a.build, "python"))
import ipna_fast  # noqa: E402

models = os.path.join(a.build, "bench_models")
if not os.path.exists(os.path.join(models, "lenet", "model.onnx")):
    subprocess.run(["/usr/bin/python3", os.path.join(here, "prepare_models.py"), models], check=True)
d = os.path.join(models, "lenet")
split = "split"
x = np.load(os.path.join(d, "x.npy"))
box = [7, 9, 16, 26]
engine = ipna_fast.Attributor(ipna_fast.load(os.path.join(d, "model.onnx"), split=split))
kw = dict(target_class=3, steps=256, boxes=[box], chunk=256)
engine.run(x, "zeros", **kw)  # warm-up: buffers
wall, inner = [], []
for _ in range(a.repeats):
    t = time.perf_counter()
    r = engine.run(x, "zeros", **kw)
    wall.append(time.perf_counter() - t)
    inner.append(r.seconds)
cli_inner, cli_wall = [], []
tmp = tempfile.mkdtemp()
for i in range(min(a.repeats, 10)):
    t = time.perf_counter()
    p = subprocess.run([os.path.join(a.build, "ipna-fast"), "attribute", "--model", os.path.join(d, "model.onnx"),
                        "--split", split, "--input", os.path.join(d, "x.npy"), "--baseline", "zeros", "--class", "3",
                        "--box", *map(str, box), "-n", "256", "--chunk", "256", "--json", "-o",
                        os.path.join(tmp, f"o{i}")], capture_output=True, text=True, check=True)
    cli_wall.append(time.perf_counter() - t)
    cli_inner.append(json.loads(p.stdout)["seconds"]["attribution"])
med = lambda v: sorted(v)[len(v) // 2] * 1e3  # noqa: E731
rows = [("Python `Attributor.run`, wall", med(wall)), ("of which the engine (`Result.seconds`)", med(inner)),
        ("binding overhead (wall - engine)", med([w - i for w, i in zip(wall, inner)])),
        ("CLI `attribute`, engine time", med(cli_inner)), ("CLI `attribute`, whole process", med(cli_wall))]
out = os.path.join(here, "results", "python-overhead.md")
with open(out, "w") as f:
    f.write("# Python call overhead, LeNet, 256 steps, IG + conductance + IPNA (one box), float32, CPU\n\n"
            f"`/usr/bin/python3 bench/python_overhead.py --repeats {a.repeats}` (medians). The engine rows are the "
            "same request; the CLI's engine time is a first call in a fresh process (buffers allocated, threads "
            "started), and its whole process also loads the model and writes the maps, pictures and report."
            "\n\n| | ms |\n| --- | ---: |\n")
    for name, v in rows:
        f.write(f"| {name} | {v:.3f} |\n")
print(open(out).read())
