#!/usr/bin/env bash
# A device call for the grid workload (IPNA cones and grids): IG + conductance +
# IPNA of all 49 boxes of a 7x7 grid, ResNet-152 split after layer2, 224x224,
# 256 steps, tf32, ours (both IPNA forms, receptive-field cones and whole planes;
# the tangent form on cones also one box a pass, against the default batches of boxes)
# beside PyTorch in the same call (bench/grid_torch.py: the boxes one by one, and
# sharing the base pass), plus IG alone for scale; first the GPU test of
# refinement. Prepared by bench/gpu_bundle.sh like bench/gpu_check.sh; run with
# the device tool: command "bash bench/gpu_grid.sh", carry [".gpu"]. At most 3
# files come back in $OUT: grid.md (the table), results.tar.gz, summary.txt.
set -uo pipefail
OUT=${OUT:-/tmp/ipna_gpu_out}
W=/tmp/ipna_grid
save() {  # what has run so far, in $OUT, in case the call runs out of time
  python3 "$REPO/bench/gpu_grid_table.py" "$R" > "$OUT/grid.md" 2>> "$R/table.err"
  tar -C "$W" -czf "$OUT/results.tar.gz" results
}
finish() {
  save
  echo "=================== grid table ($(( $(date +%s) - START )) s in all)"
  cat "$OUT/grid.md"
}
source "$(dirname "$0")/gpu_env.sh"

export IPNA_FIXTURES=$W/fixtures
step refine_test 60 "${RUN[@]}" "$B/ipna_tests" --gtest_filter='CudaDevice.RefiningEqualsTheWholeRun'
grep -E "^refine|OK|FAILED" "$R/refine_test.log" | head -8

wait $EXPORT
if [ "$(cat "$R/export.rc" 2>/dev/null)" != 0 ]; then
  note "ResNet-152 export failed:"; tail -15 "$R/export.log"; finish; exit 1
fi
bench() {  # bench WORKLOAD SECONDS RUNS [NAME --box-batch N]
  local name=${4:-$1}
  step "$name" "$2" "${RUN[@]}" "$B/gpu_bench" --model "$M/model.onnx" --input "$M/x.npy" --device cuda:0/tf32 \
    --grid 7x7 --workloads "$1" --runs "$3" --out "$R/ours_$name.json" "${@:5}"
  save
  grep '"workload"' "$R/$name.log" | python3 -c "import json,sys; [print(r['workload'], 'median %.3f s' % r['median_s'], 'first %.3f s' % r['first_run_s'], 'search %.2f s' % r['algorithm_search_s'], 'chunk', r['chunk'], 'patch passes', r['patch_passes']) for r in map(json.loads, sys.stdin)]" 2>/dev/null
}
bench ig 40 3
bench grid_cone_tangent 80 1
step torch_shared 80 python3 "$REPO/bench/grid_torch.py" --variants shared --out "$R/torch_shared.json"
cat "$R/torch_shared.log"; save
bench grid_cone_difference 80 1
# the same one box a pass: what the batches of boxes (the CUDA default, 8) gain
bench grid_cone_tangent 60 1 grid_cone_tangent_alone --box-batch 1
bench grid_full_tangent 60 1
bench grid_full_difference 60 1
step torch_one_by_one 90 python3 "$REPO/bench/grid_torch.py" --variants one_by_one --out "$R/torch_one_by_one.json"
cat "$R/torch_one_by_one.log"
finish
