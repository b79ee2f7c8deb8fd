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
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>

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
  for (const char* bad : {"gpu", "cuda:", "cuda:x", "cuda/fp16", "cuda/cap=", "cuda:0/cap=1G", "cpu/fp16", "cpu:0"})
    EXPECT_THROW(parse_device(bad), Error) << bad;
  EXPECT_EQ(parse_device("cpu").cpu_math, CpuMath::Fp32);
  EXPECT_EQ(parse_device("cpu/winograd").cpu_math, CpuMath::Winograd);
  EXPECT_FALSE(parse_device("cpu/winograd").cuda);
  EXPECT_EQ(parse_device("cpu/bf16").cpu_math, CpuMath::Bf16);
  EXPECT_FALSE(parse_device("cpu/bf16").cuda);
  // float64 has no bf16 or Winograd variant (it is always direct); the message says why.
  for (const char* dev : {"cpu/bf16", "cpu/winograd"}) {
    try {
      make_backend<double>(dev);
      ADD_FAILURE() << dev << " accepted in float64";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("float32"), std::string::npos) << e.what();
    }
  }
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
  // forward, backward, tangent (whole plane and on the cone of a box), and the
  // difference form's patched forward on that cone
  std::vector<double> y, dx, ty, ty_cone, y_patched;
  // forward on the line x_0 + (i + 1/2) (x_1 - x_0) with the head made from its ends (GraphPlan::prepare_line),
  // and backward_sum's weighted sum of the input gradients there
  std::vector<double> y_line, dx_sum;
};

// Each part of an OpRun, named for the messages.
const std::vector<std::pair<const char*, std::vector<double> OpRun::*>> kOpRunParts = {
    {"forward", &OpRun::y},
    {"backward", &OpRun::dx},
    {"tangent", &OpRun::ty},
    {"tangent on a cone", &OpRun::ty_cone},
    {"patched forward", &OpRun::y_patched},
    {"forward on a line", &OpRun::y_line},
    {"backward summed", &OpRun::dx_sum}};

constexpr Box kOpBox{1, 1, 3, 3};

// v restricted to kOpBox: the direction d * 1_S of a patch pass (unchanged for inputs without a plane).
std::vector<double> in_box(const Graph& g, std::vector<double> v) {
  const Shape& in = g.values[g.input].shape;
  if (in.rank() != 3) return v;
  for (int64_t i = 0; i < static_cast<int64_t>(v.size()); ++i) {
    const int64_t pos = i % in.plane(), row = pos / in.width(), col = pos % in.width();
    if (row < kOpBox.r0 || row >= kOpBox.r1 || col < kOpBox.c0 || col >= kOpBox.c1) v[i] = 0;
  }
  return v;
}

// Random inputs of an op run on n samples of g: the point x, the output gradient r and the
// direction tx inside kOpBox, from seeds seed, seed + 1 and seed + 2.
struct OpInputs {
  std::vector<double> x, r, tx;
};
OpInputs op_inputs(const Graph& g, int n, unsigned seed) {
  CpuBackend<double> cpu64;
  const GraphPlan<double> shape_only(g, cpu64);
  return {random_vector(n * shape_only.input_numel(), seed), random_vector(n * shape_only.output_numel(), seed + 1),
          in_box(g, random_vector(n * shape_only.input_numel(), seed + 2))};
}

// Sample 0 of v (n samples) in every sample.
std::vector<double> same_in_every_sample(const std::vector<double>& v, int n) {
  const size_t per = v.size() / static_cast<size_t>(n);
  std::vector<double> out(v.size());
  for (size_t i = 0; i < out.size(); ++i) out[i] = v[i % per];
  return out;
}

