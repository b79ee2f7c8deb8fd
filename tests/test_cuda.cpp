// The CUDA backend. Host-side pieces (device strings, window and mask index
// math shared with the kernels) run everywhere; the comparisons with the CPU
// backend need a GPU and skip, saying so, without one (CI has none:
// bench/gpu_check.sh runs them on a lent GPU).
//
// Tolerances are derived, not guessed. Every GPU result is compared with the
// CPU backend in float64 on the same inputs, and so is the CPU backend in
// float32: that error, e32, is what single-precision rounding costs for this
// quantity on this model, amplification included (conductance and IPNA take
// differences of neighbouring path points, which magnifies rounding by up to
// |h| / |h(x_k) - h(x_{k-1})|, so their e32 is much larger than IG's). The GPU
// in strict fp32 rounds the same operations in another order: its error must
// stay within 8 * e32. TF32 rounds each convolution and GEMM input to 10
// mantissa bits instead of 23, a 2^13 larger unit roundoff: within 4 * 2^13 * e32.
// e32 is taken as at least one unit roundoff, for quantities float32 computes exactly.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <fstream>

#include "engine/attribution.h"
#include "engine/cpu/cpu_backend.h"
#include "engine/device_options.h"
#include "engine/error.h"
#include "engine/plan.h"
#include "engine/window_math.h"
#include "loaders/npy.h"
#include "loaders/onnx_loader.h"
#include "tests/fixtures.h"
#include "tests/op_graphs.h"
#ifdef IPNA_WITH_CUDA
#include <cuda_runtime.h>
#endif

