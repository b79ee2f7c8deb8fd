// What the CPU backend's NCHW activations cost around oneDNN's float32
// convolutions: each 3x3 convolution of ResNet-18 at 112x112 (batch 32, the
// benchmark's 32 steps), forward and backward data, timed with the layout
// oneDNN picks when asked for any (what engine/cpu/onednn_conv.cpp asks), with
// NHWC forced and (forward) with nChw16c forced, beside the reorders between our
// NCHW and the picked layouts that the backend's staging runs on every call
// (input and output). The questions it answers: would an engine that kept
// oneDNN's layout between convolutions lose kernel speed, how much of the
// staging would it save, and which forward kernel is fastest per plane size?
//   build/bench/bench_onednn_layouts [--repeats 20] [--batch 32]
#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <oneapi/dnnl/dnnl.hpp>
#include <vector>

namespace {
using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

struct Shape {
  int cin, hw, stride, cout;
};

double median_ms(int repeats, const std::function<void()>& run, dnnl::stream& s) {
  run();  // warm: first touch of the buffers, jitted code
  s.wait();
  std::vector<double> t;
  for (int r = 0; r < repeats; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    run();
    s.wait();
    t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::nth_element(t.begin(), t.begin() + t.size() / 2, t.end());
  return t[t.size() / 2];
}

struct Timing {
  std::string forward_impl, backward_impl;
  double forward = 0, backward = 0, staging = 0;  // staging: the four NCHW <-> picked-layout reorders
};

Timing time_conv(dnnl::engine& eng, dnnl::stream& s, const Shape& k, int n, tag layout, int repeats) {
  const int ho = (k.hw + 2 - 3) / k.stride + 1;
  const memory::dims src{n, k.cin, k.hw, k.hw}, dst{n, k.cout, ho, ho}, w{k.cout, k.cin, 3, 3};
  const memory::desc sd(src, dt::f32, layout), dd(dst, dt::f32, layout), wd(w, dt::f32, tag::any);
  const auto fwd_desc =
      dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, sd, wd,
                                      dd, {k.stride, k.stride}, {1, 1}, {1, 1});
  const dnnl::convolution_forward::primitive_desc fpd(fwd_desc, eng);
  // The backward-data primitive needs a training forward's description as its hint.
  const auto hint_desc =
      dnnl::convolution_forward::desc(dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, sd, wd,
                                      dd, {k.stride, k.stride}, {1, 1}, {1, 1});
  const dnnl::convolution_forward::primitive_desc hint(hint_desc, eng);
  const auto bwd_desc = dnnl::convolution_backward_data::desc(dnnl::algorithm::convolution_direct, sd, wd, dd,
                                                              {k.stride, k.stride}, {1, 1}, {1, 1});
  const dnnl::convolution_backward_data::primitive_desc bpd(bwd_desc, eng, hint);

  memory x(fpd.src_desc(), eng), wf(fpd.weights_desc(), eng), y(fpd.dst_desc(), eng);
  memory dx(bpd.diff_src_desc(), eng), wb(bpd.weights_desc(), eng), dy(bpd.diff_dst_desc(), eng);
  for (memory* m : {&x, &wf, &y, &dx, &wb, &dy}) {  // finite data: timings of denormals or NaNs mislead
    auto* p = static_cast<float*>(m->get_data_handle());
    std::fill(p, p + m->get_desc().get_size() / sizeof(float), 0.5f);
  }
  dnnl::convolution_forward fwd(fpd);
  dnnl::convolution_backward_data bwd(bpd);
  Timing t;
  t.forward_impl = fpd.impl_info_str();
  t.backward_impl = bpd.impl_info_str();
  t.forward = median_ms(
      repeats,
      [&] {
        fwd.execute(s, {{DNNL_ARG_SRC, x}, {DNNL_ARG_WEIGHTS, wf}, {DNNL_ARG_DST, y}});
      },
      s);
  t.backward = median_ms(
      repeats,
      [&] {
        bwd.execute(s, {{DNNL_ARG_DIFF_DST, dy}, {DNNL_ARG_WEIGHTS, wb}, {DNNL_ARG_DIFF_SRC, dx}});
      },
      s);
  // The staging of each call: NCHW into the source layout, the result back to NCHW.
  memory x_nchw({src, dt::f32, tag::nchw}, eng), y_nchw({dst, dt::f32, tag::nchw}, eng);
  std::vector<std::pair<memory, memory>> moves;
  if (fpd.src_desc() != x_nchw.get_desc()) moves.push_back({x_nchw, x});
  if (fpd.dst_desc() != y_nchw.get_desc()) moves.push_back({y, y_nchw});
  if (bpd.diff_dst_desc() != y_nchw.get_desc()) moves.push_back({y_nchw, dy});
  if (bpd.diff_src_desc() != x_nchw.get_desc()) moves.push_back({dx, x_nchw});
  for (auto& [from, to] : moves) {
    auto* p = static_cast<float*>(from.get_data_handle());
    std::fill(p, p + from.get_desc().get_size() / sizeof(float), 0.5f);
    dnnl::reorder r(from, to);
    t.staging += median_ms(
        repeats, [&] { r.execute(s, from, to); }, s);
  }
  return t;
}
}  // namespace

int main(int argc, char** argv) {
  CLI::App app("oneDNN float32 convolutions: the picked layout against NHWC, and the cost of staging NCHW");
  int repeats = 20, batch = 32;
  app.add_option("--repeats", repeats, "timed runs per measurement (medians)")->check(CLI::PositiveNumber);
  app.add_option("--batch", batch, "samples per convolution (the steps of a chunk)")->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);

  dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  dnnl::stream s(eng);
  // ResNet-18's 3x3 convolutions at 112x112 input, after the stem and max pool.
  const std::vector<Shape> shapes = {{64, 28, 1, 64},  {64, 28, 2, 128}, {128, 14, 1, 128}, {128, 14, 2, 256},
                                     {256, 7, 1, 256}, {256, 7, 2, 512}, {512, 4, 1, 512}};
  time_conv(eng, s, shapes[0], batch, tag::any, 3);  // untimed: the process's first convolutions run slow
  std::printf("float32, batch %d, medians of %d runs (ms)\n\n", batch, repeats);
  std::printf(
      "| conv | picked forward | ms | NHWC forward | ms | nChw16c forward | ms | picked backward | ms | NHWC backward "
      "| ms | "
      "staging the picked layout ms |\n|---|---|---:|---|---:|---|---:|---|---:|---|---:|---:|\n");
  for (const Shape& k : shapes) {
    const Timing any = time_conv(eng, s, k, batch, tag::any, repeats);
    const Timing nhwc = time_conv(eng, s, k, batch, tag::nhwc, repeats);
    const Timing blocked = time_conv(eng, s, k, batch, tag::nChw16c, repeats);
    std::printf("| %dx%dx%d s%d -> %d | %s | %.2f | %s | %.2f | %s | %.2f | %s | %.2f | %s | %.2f | %.2f |\n", k.cin,
                k.hw, k.hw, k.stride, k.cout, any.forward_impl.c_str(), any.forward, nhwc.forward_impl.c_str(),
                nhwc.forward, blocked.forward_impl.c_str(), blocked.forward, any.backward_impl.c_str(), any.backward,
                nhwc.backward_impl.c_str(), nhwc.backward, any.staging);
  }
  return 0;
}
