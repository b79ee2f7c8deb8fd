#include "engine/cpu/onednn_conv.h"

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/cpu/onednn_per_thread.h"
#include "engine/error.h"

namespace ipna::cpu {

namespace {
using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

// Everything a primitive depends on: the geometry, the batch and the variant.
enum Variant { kForward, kForwardBias, kBackwardData };
using ShapeKey = std::array<int, 23>;
ShapeKey shape_key(const ConvDesc& d, int n, Variant v) {
  const Window& w = d.win;
  return {d.cin, d.h,  d.w,  d.cout,    d.ho,       d.wo,         d.groups,    w.kh,
          w.kw,  w.sh, w.sw, w.pad_top, w.pad_left, w.pad_bottom, w.pad_right, w.dh,
          w.dw,  n,    v,    d.in_nhwc, d.out_nhwc, d.in_bf16,    d.out_bf16};
}

tag layout(bool nhwc) { return nhwc ? tag::nhwc : tag::nchw; }
dt stored(bool bf16) { return bf16 ? dt::bf16 : dt::f32; }

struct Dims {
  memory::dims src, weights, bias, dst, strides, dilates, pad_l, pad_r;
};
Dims dims_of(const ConvDesc& d, int n) {
  const Window& w = d.win;
  Dims r;
  r.src = {n, d.cin, d.h, d.w};
  r.dst = {n, d.cout, d.ho, d.wo};
  r.weights = d.groups > 1 ? memory::dims{d.groups, d.cout / d.groups, d.cin / d.groups, w.kh, w.kw}
                           : memory::dims{d.cout, d.cin, w.kh, w.kw};
  r.bias = {d.cout};
  r.strides = {w.sh, w.sw};
  r.dilates = {w.dh - 1, w.dw - 1};  // oneDNN counts the gaps
  r.pad_l = {w.pad_top, w.pad_left};
  // Padding past the last window is dropped: oneDNN wants exactly what the output size needs.
  const int need_b = (d.ho - 1) * w.sh + (w.kh - 1) * w.dh + 1 - d.h - w.pad_top;
  const int need_r = (d.wo - 1) * w.sw + (w.kw - 1) * w.dw + 1 - d.w - w.pad_left;
  r.pad_r = {std::max(0, std::min(w.pad_bottom, need_b)), std::max(0, std::min(w.pad_right, need_r))};
  return r;
}

std::string geometry(const ConvDesc& d) {
  return std::to_string(d.cin) + "x" + std::to_string(d.h) + "x" + std::to_string(d.w) + " -> " +
         std::to_string(d.cout) + "x" + std::to_string(d.ho) + "x" + std::to_string(d.wo);
}
}  // namespace

struct OnednnConvolutions::State {
  explicit State(CpuMath m) : math(m), in(m == CpuMath::Bf16 ? dt::bf16 : dt::f32) {}
  CpuMath math;
  dt in;  // what convolutions read: f32, or bf16
  dnnl::engine eng{dnnl::engine::kind::cpu, 0};
  struct Forward {
    dnnl::convolution_forward::primitive_desc pd;
    dnnl::convolution_forward prim;
  };
  struct Backward {
    dnnl::convolution_backward_data::primitive_desc pd;
    dnnl::convolution_backward_data prim;
  };
  // Shared by the calling threads (IPNA's patch lanes call at once), under `cache_mutex`: a
  // primitive may run on several threads at once with different memory.
  std::mutex cache_mutex;
  std::map<ShapeKey, Forward> forward;
  std::map<ShapeKey, Backward> backward;
  // Weights in the layout a primitive wants, per (buffer, layout).
  std::map<std::pair<const void*, std::string>, memory> weights;
  struct Buffer {
    std::unique_ptr<char, decltype(&std::free)> data{nullptr, &std::free};
    size_t bytes = 0;
  };
  // What each calling thread has for itself: a stream, and buffers that only grow (a fresh
  // allocation per call would be a fresh mapping of pages, zeroed by the kernel on first touch,
  // every convolution).
  struct PerThread {
    dnnl::stream strm;
    // Activations in the layout a primitive wants: our NCHW memory itself when it is the same,
    // else a buffer per role that the call reorders into or out of.
    std::map<int, Buffer> staging;
    // One scratchpad for every primitive the thread runs (one at a time): oneDNN's default gives
    // each primitive its own, so memory would grow with every cached shape, and the cone windows
    // of IPNA's patch passes make many.
    Buffer scratchpad;
    std::vector<float> scratch;
  };
  OnednnPerThread<PerThread> per_thread;
  PerThread& mine() { return per_thread.mine(eng); }
  static dnnl::primitive_attr user_scratchpad() {
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    return attr;
  }
  memory scratchpad_for(PerThread& t, const memory::desc& want) {
    grow(t.scratchpad, std::max<size_t>(want.get_size(), 1));
    return memory(want, eng, t.scratchpad.data.get());
  }

