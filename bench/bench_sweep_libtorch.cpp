// The LibTorch CPU baseline of the sweep benchmark (bench/sweep_bench.py): per
// image of an IDX dataset, IG (one batch of m points) and conductance + IPNA of
// every box of an RxC grid in the difference form (one batch of f1 over the
// previous, current and patched points, one backward of f2), the way
// ../shared/anchors/torch_anchor.py batches a case; TorchScript halves of the
// same weights. Prints items/s as JSON.
#include <torch/script.h>
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <string>

#include "engine/attribution.h"
#include "loaders/idx.h"

int main(int argc, char** argv) {
  if (argc != 7) {
    std::fprintf(stderr, "usage: %s F1.pt F2.pt IDX_DIR IMAGES STEPS GRID_ROWS(=COLS)\n", argv[0]);
    return 2;
  }
  torch::set_num_threads(2);
  auto load = [](const char* p) {
    auto m = torch::jit::load(p);
    m.eval();
    for (auto q : m.parameters()) q.set_requires_grad(false);
    return m;
  };
  auto f1 = load(argv[1]), f2 = load(argv[2]);
  const ipna::IdxDataset ds = ipna::read_idx_dataset(argv[3], "test");
  const int n = std::stoi(argv[4]), m = std::stoi(argv[5]), g = std::stoi(argv[6]);
  const int H = ds.images.rows, W = ds.images.cols;
  const auto boxes = ipna::grid_boxes(H, W, g, g);
  auto fwd = [](torch::jit::Module& mod, const torch::Tensor& x) { return mod.forward({x}).toTensor(); };
  double checksum = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < n; ++i) {
    std::vector<float> px(H * W);
    for (int j = 0; j < H * W; ++j) px[j] = ds.images.pixels[static_cast<size_t>(i) * H * W + j] / 255.0f;
    const torch::Tensor x = torch::from_blob(px.data(), {1, 1, H, W}, torch::kFloat32).clone();
    const torch::Tensor x0 = torch::zeros_like(x), d = (x - x0) / m;
    const int64_t y = ds.labels[i];
    // IG: gradients at x_k = x0 + k d, k = 1..m.
    auto alphas = torch::arange(1, m + 1, torch::kFloat32).view({-1, 1, 1, 1});
    auto X = (x0 + alphas * d).requires_grad_(true);
    auto p = torch::softmax(fwd(f2, fwd(f1, X)), 1).select(1, y).sum();
    auto ig = (torch::autograd::grad({p}, {X})[0].sum(0, true) * d);
    // Conductance and IPNA: h at x_{k-1}, x_k and x_{k-1} + d 1_S for every box S.
    auto k = torch::arange(0, m, torch::kFloat32).view({-1, 1, 1, 1});
    auto Xprev = x0 + k * d, Xcur = Xprev + d;
    std::vector<torch::Tensor> parts{Xprev, Xcur};
    for (const auto& b : boxes) {
      auto mask = torch::zeros_like(x);
      mask.slice(2, b.r0, b.r1).slice(3, b.c0, b.c1).fill_(1);
      parts.push_back(Xprev + d * mask);
    }
    torch::Tensor G;
    {
      torch::NoGradGuard ng;
      G = fwd(f1, torch::cat(parts));
    }
    auto Gp = G.slice(0, 0, m), Gc = G.slice(0, m, 2 * m);
    auto t = Gc.detach().requires_grad_(true);
    auto q = torch::softmax(fwd(f2, t), 1).select(1, y).sum();
    auto gr = torch::autograd::grad({q}, {t})[0];
    auto cond = (gr * (Gc - Gp)).sum(0);
    checksum += ig.sum().item<double>() + cond.sum().item<double>();
    for (size_t b = 0; b < boxes.size(); ++b)
      checksum += (gr * (G.slice(0, (2 + b) * m, (3 + b) * m) - Gp)).sum(0).sum().item<double>();
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("{\"items\": %d, \"seconds\": %.6f, \"items_per_second\": %.6f, \"checksum\": %.9g}\n", n, s, n / s,
              checksum);
  return 0;
}
