#!/usr/bin/env bash
# A device call for the sweep's GPU throughput: ResNet-152 split after layer2,
# 224x224, IG + conductance + IPNA of a 4x4 grid, 256 steps, tf32, maps not
# stored, 64 random inputs with the sweep's default memory budget on a GPU,
# then 8 of them with the CPU's 256 MiB budget, in the same call. Prepared by
# bench/gpu_bundle.sh like bench/gpu_check.sh; run with the device tool:
# command "bash bench/gpu_sweep.sh", carry [".gpu"]. Back in $OUT: sweep.md
# (the table), results.tar.gz, summary.txt.
set -uo pipefail
OUT=${OUT:-/tmp/ipna_gpu_out}
W=/tmp/ipna_sweep
finish() {
  { table_header "Sweep throughput on the GPU"; python3 - "$R" <<'PY'; } > "$OUT/sweep.md" 2>> "$R/table.err"
import json, os, sys
import h5py, numpy as np
R = sys.argv[1]
print("ResNet-152 (random weights) split after layer2, 224x224, IG + conductance + IPNA (difference form, cones) of")
print("a 4x4 grid, 256 steps, tf32, `--maps none`; `ipna-fast sweep --json` summaries, per-item seconds from the file.\n")
print("| memory budget | items | items/s | median s per item (after the first) | first item s |")
print("| --- | --- | --- | --- | --- |")
for name, what in (("default", "default on a GPU (8 GiB)"), ("cpu_budget", "256 MiB (the CPU's)")):
    js, h5 = os.path.join(R, name + ".json"), os.path.join(R, name + ".h5")
    if not (os.path.exists(js) and os.path.exists(h5)):
        print("| %s | not run | | | |" % what); continue
    s = json.load(open(js))
    with h5py.File(h5) as f:
        sec = f["items/seconds"][:]
    print("| %s | %d | %.3f | %.3f | %.2f |" % (what, s["items"], s["items_per_second"], float(np.median(sec[1:])),
                                              sec[0]))
PY
  tar -C "$W" -czf "$OUT/results.tar.gz" --exclude='*.npy' results
  echo "=================== sweep table ($(( $(date +%s) - START )) s in all)"
  cat "$OUT/sweep.md"
}
source "$(dirname "$0")/gpu_env.sh"
wait $EXPORT
if [ "$(cat "$R/export.rc" 2>/dev/null)" != 0 ]; then
  note "ResNet-152 export failed:"; tail -15 "$R/export.log"; finish; exit 1
fi
python3 - "$W/items" <<'PY' >> "$R/export.log" 2>&1
import os, sys, numpy as np
d = sys.argv[1]
os.makedirs(d, exist_ok=True)
rng = np.random.default_rng(1)
for name, n in (("all", 64), ("few", 8)):
    with open(os.path.join(d, name + ".csv"), "w") as f:
        f.write("path,class\n")
        for i in range(n):
            p = os.path.join(d, "x%02d.npy" % i)
            if not os.path.exists(p):
                np.save(p, rng.standard_normal((3, 224, 224)).astype(np.float32))
            f.write("x%02d.npy,%d\n" % (i, i * 13 % 1000))
PY
for name in default cpu_budget; do
  budget=(); [ $name = cpu_budget ] && budget=(--memory-budget 256)
  step $name 150 "${RUN[@]}" "$B/ipna-fast" sweep --model "$M/model.onnx" --split layer2 --manifest "$W/items/$([ $name = default ] && echo all || echo few).csv" \
    --grid 4x4 -n 256 --device cuda:0/tf32 --maps none --json "${budget[@]}" -o "$R/$name.h5"
  sed -n '/^{/,/^}/p' "$R/$name.log" > "$R/$name.json"
  grep -E '"items_per_second"|"failed"' "$R/$name.json"
done
finish
