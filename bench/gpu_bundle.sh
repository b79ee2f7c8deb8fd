#!/usr/bin/env bash
# Prepares .gpu/ (git-ignored) for one call on a lent GPU machine: a Release
# build for sm_90 with tests and benchmarks, the Debian shared libraries the
# device image lacks, the small reference fixtures and the PyTorch anchor.
# Then, with the device tool: run command "bash bench/gpu_check.sh", carry [".gpu"].
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DIPNA_WITH_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DIPNA_BUILD_BENCH=ON >/dev/null
cmake --build build-gpu
[ -f build/fixtures/DONE ] || /usr/bin/python3 tools/make_fixtures.py --out build/fixtures
rm -rf .gpu && mkdir -p .gpu/lib .gpu/fixtures
cp build-gpu/ipna_tests build-gpu/ipna-fast build-gpu/bench/bench_engine .gpu/
# Everything ldd resolves outside glibc and the CUDA libraries (the device has those).
for lib in $(ldd build-gpu/ipna_tests build-gpu/bench/bench_engine | awk '/=> \//{print $3}' | sort -u); do
  case "$(basename "$lib")" in
    libc.so*|libm.so*|libdl.so*|librt.so*|libpthread.so*|ld-linux*|libcuda*|libcublas*|libcudnn*|libstdc++*|libgcc_s*) ;;
    *) cp -L "$lib" .gpu/lib/ ;;
  esac
done
for m in lenet vgg_avg mbv2_block tiny224; do cp -r build/fixtures/$m .gpu/fixtures/; done
cp build/fixtures/DONE .gpu/fixtures/
strip --strip-unneeded .gpu/ipna_tests .gpu/ipna-fast .gpu/bench_engine .gpu/lib/* 2>/dev/null || true
cp ../shared/anchors/torch_anchor.py .gpu/
du -sh .gpu