// tx: zero outside kOpBox. equal_samples: tx is the same in every sample, and the cone passes are told so.
// channels_last: the forward and backward passes (not the tangent and patch passes, which refuse it) keep
// the values the plan allows NHWC.
template <typename T>
OpRun run_op(const Graph& g, Backend<T>& be, const std::vector<double>& x, const std::vector<double>& r,
             const std::vector<double>& tx, int n, bool equal_samples = false, bool channels_last = false) {
  GraphPlan<T> plan(g, be);
  auto ws = plan.make_workspace(n, true);
  ws.channels_last = channels_last;
  const int64_t xn = plan.input_numel(), yn = plan.output_numel();
  auto upload = [&](const std::vector<double>& v) {
    std::vector<T> t(v.begin(), v.end());
    DeviceBuffer d(be, t.size() * sizeof(T));
    be.copy_to_device(d.as<void>(), t.data(), t.size() * sizeof(T));
    return d;
  };
  auto download = [&](const DeviceBuffer& d, int64_t count) {
    std::vector<T> t(count);
    be.copy_to_host(t.data(), d.as<void>(), t.size() * sizeof(T));
    return std::vector<double>(t.begin(), t.end());
  };
  DeviceBuffer xd = upload(x), rd = upload(r), txd = upload(tx), yd(be, n * yn * sizeof(T)), dxd(be, n * xn * sizeof(T));
  OpRun out;
  plan.forward(n, xd.as<T>(), yd.as<T>(), ws, true);
  plan.backward(n, rd.as<T>(), dxd.as<T>(), ws);
  out.y = download(yd, n * yn);
  out.dx = download(dxd, n * xn);
  {
    std::vector<double> x0(x.begin(), x.begin() + xn), d(xn), k(n), w(n), pts(n * xn);
    for (int64_t j = 0; j < xn; ++j) d[j] = x[xn + j] - x0[j];
    for (int i = 0; i < n; ++i) {
      k[i] = i + 0.5;
      w[i] = 1.0 + i;
      for (int64_t j = 0; j < xn; ++j) pts[i * xn + j] = x0[j] + k[i] * d[j];
    }
    DeviceBuffer ptsd = upload(pts), sumd = upload(std::vector<double>(xn));
    plan.prepare_line(x0, d, ws);
    plan.forward(n, ptsd.as<T>(), yd.as<T>(), ws, true, {}, &k);
    out.y_line = download(yd, n * yn);
    plan.backward_sum(n, rd.as<T>(), w, dxd.as<T>(), sumd.as<T>(), ws);
    out.dx_sum = download(sumd, xn);
    ws.channels_last = false;
    plan.forward(n, xd.as<T>(), yd.as<T>(), ws, true);  // the tangents below are taken at x
  }
  plan.tangent(n, txd.as<T>(), yd.as<T>(), ws);
  out.ty = download(yd, n * yn);
  const Shape& in = g.values[g.input].shape;
  if (in.rank() != 3) return out;
  const Cone cone = plan.cone(kOpBox);
  plan.tangent(n, txd.as<T>(), yd.as<T>(), ws, {&cone}, nullptr, equal_samples);
  out.ty_cone = download(yd, n * yn);
  // x + tx (inside the box), against the base point x whose values are stored
  std::vector<double> xp = x;
  for (int64_t i = 0; i < n * xn; ++i) xp[i] += tx[i];
  const typename GraphPlan<T>::StoreLayout layout = plan.store_layout({cone});
  DeviceBuffer store(be, std::max<int64_t>(1, layout.elems) * n * sizeof(T)), xpd = upload(xp);
  const typename GraphPlan<T>::ValueStore slots{store.as<T>(), n, 0, &layout};
  plan.forward(n, xd.as<T>(), yd.as<T>(), ws, false, slots);
  plan.patched_forward(n, xpd.as<T>(), yd.as<T>(), ws, {&cone}, slots, equal_samples);
  out.y_patched = download(yd, n * yn);
  return out;
}