namespace ipna::test {
namespace {

constexpr double kEps32 = 0x1p-24;  // float32 unit roundoff

double tolerance(double e32, GpuMath math) {
  const double e = std::max(e32, kEps32);
  return math == GpuMath::Fp32 ? 8 * e : 4 * 0x1p13 * e;
}

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

TEST(CudaHost, TolerancesFollowTheMathMode) {
  EXPECT_DOUBLE_EQ(tolerance(1e-6, GpuMath::Fp32), 8e-6);
  EXPECT_DOUBLE_EQ(tolerance(1e-6, GpuMath::Tf32), 4 * 8192 * 1e-6);
  EXPECT_DOUBLE_EQ(tolerance(0, GpuMath::Fp32), 8 * kEps32);
  EXPECT_NEAR(tolerance(0, GpuMath::Tf32), 2e-3, 1e-4);  // TF32's floor: 4 of its unit roundoffs
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

// --- per op: forward and input-gradient backward of each single-op graph ---

struct OpRun {
  std::vector<double> y, dx;
};

template <typename T>
OpRun run_op(const Graph& g, Backend<T>& be, const std::vector<double>& x, const std::vector<double>& r, int n) {
  GraphPlan<T> plan(g, be);
  auto ws = plan.make_workspace(n, true);
  const int64_t xn = plan.input_numel(), yn = plan.output_numel();
  std::vector<T> xt(x.begin(), x.end()), rt(r.begin(), r.end()), y(n * yn), dx(n * xn);
  DeviceBuffer xd(be, xt.size() * sizeof(T)), rd(be, rt.size() * sizeof(T)), yd(be, y.size() * sizeof(T)),
      dxd(be, dx.size() * sizeof(T));
  be.copy_to_device(xd.as<void>(), xt.data(), xt.size() * sizeof(T));
  be.copy_to_device(rd.as<void>(), rt.data(), rt.size() * sizeof(T));
  plan.forward(n, xd.as<T>(), yd.as<T>(), ws, true);
  plan.backward(n, rd.as<T>(), dxd.as<T>(), ws);
  be.copy_to_host(y.data(), yd.as<void>(), y.size() * sizeof(T));
  be.copy_to_host(dx.data(), dxd.as<void>(), dx.size() * sizeof(T));
  return {{y.begin(), y.end()}, {dx.begin(), dx.end()}};
}

class CudaDeviceOp : public ::testing::TestWithParam<std::string> {};

TEST_P(CudaDeviceOp, ForwardAndBackwardMatchTheCpu) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device: the per-op CUDA checks run in bench/gpu_check.sh on a GPU";
  const Graph g = op_graph(GetParam());
  const int n = 5;
  CpuBackend<double> cpu64;
  CpuBackend<float> cpu32;
  GraphPlan<double> shape_only(g, cpu64);
  const auto x = random_vector(n * shape_only.input_numel(), 11), r = random_vector(n * shape_only.output_numel(), 12);
  const OpRun ref = run_op<double>(g, cpu64, x, r, n), c32 = run_op<float>(g, cpu32, x, r, n);
  for (const char* dev : {"cuda:0/fp32", "cuda:0/tf32"}) {
    const GpuMath math = parse_device(dev).math;
    auto gpu = make_backend<float>(dev);
    const OpRun got = run_op<float>(g, *gpu, x, r, n);
    const double ty = tolerance(rel_err(c32.y, ref.y), math), tdx = tolerance(rel_err(c32.dx, ref.dx), math);
    EXPECT_LE(rel_err(got.y, ref.y), ty) << GetParam() << " " << dev << " forward";
    EXPECT_LE(rel_err(got.dx, ref.dx), tdx) << GetParam() << " " << dev << " backward";
    std::printf("%-28s %-12s forward %.2e (tol %.1e)  backward %.2e (tol %.1e)\n", GetParam().c_str(), dev,
                rel_err(got.y, ref.y), ty, rel_err(got.dx, ref.dx), tdx);
  }
}

INSTANTIATE_TEST_SUITE_P(Ops, CudaDeviceOp, ::testing::ValuesIn(op_graph_names()),
                         [](const auto& info) { return info.param; });

// --- whole models: IG, conductance and IPNA, several boxes ---

struct Quantities {
  std::vector<std::pair<std::string, std::vector<double>>> maps;
  double f_input;
};

Quantities quantities(const AttributionResult& r) {
  Quantities q{{{"IG", r.ig}, {"conductance", r.conductance}}, r.f_input};
  for (size_t b = 0; b < r.ipna.size(); ++b) q.maps.push_back({"IPNA box " + std::to_string(b), r.ipna[b]});
  return q;
}

// The GPU against CPU float64, with tolerances from CPU float32's error on the same quantity.
void compare_model(const std::string& label, const SplitModel& m, const std::vector<double>& x,
                   const std::vector<double>& x0, const AttributionRequest& req) {
  Attributor cpu64(m, Precision::F64, "cpu"), cpu32(m, Precision::F32, "cpu");
  const Quantities ref = quantities(cpu64.run(x, x0, req)), c32 = quantities(cpu32.run(x, x0, req));
  for (const char* dev : {"cuda:0/fp32", "cuda:0/tf32"}) {
    const GpuMath math = parse_device(dev).math;
    Attributor gpu(m, Precision::F32, dev);
    const AttributionResult res = gpu.run(x, x0, req);
    const Quantities got = quantities(res);
    for (size_t i = 0; i < ref.maps.size(); ++i) {
      const auto& [name, want] = ref.maps[i];
      const double e32 = rel_err(c32.maps[i].second, want), err = rel_err(got.maps[i].second, want);
      const double tol = tolerance(e32, math);
      EXPECT_LE(err, tol) << label << " " << dev << " " << name;
      std::printf("%-14s %-12s %-13s rel.err %.2e  cpu-f32 %.2e  tol %.1e\n", label.c_str(), dev, name.c_str(), err,
                  e32, tol);
    }
    const double fe32 = std::abs(c32.f_input - ref.f_input) / (std::abs(ref.f_input) + 1e-30);
    EXPECT_LE(std::abs(got.f_input - ref.f_input) / (std::abs(ref.f_input) + 1e-30), tolerance(fe32, math))
        << label << " " << dev << " F(x)";
  }
}

TEST(CudaDevice, MatchesCpuBackendOnTheReferenceModels) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device: the CUDA-vs-CPU comparison runs in bench/gpu_check.sh on a GPU";
  if (!fixtures_present()) return;
  // The GPU bundle carries the small fixtures only (ResNet-18's is 47 MB).
  int compared = 0;
  for (const char* name : {"lenet", "vgg_avg", "resnet18", "mbv2_block", "tiny224"}) {
    const std::string dir = fixture_dir() + "/" + name;
    if (!std::ifstream(dir + "/meta.json")) continue;
    auto meta = read_json(dir + "/meta.json");
    SplitModel m = load_split_model(dir + "/model.onnx", meta["split"].get<std::string>());
    AttributionRequest r;
    r.target_class = meta["class"];
    r.steps = 16;
    r.integrated_gradients = r.conductance = true;
    for (auto& b : meta["boxes"]) r.boxes.push_back({b[0], b[1], b[2], b[3]});
    r.boxes.push_back({0, 0, static_cast<int>(m.input_shape().height()), static_cast<int>(m.input_shape().width())});
    for (TargetKind t : {TargetKind::Probability, TargetKind::Logit}) {
      r.target = t;
      compare_model(std::string(name) + (t == TargetKind::Logit ? "/logit" : "/prob"), m, npy(dir + "/x.npy"),
                    npy(dir + "/baseline.npy"), r);
    }
    ++compared;
  }
  EXPECT_GE(compared, 4);
}

// ResNet-152 split after layer2 at 224x224 (the original's workload, random
// weights), 16 steps, IG + conductance + IPNA: the GPU against the CPU in
// float64. IPNA_RESNET152 names the folder holding model.onnx (split
// "layer2") and x.npy; bench/gpu_check.sh exports it there.
TEST(CudaDevice, ResNet152AtScale) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device: the ResNet-152 check runs in bench/gpu_check.sh on a GPU";
  const char* dir = std::getenv("IPNA_RESNET152");
  if (!dir) GTEST_SKIP() << "IPNA_RESNET152 is not set (bench/gpu_check.sh sets it after exporting the model)";
  SplitModel m = load_split_model(std::string(dir) + "/model.onnx", "layer2");
  ASSERT_EQ(m.input_shape(), (Shape{3, 224, 224}));
  AttributionRequest r;
  r.target_class = 920;
  r.target = TargetKind::Logit;  // random weights saturate the softmax
  r.steps = 16;
  r.integrated_gradients = r.conductance = true;
  r.boxes = {{45, 100, 90, 130}};
  compare_model("resnet152", m, npy(std::string(dir) + "/x.npy"), black_baseline(m.input_shape()), r);
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
  Attributor big(m, Precision::F32, "cuda:0/fp32"), small(m, Precision::F32, "cuda:0/fp32/cap=24");
  AttributionResult a = big.run(x, x0, r), b = small.run(x, x0, r);
  EXPECT_LT(b.chunk, a.chunk);
  EXPECT_LT(rel_err(b.ig, a.ig), 1e-4);
}

