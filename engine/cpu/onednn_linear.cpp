#include "engine/cpu/onednn_linear.h"

#include <array>
#include <unordered_map>
#include <map>
#include <oneapi/dnnl/dnnl.hpp>
#include <string>
#include <utility>

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
  dnnl::stream strm{eng};
  std::map<ShapeKey, std::pair<dnnl::inner_product_forward::primitive_desc, dnnl::inner_product_forward>> forward;
  std::map<std::pair<const void*, std::string>, memory> weights;

  dnnl::inner_product_forward::primitive_desc forward_pd(int in, int out, int n, bool bias) {
    const memory::desc src({n, in}, dt::f32, tag::nc), dst({n, out}, dt::f32, tag::nc),
        w({out, in}, dt::f32, tag::any), b({out}, dt::f32, tag::x);
    const auto prop = dnnl::prop_kind::forward_inference;
    return bias ? dnnl::inner_product_forward::primitive_desc({prop, src, w, b, dst}, eng)
                : dnnl::inner_product_forward::primitive_desc({prop, src, w, dst}, eng);
  }

  memory weights_for(const float* source, const memory::desc& want, int in, int out) {
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
  for (auto it = s_->weights.begin(); it != s_->weights.end();)
    it = it->first.first == weight ? s_->weights.erase(it) : std::next(it);
}

void OnednnLinear::forward(int in, int out, const float* weight, const float* bias, const float* x, float* y, int n) {
  if (n <= 0) return;
  try {
    const ShapeKey key{in, out, n, bias != nullptr};
    auto it = s_->forward.find(key);
    if (it == s_->forward.end()) {
      auto pd = s_->forward_pd(in, out, n, bias != nullptr);
      it = s_->forward.emplace(key, std::make_pair(pd, dnnl::inner_product_forward(pd))).first;
    }
    const auto& [pd, prim] = it->second;
    std::unordered_map<int, memory> args{
        {DNNL_ARG_SRC, memory(pd.src_desc(), s_->eng, const_cast<float*>(x))},
        {DNNL_ARG_WEIGHTS, s_->weights_for(weight, pd.weights_desc(), in, out)},
        {DNNL_ARG_DST, memory(pd.dst_desc(), s_->eng, y)}};
    if (bias) args.insert({DNNL_ARG_BIAS, memory(pd.bias_desc(), s_->eng, const_cast<float*>(bias))});
    prim.execute(s_->strm, args);
    s_->strm.wait();
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
