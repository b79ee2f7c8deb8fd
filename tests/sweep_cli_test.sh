#!/usr/bin/env bash
# `ipna-fast sweep` and `merge` as a user runs them: a process killed with
# SIGKILL mid-sweep and resumed gives the file of an uninterrupted run; Ctrl-C
# keeps the committed batches (exit 130); failed items are counted in the JSON
# summary; bad shard specs, unknown manifest columns and unwritable outputs are
# refused before any work (no file, no working folder); the README's h5py
# reader runs on the result.
#   tests/sweep_cli_test.sh IPNA_FAST SOURCE_DIR WORK
set -euo pipefail
exe="$1" src="$2" work="$3"
py=/usr/bin/python3
rm -rf "$work"
mkdir -p "$work"
cd "$work"
fail() { echo "FAIL: $*"; exit 1; }
common=(--model "$src/models/fashion_cnn.onnx" --split hidden --idx /usr/share/datasets/fashion-mnist --grid 2x2)

# Refusals before any work: exit codes, messages, and nothing left behind.
expect_refusal() {  # CODE TEXT ARGS...
  local code="$1" text="$2"; shift 2
  set +e
  "$exe" "$@" >out.txt 2>err.txt
  local rc=$?
  set -e
  [ "$rc" = "$code" ] || fail "exit $rc (expected $code) for: $* ($(cat err.txt))"
  grep -q -- "$text" err.txt || fail "expected '$text' in: $(cat err.txt)"
  [ -z "$(ls -A | grep -v -e '^out.txt$' -e '^err.txt$' -e '^keep' -e '^list.csv$')" ] || fail "left files: $(ls -A)"
}
expect_refusal 2 "3/2" sweep "${common[@]}" --shard 3/2 -o s.h5
printf 'path,weight\nx.npy,1\n' > list.csv
expect_refusal 1 "unknown column 'weight'" sweep --model "$src/models/fashion_cnn.onnx" --split hidden \
  --manifest list.csv -o s.h5
expect_refusal 1 "does not exist" sweep "${common[@]}" -o nowhere/s.h5
echo "a user's file" > keep.h5
expect_refusal 1 "already exists" sweep "${common[@]}" --limit 4 -o keep.h5
[ "$(cat keep.h5)" = "a user's file" ] || fail "keep.h5 was changed"
echo "refusals: ok"

# Failed items: recorded with the reason, counted, the sweep goes on.
$py - <<'PY'
import gzip, numpy as np
d = gzip.open('/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz').read()
np.save('good.npy', np.frombuffer(d, np.uint8, offset=16)[:784].reshape(1, 28, 28) / 255.0)
PY
printf 'path,class\ngood.npy,0\nmissing.png,1\ngood.npy,predicted\n' > list.csv
"$exe" sweep --model "$src/models/fashion_cnn.onnx" --split hidden --manifest list.csv --box 0 0 14 14 -n 16 \
  -o failed.h5 --json --quiet > summary.json
$py -c "
import json; s = json.load(open('summary.json'))
assert (s['items'], s['ok'], s['failed']) == (3, 2, 1), s
assert 'missing.png' in s['failures'][0]['item'] and s['failures'][0]['reason'], s
assert s['items_per_second'] > 0 and s['steps_per_second'] > 0, s
"
echo "failed items: ok"

# A sweep killed with SIGKILL after its first batches, resumed, equals an uninterrupted one.
long=("${common[@]}" --limit 120 -n 128 --batch-items 4 --quiet)
OMP_NUM_THREADS=1 "$exe" sweep "${long[@]}" -o whole.h5 >/dev/null
OMP_NUM_THREADS=1 "$exe" sweep "${long[@]}" -o killed.h5 >/dev/null &
pid=$!
for _ in $(seq 400); do
  n=$(ls .killed.h5.partial 2>/dev/null | grep -c '^batch-.*\.h5$' || true)
  [ "${n:-0}" -ge 3 ] && break
  sleep 0.05
done
kill -9 "$pid" 2>/dev/null || fail "the sweep finished before it could be killed"
wait "$pid" 2>/dev/null || true
[ ! -e killed.h5 ] || fail "a killed sweep left its output file"
committed=$(ls .killed.h5.partial | grep -c '^batch-.*\.h5$')
set +e
"$exe" sweep "${long[@]}" -o killed.h5 >/dev/null 2>err.txt
rc=$?
set -e
[ "$rc" = 1 ] && grep -q "interrupted sweep" err.txt || fail "a rerun without --resume was not refused ($rc)"
OMP_NUM_THREADS=1 "$exe" sweep "${long[@]}" -o killed.h5 --resume --json > resumed.json
$py -c "
import json; s = json.load(open('resumed.json'))
assert s['resumed_items'] == 4 * $committed and s['items'] == 120, s
"
$py "$src/tests/compare_sweeps.py" killed.h5 whole.h5
[ ! -e .killed.h5.partial ] || fail "the working folder is left after the resumed sweep finished"
echo "kill -9 and resume after $committed batches: ok"

# Ctrl-C: exit 130, committed batches kept for --resume.
"$exe" sweep "${long[@]}" -o int.h5 >/dev/null 2>err.txt &
pid=$!
for _ in $(seq 400); do
  [ "$(ls .int.h5.partial 2>/dev/null | grep -c '^batch-.*\.h5$' || true)" -ge 1 ] && break
  sleep 0.05
done
kill -INT "$pid"
set +e
wait "$pid"
rc=$?
set -e
[ "$rc" = 130 ] || fail "Ctrl-C gave exit $rc, expected 130"
grep -q -- "--resume" err.txt || fail "no hint to resume: $(cat err.txt)"
[ -d .int.h5.partial ] && [ ! -e int.h5 ] || fail "Ctrl-C lost the committed batches or left an output"
echo "Ctrl-C: ok"

# Shards and merge on the command line; the README's reader.
for i in 0 1; do "$exe" sweep "${common[@]}" --limit 10 -n 16 --shard $i/2 -o part$i.h5 --quiet >/dev/null; done
"$exe" sweep "${common[@]}" --limit 10 -n 16 -o one.h5 --quiet >/dev/null
"$exe" merge part1.h5 part0.h5 -o merged.h5 >/dev/null
$py "$src/tests/compare_sweeps.py" merged.h5 one.h5
$py "$src/tools/read_sweep.py" failed.h5 > reader.txt
grep -q "failed: .*missing.png" reader.txt || fail "the reader example: $(cat reader.txt)"
echo "merge and reader: ok"
