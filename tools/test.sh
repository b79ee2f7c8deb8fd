#!/usr/bin/env bash
# The test command: installs what is missing, builds, makes the PyTorch/Captum
# reference fixtures and runs the whole suite with CTest, twice:
#  1. build/      the Release build users get (g++, CUDA code compiled when nvcc is there);
#  2. build-asan/ clang with AddressSanitizer + UndefinedBehaviorSanitizer (any report fails
#                 the test), the same suite plus the libFuzzer targets: each loader is
#                 fuzzed for IPNA_FUZZ_SECONDS (default 30) on its committed corpus.
#  bash tools/test.sh            both
#  bash tools/test.sh --fast     only the first
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh --deps-only
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build
(cd build && ctest --output-on-failure)
[ "${1:-}" = "--fast" ] && exit 0

echo "== the suite under AddressSanitizer + UndefinedBehaviorSanitizer, and the fuzzers"
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
CC=clang CXX=clang++ cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DIPNA_WITH_CUDA=OFF \
  -DIPNA_BUILD_PYTHON=OFF -DIPNA_FUZZ=ON -DIPNA_FUZZ_SECONDS="${IPNA_FUZZ_SECONDS:-30}" \
  -DCMAKE_CXX_FLAGS="$SAN -fsanitize=fuzzer-no-link -Wno-pass-failed" -DCMAKE_EXE_LINKER_FLAGS="$SAN" >/dev/null
cmake --build build-asan
# oneDNN's AMX convolution kernels (Intel CPUs with AMX) crashed 2 of 7 runs of the unit tests here,
# a read past a heap chunk inside libdnnl's primitive creation that the sanitizer's allocator exposes
# (libdnnl itself is not instrumented); capped at AVX-512 BF16 it passed 6 of 6. The Release run above
# keeps the AMX kernels, so every bf16 check still runs on them.
(cd build-asan && ASAN_OPTIONS=detect_leaks=1 ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 ctest --output-on-failure)