// The cone passes the GPU check compares, first on the CPU in float64: on every op, the tangent on a
// cone and the patched forward equal their whole-plane passes (the forward at the patched point).
TEST(OpCones, ConePassesEqualWholePlanePassesOnEveryOp) {
  const int n = 3;
  CpuBackend<double> cpu64;
  int with_cones = 0;
  for (const std::string& name : op_graph_names()) {
    const Graph g = op_graph(name);
    GraphPlan<double> shape_only(g, cpu64);
    const auto x = random_vector(n * shape_only.input_numel(), 21),
               tx = in_box(g, random_vector(n * shape_only.input_numel(), 22));
    const OpRun run = run_op<double>(g, cpu64, x, random_vector(n * shape_only.output_numel(), 23), tx, n);
    if (run.ty_cone.empty()) continue;
    ++with_cones;
    EXPECT_LT(rel_err(run.ty_cone, run.ty), 1e-13) << name;
    std::vector<double> xp = x;  // the patched point, through the plain forward
    for (size_t i = 0; i < x.size(); ++i) xp[i] += tx[i];
    const OpRun at_patch = run_op<double>(g, cpu64, xp, random_vector(n * shape_only.output_numel(), 23), tx, n);
    EXPECT_LT(rel_err(run.y_patched, at_patch.y), 1e-13) << name;
    // A direction the same in every sample (a box's patch with equal steps): a convolution reading the
    // input runs on one sample and copies its result to the other two.
    const auto tx_same = same_in_every_sample(tx, n);
    const OpRun general = run_op<double>(g, cpu64, x, random_vector(n * shape_only.output_numel(), 23), tx_same, n),
                once = run_op<double>(g, cpu64, x, random_vector(n * shape_only.output_numel(), 23), tx_same, n, true);
    EXPECT_LT(rel_err(once.ty_cone, general.ty_cone), 1e-13) << name;
    EXPECT_LT(rel_err(once.y_patched, general.y_patched), 1e-13) << name;
  }
  EXPECT_GE(with_cones, 10);
}

// The CPU's float32 path (convolutions through oneDNN, the rest ours) against the float64 reference on
// every op graph, forward, backward, tangent and the cone passes, at the suite's float32 tolerance
// (1e-4 relative, as for the models against PyTorch); these small graphs of O(1) values give 1e-7..1e-6.
TEST(CpuPrecision, Float32MatchesFloat64OnEveryOp) {
  const int n = 5;
  for (const std::string& name : op_graph_names()) {
    const Graph g = op_graph(name);
    CpuBackend<double> cpu64;
    CpuBackend<float> cpu32;
    const auto [x, r, tx] = op_inputs(g, n, 31);
    const OpRun ref = run_op<double>(g, cpu64, x, r, tx, n), got = run_op<float>(g, cpu32, x, r, tx, n);
    for (auto [what, member] : kOpRunParts) {
      if ((ref.*member).empty()) continue;
      EXPECT_LT(rel_err(got.*member, ref.*member), 1e-4) << name << " " << what;
    }
  }
}

// The float32 plan keeps values NHWC where oneDNN's convolutions make and read them and the workspace
// asks (GraphPlan::Workspace::channels_last), other launches reading and writing them through
// transposes: forward, backward, and both on a line, against float64 at the float32 tolerance and
// against the NCHW passes to float32 rounding (the forward runs the same kernels, the backward oneDNN's
// NHWC one where NCHW batches get its blocked one). Besides the op graphs (WholeNetwork's depthwise
// convolution), four small networks with 16 channels: a residual block; ResNet's stem, max pool and
// two blocks, the output NHWC; EfficientNet's stem and a depthwise block before a global pool, the
// line's head NHWC; convolutions with activations (HardSwish, SiLU) between them.
// The op graphs and those four networks, and how many values each keeps NHWC.
std::vector<OpGraph> channels_last_graphs(std::map<std::string, int>& kept_nhwc) {
  std::vector<OpGraph> graphs = op_graphs();
  kept_nhwc = {{"WholeNetwork", 2}};  // the depthwise convolution's output and its ReLU6's
  {
    NetBuilder b(Shape{16, 6, 6}, 7);
    b.relu();  // (a convolution reading the input would be a line's head)
    b.conv(16, 3, 1, 1);
    const int skip = b.relu();
    b.conv(16, 3, 1, 1);
    b.relu();
    b.conv(16, 3, 1, 1);
    b.add(skip, b.current());
    b.relu();
    b.conv(8, 3, 2, 1);
    graphs.push_back({"WideResidualBlock", b.finish()});
    kept_nhwc["WideResidualBlock"] = 7;  // all but the input, the first ReLU's and the output
  }
  {
    NetBuilder b(Shape{3, 10, 10}, 8);
    b.conv(16, 3, 1, 1);
    b.relu();
    int skip = b.pool(OpKind::MaxPool, 3, 2, 1);
    for (int block = 0; block < 2; ++block) {
      b.conv(16, 3, 1, 1);
      b.relu();
      b.conv(16, 3, 1, 1);
      b.add(skip, b.current());
      skip = b.relu();
    }
    graphs.push_back({"StemPoolTwoBlocks", b.finish()});
    kept_nhwc["StemPoolTwoBlocks"] = 11;  // from the max pool's output on, the graph's output too
  }
  {
    NetBuilder b(Shape{3, 8, 8}, 9);
    b.conv(16, 3, 1, 1);
    b.clip(0, 6);
    b.conv(16, 3, 1, 1, 16);
    const int skip = b.clip(0, 6);
    b.conv(16, 1);
    b.add(skip, b.current());
    b.global_avg();
    b.linear(4);
    graphs.push_back({"StemDepthwiseGlobalPool", b.finish()});
    kept_nhwc["StemDepthwiseGlobalPool"] = 6;  // the head's output to the global pool's input
  }
  {
    NetBuilder b(Shape{16, 6, 6}, 10);
    b.relu();
    b.conv(16, 3, 1, 1);
    b.activation(ActivationFn::HardSwish);
    b.conv(16, 3, 1, 1);
    b.activation(ActivationFn::SiLU);
    b.conv(8, 1);
    graphs.push_back({"ConvActivations", b.finish()});
    kept_nhwc["ConvActivations"] = 4;  // the two convolutions' outputs and their activations'
  }
  return graphs;
}

