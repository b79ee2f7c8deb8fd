// Linear layers on the CPU, float32: OpenBLAS (cpu::blas_linear_*, the float64 path
// and float32's before oneDNN: a single-threaded GEMM per thread's rows) against
// oneDNN's two ways of doing the same product, its sgemm and its inner-product
// primitive (created once, weights reordered once, as the convolutions do), forward
// and input gradient, on the classifier shapes of the benchmark models. float32 uses
// what measured fastest (bench/results/linear-cpu.md): the inner product forward,
// the sgemm for the input gradient (engine/cpu/onednn_linear.h).
#include <benchmark/benchmark.h>

#include <oneapi/dnnl/dnnl.hpp>
#include <random>
#include <string>
#include <vector>

#include "engine/cpu/cpu_backend.h"

namespace {

struct Shape {
  const char* name;
  int in, out, n;
};
// The classifiers of the cases in bench/run_cpu_bench.py at their chunk sizes.
const Shape kShapes[] = {{"resnet18_fc", 512, 1000, 32},
                         {"efficientnet_lite0_fc", 1280, 1000, 64},
                         {"lenet_fc1", 256, 120, 256},
                         {"lenet_fc3", 84, 10, 256}};

std::vector<float> random_vector(size_t count, unsigned seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.f, 1.f);
  std::vector<float> v(count);
  for (float& x : v) x = dist(gen);
  return v;
}

enum class Path { Blas, OnednnSgemm, OnednnInnerProduct };
const char* path_name(Path p) {
  return p == Path::Blas ? "openblas" : p == Path::OnednnSgemm ? "onednn_sgemm" : "onednn_inner_product";
}

void run(benchmark::State& state, Shape s, Path path, bool backward) {
  const auto w = random_vector(static_cast<size_t>(s.out) * s.in, 1), b = random_vector(s.out, 2);
  const auto x = random_vector(static_cast<size_t>(s.n) * s.in, 3), dy = random_vector(static_cast<size_t>(s.n) * s.out, 4);
  std::vector<float> y(static_cast<size_t>(s.n) * s.out), dx(static_cast<size_t>(s.n) * s.in);
  ipna::CpuBackend<float> cpu;  // sets OpenBLAS to one thread per call, as the backend runs it
  using dnnl::memory;
  dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  dnnl::stream strm(eng);
  const memory::desc src_plain({s.n, s.in}, memory::data_type::f32, memory::format_tag::nc),
      dst_plain({s.n, s.out}, memory::data_type::f32, memory::format_tag::nc),
      w_any({s.out, s.in}, memory::data_type::f32, memory::format_tag::any),
      b_desc({s.out}, memory::data_type::f32, memory::format_tag::x);
  const dnnl::inner_product_forward::primitive_desc fwd_pd(
      {dnnl::prop_kind::forward_training, src_plain, w_any, b_desc, dst_plain}, eng);
  const dnnl::inner_product_backward_data::primitive_desc bwd_pd({src_plain, w_any, dst_plain}, eng, fwd_pd);
  memory w_plain({{s.out, s.in}, memory::data_type::f32, memory::format_tag::oi}, eng, const_cast<float*>(w.data()));
  memory w_fwd(fwd_pd.weights_desc(), eng), w_bwd(bwd_pd.weights_desc(), eng);
  dnnl::reorder(w_plain, w_fwd).execute(strm, w_plain, w_fwd);
  dnnl::reorder(w_plain, w_bwd).execute(strm, w_plain, w_bwd);
  const dnnl::inner_product_forward fwd(fwd_pd);
  const dnnl::inner_product_backward_data bwd(bwd_pd);
  memory m_x(src_plain, eng, const_cast<float*>(x.data())), m_y(dst_plain, eng, y.data()),
      m_dy(dst_plain, eng, const_cast<float*>(dy.data())), m_dx(src_plain, eng, dx.data()),
      m_b(b_desc, eng, const_cast<float*>(b.data()));

  auto once = [&] {
    if (path == Path::Blas) {
      if (backward)
        ipna::cpu::blas_linear_backward_data(s.in, s.out, w.data(), dy.data(), dx.data(), s.n, false);
      else
        ipna::cpu::blas_linear_forward(s.in, s.out, w.data(), b.data(), x.data(), y.data(), s.n);
    } else if (path == Path::OnednnSgemm) {
      // Row-major: y = x W^T (+ bias afterwards), dx = dy W.
      if (backward) {
        dnnl::sgemm('N', 'N', s.n, s.in, s.out, 1.f, dy.data(), s.out, w.data(), s.in, 0.f, dx.data(), s.in);
      } else {
        dnnl::sgemm('N', 'T', s.n, s.out, s.in, 1.f, x.data(), s.in, w.data(), s.in, 0.f, y.data(), s.out);
        for (int r = 0; r < s.n; ++r)
          for (int o = 0; o < s.out; ++o) y[static_cast<size_t>(r) * s.out + o] += b[o];
      }
    } else {
      if (backward)
        bwd.execute(strm, {{DNNL_ARG_DIFF_DST, m_dy}, {DNNL_ARG_WEIGHTS, w_bwd}, {DNNL_ARG_DIFF_SRC, m_dx}});
      else
        fwd.execute(strm, {{DNNL_ARG_SRC, m_x}, {DNNL_ARG_WEIGHTS, w_fwd}, {DNNL_ARG_BIAS, m_b}, {DNNL_ARG_DST, m_y}});
      strm.wait();
    }
  };
  once();
  for (auto _ : state) {
    once();
    benchmark::DoNotOptimize(y.data());
    benchmark::DoNotOptimize(dx.data());
  }
  state.counters["gflops"] = benchmark::Counter(2.0 * s.n * s.in * s.out, benchmark::Counter::kIsIterationInvariantRate,
                                                benchmark::Counter::kIs1000);
}

}  // namespace

int main(int argc, char** argv) {
  for (const Shape& s : kShapes)
    for (bool backward : {false, true})
      for (Path p : {Path::Blas, Path::OnednnSgemm, Path::OnednnInnerProduct})
        benchmark::RegisterBenchmark(
            (std::string(s.name) + (backward ? "/backward_data/" : "/forward/") + path_name(p)).c_str(),
            [=](benchmark::State& st) { run(st, s, p, backward); })
            ->Unit(benchmark::kMicrosecond)
            ->UseRealTime();
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  return 0;
}