  static void grow(Buffer& b, size_t need) {
    if (b.bytes >= need) return;
    const size_t bytes = (need + 63) / 64 * 64;
    b.data.reset(static_cast<char*>(std::aligned_alloc(64, bytes)));
    if (!b.data) throw Error("out of memory for a convolution's buffers (" + std::to_string(bytes) + " bytes)");
    b.bytes = bytes;
  }

  // to = from in to's layout, on the thread's stream and scratchpad (oneDNN's own scratchpad is
  // shared between primitives, unsafe when they run at once).
  void reorder(PerThread& t, const memory& from, const memory& to, dnnl::primitive_attr attr = {}) {
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    const dnnl::reorder::primitive_desc pd(from, to, attr);
    dnnl::reorder(pd).execute(
        t.strm,
        {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}, {DNNL_ARG_SCRATCHPAD, scratchpad_for(t, pd.scratchpad_desc())}});
  }

  memory staged(PerThread& t, int role, memory plain, const memory::desc& want, bool copy_in) {
    if (plain.get_desc() == want) return plain;
    Buffer& b = t.staging[role];
    grow(b, want.get_size());
    memory staged_memory(want, eng, b.data.get());
    if (copy_in) reorder(t, plain, staged_memory);
    return staged_memory;
  }

  dnnl::convolution_forward::primitive_desc forward_pd(const ConvDesc& d, int n, bool with_bias, bool training,
                                                       dnnl::algorithm alg) {
    const Dims k = dims_of(d, n);
    const memory::desc src(k.src, in, tag::any), dst(k.dst, stored(d.out_bf16), tag::any), w(k.weights, in, tag::any),
        b(k.bias, dt::f32, tag::x);
    const auto prop = training ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference;
    const auto desc =
        with_bias ? dnnl::convolution_forward::desc(prop, alg, src, w, b, dst, k.strides, k.dilates, k.pad_l, k.pad_r)
                  : dnnl::convolution_forward::desc(prop, alg, src, w, dst, k.strides, k.dilates, k.pad_l, k.pad_r);
    return dnnl::convolution_forward::primitive_desc(desc, user_scratchpad(), eng);
  }

  // With CpuMath::Winograd, F(4x4, 3x3) where oneDNN implements it (3x3, stride 1, undilated,
  // dense, float32 on AVX-512): 2.25x fewer multiplications; its error is measured against
  // float64 in tests/test_cuda.cpp. Elsewhere, or where oneDNN refuses the shape, direct.
  std::vector<dnnl::algorithm> algorithms(const ConvDesc& d) const {
    const Window& w = d.win;
    const bool winograd = math == CpuMath::Winograd && d.groups == 1 && w.kh == 3 && w.kw == 3 && w.sh == 1 &&
                          w.sw == 1 && w.dh == 1 && w.dw == 1;
    if (winograd) return {dnnl::algorithm::convolution_winograd, dnnl::algorithm::convolution_direct};
    return {dnnl::algorithm::convolution_direct};
  }
  // The weights of buffer `source` (OIHW) in the layout `want` of the conv d, made once.
  memory weights_for(PerThread& t, const float* source, const memory::desc& want, const ConvDesc& d) {
    std::lock_guard<std::mutex> lock(cache_mutex);
    const std::string layout(reinterpret_cast<const char*>(&want.data), sizeof(want.data));
    auto key = std::make_pair(static_cast<const void*>(source), layout);
    auto it = weights.find(key);
    if (it != weights.end()) return it->second;
    const Dims k = dims_of(d, 1);
    memory plain({k.weights, dt::f32, d.groups > 1 ? tag::goihw : tag::oihw}, eng, const_cast<float*>(source));
    memory out(want, eng);
    reorder(t, plain, out);
    t.strm.wait();
    return weights.emplace(key, out).first->second;
  }

