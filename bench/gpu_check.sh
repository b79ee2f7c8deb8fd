#!/usr/bin/env bash
# The one device call of the GPU check (prepared by bench/gpu_bundle.sh, which
# carries .gpu/bundle.tar.xz). Safe to run twice; every step runs under
# `timeout`, the important results come first, the whole usually under 9 minutes:
#   0. unpack; find cuDNN, cuBLAS and the CUDA runtime for our binaries
#      (toolkit, system and PyTorch's nvidia folders) and stop at once if one
#      cannot load; export ResNet-152 with the device's PyTorch (in the background)
#   1. GPU tests: every single-op graph and the reference models, CUDA fp32
#      and tf32 against the CPU backend in float64
#   2. ResNet-152 timings, ours (tf32) and the PyTorch anchor, and the table
#   3. ResNet-152 at scale against the CPU in float64
#   4. strict fp32 timing, the original's main.py workload, memcheck
#   5. a sweep of 64 ResNet-152 inputs (4x4 grid, 256 steps): items/s per committed batch, last
#      (a timeout still leaves the per-batch throughput in its log)
# and prints the table last. At most 4 files come back in $OUT: table.md (the
# results file to commit), results.tar.gz (every log and JSON), summary.txt,
# bundle-check.txt. LD_LIBRARY_PATH is set for our binaries only; PyTorch keeps its own.
set -uo pipefail
OUT=${OUT:-/tmp/ipna_gpu_out}
W=/tmp/ipna_gpu
finish() {
  python3 "$REPO/bench/gpu_table.py" "$R" > "$OUT/table.md" 2>> "$R/table.err"
  tar -C "$W" -czf "$OUT/results.tar.gz" results
  echo "=================== table ($(( $(date +%s) - START )) s in all)"
  cat "$OUT/table.md"
}

source "$(dirname "$0")/gpu_env.sh"

# --- 1. GPU tests ---
export IPNA_FIXTURES=$W/fixtures
step gpu_tests 240 "${RUN[@]}" "$B/ipna_tests" --gtest_filter='*Cuda*:-*ResNet152*' --gtest_output="json:$R/gtest.json"
grep -E "^\[  (FAILED|PASSED|SKIPPED) " "$R/gpu_tests.log" | sort -u | head -20

# --- 2. ResNet-152 timings: ours and PyTorch in the same call, then the table ---
wait $EXPORT
if [ "$(cat "$R/export.rc" 2>/dev/null)" != 0 ]; then
  note "ResNet-152 export failed:"; tail -15 "$R/export.log"
else
  step info 60 "${RUN[@]}" "$B/ipna-fast" info "$M/model.onnx"
  head -3 "$R/info.log"; grep -E "^ +layer2 " "$R/info.log"
  step ours_tf32 150 "${RUN[@]}" "$B/gpu_bench" --model "$M/model.onnx" --input "$M/x.npy" --device cuda:0/tf32 \
    --workloads ig,ipna_cond --out "$R/ours_tf32.json"
  cat "$R/ours_tf32.json" 2>/dev/null | python3 -c "import json,sys; [print(r['workload'], 'median %.4f s' % r['median_s'], 'search %.2f s' % r['algorithm_search_s']) for r in json.load(sys.stdin)]" 2>/dev/null
fi
cp "$W/anchor_on_file.json" "$R/"
step torch_anchor 200 env OUT="$R" ANCHOR_QUICK=1 python3 "$W/torch_anchor.py"
finish

# --- 3. ResNet-152 at scale against the CPU in float64 ---
if [ -f "$M/model.onnx" ]; then
  step resnet152_check 200 "${RUN[@]}" IPNA_RESNET152="$M" "$B/ipna_tests" --gtest_filter='*ResNet152*' \
    --gtest_output="json:$R/gtest_r152.json"
  grep -E "resnet152|OK|FAILED" "$R/resnet152_check.log" | head -12
fi

# --- 4. strict fp32, the original's main.py workload, memcheck ---
if [ -f "$M/model.onnx" ]; then
  step ours_fp32 100 "${RUN[@]}" "$B/gpu_bench" --model "$M/model.onnx" --input "$M/x.npy" --device cuda:0/fp32 \
    --workloads ig --runs 3 --out "$R/ours_fp32.json"
  step ours_main 100 "${RUN[@]}" "$B/gpu_bench" --model "$M/model.onnx" --input "$M/x.npy" --device cuda:0/tf32 \
    --workloads main --out "$R/ours_main.json"
fi
L=$W/fixtures/lenet
CS=$(command -v compute-sanitizer || ls "$TK/bin/compute-sanitizer" "$TK/compute-sanitizer/compute-sanitizer" 2>/dev/null | head -1)
step memcheck 150 "${RUN[@]}" "${CS:-compute-sanitizer}" --tool memcheck --report-api-errors no --error-exitcode 9 "$B/ipna-fast" \
  attribute --model "$L/model.onnx" --split split --input "$L/x.npy" --class 5 --box 7 9 16 26 -n 16 -p 10 \
  --device cuda:0/fp32 -o "$W/memcheck_out"
grep -E "ERROR SUMMARY" "$R/memcheck.log" | tail -1 > "$R/memcheck.txt"
[ -s "$R/memcheck.txt" ] || echo "no ERROR SUMMARY (see memcheck.log)" > "$R/memcheck.txt"
# --- 5. the sweep (issue: datasets) on ResNet-152: 64 images, IG + conductance + IPNA (4x4 grid), 256 steps ---
if [ -f "$M/model.onnx" ]; then
  python3 - "$W/sweep_items" <<'PY' >> "$R/export.log" 2>&1
import os, sys, numpy as np
d = sys.argv[1]
os.makedirs(d, exist_ok=True)
rng = np.random.default_rng(1)
with open(os.path.join(d, "manifest.csv"), "w") as f:
    f.write("path,class\n")
    for i in range(64):
        np.save(os.path.join(d, "x%02d.npy" % i), rng.standard_normal((3, 224, 224)).astype(np.float32))
        f.write("x%02d.npy,%d\n" % (i, i * 13 % 1000))
PY
  step sweep_r152 120 "${RUN[@]}" "$B/ipna-fast" sweep --model "$M/model.onnx" --split layer2 \
    --manifest "$W/sweep_items/manifest.csv" --grid 4x4 -n 256 --device cuda:0/tf32 --maps none --json \
    -o "$W/sweep_r152.h5"
  grep -E '"items_per_second"|"failed"|"steps_per_second"|^sweep ' "$R/sweep_r152.log" | tail -5
fi
finish
