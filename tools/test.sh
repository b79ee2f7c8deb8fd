#!/usr/bin/env bash
# The test command: installs what is missing, builds, makes the PyTorch/Captum
# reference fixtures and runs the whole suite with CTest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh --deps-only
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build
cd build && ctest --output-on-failure
