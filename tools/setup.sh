#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine for ipna-fast, builds it and runs the main
# job on its embedded default.
#   bash tools/setup.sh              installs, builds, runs the example
#   bash tools/setup.sh --deps-only  installs only (used by tools/test.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
APT_PACKAGES=(cmake ninja-build g++ pkg-config
  libonnx-dev libprotobuf-dev protobuf-compiler libopenblas-dev libstb-dev nlohmann-json3-dev libcli11-dev
  libfmt-dev libgtest-dev libbenchmark-dev zlib1g-dev libjpeg62-turbo-dev dataset-fashion-mnist
  python3-torch python3-torchvision python3-onnx python3-numpy python3-pip python3-tqdm python3-matplotlib
  python3-packaging)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Captum for the reference checks, on Debian's own interpreter and its torch 1.13
# (--no-deps: it must not pull a second PyTorch from PyPI).
if ! /usr/bin/python3 -c "import captum" 2>/dev/null; then
  echo "== installing captum (reference checks only)"
  $SUDO /usr/bin/python3 -m pip install -q --no-deps --break-system-packages "captum>=0.8,<1"
fi
[ "${1:-}" = "--deps-only" ] && exit 0

echo "== building"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build
echo "== making the example models (small random-weight nets, PyTorch references)"
[ -f build/fixtures/DONE ] || /usr/bin/python3 tools/make_fixtures.py --out build/fixtures
echo "== main job: IG, conductance and IPNA of a box on the LeNet example, then pruning the top 10% by IPNA"
M=build/fixtures/lenet
./build/ipna-fast attribute --model $M/model.onnx --split split --input $M/x.npy --baseline zeros \
  --class 5 --box 7 9 16 26 -n 256 -p 10 --ranking ipna -o out/lenet_example
