#!/usr/bin/python3
"""CPU benchmark table: ipna-fast against LibTorch on the same weights, side by
side in one run, each workload in its own process so peak memory (max RSS) is
per workload.

  /usr/bin/python3 bench/run_cpu_bench.py [--build build] [--native-blas] [--bf16] [--resnet152] [--out FILE.md]

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
ap.add_argument("--bf16", action="store_true", help="also ours with bf16 convolutions (--device cpu/bf16)")
ap.add_argument("--out", help="also write the table (markdown) here")
ap.add_argument("--repeats", type=int, default=3,
                help="alternate ours and LibTorch this many times per workload and take medians (the machine is noisy)")
a = ap.parse_args()
models = os.path.join(a.build, "bench_models")
if not all(os.path.exists(os.path.join(models, m, "model.f1.pt")) for m in ("lenet", "resnet18_112",
                                                                             "efficientnet_lite0_224")):
    subprocess.run(["/usr/bin/python3", os.path.join(os.path.dirname(__file__), "prepare_models.py"), models],
                   check=True)
env = dict(os.environ, IPNA_BENCH_MODELS=models)
if a.native_blas:
    env.pop("OPENBLAS_CORETYPE", None)
    env.pop("OPENBLAS_L2_SIZE", None)


def run(binary, name, device=None):
    cmd = ["/usr/bin/time", "-f", "MAXRSS %M", os.path.join(a.build, "bench", binary),
           "--benchmark_filter=^" + name + "$", "--benchmark_format=json"]
    p = subprocess.run(cmd, env=dict(env, IPNA_BENCH_DEVICE=device) if device else env, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit("%s failed: %s" % (binary, p.stderr[-2000:]))
    rss = int([l for l in p.stderr.splitlines() if l.startswith("MAXRSS")][-1].split()[1]) / 1024.0
    b = [x for x in json.loads(p.stdout)["benchmarks"] if x["run_type"] == "iteration"][0]
    return b["real_time"], rss, b.get("gap_rel", float("nan"))


names = ["resnet18_112/ig/32", "resnet18_112/ipna_cond/32", "efficientnet_lite0_224/ig/64", "lenet/ig/256",
         "lenet/ipna_cond/256"]
rows = []


def median(v):
    v = sorted(v)
    return v[len(v) // 2]


for n in names:
    full = n + "/iterations:3/real_time"
    ours, torch_, bf16 = [], [], []
    for _ in range(a.repeats):
        ours.append(run("bench_engine", full))
        torch_.append(run("bench_libtorch", full))
        if a.bf16:
            bf16.append(run("bench_engine", full, "cpu/bf16"))
    t_ours, t_torch = median([o[0] for o in ours]), median([t[0] for t in torch_])
    t_bf16 = median([b[0] for b in bf16]) if bf16 else float("nan")
    rows.append((n, t_ours, t_torch, t_ours / t_torch, t_bf16, t_bf16 / t_torch, max(o[1] for o in ours),
                 max(t[1] for t in torch_), max(b[1] for b in bf16) if bf16 else float("nan"), ours[0][2],
                 bf16[0][2] if bf16 else float("nan")))
if a.resnet152:
    t, m, gap = run("bench_engine", "resnet152_224/ig/256/iterations:1/real_time")
    rows.append(("resnet152_224/ig/256", t, *[float("nan")] * 4, m, *[float("nan")] * 2, gap, float("nan")))

blas = ("native (OPENBLAS_CORETYPE unset)" if a.native_blas else
        "as the environment says (OPENBLAS_CORETYPE=%s)" % os.environ.get("OPENBLAS_CORETYPE", "unset"))
lines = ["OpenBLAS kernels (float64 and the few-channel convolutions): " + blas,
         "medians of %d alternating runs; 2 threads each; gap = |completeness gap| / |F(x) - F(x')|" % a.repeats, "",
         "| workload | ours f32 ms | LibTorch ms | ratio | ours bf16 ms | bf16 ratio | peak MiB ours / LibTorch / bf16 "
         "| gap f32 | gap bf16 |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
for r in rows:
    lines.append("| %s | %.1f | %.1f | %.2f | %.1f | %.2f | %.0f / %.0f / %.0f | %.2g | %.2g |" % r)
print("\n".join(lines))
if a.out:
    with open(a.out, "w") as f:
        f.write("# CPU: ipna-fast (float32 convolutions on oneDNN, and bf16) against LibTorch\n\n`/usr/bin/python3 "
                "bench/run_cpu_bench.py %s`\n\n" % " ".join(sys.argv[1:]) + "\n".join(lines) + "\n")