TEST(CpuPrecision, ChannelsLastMatchesFloat64) {
  std::map<std::string, int> kept_nhwc;
  const std::vector<OpGraph> graphs = channels_last_graphs(kept_nhwc);
  const int n = 5;
  for (const OpGraph& og : graphs) {
    const Graph& g = og.graph;
    CpuBackend<double> cpu64;
    CpuBackend<float> cpu32;
    const GraphPlan<float> plan(g, cpu32);
    for (size_t v = 0; v < g.values.size(); ++v)
      EXPECT_FALSE(plan.keeps_bf16(static_cast<int>(v))) << og.name << ": float32 stores no bf16";
    int kept = 0;
    for (size_t v = 0; v < g.values.size(); ++v) kept += plan.keeps_nhwc(static_cast<int>(v));
    EXPECT_EQ(kept, kept_nhwc.count(og.name) ? kept_nhwc[og.name] : 0) << og.name;
    const auto [x, r, tx] = op_inputs(g, n, 31);
    const OpRun ref = run_op<double>(g, cpu64, x, r, tx, n), nchw = run_op<float>(g, cpu32, x, r, tx, n),
                nhwc = run_op<float>(g, cpu32, x, r, tx, n, false, true);
    for (auto member : {&OpRun::y, &OpRun::dx, &OpRun::y_line, &OpRun::dx_sum}) {
      EXPECT_LT(rel_err(nhwc.*member, ref.*member), 1e-4) << og.name;
      EXPECT_LT(rel_err(nhwc.*member, nchw.*member), 1e-5) << og.name;
    }
  }
}

