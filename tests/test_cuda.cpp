// The CUDA backend. Host-side pieces (device strings, window and mask index
// math shared with the kernels) run everywhere; the comparisons with the CPU
// backend need a GPU and skip, saying so, without one (CI has none:
// bench/gpu_check.sh runs them on a lent H100).
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include "engine/attribution.h"
#include "engine/cpu/cpu_backend.h"
#include "engine/device_options.h"
#include "engine/error.h"
#include "engine/window_math.h"
#include "loaders/onnx_loader.h"
#include "tests/fixtures.h"
#include "tests/net_builder.h"
#ifdef IPNA_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace ipna::test {
namespace {

TEST(CudaHost, DeviceStrings) {
  EXPECT_FALSE(parse_device("cpu").cuda);
  DeviceOptions a = parse_device("cuda");
  EXPECT_TRUE(a.cuda);
  EXPECT_EQ(a.index, 0);
  EXPECT_EQ(a.math, GpuMath::Tf32);
  DeviceOptions b = parse_device("cuda:1/fp32/cap=16384");
  EXPECT_EQ(b.index, 1);
  EXPECT_EQ(b.math, GpuMath::Fp32);
  EXPECT_EQ(b.memory_cap, size_t(16384) << 20);
  for (const char* bad : {"gpu", "cuda:", "cuda:x", "cuda/fp16", "cuda/cap=", "cuda:0/cap=1G"})
    EXPECT_THROW(parse_device(bad), Error) << bad;
}

TEST(CudaHost, WindowTapsMatchBruteForce) {
  for (int size : {1, 5, 8})
    for (int k : {1, 2, 3, 5})
      for (int s : {1, 2, 3})
        for (int pad : {0, 1, 2})
          for (int d : {1, 2})
            for (int o = 0; o < 6; ++o) {
              int lo, hi, blo = k, bhi = 0;
              window_taps(o, s, pad, d, k, size, lo, hi);
              for (int t = 0; t < k; ++t) {
                const int i = o * s - pad + t * d;
                if (i >= 0 && i < size) {
                  blo = std::min(blo, t);
                  bhi = std::max(bhi, t + 1);
                }
              }
              if (bhi == 0) {  // no tap inside: any empty range will do
                EXPECT_EQ(lo, hi);
                continue;
              }
              EXPECT_EQ(lo, blo);
              EXPECT_EQ(hi, bhi);
            }
}

// The CPU writes 64-bit mask words; the kernels read them as 32-bit words.
TEST(CudaHost, ClipMaskLayoutIsSharedWithTheKernels) {
  CpuBackend<float> be;
  const int64_t count = 200;
  std::vector<float> x(count), y(count);
  for (int64_t i = 0; i < count; ++i) x[i] = std::sin(0.7f * i) * 8;
  std::vector<uint64_t> mask(mask_words64(count));
  be.clip_forward(count, 0.f, 6.f, x.data(), y.data(), mask.data());
  for (int64_t i = 0; i < count; ++i)
    EXPECT_EQ(mask_bit(reinterpret_cast<const uint32_t*>(mask.data()), i), x[i] > 0.f && x[i] < 6.f) << i;
}

bool have_gpu() {
#ifdef IPNA_WITH_CUDA
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
#else
  return false;
#endif
}

TEST(CudaHost, NoDeviceGivesAClearError) {
  if (have_gpu()) GTEST_SKIP() << "a GPU is present: the no-device message cannot be checked here";
  try {
    make_backend<float>("cuda");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_TRUE(m.find("no CUDA device") != std::string::npos || m.find("no CUDA backend") != std::string::npos) << m;
  }
  EXPECT_THROW(make_backend<double>("cuda"), Error);
}

// CUDA against the CPU backend on the reference models, several boxes.
void compare(const std::string& model_dir, const std::string& device, double tol) {
  auto meta = read_json(model_dir + "/meta.json");
  SplitModel m = load_split_model(model_dir + "/model.onnx", meta["split"].get<std::string>());
  auto x = npy(model_dir + "/x.npy"), x0 = npy(model_dir + "/baseline.npy");
  AttributionRequest r;
  r.target_class = meta["class"];
  r.steps = 16;
  r.integrated_gradients = r.conductance = true;
  for (auto& b : meta["boxes"]) r.boxes.push_back({b[0], b[1], b[2], b[3]});
  r.boxes.push_back({0, 0, static_cast<int>(m.input_shape().height()), static_cast<int>(m.input_shape().width())});
  Attributor cpu(m, Precision::F64, "cpu"), gpu(m, Precision::F32, device);
  AttributionResult a = cpu.run(x, x0, r), b = gpu.run(x, x0, r);
  EXPECT_LT(rel_err(b.ig, a.ig), tol) << model_dir << " " << device << " IG";
  EXPECT_LT(rel_err(b.conductance, a.conductance), tol) << model_dir << " " << device << " conductance";
  for (size_t i = 0; i < r.boxes.size(); ++i)
    EXPECT_LT(rel_err(b.ipna[i], a.ipna[i]), tol) << model_dir << " " << device << " IPNA box " << i;
  EXPECT_NEAR(b.f_input, a.f_input, tol * (std::abs(a.f_input) + 1e-3));
  std::printf("%-12s %-14s rel.err IG %.2e cond %.2e IPNA %.2e\n", meta["split"].get<std::string>().c_str(),
              device.c_str(), rel_err(b.ig, a.ig), rel_err(b.conductance, a.conductance), rel_err(b.ipna[0], a.ipna[0]));
}

TEST(CudaDevice, MatchesCpuBackend) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device: the CUDA-vs-CPU comparison runs in bench/gpu_check.sh on a GPU";
  if (!fixtures_present()) return;
  // The GPU bundle carries the small fixtures only (ResNet-18's is 47 MB); lenet,
  // the VGG-style net and the MobileNetV2 block must be there.
  int compared = 0;
  for (const char* name : {"lenet", "vgg_avg", "resnet18", "mbv2_block", "tiny224"}) {
    if (!std::ifstream(fixture_dir() + "/" + name + "/meta.json")) continue;
    compare(fixture_dir() + "/" + name, "cuda:0/fp32", 1e-5);
    compare(fixture_dir() + "/" + name, "cuda:0/tf32", 2e-3);
    ++compared;
  }
  EXPECT_GE(compared, 3);
}

TEST(CudaDevice, MemoryCapPicksSmallerChunks) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  if (!fixtures_present()) return;
  SplitModel m = load_split_model(fixture_dir() + "/tiny224/model.onnx", "split");
  auto x = npy(fixture_dir() + "/tiny224/x.npy"), x0 = npy(fixture_dir() + "/tiny224/baseline.npy");
  AttributionRequest r;
  r.target_class = 1;
  r.steps = 256;
  r.integrated_gradients = true;
  Attributor big(m, Precision::F32, "cuda:0"), small(m, Precision::F32, "cuda:0/cap=24");
  AttributionResult a = big.run(x, x0, r), b = small.run(x, x0, r);
  EXPECT_LT(b.chunk, a.chunk);
  EXPECT_LT(rel_err(b.ig, a.ig), 2e-3);
}

}  // namespace
}  // namespace ipna::test
