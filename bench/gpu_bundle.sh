#!/usr/bin/env bash
# Prepares .gpu/bundle.tar.xz (git-ignored) for one call on a lent GPU machine:
# a Release build for sm_90 (tests, the CLI, bench/gpu_bench), the Debian
# shared libraries the device image lacks (not CUDA's: the device has those),
# the small reference fixtures and the PyTorch anchor with its on-file timings.
# Then, with the device tool: command "bash bench/gpu_check.sh", carry [".gpu"].
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DIPNA_WITH_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DIPNA_BUILD_BENCH=ON >/dev/null
cmake --build build-gpu --target ipna_tests ipna-fast gpu_bench
[ -f build/fixtures/DONE ] || /usr/bin/python3 tools/make_fixtures.py --out build/fixtures
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/lib" "$stage/fixtures"
cp build-gpu/tests/ipna_tests build-gpu/ipna-fast build-gpu/bench/gpu_bench "$stage/bin/"
# Everything ldd resolves outside glibc, the C++ runtime and the CUDA libraries.
for lib in $(ldd "$stage"/bin/* | awk '/=> \//{print $3}' | sort -u); do
  case "$(basename "$lib")" in
    libc.so*|libm.so*|libdl.so*|librt.so*|libpthread.so*|ld-linux*|libcuda.so*|libcudart*|libcublas*|libcudnn*|\
    libstdc++*|libgcc_s*|libnvrtc*|libnvJitLink*) ;;
    *) cp -L "$lib" "$stage/lib/" ;;
  esac
done
for m in lenet vgg_avg mbv2_block tiny224; do cp -r build/fixtures/$m "$stage/fixtures/"; done
cp build/fixtures/DONE "$stage/fixtures/"
strip --strip-unneeded "$stage"/bin/* "$stage"/lib/* 2>/dev/null || true
cp ../shared/anchors/torch_anchor.py "$stage/"
cp ../shared/anchors/h100_torch_anchor_2026-11-26.json "$stage/anchor_on_file.json"
mkdir -p .gpu
tar -C "$stage" -cJf .gpu/bundle.tar.xz .
du -h .gpu/bundle.tar.xz
