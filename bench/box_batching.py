# Would batching boxes of equal size pay on the CPU? Batching k boxes' patch passes
# makes each windowed convolution run on k times the samples, as a chunk k times
# larger does; this measures what a larger chunk does to the cost of one box's
# patch pass per step. ResNet-18 at 224 split after layer2, 144 steps, tangent form
# on cones, conductance (the base pass) with and without 9 boxes of 32x32 (a 3x3
# block of a 7x7 grid's inner boxes): the boxes' cost is the difference. Medians of
# --repeats runs, the configurations interleaved.
#   /usr/bin/python3 bench/box_batching.py [--python-dir build/python] [--repeats 3]
import argparse, statistics, sys, time

import numpy as np

ap = argparse.ArgumentParser()
ap.add_argument("--python-dir", default="build/python")
ap.add_argument("--model", default="build/bench_models/resnet18_224/model.onnx")
ap.add_argument("--repeats", type=int, default=3)
ap.add_argument("--chunks", default="16,48,144")
a = ap.parse_args()
sys.path.insert(0, a.python_dir)
import ipna_fast  # noqa: E402

engine = ipna_fast.Attributor(ipna_fast.load(a.model, split="layer2"), device="cpu")
x = np.random.default_rng(0).standard_normal((3, 224, 224))
boxes = [(64 + 32 * (i // 3), 64 + 32 * (i % 3), 96 + 32 * (i // 3), 96 + 32 * (i % 3)) for i in range(9)]
chunks = [int(c) for c in a.chunks.split(",")]
times = {(c, k): [] for c in chunks for k in (0, 9)}
for _ in range(a.repeats):
    for c in chunks:
        for k in (0, 9):
            t0 = time.perf_counter()
            engine.run(x, "black", target_class=1, steps=144, ig=False, conductance=True, ipna_form="tangent",
                       boxes=boxes[:k], chunk=c, memory_budget_mb=4096)
            times[(c, k)].append(time.perf_counter() - t0)
print("| chunk of steps | base pass s | with 9 boxes s | one box's patch passes s |")
print("| --- | --- | --- | --- |")
for c in chunks:
    base, nine = statistics.median(times[(c, 0)]), statistics.median(times[(c, 9)])
    print("| %d | %.3f | %.3f | %.3f |" % (c, base, nine, (nine - base) / 9))
