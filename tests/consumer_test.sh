#!/usr/bin/env bash
# Installs the build tree into a scratch prefix and builds tests/consumer/ against it with
# find_package(ipna_fast); the program's IG gap and tangent patch gap must be rounding-small.
#   tests/consumer_test.sh BUILD_DIR SOURCE_DIR WORK [CMAKE ARGS: the build's compiler and flags]
set -euo pipefail
build="$1" src="$2" work="$3"
shift 3
rm -rf "$work"
cmake --install "$build" --prefix "$work/prefix" --component dev >/dev/null
cmake -S "$src/tests/consumer" -B "$work/build" -G Ninja -DCMAKE_PREFIX_PATH="$work/prefix" "$@" >/dev/null
cmake --build "$work/build" >/dev/null
out=$("$work/build/consumer" "$src/models/fashion_cnn.onnx")
echo "$out"
/usr/bin/python3 - "$out" <<'PY'
import sys
vals = dict(line.split() for line in sys.argv[1].splitlines())
assert abs(float(vals["ig_gap_check"])) < 1e-12 and abs(float(vals["patch_gap"])) < 1e-12, vals
print("consumer: ok")
PY