  // y = conv(x) (+ bias), through a cached primitive.
  void run_forward(const ConvDesc& d, const float* weight, const float* bias, const float* x, float* y, int n) {
    PerThread& t = mine();
    const ShapeKey key = shape_key(d, n, bias ? kForwardBias : kForward);
    Forward f;
    {
      std::lock_guard<std::mutex> lock(cache_mutex);
      auto it = forward.find(key);
      if (it == forward.end()) {
        dnnl::convolution_forward::primitive_desc pd;
        for (dnnl::algorithm alg : algorithms(d)) {
          try {
            pd = forward_pd(d, n, bias != nullptr, false, alg);
            break;
          } catch (const dnnl::error& e) {
            if (alg == dnnl::algorithm::convolution_direct || e.status != dnnl_unimplemented) throw;
          }
        }
        it = forward.emplace(key, Forward{pd, dnnl::convolution_forward(pd)}).first;
      }
      f = it->second;
    }
    const Dims k = dims_of(d, n);
    memory src({k.src, stored(d.in_bf16), layout(d.in_nhwc)}, eng, const_cast<float*>(x));
    memory dst({k.dst, stored(d.out_bf16), layout(d.out_nhwc)}, eng, y);
    memory src_in = staged(t, DNNL_ARG_SRC, src, f.pd.src_desc(), true);
    memory dst_out = staged(t, DNNL_ARG_DST, dst, f.pd.dst_desc(), false);
    const memory w = weights_for(t, weight, f.pd.weights_desc(), d);
    std::unordered_map<int, memory> args{{DNNL_ARG_SRC, src_in},
                                         {DNNL_ARG_WEIGHTS, w},
                                         {DNNL_ARG_DST, dst_out},
                                         {DNNL_ARG_SCRATCHPAD, scratchpad_for(t, f.pd.scratchpad_desc())}};
    if (bias) args.insert({DNNL_ARG_BIAS, memory({k.bias, dt::f32, tag::x}, eng, const_cast<float*>(bias))});
    f.prim.execute(t.strm, args);
    if (dst_out != dst) reorder(t, dst_out, dst);
    t.strm.wait();
  }

  // dx = (or +=) the input gradient. Where the primitive writes its own layout, the reorder back
  // to NCHW adds (a sum post-op); where it writes NCHW itself, a sum goes through scratch.
  void run_backward_data(const ConvDesc& d, const float* weight, const float* dy, float* dx, int n, bool accumulate) {
    PerThread& t = mine();
    const ShapeKey key = shape_key(d, n, kBackwardData);
    const Dims k = dims_of(d, n);
    Backward b;
    {
      std::lock_guard<std::mutex> lock(cache_mutex);
      auto it = backward.find(key);
      if (it == backward.end()) {
        // Gradients in NHWC on both sides are asked for in NHWC: the layout oneDNN picks for
        // them (nChw16c) would mean a reorder each way, which keeping them NHWC exists to spare.
        // Where oneDNN has only its reference code for that, it picks.
        const bool nhwc = d.in_nhwc && d.out_nhwc;
        dnnl::convolution_backward_data::primitive_desc pd;
        for (const tag want : nhwc ? std::vector<tag>{tag::nhwc, tag::any} : std::vector<tag>{tag::any}) {
          const memory::desc dsrc(k.src, dt::f32, want), ddst(k.dst, in, want), w(k.weights, in, tag::any);
          bool made = false;
          for (dnnl::algorithm alg : algorithms(d)) {
            try {
              const dnnl::convolution_backward_data::desc desc(alg, dsrc, w, ddst, k.strides, k.dilates, k.pad_l,
                                                               k.pad_r);
              pd = dnnl::convolution_backward_data::primitive_desc(desc, user_scratchpad(), eng,
                                                                   forward_pd(d, n, false, true, alg));
              made = true;
              break;
            } catch (const dnnl::error& e) {
              const bool last = alg == dnnl::algorithm::convolution_direct && want == tag::any;
              if (last || e.status != dnnl_unimplemented) throw;
            }
          }
          if (made && (want == tag::any || std::string(pd.impl_info_str()).find("ref") == std::string::npos)) break;
        }
        it = backward.emplace(key, Backward{pd, dnnl::convolution_backward_data(pd)}).first;
      }
      b = it->second;
    }
    memory ddst({k.dst, dt::f32, layout(d.out_nhwc)}, eng, const_cast<float*>(dy));
    memory dsrc({k.src, dt::f32, layout(d.in_nhwc)}, eng, dx);
    memory ddst_in = staged(t, DNNL_ARG_DIFF_DST, ddst, b.pd.diff_dst_desc(), true);
    memory dsrc_out = staged(t, DNNL_ARG_DIFF_SRC, dsrc, b.pd.diff_src_desc(), false);
    const bool via_scratch = accumulate && dsrc_out == dsrc;
    const size_t count = static_cast<size_t>(n) * d.cin * d.h * d.w;
    if (via_scratch) {
      if (t.scratch.size() < count) t.scratch.resize(count);
      dsrc_out = memory(dsrc.get_desc(), eng, t.scratch.data());
    }
    // The weights first: their first reorder may grow the scratchpad the primitive is then given.
    const memory w = weights_for(t, weight, b.pd.weights_desc(), d);
    b.prim.execute(t.strm, {{DNNL_ARG_DIFF_DST, ddst_in},
                            {DNNL_ARG_WEIGHTS, w},
                            {DNNL_ARG_SCRATCHPAD, scratchpad_for(t, b.pd.scratchpad_desc())},
                            {DNNL_ARG_DIFF_SRC, dsrc_out}});
    if (via_scratch) {
      t.strm.wait();
      const float* partial = t.scratch.data();
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < static_cast<int64_t>(count); ++i) dx[i] += partial[i];
    } else if (dsrc_out != dsrc) {
      dnnl::primitive_attr attr;
      if (accumulate) {
        dnnl::post_ops sum;
        sum.append_sum(1.0f);
        attr.set_post_ops(sum);
      }
      reorder(t, dsrc_out, dsrc, attr);
    }
    t.strm.wait();
  }
};

