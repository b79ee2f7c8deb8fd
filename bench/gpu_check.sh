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
REPO=$(pwd)
OUT=${OUT:-/tmp/ipna_gpu_out}
W=/tmp/ipna_gpu
R=$W/results
rm -rf "$W" && mkdir -p "$W" "$R" "$OUT"
START=$(date +%s)
echo "{}" > "$R/steps.json"

note() { echo "$*" | tee -a "$OUT/summary.txt"; }
# step NAME SECONDS CMD...: runs CMD under timeout, logs to $R/NAME.log, records rc and seconds.
step() {
  local name=$1 limit=$2 t0 rc
  shift 2
  t0=$(date +%s)
  timeout "$limit" "$@" > "$R/$name.log" 2>&1
  rc=$?
  python3 - "$R/steps.json" "$name" "$rc" "$(( $(date +%s) - t0 ))" <<'PY'
import json, sys
p, name, rc, s = sys.argv[1:]
d = json.load(open(p)); d[name] = {"rc": int(rc), "s": int(s)}; json.dump(d, open(p, "w"))
PY
  note "step $name: exit $rc after $(( $(date +%s) - t0 )) s (total $(( $(date +%s) - START )) s)"
  if [ "$rc" != 0 ]; then echo "--- tail of $name.log"; tail -15 "$R/$name.log"; fi
  return $rc
}
finish() {
  python3 "$REPO/bench/gpu_table.py" "$R" > "$OUT/table.md" 2>> "$R/table.err"
  tar -C "$W" -czf "$OUT/results.tar.gz" results
  echo "=================== table ($(( $(date +%s) - START )) s in all)"
  cat "$OUT/table.md"
}

# --- 0. bundle and libraries ---
step unpack 60 tar -C "$W" -xJf "$REPO/.gpu/bundle.tar.xz" || { finish; exit 1; }
B=$W/bin
TK=$(dirname "$(dirname "$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)")")
DIRS=("$TK/lib64" "$TK/targets/x86_64-linux/lib" /usr/local/cuda/lib64 /usr/lib/x86_64-linux-gnu /usr/lib64)
while read -r d; do DIRS+=("$d"); done < <(python3 -c "
import os
try:
    import nvidia
    for p in nvidia.__path__:
        for s in sorted(os.listdir(p)):
            if os.path.isdir(os.path.join(p, s, 'lib')): print(os.path.join(p, s, 'lib'))
except Exception: pass" 2>/dev/null)
LIBP=$W/lib
for _ in 1 2 3 4 5 6; do
  missing=$(LD_LIBRARY_PATH=$LIBP ldd "$B"/* 2>/dev/null | awk '/not found/{print $1}' | sort -u)
  [ -z "$missing" ] && break
  for lib in $missing; do
    for d in "${DIRS[@]}"; do
      if [ -e "$d/$lib" ]; then case ":$LIBP:" in *":$d:"*) ;; *) LIBP=$LIBP:$d ;; esac; break; fi
    done
  done
done
# cuDNN opens its engine libraries at run time from the folder of libcudnn.so.
CUDNN=$(LD_LIBRARY_PATH=$LIBP ldd "$B/ipna_tests" | awk '/libcudnn.so/{print $3}')
[ -n "$CUDNN" ] && case ":$LIBP:" in *":$(dirname "$CUDNN"):"*) ;; *) LIBP=$LIBP:$(dirname "$CUDNN") ;; esac
LD_LIBRARY_PATH=$LIBP ldd "$B"/* > "$OUT/bundle-check.txt" 2>&1
if grep -q "not found" "$OUT/bundle-check.txt"; then
  note "cannot load our binaries; missing: $(grep 'not found' "$OUT/bundle-check.txt" | sort -u | tr '\n' ' ')"
  note "searched: ${DIRS[*]}"
  finish
  exit 1
fi
RUN=(env LD_LIBRARY_PATH="$LIBP")  # our binaries only
LIBS=$(LD_LIBRARY_PATH=$LIBP ldd "$B/ipna_tests" | awk '/libcudnn.so|libcublas.so|libcudart.so/{print $1 " " $3}' | tr '\n' ';')
python3 - "$R/env.json" "$LIBS" <<'PY'
import json, subprocess, sys, datetime
q = lambda c: subprocess.run(c, shell=True, capture_output=True, text=True).stdout.strip()
json.dump({"date": datetime.date.today().isoformat(),
           "gpu": q("nvidia-smi --query-gpu=name,memory.total --format=csv,noheader"),
           "driver": q("nvidia-smi --query-gpu=driver_version --format=csv,noheader"),
           "nvcc": q("nvcc --version | tail -2 | head -1"), "libraries": sys.argv[2]}, open(sys.argv[1], "w"), indent=1)
PY
note "device: $(python3 -c "import json; e=json.load(open('$R/env.json')); print(e['gpu'], 'driver', e['driver'])")"
note "libraries: $LIBS"

# ResNet-152 (random weights, as the original's generate_model.py) exported by the device's PyTorch, in the background.
M=$W/resnet152
mkdir -p "$M"
( timeout 240 python3 "$REPO/tools/export_onnx.py" resnet152 --random-init --split layer2 --out "$M/model.onnx" \
    > "$R/export.log" 2>&1 &&
  python3 -c "import numpy as np; np.save('$M/x.npy', np.random.default_rng(0).standard_normal((3,224,224)).astype(np.float32))" \
    >> "$R/export.log" 2>&1; echo $? > "$R/export.rc" ) &
EXPORT=$!

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
