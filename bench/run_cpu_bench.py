#!/usr/bin/python3
"""CPU benchmark table: ipna-fast against LibTorch on the same weights, side by
side in one run, each workload in its own process so peak memory (max RSS) is
per workload.

  /usr/bin/python3 bench/run_cpu_bench.py [--build build] [--native-blas] [--resnet152]

--native-blas unsets OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE for this run only (where the
environment pins OpenBLAS to its Haswell kernels; LibTorch's oneDNN is not pinned).
"""
import argparse
import json
import os
import subprocess
import sys

ap = argparse.ArgumentParser()
ap.add_argument("--build", default="build")
ap.add_argument("--native-blas", action="store_true")
ap.add_argument("--resnet152", action="store_true", help="also ResNet-152 224x224 256 steps IG (ours; about a minute)")
ap.add_argument("--repeats", type=int, default=3,
                help="alternate ours and LibTorch this many times per workload and take medians (the machine is noisy)")
a = ap.parse_args()
models = os.path.join(a.build, "bench_models")
if not os.path.exists(os.path.join(models, "lenet", "model.f1.pt")):
    subprocess.run(["/usr/bin/python3", os.path.join(os.path.dirname(__file__), "prepare_models.py"), models],
                   check=True)
env = dict(os.environ, IPNA_BENCH_MODELS=models)
if a.native_blas:
    env.pop("OPENBLAS_CORETYPE", None)
    env.pop("OPENBLAS_L2_SIZE", None)


def run(binary, name):
    cmd = ["/usr/bin/time", "-f", "MAXRSS %M", os.path.join(a.build, "bench", binary),
           "--benchmark_filter=^" + name + "$", "--benchmark_format=json"]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit("%s failed: %s" % (binary, p.stderr[-2000:]))
    rss = int([l for l in p.stderr.splitlines() if l.startswith("MAXRSS")][-1].split()[1]) / 1024.0
    b = [x for x in json.loads(p.stdout)["benchmarks"] if x["run_type"] == "iteration"][0]
    return b["real_time"], rss, b.get("workspace_MiB")


names = ["resnet18_112/ig/32", "resnet18_112/ipna_cond/32", "lenet/ig/256", "lenet/ipna_cond/256"]
rows = []
def median(v):
    v = sorted(v)
    return v[len(v) // 2]


for n in names:
    full = n + "/iterations:3/real_time"
    ours, torch_ = [], []
    for _ in range(a.repeats):
        ours.append(run("bench_engine", full))
        torch_.append(run("bench_libtorch", full))
    t_ours, t_torch = median([o[0] for o in ours]), median([t[0] for t in torch_])
    m_ours, m_torch = max(o[1] for o in ours), max(t[1] for t in torch_)
    rows.append((n, t_ours, t_torch, t_ours / t_torch, m_ours, m_torch))
if a.resnet152:
    t, m, ws = run("bench_engine", "resnet152_224/ig/256/iterations:1/real_time")
    rows.append(("resnet152_224/ig/256", t, float("nan"), float("nan"), m, float("nan")))

print("\nOpenBLAS kernels: %s" % ("native (OPENBLAS_CORETYPE unset)" if a.native_blas else
                                  "as the environment says (OPENBLAS_CORETYPE=%s)" % os.environ.get("OPENBLAS_CORETYPE", "unset")))
print("medians of %d alternating runs" % a.repeats)
print("%-28s %12s %12s %8s %14s %14s" % ("workload (float32, 2 threads)", "ours ms", "LibTorch ms", "ratio",
                                         "ours peak MiB", "torch peak MiB"))
for r in rows:
    print("%-28s %12.1f %12.1f %8.2f %14.0f %14.0f" % r)
