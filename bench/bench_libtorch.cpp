// The LibTorch CPU baseline: the same IG and IPNA + conductance as ipna-fast,
// batched over all steps the way ../shared/anchors/torch_anchor.py does on the
// GPU, on TorchScript exports of the same weights. Parameters do not require
// gradients, so autograd computes input gradients only, like our engine.
#include <benchmark/benchmark.h>
#include <torch/script.h>
#include <torch/torch.h>

#include "bench/bench_case.h"
#include "engine/imagenet.h"
#include "loaders/npy.h"

using namespace ipna;

namespace {
torch::jit::Module load(const std::string& path) {
  auto m = torch::jit::load(path);
  m.eval();
  for (auto p : m.parameters()) p.set_requires_grad(false);
  return m;
}
torch::Tensor fwd(torch::jit::Module& m, const torch::Tensor& x) { return m.forward({x}).toTensor(); }
}  // namespace

static void run_case(benchmark::State& state, bench::Case c) {
  torch::set_num_threads(2);
  const std::string dir = bench::models_dir() + "/" + c.model;
  auto f1 = load(dir + "/model.f1.pt"), f2 = load(dir + "/model.f2.pt");
  NpyArray xa = read_npy(dir + "/x.npy");
  std::vector<float> xf(xa.data.begin(), xa.data.end());
  std::vector<int64_t> shape{1};
  shape.insert(shape.end(), xa.shape.begin(), xa.shape.end());
  torch::Tensor x = torch::from_blob(xf.data(), shape, torch::kFloat32).clone();
  torch::Tensor x0 = torch::zeros_like(x);
  if (shape[1] == 3) {
    auto mean = torch::tensor(kImagenetMean, torch::kFloat32).view({1, 3, 1, 1});
    auto sd = torch::tensor(kImagenetStd, torch::kFloat32).view({1, 3, 1, 1});
    x0 = (x0 - mean) / sd;
  }
  const int m = c.steps;
  const int64_t classes = fwd(f2, fwd(f1, x)).size(1);
  const int64_t y = c.cls % classes;
  const auto d = (x - x0) / m;
  auto once = [&] {
    if (c.what == "ig") {
      auto alphas = torch::arange(1, m + 1, torch::kFloat32).view({-1, 1, 1, 1});
      auto X = (x0 + alphas * d).requires_grad_(true);
      auto p = torch::softmax(fwd(f2, fwd(f1, X)), 1).select(1, y).sum();
      auto g = torch::autograd::grad({p}, {X})[0];
      auto ig = g.sum(0, true) * d;
      benchmark::DoNotOptimize(ig.data_ptr());
    } else {
      auto mask = torch::zeros_like(x);
      mask.slice(2, c.box[0], c.box[2]).slice(3, c.box[1], c.box[3]).fill_(1);
      auto i = torch::arange(0, m, torch::kFloat32).view({-1, 1, 1, 1});
      auto Xprev = x0 + i * d, Xcur = Xprev + d, Xpart = Xprev + d * mask;
      torch::Tensor G;
      {
        torch::NoGradGuard ng;
        G = fwd(f1, torch::cat({Xprev, Xcur, Xpart}));
      }
      auto Gp = G.slice(0, 0, m), Gc = G.slice(0, m, 2 * m), Gq = G.slice(0, 2 * m, 3 * m);
      auto t = Gc.detach().requires_grad_(true);
      auto p = torch::softmax(fwd(f2, t), 1).select(1, y).sum();
      auto g = torch::autograd::grad({p}, {t})[0];
      auto ipna = (g * (Gq - Gp)).sum(0), cond = (g * (Gc - Gp)).sum(0);
      benchmark::DoNotOptimize(ipna.data_ptr());
      benchmark::DoNotOptimize(cond.data_ptr());
    }
  };
  once();  // warm-up: first-touch of buffers and thread start, as in bench_engine
  for (auto _ : state) once();
}

int main(int argc, char** argv) {
  for (const auto& c : bench::cases()) {
    if (c.model == "resnet152_224") continue;  // 256 steps in one batch would not fit the 24 GB machine
    benchmark::RegisterBenchmark((c.model + "/" + c.what + "/" + std::to_string(c.steps)).c_str(), run_case, c)
        ->Unit(benchmark::kMillisecond)
        ->Iterations(3)
        ->UseRealTime();
  }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  return 0;
}