// cpu/bf16 stores the forward values it keeps NHWC as bf16 (Backend::stores_bf16): every NHWC value
// but those of the group the line's head makes (EfficientNet's stem output and its ReLU6). A value a
// convolution reads is rounded to bf16 either way (cpu/bf16 rounds what convolutions read); storing
// rounds once more (unit roundoff 2^-8) only what else reads them: an Add's operands, an activation's
// input, a pool's input, the graph's output. So the error may at most double against the same
// convolutions with float32 storage, plus the output's own rounding: err <= 2 * err_nchw + 2^-8, forward,
// backward and both on a line, against float64; the forward also within the bound of bf16 convolutions
// (the test below). The four networks round something NCHW does not (Adds, activations, a pool, the
// output), so their results must differ from NCHW's: the bf16 values are really stored.
TEST(CpuPrecision, Bf16StorageWithinItsDerivedTolerance) {
  if (!__builtin_cpu_supports("avx512bf16")) GTEST_SKIP() << "this CPU has no AVX-512 BF16: cpu/bf16 is refused here";
  std::map<std::string, int> kept_nhwc;
  const std::vector<OpGraph> graphs = channels_last_graphs(kept_nhwc);
  std::map<std::string, int> kept_bf16 = kept_nhwc;
  kept_bf16["StemDepthwiseGlobalPool"] -= 2;
  const int n = 5;
  for (const OpGraph& og : graphs) {
    const Graph& g = og.graph;
    CpuBackend<double> cpu64;
    CpuBackend<float> cpu32, bf16(CpuMath::Bf16);
    const GraphPlan<float> plan(g, bf16);
    int kept = 0;
    for (size_t v = 0; v < g.values.size(); ++v) {
      kept += plan.keeps_bf16(static_cast<int>(v));
      EXPECT_TRUE(!plan.keeps_bf16(static_cast<int>(v)) || plan.keeps_nhwc(static_cast<int>(v))) << og.name;
    }
    EXPECT_EQ(kept, kept_bf16.count(og.name) ? kept_bf16[og.name] : 0) << og.name;
    const auto [x, r, tx] = op_inputs(g, n, 61);
    const OpRun ref = run_op<double>(g, cpu64, x, r, tx, n), c32 = run_op<float>(g, cpu32, x, r, tx, n),
                nchw = run_op<float>(g, bf16, x, r, tx, n), got = run_op<float>(g, bf16, x, r, tx, n, false, true);
    for (auto [what, member] : {std::pair{"forward", &OpRun::y},
                                {"backward", &OpRun::dx},
                                {"forward on a line", &OpRun::y_line},
                                {"backward on a line", &OpRun::dx_sum}}) {
      const double err = rel_err(got.*member, ref.*member);
      EXPECT_LE(err, 2 * rel_err(nchw.*member, ref.*member) + 0x1p-8) << og.name << " " << what;
      if (member == &OpRun::y || member == &OpRun::y_line)
        EXPECT_LE(err, 4 * 0x1p16 * std::max(rel_err(c32.*member, ref.*member), kEps32)) << og.name << " " << what;
    }
    if (kept_nhwc.count(og.name) && og.name != "WholeNetwork") EXPECT_GT(rel_err(got.y, nchw.y), 0) << og.name;
  }
}

// bf16 convolutions (cpu/bf16): inputs and weights rounded to bf16 (unit roundoff 2^-8), products
// accumulated in float32. Rounding the operands multiplies float32's operand rounding (2^-24) by
// 2^16, so, as for TF32 on the GPU, the error must stay within 4 * 2^16 * e32, e32 being what float32
// costs the same quantity (at least one float32 unit roundoff).
TEST(CpuPrecision, Bf16ConvolutionsWithinTheirDerivedTolerance) {
  if (!__builtin_cpu_supports("avx512bf16")) GTEST_SKIP() << "this CPU has no AVX-512 BF16: cpu/bf16 is refused here";
  const int n = 5;
  int with_conv = 0;
  for (const std::string& name : op_graph_names()) {
    const Graph g = op_graph(name);
    bool conv = false;
    for (const auto& node : g.nodes) conv |= node.kind == OpKind::Conv;
    if (!conv) continue;
    ++with_conv;
    CpuBackend<double> cpu64;
    CpuBackend<float> cpu32, bf16(CpuMath::Bf16);
    const auto [x, r, tx] = op_inputs(g, n, 41);
    const OpRun ref = run_op<double>(g, cpu64, x, r, tx, n), c32 = run_op<float>(g, cpu32, x, r, tx, n),
                got = run_op<float>(g, bf16, x, r, tx, n);
    for (auto [what, member] : {std::pair{"forward", &OpRun::y}, {"backward", &OpRun::dx}, {"tangent", &OpRun::ty}}) {
      const double e32 = std::max(rel_err(c32.*member, ref.*member), kEps32);
      EXPECT_LE(rel_err(got.*member, ref.*member), 4 * 0x1p16 * e32) << name << " " << what;
    }
  }
  EXPECT_GE(with_conv, 5);
}

