#include "engine/cpu/onednn_linear.h"

#include <algorithm>
#include <array>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <string>
#include <unordered_map>
#include <utility>

#include "engine/cpu/onednn_per_thread.h"
#include "engine/error.h"

namespace ipna::cpu {

namespace {
using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;
using ShapeKey = std::array<int, 4>;  // in, out, n, with bias
}  // namespace

struct OnednnLinear::State {
  dnnl::engine eng{dnnl::engine::kind::cpu, 0};
  // Shared by the calling threads (IPNA's patch lanes call at once), under `cache_mutex`.
  std::mutex cache_mutex;
  std::map<ShapeKey, std::pair<dnnl::inner_product_forward::primitive_desc, dnnl::inner_product_forward>> forward;
  std::map<std::pair<const void*, std::string>, memory> weights;
  // Each calling thread's own stream and scratchpad: oneDNN's own scratchpad is shared between
  // primitives and unsafe when they run at once.
  struct PerThread {
    dnnl::stream strm;
    std::unique_ptr<char, decltype(&std::free)> scratchpad{nullptr, &std::free};  // 64-byte aligned
    size_t scratchpad_bytes = 0;
  };
  OnednnPerThread<PerThread> per_thread;
  PerThread& mine() { return per_thread.mine(eng); }

  dnnl::inner_product_forward::primitive_desc forward_pd(int in, int out, int n, bool bias) {
    const memory::desc src({n, in}, dt::f32, tag::nc), dst({n, out}, dt::f32, tag::nc), w({out, in}, dt::f32, tag::any),
        b({out}, dt::f32, tag::x);
    const auto prop = dnnl::prop_kind::forward_inference;
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    return bias ? dnnl::inner_product_forward::primitive_desc({prop, src, w, b, dst}, attr, eng)
                : dnnl::inner_product_forward::primitive_desc({prop, src, w, dst}, attr, eng);
  }

  memory weights_for(dnnl::stream& strm, const float* source, const memory::desc& want, int in, int out) {
    std::lock_guard<std::mutex> lock(cache_mutex);
    const std::string layout(reinterpret_cast<const char*>(&want.data), sizeof(want.data));
    const auto key = std::make_pair(static_cast<const void*>(source), layout);
    auto it = weights.find(key);
    if (it != weights.end()) return it->second;
    memory plain({{out, in}, dt::f32, tag::oi}, eng, const_cast<float*>(source));
    memory reordered(want, eng);
    dnnl::reorder(plain, reordered).execute(strm, plain, reordered);
    strm.wait();
    return weights.emplace(key, reordered).first->second;
  }
};

OnednnLinear::OnednnLinear() : s_(std::make_unique<State>()) {}
OnednnLinear::~OnednnLinear() = default;

void OnednnLinear::forget(const void* weight) {
  std::lock_guard<std::mutex> lock(s_->cache_mutex);
  for (auto it = s_->weights.begin(); it != s_->weights.end();)
    it = it->first.first == weight ? s_->weights.erase(it) : std::next(it);
}

void OnednnLinear::forward(int in, int out, const float* weight, const float* bias, const float* x, float* y, int n) {
  if (n <= 0) return;
  try {
    State::PerThread& t = s_->mine();
    const ShapeKey key{in, out, n, bias != nullptr};
    std::pair<dnnl::inner_product_forward::primitive_desc, dnnl::inner_product_forward> primitive;
    {
      std::lock_guard<std::mutex> lock(s_->cache_mutex);
      auto it = s_->forward.find(key);
      if (it == s_->forward.end()) {
        auto pd = s_->forward_pd(in, out, n, bias != nullptr);
        it = s_->forward.emplace(key, std::make_pair(pd, dnnl::inner_product_forward(pd))).first;
      }
      primitive = it->second;
    }
    const auto& [pd, prim] = primitive;
    std::unordered_map<int, memory> args{
        {DNNL_ARG_SRC, memory(pd.src_desc(), s_->eng, const_cast<float*>(x))},
        {DNNL_ARG_WEIGHTS, s_->weights_for(t.strm, weight, pd.weights_desc(), in, out)},
        {DNNL_ARG_DST, memory(pd.dst_desc(), s_->eng, y)}};
    const size_t scratch_bytes = (std::max<size_t>(pd.scratchpad_desc().get_size(), 1) + 63) / 64 * 64;
    if (t.scratchpad_bytes < scratch_bytes) {
      t.scratchpad.reset(static_cast<char*>(std::aligned_alloc(64, scratch_bytes)));
      if (!t.scratchpad) throw Error("out of memory for a linear layer's scratchpad");
      t.scratchpad_bytes = scratch_bytes;
    }
    args.insert({DNNL_ARG_SCRATCHPAD, memory(pd.scratchpad_desc(), s_->eng, t.scratchpad.get())});
    if (bias) args.insert({DNNL_ARG_BIAS, memory(pd.bias_desc(), s_->eng, const_cast<float*>(bias))});
    prim.execute(t.strm, args);
    t.strm.wait();
  } catch (const dnnl::error& e) {
    throw Error("oneDNN linear forward (" + std::to_string(in) + " -> " + std::to_string(out) + "): " + e.what());
  }
}

void OnednnLinear::backward_data(int in, int out, const float* weight, const float* dy, float* dx, int n,
                                 bool accumulate) {
  if (n <= 0) return;
  // Row-major dx [n, in] = dy [n, out] W [out, in] (+ dx): oneDNN's sgemm, which measured
  // faster than its inner-product backward here and adds in place.
  const dnnl_status_t st = dnnl_sgemm('N', 'N', n, in, out, 1.f, dy, out, weight, in, accumulate ? 1.f : 0.f, dx, in);
  if (st != dnnl_success)
    throw Error("oneDNN linear backward (" + std::to_string(in) + " -> " + std::to_string(out) + "): status " +
                std::to_string(static_cast<int>(st)));
}

}  // namespace ipna::cpu
