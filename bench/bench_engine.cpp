// ipna-fast's CPU backend on the benchmark cases (float32, the engine's own
// chunk choice). Peak memory is taken per process by bench/run_cpu_bench.py.
#include <benchmark/benchmark.h>

#include <cmath>

#include "bench/bench_case.h"
#include "engine/attribution.h"
#include "loaders/npy.h"
#include "loaders/onnx_loader.h"

using namespace ipna;

static void run_case(benchmark::State& state, bench::Case c) {
  const std::string dir = bench::models_dir() + "/" + c.model;
  SplitModel model = load_split_model(dir + "/model.onnx", c.split);
  auto x = read_npy(dir + "/x.npy").data;
  auto x0 = black_baseline(model.input_shape());
  Attributor engine(model, Precision::F32, bench::device());
  AttributionRequest r;
  r.target_class = c.cls % model.num_classes();
  r.target = TargetKind::Probability;
  r.steps = c.steps;
  r.integrated_gradients = c.what == "ig";
  r.conductance = c.what == "ipna_cond";
  if (c.what == "ipna_cond") r.boxes = {{c.box[0], c.box[1], c.box[2], c.box[3]}};
  // Warm-up (first touch of buffers, thread start), as in bench_libtorch; ResNet-152 runs once for its memory.
  if (c.model != "resnet152_224" || bench::device().rfind("cuda", 0) == 0) engine.run(x, x0, r);
  for (auto _ : state) {
    AttributionResult res = engine.run(x, x0, r);
    benchmark::DoNotOptimize(res.f_input);
    state.counters["chunk"] = res.chunk;
    state.counters["workspace_MiB"] = res.workspace_bytes / 1048576.0;
    // Completeness gap relative to |F(x) - F(x')|: what a precision costs the numbers.
    const double df = std::abs(res.f_input - res.f_baseline);
    state.counters["gap_rel"] = (c.what == "ig" ? std::abs(res.ig_gap) : std::abs(res.conductance_gap)) / df;
  }
}

int main(int argc, char** argv) {
  const bool gpu = bench::device().rfind("cuda", 0) == 0;
  for (const auto& c : bench::cases()) {
    // On the CPU, ResNet-152 is timed for IG only (a minute per run).
    if (!gpu && c.model == "resnet152_224" && c.what != "ig") continue;
    benchmark::RegisterBenchmark((c.model + "/" + c.what + "/" + std::to_string(c.steps)).c_str(), run_case, c)
        ->Unit(benchmark::kMillisecond)
        ->Iterations(c.model == "resnet152_224" && !gpu ? 1 : 3)
        ->UseRealTime();
  }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  return 0;
}
