#!/bin/bash
# IG's error against a uniform m = 16384 run, by quadrature rule, in float64 on one test fixture:
#   bash bench/quadrature_error.sh lenet [build]
# (fixtures: tools/make_fixtures.py, written to BUILD/fixtures by the test suite).
set -euo pipefail
name=$1 build=${2:-build}
dir=$build/fixtures/$name
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
meta() { /usr/bin/python3 -c "import json,sys; print(json.load(open('$dir/meta.json'))['$1'])"; }
split=$(meta split) cls=$(meta class)
run() {  # name steps rule
  "$build/ipna-fast" attribute --model "$dir/model.onnx" --split "$split" --input "$dir/x.npy" \
    --baseline "$dir/baseline.npy" --class "$cls" --precision f64 -n "$2" --quadrature "$3" --no-conductance \
    -o "$out/$1" > /dev/null
}
run ref 16384 right
for m in 16 32 64 128 256; do
  for q in right trapezoid middle; do run "$q$m" "$m" "$q"; done
done
/usr/bin/python3 - "$out" "$name" <<'PY'
import sys
import numpy as np
out, name = sys.argv[1], sys.argv[2]
ref = np.load(out + "/ref/ig.npy")
print("| %s: m | right | trapezoid | middle |\n|---:|---:|---:|---:|" % name)
for m in (16, 32, 64, 128, 256):
    err = [np.linalg.norm(np.load("%s/%s%d/ig.npy" % (out, q, m)) - ref) / np.linalg.norm(ref)
           for q in ("right", "trapezoid", "middle")]
    print("| %d | %s |" % (m, " | ".join("%.2e" % e for e in err)))
PY