// IPNA_CUDA_DEBUG=1 synchronises after every op: the same numbers, and errors name the op.
TEST(CudaDevice, DebugSynchronisationGivesTheSameResults) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  if (!fixtures_present()) return;
  SplitModel m = load_split_model(fixture_dir() + "/lenet/model.onnx", "split");
  auto x = npy(fixture_dir() + "/lenet/x.npy"), x0 = npy(fixture_dir() + "/lenet/baseline.npy");
  AttributionRequest r;
  r.target_class = 5;
  r.steps = 32;
  r.integrated_gradients = r.conductance = true;
  r.boxes = {{7, 9, 16, 26}};
  Attributor plain(m, Precision::F32, "cuda:0/fp32");
  const AttributionResult a = plain.run(x, x0, r);
  setenv("IPNA_CUDA_DEBUG", "1", 1);
  Attributor debug(m, Precision::F32, "cuda:0/fp32");
  unsetenv("IPNA_CUDA_DEBUG");
  const AttributionResult b = debug.run(x, x0, r);
  // Each backend runs its own algorithm search, which may pick another (exact) algorithm.
  EXPECT_LT(rel_err(b.ig, a.ig), 1e-5);
  EXPECT_LT(rel_err(b.ipna[0], a.ipna[0]), 1e-4);
}

}  // namespace
}  // namespace ipna::test
