#!/usr/bin/env bash
# A device call timing bench/gpu_bench's workloads on ResNet-152 (split after
# layer2, 224x224, 256 steps) under several device strings in one call, the
# first one the baseline: bash bench/gpu_devices.sh WORKLOADS DEVICE... (e.g.
# "ig,ipna_cond" cuda:0/tf32 cuda:0/bf16 cuda:0/tf32/cap=4096; a cap makes the
# chunk of steps smaller). Prepared by bench/gpu_bundle.sh like bench/gpu_check.sh;
# carry [".gpu"]. Back in $OUT: devices.md (the table), results.tar.gz, summary.txt.
set -uo pipefail
OUT=${OUT:-/tmp/ipna_gpu_out}
W=/tmp/ipna_devices
WORKLOADS=$1
shift
finish() {
  { table_header "Device strings on the GPU"; python3 - "$R" "$@" <<'PY'; } > "$OUT/devices.md" 2>> "$R/table.err"
import json, os, sys
R = sys.argv[1]
print("ResNet-152 (random weights) split after layer2, 224x224, 256 steps, class 920; bench/gpu_bench: a warm-up")
print("run (cuDNN's algorithm search), then the median of 3.\n")
print("| device | workload | s | / first device's | chunk | TFLOP/s | search s |")
print("| --- | --- | --- | --- | --- | --- | --- |")
base = {}
for i in range(100):
    p = os.path.join(R, "dev%d.json" % i)
    if not os.path.exists(p):
        continue
    for r in json.load(open(p)):
        base.setdefault(r["workload"], r["median_s"])
        print("| %s | %s | %.4f | %.2f | %d | %.1f | %.2f |" % (r["device"], r["workload"], r["median_s"],
              r["median_s"] / base[r["workload"]], r["chunk"], r["tflop_per_s"], r["algorithm_search_s"]))
PY
  tar -C "$W" -czf "$OUT/results.tar.gz" results
  echo "=================== devices table ($(( $(date +%s) - START )) s in all)"
  cat "$OUT/devices.md"
}
source "$(dirname "$0")/gpu_env.sh"
wait $EXPORT
if [ "$(cat "$R/export.rc" 2>/dev/null)" != 0 ]; then
  note "ResNet-152 export failed:"; tail -15 "$R/export.log"; finish; exit 1
fi
i=0
for dev in "$@"; do
  step "dev$i" 60 "${RUN[@]}" "$B/gpu_bench" --model "$M/model.onnx" --input "$M/x.npy" --device "$dev" \
    --workloads "$WORKLOADS" --runs 3 --out "$R/dev$i.json"
  i=$((i + 1))
done
finish
