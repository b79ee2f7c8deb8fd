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
ap.add_argument("--bf16", action="store_true", help="also ours with bf16 convolutions (--device cpu/bf16); "
                "ours with direct float32 (--device cpu) and Winograd (--device cpu/winograd) always run")
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
# Our variants beside LibTorch: direct float32 convolutions (the default), Winograd, and bf16.
variants = [("f32", "cpu"), ("winograd", "cpu/winograd")] + ([("bf16", "cpu/bf16")] if a.bf16 else [])
rows = []


def median(v):
    v = sorted(v)
    return v[len(v) // 2]


for n in names:
    full = n + "/iterations:3/real_time"
    ours = {v: [] for v, _ in variants}
    torch_ = []
    for _ in range(a.repeats):
        torch_.append(run("bench_libtorch", full))
        for v, device in variants:
            ours[v].append(run("bench_engine", full, device))
    t_torch = median([t[0] for t in torch_])
    row = {"name": n, "torch": t_torch, "torch_mib": max(t[1] for t in torch_)}
    for v, _ in variants:
        row[v] = median([o[0] for o in ours[v]])
        row[v + "_mib"] = max(o[1] for o in ours[v])
        row[v + "_gap"] = ours[v][0][2]
    rows.append(row)
if a.resnet152:
    t, m, gap = run("bench_engine", "resnet152_224/ig/256/iterations:1/real_time")
    print("resnet152_224/ig/256 (ours, f32): %.1f ms, %.0f MiB, gap %.2g" % (t, m, gap))

def cpu_description():
    """The processor's name and the instruction sets bf16 depends on, so a table says where it ran."""
    name, flags = "unknown CPU", set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key.strip() == "model name" and name == "unknown CPU":
                name = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    isa = [f for f in ("avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return "%s (%s)" % (name, ", ".join(isa) if isa else "no AVX-512")


blas = ("native (OPENBLAS_CORETYPE unset)" if a.native_blas else
        "as the environment says (OPENBLAS_CORETYPE=%s)" % os.environ.get("OPENBLAS_CORETYPE", "unset"))
vs = [v for v, _ in variants]
lines = ["CPU: " + cpu_description(), "",
         "OpenBLAS kernels (float64 and the few-channel convolutions): " + blas,
         "medians of %d alternating runs; 2 threads each; ratio = ours / LibTorch; "
         "gap = |completeness gap| / |F(x) - F(x')|" % a.repeats, "",
         "| workload | LibTorch ms | " + " | ".join("ours %s ms | ratio" % v for v in vs) + " | peak MiB LibTorch / " +
         " / ".join(vs) + " | " + " | ".join("gap " + v for v in vs) + " |",
         "| --- | ---: | " + " | ".join("---: | ---:" for v in vs) + " | ---: | " + " | ".join("---:" for v in vs) + " |"]
for r in rows:
    lines.append("| %s | %.1f | " % (r["name"], r["torch"]) +
                 " | ".join("%.1f | %.2f" % (r[v], r[v] / r["torch"]) for v in vs) + " | %.0f / " % r["torch_mib"] +
                 " / ".join("%.0f" % r[v + "_mib"] for v in vs) + " | " +
                 " | ".join("%.2g" % r[v + "_gap"] for v in vs) + " |")
print("\n".join(lines))
if a.out:
    with open(a.out, "w") as f:
        f.write("# CPU: ipna-fast (float32 convolutions on oneDNN: direct, Winograd, bf16) against LibTorch\n\n"
                "`/usr/bin/python3 bench/run_cpu_bench.py %s`\n\n" % " ".join(sys.argv[1:]) + "\n".join(lines) + "\n")