void OnednnConvolutions::transpose(int n, int c, int64_t plane, const float* src, float* dst, bool to_nhwc,
                                   bool nhwc_bf16, bool accumulate) {
  if (n <= 0) return;
  if (nhwc_bf16 && accumulate) throw Error("internal: a sum into or out of bf16 values");
  State::PerThread& t = s_->mine();
  const memory::dims dims{n, c, 1, plane};
  const memory from({dims, stored(nhwc_bf16 && !to_nhwc), layout(!to_nhwc)}, s_->eng, const_cast<float*>(src)),
      to({dims, stored(nhwc_bf16 && to_nhwc), layout(to_nhwc)}, s_->eng, dst);
  dnnl::primitive_attr attr;
  if (accumulate) {
    dnnl::post_ops sum;
    sum.append_sum(1.0f);
    attr.set_post_ops(sum);
  }
  try {
    s_->reorder(t, from, to, attr);
    t.strm.wait();
  } catch (const dnnl::error& e) {
    throw Error(std::string("oneDNN reorder between NCHW and NHWC: ") + e.what());
  }
}

OnednnConvolutions::OnednnConvolutions(CpuMath math) : s_(std::make_unique<State>(math)) {}
CpuMath OnednnConvolutions::math() const { return s_->math; }
OnednnConvolutions::~OnednnConvolutions() = default;

void OnednnConvolutions::forget(const void* weight) {
  std::lock_guard<std::mutex> lock(s_->cache_mutex);
  for (auto it = s_->weights.begin(); it != s_->weights.end();)
    it = std::get<0>(it->first) == weight ? s_->weights.erase(it) : std::next(it);
}

void OnednnConvolutions::forward(const ConvDesc& d, const float* weight, const float* bias, const float* x, float* y,
                                 int n) {
  if (n <= 0) return;
  try {
    s_->run_forward(d, weight, bias, x, y, n);
  } catch (const dnnl::error& e) {
    throw Error("oneDNN convolution forward (" + geometry(d) + "): " + e.what());
  }
}

void OnednnConvolutions::backward_data(const ConvDesc& d, const float* weight, const float* dy, float* dx, int n,
                                       bool accumulate) {
  if (n <= 0) return;
  if (d.in_bf16 || d.out_bf16) throw Error("internal: a bf16 gradient for a convolution (" + geometry(d) + ")");
  try {
    s_->run_backward_data(d, weight, dy, dx, n, accumulate);
  } catch (const dnnl::error& e) {
    throw Error("oneDNN convolution backward (" + geometry(d) + "): " + e.what());
  }
}

}  // namespace ipna::cpu
