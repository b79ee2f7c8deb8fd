#!/usr/bin/env bash
# Sourced by the device scripts (bench/gpu_check.sh, gpu_grid.sh, gpu_devices.sh, gpu_sweep.sh), from the
# repository root, with W (a scratch folder) and OUT set: unpacks the bundle of
# bench/gpu_bundle.sh into $W, finds cuDNN, cuBLAS and the CUDA runtime for our
# binaries (toolkit, system and PyTorch's nvidia folders; stops the script at
# once if one cannot load) and defines
#   B     the folder of our binaries;  RUN  the env prefix that runs them
#         (LD_LIBRARY_PATH for our binaries only; PyTorch keeps its own)
#   note  MESSAGE: print it and append it to $OUT/summary.txt
#   table_header TITLE: a result table's first lines, "# TITLE, date" and the
#         device from $R/env.json (what is known of it so far)
#   step  NAME SECONDS CMD...: CMD under timeout, logged to $R/NAME.log, its
#         exit code and seconds recorded in $R/steps.json
#   M     where ResNet-152 (random weights, split layer2) and an input x.npy are
#         being exported in the background by the device's PyTorch: wait for
#         $EXPORT, then $R/export.rc holds the export's exit code
#   finish (defined by the sourcing script): called before a stop here
REPO=$(pwd)
R=$W/results
rm -rf "$W" && mkdir -p "$W" "$R" "$OUT"
START=$(date +%s)
echo "{}" > "$R/steps.json"

note() { echo "$*" | tee -a "$OUT/summary.txt"; }
table_header() {
  python3 - "$R/env.json" "$1" <<'PY'
import json, os, sys
env = json.load(open(sys.argv[1])) if os.path.exists(sys.argv[1]) else {}
print("# %s, %s\n" % (sys.argv[2], env.get("date", "?")))
print("- device: %s, driver %s\n" % (env.get("gpu", "?"), env.get("driver", "?")))
PY
}
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

