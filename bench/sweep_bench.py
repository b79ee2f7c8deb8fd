#!/usr/bin/python3
"""The sweep benchmark: `ipna-fast sweep` over Fashion-MNIST test images with a
4x4 grid (IG + conductance + IPNA for 16 boxes, difference form, per image)
against the batched LibTorch baseline (bench/bench_sweep_libtorch.cpp) doing
the same per image on TorchScript halves of the same weights, side by side in
one run, alternating, each in its own process (peak memory = max RSS).

  /usr/bin/python3 bench/sweep_bench.py [--build build] [--images 200] [--steps 256] [--repeats 3]

Writes bench/results/sweep-cpu.md. Ours includes writing the HDF5 file (maps
float32); the baseline keeps nothing.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import h5py
import numpy as np
import onnx
import torch
from onnx import numpy_helper

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)
sys.path.insert(0, os.path.join(root, "tools"))
from train_fashion import nets, idx  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--build", default="build")
ap.add_argument("--images", type=int, default=200)
ap.add_argument("--steps", type=int, default=256)
ap.add_argument("--grid", type=int, default=4)
ap.add_argument("--repeats", type=int, default=3)
ap.add_argument("--out", default=os.path.join(here, "results", "sweep-cpu.md"))
a = ap.parse_args()
DATA = "/usr/share/datasets/fashion-mnist"
onnx_path = os.path.join(root, "models", "fashion_cnn.onnx")

# TorchScript halves of the shipped model, from its ONNX weights (the same numbers).
mdir = os.path.join(a.build, "bench_models", "fashion_cnn")
os.makedirs(mdir, exist_ok=True)
f1, f2 = nets()
weights = [numpy_helper.to_array(t) for t in onnx.load(onnx_path).graph.initializer]
params = list(f1.parameters()) + list(f2.parameters())
by_shape = {}
for w in weights:
    by_shape.setdefault(tuple(w.shape), []).append(w)
with torch.no_grad():
    for p in params:  # initializers in module order; shapes are unique except none
        p.copy_(torch.from_numpy(np.array(by_shape[tuple(p.shape)].pop(0))))
f1.eval(), f2.eval()
torch.jit.trace(f1, torch.zeros(1, 1, 28, 28)).save(os.path.join(mdir, "model.f1.pt"))
torch.jit.trace(f2, torch.zeros(1, 64)).save(os.path.join(mdir, "model.f2.pt"))

exe = os.path.join(a.build, "ipna-fast")
base = os.path.join(a.build, "bench", "bench_sweep_libtorch")
if not os.path.exists(base):
    sys.exit(f"{base} is missing: build with -DIPNA_BUILD_BENCH=ON and Debian's libtorch-dev")


def timed(cmd):
    p = subprocess.run(["/usr/bin/time", "-f", "MAXRSS %M"] + cmd, capture_output=True, text=True)
    if p.returncode:
        sys.exit(f"{cmd[0]} failed: {p.stderr[-2000:]}")
    rss = int([l for l in p.stderr.splitlines() if l.startswith("MAXRSS")][-1].split()[1]) / 1024
    return json.loads(p.stdout), rss


tmp = tempfile.mkdtemp()
ours, theirs = [], []
for r in range(a.repeats):
    out = os.path.join(tmp, f"sweep{r}.h5")
    s, rss = timed([exe, "sweep", "--model", onnx_path, "--split", "hidden", "--idx", DATA, "--limit", str(a.images),
                    "--grid", f"{a.grid}x{a.grid}", "-n", str(a.steps), "--quiet", "--json", "-o", out])
    ours.append((s["items_per_second"], rss))
    t, rss_t = timed([base, os.path.join(mdir, "model.f1.pt"), os.path.join(mdir, "model.f2.pt"), DATA,
                      str(a.images), str(a.steps), str(a.grid)])
    theirs.append((t["items_per_second"], rss_t))
    print(f"run {r}: ours {s['items_per_second']:.2f} items/s ({rss:.0f} MiB), "
          f"LibTorch {t['items_per_second']:.2f} items/s ({rss_t:.0f} MiB)", flush=True)

# Same model: F(x) of the sweep against PyTorch's softmax at the label.
with h5py.File(os.path.join(tmp, "sweep0.h5")) as f:
    fx = f["items/f_input"][()]
    labels = f["items/label"][()]
    ig_sum = f["items/ig_sum"][()]
x = torch.from_numpy(idx(DATA + "/t10k-images-idx3-ubyte.gz")[: a.images].astype(np.float32) / 255).unsqueeze(1)
with torch.no_grad():
    p = torch.softmax(f2(f1(x)), 1)[torch.arange(a.images), torch.from_numpy(labels.astype(np.int64))].numpy()
same_model = float(np.abs(p - fx).max())
if same_model > 1e-5:
    sys.exit(f"the baseline's model differs from ours: max |F(x) difference| {same_model:.3g}")


def med(v):
    return sorted(v)[len(v) // 2]


o, t = med([v[0] for v in ours]), med([v[0] for v in theirs])
orss, trss = med([v[1] for v in ours]), med([v[1] for v in theirs])
os.makedirs(os.path.dirname(a.out), exist_ok=True)
with open(a.out, "w") as f:
    f.write(f"""# Sweep throughput on the CPU: ipna-fast against batched LibTorch

`/usr/bin/python3 bench/sweep_bench.py --images {a.images} --steps {a.steps} --repeats {a.repeats}` (2 cores; both
2 threads; medians of {a.repeats} alternating runs, each a process of its own). Work per image: IG, conductance and
IPNA (difference form) for a {a.grid}x{a.grid} grid of boxes, {a.steps} steps, shipped Fashion-MNIST CNN split at
`hidden`, class = label, black baseline; {a.images} test images. Ours writes every map to HDF5 (float32);
the baseline keeps nothing. Same weights: max |F(x) ours - PyTorch| = {same_model:.2g}.

| | items/s | peak memory (max RSS) |
| --- | ---: | ---: |
| ipna-fast sweep | {o:.2f} | {orss:.0f} MiB |
| LibTorch, batched per image | {t:.2f} | {trss:.0f} MiB |
| ratio (ours / LibTorch) | **{o / t:.2f}x** | {orss / trss:.2f}x |

Runs (ours, LibTorch items/s): {", ".join(f"{x[0]:.2f}/{y[0]:.2f}" for x, y in zip(ours, theirs))}.
""")
print(open(a.out).read())
