// Graph rewrites of the ONNX import: a BatchNormalization (or a constant
// per-channel affine) after a Conv that nothing else reads becomes part of the
// Conv; a zero Pad is remembered and merged into the padding of the Conv or
// AveragePool that reads it; nodes that do not lead to the output go.
#include <vector>

#include "loaders/onnx_context.h"

namespace ipna::onnx_import {

bool fold_affine_into_conv(Context& ctx, int x, const std::vector<double>& s, const std::vector<double>& t,
                           const std::string& out_name) {
  const int p = ctx.producer(x);
  if (p < 0 || x == ctx.graph.input) return false;
  Node& conv = ctx.graph.nodes[p];
  if (conv.kind != OpKind::Conv || ctx.consumers(ctx.graph.values[x].name) != 1) return false;
  // conv(x)*s + t == conv with W*s and bias b*s + t.
  const int64_t c = static_cast<int64_t>(s.size());
  const int64_t per_out = static_cast<int64_t>(conv.weight.size()) / c;
  for (int64_t co = 0; co < c; ++co)
    for (int64_t j = 0; j < per_out; ++j) conv.weight[co * per_out + j] *= s[co];
  if (conv.bias.empty()) conv.bias.assign(c, 0.0);
  for (int64_t co = 0; co < c; ++co) conv.bias[co] = conv.bias[co] * s[co] + t[co];
  ctx.rename(x, out_name);
  return true;
}

void defer_pad(Context& ctx, const onnx::NodeProto& n, int x, const std::vector<int64_t>& pads) {
  if (ctx.shape_of(x).rank() != 3 || pads.size() != 8 || pads[0] || pads[1] || pads[4] || pads[5])
    ctx.fail_node(n, "only padding of the two spatial axes of an N,C,H,W tensor is supported");
  for (auto p : pads)
    if (p < 0) ctx.fail_node(n, "negative pads (cropping) are not supported");
    else if (p > kMaxWindow) ctx.fail_node(n, "pads above " + std::to_string(kMaxWindow) + " are not supported");
  if (!pads[2] && !pads[3] && !pads[6] && !pads[7]) {
    ctx.alias(n.output(0), x);
    return;
  }
  ctx.pending_pads[n.output(0)] = {x, static_cast<int>(pads[2]), static_cast<int>(pads[3]), static_cast<int>(pads[6]),
                                   static_cast<int>(pads[7])};
}

std::optional<Context::PendingPad> take_pad(Context& ctx, const onnx::NodeProto& n) {
  const std::string& in = Context::input_name(n, 0);
  auto it = ctx.pending_pads.find(in);
  if (it == ctx.pending_pads.end()) return std::nullopt;
  if (ctx.consumers(in) != 1)
    ctx.fail_node(n, "its padded input feeds several nodes; only a Pad followed by one Conv or AveragePool is supported");
  Context::PendingPad p = it->second;
  ctx.pending_pads.erase(it);
  return p;
}

void remove_dead_nodes(Graph& g) {
  std::vector<bool> needed(g.values.size(), false);
  needed[g.output] = true;
  std::vector<Node> kept;
  for (auto it = g.nodes.rbegin(); it != g.nodes.rend(); ++it)
    if (needed[it->output]) {
      for (int v : it->inputs) needed[v] = true;
      kept.push_back(std::move(*it));
    }
  g.nodes.assign(std::make_move_iterator(kept.rbegin()), std::make_move_iterator(kept.rend()));
}

}  // namespace ipna::onnx_import