// Winograd F(4x4, 3x3) (cpu/winograd) on the 3x3 stride-1 shapes of a ResNet, forward and input
// gradient, against float64 and against direct float32 on the same data. Its transforms evaluate
// polynomials at 0, +-1, +-2, +-1/2, whose matrices magnify rounding: the measured cost is 20x to
// 60x direct float32's error on these shapes, so the bound is 256x direct's (and 1e-4 relative
// absolutely). The direct path meets float32's own bound (1e-6 relative).
TEST(CpuPrecision, WinogradWithinItsBound) {
  struct Case {
    int c, hw, n;
  };
  for (const Case k : {Case{64, 28, 4}, Case{128, 14, 4}, Case{256, 7, 4}, Case{512, 4, 4}, Case{512, 2, 4}, Case{64, 16, 1}, Case{64, 16, 2}, Case{256, 4, 2}, Case{512, 2, 1}}) {
    ConvDesc d;
    d.cin = d.cout = k.c;
    d.h = d.w = d.ho = d.wo = k.hw;
    d.win.kh = d.win.kw = 3;
    d.win.pad_top = d.win.pad_left = d.win.pad_bottom = d.win.pad_right = 1;
    const int64_t xn = int64_t(k.n) * k.c * k.hw * k.hw;
    const auto x = random_vector(xn, 51), dy = random_vector(xn, 52),
               w = random_vector(int64_t(k.c) * k.c * 9, 53, 1.0 / std::sqrt(9.0 * k.c)),
               b = random_vector(k.c, 54);
    CpuBackend<double> ref;
    std::vector<double> y64(xn), dx64(xn);
    ref.conv2d_forward(d, w.data(), b.data(), x.data(), y64.data(), k.n);
    ref.conv2d_backward_data(d, w.data(), dy.data(), dx64.data(), k.n, false);
    auto run = [&](CpuMath math) {
      CpuBackend<float> be(math);
      const std::vector<float> xf(x.begin(), x.end()), dyf(dy.begin(), dy.end()), wf(w.begin(), w.end()),
          bf(b.begin(), b.end());
      std::vector<float> y(xn), dx(xn);
      be.conv2d_forward(d, wf.data(), bf.data(), xf.data(), y.data(), k.n);
      be.conv2d_backward_data(d, wf.data(), dyf.data(), dx.data(), k.n, false);
      return std::pair{rel_err(std::vector<double>(y.begin(), y.end()), y64),
                       rel_err(std::vector<double>(dx.begin(), dx.end()), dx64)};
    };
    const auto [direct_y, direct_dx] = run(CpuMath::Fp32);
    const auto [wino_y, wino_dx] = run(CpuMath::Winograd);
    const std::string shape = std::to_string(k.c) + "x" + std::to_string(k.hw) + "x" + std::to_string(k.hw);
    EXPECT_LT(direct_y, 1e-6) << shape;
    EXPECT_LT(direct_dx, 1e-6) << shape;
    EXPECT_LT(wino_y, std::min(1e-4, 256 * std::max(direct_y, kEps32))) << shape << " forward";
    EXPECT_LT(wino_dx, std::min(1e-4, 256 * std::max(direct_dx, kEps32))) << shape << " input gradient";
    // Winograd must actually have run: its error differs from direct's.
    EXPECT_NE(wino_y, direct_y) << shape;
    std::printf("%-10s forward direct %.2e winograd %.2e | input gradient direct %.2e winograd %.2e\n",
                shape.c_str(), direct_y, wino_y, direct_dx, wino_dx);
  }
}

class CudaDeviceOp : public ::testing::TestWithParam<std::string> {};

