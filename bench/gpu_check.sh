#!/usr/bin/env bash
# The one device call (prepared by bench/gpu_bundle.sh, carried as .gpu/):
#  1. the GPU tests: CUDA against the CPU backend (fp32 <= 1e-5, tf32 <= 2e-3),
#  2. compute-sanitizer memcheck on one small attribution,
#  3. ResNet-152 split after layer2, 224x224, 256 steps, class 920: our IG and
#     IPNA + conductance (bench_engine, tf32 and fp32), the original's three-pass
#     main.py workload (`ipna-fast attribute -p 1`), and the PyTorch baseline
#     (../shared/anchors/torch_anchor.py) in the same call,
# and prints a short table last. Logs go to $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/ipna_gpu_out}
mkdir -p "$OUT"
G=.gpu
CUDA_LIB=$(dirname "$(dirname "$(which nvcc)")")/lib64
export LD_LIBRARY_PATH=$PWD/$G/lib:$CUDA_LIB:${LD_LIBRARY_PATH:-}
export IPNA_FIXTURES=$PWD/$G/fixtures
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"

echo "== 1. GPU tests"
$G/ipna_tests --gtest_filter='Cuda*' 2>&1 | tee "$OUT/gpu_tests.log" | grep -E "rel.err|OK|FAILED|PASSED|Failure" 

echo "== 2. compute-sanitizer memcheck (LeNet, IG + conductance + IPNA + pruning)"
M=$G/fixtures/lenet
compute-sanitizer --tool memcheck --error-exitcode 9 $G/ipna-fast attribute --model $M/model.onnx --split split \
  --input $M/x.npy --class 5 --box 7 9 16 26 -n 16 -p 10 --device cuda:0/fp32 -o /tmp/memcheck_out \
  > "$OUT/memcheck.log" 2>&1
echo "memcheck exit code $? (0 = clean)" | tee -a "$OUT/memcheck.log"
tail -3 "$OUT/memcheck.log"

echo "== 3. ResNet-152 timings"
mkdir -p /tmp/bm/resnet152_224
python3 tools/export_onnx.py resnet152 --random-init --split layer2 --out /tmp/bm/resnet152_224/model.onnx \
  > "$OUT/export.log" 2>&1 || { echo "export failed"; tail -5 "$OUT/export.log"; }
python3 -c "import numpy as np; np.save('/tmp/bm/resnet152_224/x.npy', np.random.default_rng(0).standard_normal((3,224,224)).astype(np.float32))"
for math in tf32 fp32; do
  IPNA_BENCH_MODELS=/tmp/bm IPNA_BENCH_DEVICE=cuda:0/$math $G/bench_engine --benchmark_filter='resnet152' \
    --benchmark_format=json > "$OUT/ours_$math.json" 2> "$OUT/ours_$math.err"
done
$G/ipna-fast attribute --model /tmp/bm/resnet152_224/model.onnx --split layer2 --image tests/data/traffic_light.JPEG \
  --class 920 --box 45 100 90 130 -n 256 -p 1 --target logit --device cuda:0 -o /tmp/main3 --json \
  > "$OUT/main3.json" 2> "$OUT/main3.err"
(cd "$OUT" && timeout 400 python3 "$OLDPWD/$G/torch_anchor.py" > torch_anchor.log 2>&1)

echo "== table (one H100; ours: median of 3 after a warm-up; PyTorch: median of 3)"
python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
def ours(math, name):
    try:
        b = json.load(open(os.path.join(out, "ours_%s.json" % math)))["benchmarks"]
        return [x["real_time"] / 1000 for x in b if x["name"].startswith("resnet152_224/" + name)][0]
    except Exception as e:
        return float("nan")
try: t = json.load(open(os.path.join(out, "torch_anchor.json")))
except Exception: t = {}
try: m = json.load(open(os.path.join(out, "main3.json")))["seconds"]
except Exception: m = {}
flop_ig = 3 * 2 * (2.687 + 8.827) * 256 / 1e3  # TFLOP: forward + ~2x for input-gradient backward
rows = [("IG, tf32", ours("tf32", "ig"), t.get("batched_ig_fp32tf32_chunk128", float("nan")), 0.100),
        ("IG, fp32 strict", ours("fp32", "ig"), t.get("batched_ig_strict_fp32_chunk64", float("nan")), None),
        ("IPNA + conductance, tf32", ours("tf32", "ipna_cond"), t.get("batched_ipna_cond_fp32tf32_chunk64", float("nan")), 0.120),
        ("main.py 3 passes, tf32", m.get("attribution", float("nan")) + m.get("pruned_ig", float("nan")),
         t.get("seed_ipna_loop_b1", float("nan")) + 2 * t.get("seed_ig_loop_b1", float("nan")), 0.5)]
print("%-28s %10s %12s %8s %8s" % ("ResNet-152 224, 256 steps", "ours s", "PyTorch s", "target", "TFLOP/s"))
for name, a, b, tgt, in rows:
    tf = flop_ig / a if name.startswith("IG") else float("nan")
    print("%-28s %10.4f %12.4f %8s %8.1f" % (name, a, b, "-" if tgt is None else "<=%.3g" % tgt, tf))
print("(PyTorch main.py row: the original loop, IPNA pass + 2 IG passes; TF32 GEMM ceiling measured there: 426 TFLOP/s)")
PY