TEST_P(CudaDeviceOp, ForwardAndBackwardMatchTheCpu) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device: the per-op CUDA checks run in bench/gpu_check.sh on a GPU";
  const Graph g = op_graph(GetParam());
  const int n = 5;
  CpuBackend<double> cpu64;
  CpuBackend<float> cpu32;
  const auto [x, r, tx] = op_inputs(g, n, 11);
  // Then a direction the same in every sample, the GPU told so (a convolution reading the input runs on
  // one sample, its result copied to the others), against the CPU's general float64 passes.
  const auto tx_same = same_in_every_sample(tx, n);
  for (bool equal : {false, true}) {
    const auto& t = equal ? tx_same : tx;
    const OpRun ref = run_op<double>(g, cpu64, x, r, t, n), c32 = run_op<float>(g, cpu32, x, r, t, n, equal);
    for (const char* dev : {"cuda:0/fp32", "cuda:0/tf32"}) {
      const GpuMath math = parse_device(dev).math;
      auto gpu = make_backend<float>(dev);
      const OpRun got = run_op<float>(g, *gpu, x, r, t, n, equal);
      for (auto [what, member] : kOpRunParts) {
        if ((ref.*member).empty()) continue;  // no cones without an image input
        const double err = rel_err(got.*member, ref.*member), tol = tolerance(rel_err(c32.*member, ref.*member), math);
        EXPECT_LE(err, tol) << GetParam() << " " << dev << " " << what << (equal ? " (equal samples)" : "");
        std::printf("%-28s %-12s %-18s %s %.2e (tol %.1e)\n", GetParam().c_str(), dev, what, equal ? "equal" : "     ",
                    err, tol);
      }
    }
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
  Quantities q{{}, r.f_input};
  if (!r.ig.empty()) q.maps.push_back({"IG", r.ig});
  if (!r.conductance.empty()) q.maps.push_back({"conductance", r.conductance});
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
    // A non-uniform schedule (the patch points' and tangents' d_k) with IG by the trapezoid rule (weighted sums)
    r.target = TargetKind::Probability;
    r.schedule = npy(dir + "/schedule.npy");
    r.steps = 0;
    r.quadrature = Quadrature::Trapezoid;
    compare_model(std::string(name) + "/schedule", m, npy(dir + "/x.npy"), npy(dir + "/baseline.npy"), r);
    r.schedule.clear();
    r.steps = 16;
    // The secant rule (its slopes, max-pool shares and averaged factors), IG and conductance, chunks of 5
    // points each leading with the one before
    r.quadrature = Quadrature::Secant;
    const std::vector<Box> boxes = r.boxes;
    r.boxes.clear();
    r.chunk = 5;
    compare_model(std::string(name) + "/secant", m, npy(dir + "/x.npy"), npy(dir + "/baseline.npy"), r);
    r.boxes = boxes;
    r.chunk = 0;
    r.quadrature = Quadrature::Right;
    // IPNA's patch passes on cones, both forms (probability target)
    r.integrated_gradients = r.conductance = false;
    r.receptive_field_cones = true;
    for (IpnaForm form : {IpnaForm::Difference, IpnaForm::Tangent}) {
      r.ipna_form = form;
      compare_model(std::string(name) + (form == IpnaForm::Tangent ? "/tan-cone" : "/diff-cone"), m,
                    npy(dir + "/x.npy"), npy(dir + "/baseline.npy"), r);
    }
    ++compared;
  }
  EXPECT_GE(compared, 4);
}

// Boxes of one cone geometry in groups (the CUDA backend's default, up to 8 a pass): a 4x4 grid, whose inner boxes
// share their geometry, both forms on cones; every box as when it runs alone on the same device (on the CPU:
// TangentForm.BoxGroupsOnTheReferenceModelsGiveEveryBoxWhatItGetsAlone). cuDNN may choose other algorithms for the
// larger batches: the yardstick is float32's own error on the CPU, with a floor of 1e-5; a box reading another's
// state is off by order 1.
TEST(CudaDevice, BoxGroupsGiveEveryBoxWhatItGetsAlone) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device: box groups on the GPU run in bench/gpu_check.sh on a GPU";
  if (!fixtures_present()) return;
  int compared = 0;
  for (const char* name : {"vgg_avg", "mbv2_block", "tiny224"}) {
    const std::string dir = fixture_dir() + "/" + name;
    auto meta = read_json(dir + "/meta.json");
    SplitModel m = load_split_model(dir + "/model.onnx", meta["split"].get<std::string>());
    const auto x = npy(dir + "/x.npy"), x0 = npy(dir + "/baseline.npy");
    const int H = static_cast<int>(m.input_shape().height()), W = static_cast<int>(m.input_shape().width());
    AttributionRequest r;
    r.target_class = meta["class"];
    r.steps = 8;
    r.boxes = grid_boxes(H, W, 4, 4);
    for (IpnaForm form : {IpnaForm::Tangent, IpnaForm::Difference}) {
      r.ipna_form = form;
      r.box_batch = 1;
      const AttributionResult ref = Attributor(m, Precision::F64, "cpu").run(x, x0, r);
      const AttributionResult c32 = Attributor(m, Precision::F32, "cpu").run(x, x0, r);
      Attributor gpu(m, Precision::F32, "cuda:0/fp32");
      const AttributionResult alone = gpu.run(x, x0, r);
      r.box_batch = 0;
      const AttributionResult grouped = gpu.run(x, x0, r);
      EXPECT_EQ(alone.patch_passes, 16) << name;
      EXPECT_LT(grouped.patch_passes, 12) << name;
      for (size_t b = 0; b < r.boxes.size(); ++b) {
        const double e32 = rel_err(c32.ipna[b], ref.ipna[b]);
        EXPECT_LT(rel_err(grouped.ipna[b], alone.ipna[b]), std::max(4 * e32, 1e-5))
            << name << (form == IpnaForm::Tangent ? " tangent" : " difference") << " box " << b;
        ++compared;
      }
    }
  }
  EXPECT_EQ(compared, 3 * 2 * 16);
}

// Attributor::refine on the GPU (the new points only, conductance and the difference form on cones from
// the kept split samples, chunks of 5 points) equals the whole run at 32 steps on the same device, in
// strict fp32 (the backend has no float64). Only the order of the float32 sums differs, so 1e-5 relative;
// a wrong refinement (half the coarse difference-form sums added, say) is off by tens of percent.
TEST(CudaDevice, RefiningEqualsTheWholeRun) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device: refinement on the GPU runs in bench/gpu_check.sh on a GPU";
  if (!fixtures_present()) return;
  const std::string dir = fixture_dir() + "/tiny224";
  auto meta = read_json(dir + "/meta.json");
  SplitModel m = load_split_model(dir + "/model.onnx", meta["split"].get<std::string>());
  const auto x = npy(dir + "/x.npy"), x0 = npy(dir + "/baseline.npy");
  Attributor a(m, Precision::F32, "cuda:0/fp32");
  AttributionRequest r;
  r.target_class = meta["class"];
  r.integrated_gradients = r.conductance = r.keep_split_samples = true;
  for (auto& b : meta["boxes"]) r.boxes.push_back({b[0], b[1], b[2], b[3]});
  r.chunk = 5;
  for (IpnaForm form : {IpnaForm::Tangent, IpnaForm::Difference}) {
    const char* what = form == IpnaForm::Tangent ? "tangent" : "difference";
    r.ipna_form = form;
    r.steps = 16;
    const AttributionResult coarse = a.run(x, x0, r);
    r.steps = 32;
    const AttributionResult fine = a.refine(x, x0, r, coarse), whole = a.run(x, x0, r);
    EXPECT_EQ(fine.evaluations, 16) << what;
    std::printf("refine %-10s IG %.2e  conductance %.2e", what, rel_err(fine.ig, whole.ig),
                rel_err(fine.conductance, whole.conductance));
    EXPECT_LT(rel_err(fine.ig, whole.ig), 1e-5) << what;
    EXPECT_LT(rel_err(fine.conductance, whole.conductance), 1e-5) << what;
    for (size_t b = 0; b < r.boxes.size(); ++b) {
      std::printf("  box %zu %.2e", b, rel_err(fine.ipna[b], whole.ipna[b]));
      EXPECT_LT(rel_err(fine.ipna[b], whole.ipna[b]), 1e-5) << what << b;
    }
    std::printf("\n");
  }
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
  // Another request on the same capped engine: the buffers IG left (its backward arena) must not
  // push IPNA + conductance over the cap (they did on ResNet-152 with a 4 GiB cap, 2026-11-27).
  AttributionRequest p = r;
  p.integrated_gradients = false;
  p.conductance = true;
  p.boxes = {{0, 0, 112, 112}, {56, 74, 114, 222}};
  AttributionResult c = big.run(x, x0, p), d = small.run(x, x0, p);
  EXPECT_LT(rel_err(d.conductance, c.conductance), 1e-4);
  for (size_t i = 0; i < p.boxes.size(); ++i) EXPECT_LT(rel_err(d.ipna[i], c.ipna[i]), 1e-4) << i;
  // And back: IG again equals the first capped run.
  EXPECT_LT(rel_err(small.run(x, x0, r).ig, b.ig), 1e-6);
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
