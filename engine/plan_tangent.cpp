// The receptive-field cones of IPNA's patch passes, and the two passes that
// use them: the tangent (forward-mode) pass, and the difference form's
// forward at the patch point. A patch changes (and its tangent is nonzero in)
// the cone of S only, so a convolution needs to run only on its cone window:
// the window of the input its output window reads is copied out (positions
// beyond the plane read as zero, which is the padding), the convolution runs
// unpadded on it, and the result is written into an output that holds the
// rest already (the base point's output, kept by its forward, for a patch
// point). In the difference form every other op runs on whole planes. In the
// tangent form, which is zero outside the cone, the per-position ops (Clip,
// Affine, Activation, Add, MaxPool) run on their cone windows too, and a value
// that only windowed launches write and read is kept compactly, [n, C, rect],
// in its arena slot: a patch pass then touches whole planes only where a
// whole-plane op (a global pool, a gate, a convolution whose cone covers most
// of its plane) or the output needs them, and those hold exact zeros outside.
#include <algorithm>

#include "engine/error.h"
#include "engine/plan.h"

namespace ipna {

namespace {

using Rect = Cone::Rect;

Rect full(const Shape& s) { return {0, static_cast<int>(s.height()), 0, static_cast<int>(s.width())}; }

Rect unite(const Rect& a, const Rect& b) {
  return {std::min(a.r0, b.r0), std::max(a.r1, b.r1), std::min(a.c0, b.c0), std::max(a.c1, b.c1)};
}

// Inputs per output (channels per group x taps) from which a windowed convolution saves more
// in the difference form than its copies of the base output cost (measured on EfficientNet-Lite0's
// depthwise convolutions, 9 and 25 taps, which ran slower windowed).
constexpr int kDifferenceWindowTaps = 32;

int floor_div(int a, int b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

// Output positions [lo, hi) of one axis whose window taps o*s - p + t*d meet input positions [a, b).
void window_out(int a, int b, int k, int s, int p, int d, int out, int& lo, int& hi) {
  const int span = (k - 1) * d;
  lo = std::max(0, -floor_div(-(a + p - span), s));  // ceil((a + p - span) / s)
  hi = std::min(out, floor_div(b - 1 + p, s) + 1);
  if (hi < lo) hi = lo;
}

}  // namespace

template <typename T>
Cone GraphPlan<T>::cone(const Box& box) const {
  Cone c;
  c.rect.resize(graph_.values.size());
  c.windowed.assign(launches_.size(), false);
  c.windowed_tangent.assign(launches_.size(), false);
  const Shape& in = graph_.values[graph_.input].shape;
  if (in.rank() != 3) throw Error("receptive-field cones need a C,H,W input, got " + in.str());
  c.rect[graph_.input] = {std::max(box.r0, 0), std::min<int>(box.r1, static_cast<int>(in.height())),
                          std::max(box.c0, 0), std::min<int>(box.c1, static_cast<int>(in.width()))};
  for (size_t li = 0; li < launches_.size(); ++li) {
    const NodeLaunch& st = launches_[li];
    const Node& node = graph_.nodes[st.node];
    const Shape& so = graph_.values[node.output].shape;
    Rect& out = c.rect[node.output];
    const Rect& x = c.rect[node.inputs[0]];
    if (so.rank() != 3 || so.plane() == 1) {  // global: the whole (often 1x1) plane
      out = full(so);
      continue;
    }
    switch (node.kind) {
      case OpKind::Conv:
      case OpKind::MaxPool:
      case OpKind::AvgPool: {
        const Window& w = node.win;
        window_out(x.r0, x.r1, w.kh, w.sh, w.pad_top, w.dh, static_cast<int>(so.height()), out.r0, out.r1);
        window_out(x.c0, x.c1, w.kw, w.sw, w.pad_left, w.dw, static_cast<int>(so.width()), out.c0, out.c1);
        if (node.kind == OpKind::Conv && out.area() * 10 < so.plane() * 8) {  // below 80% of the plane: worth it
          // The difference form pays whole-plane copies of the base output around a windowed
          // convolution: worth it where each output reads enough inputs (not a depthwise one).
          c.windowed[li] = st.conv.cin / st.conv.groups * w.kh * w.kw >= kDifferenceWindowTaps;
          c.windowed_tangent[li] = true;
          const int64_t hr = (out.r1 - out.r0 - 1) * w.sh + (w.kh - 1) * w.dh + 1;
          const int64_t wr = (out.c1 - out.c0 - 1) * w.sw + (w.kw - 1) * w.dw + 1;
          c.window_elems = std::max({c.window_elems, st.conv.cin * hr * wr, st.conv.cout * out.area()});
        }
        if (node.kind == OpKind::MaxPool && out.area() * 10 < so.plane() * 8) {
          c.windowed_tangent[li] = true;
          c.window_elems = std::max({c.window_elems, so.channels() * out.area(), so.channels() * x.area()});
        }
        break;
      }
      case OpKind::Mul:  // a gate's tangent (from a global pool) spreads over the whole plane
        out = graph_.values[node.inputs[1]].shape != so ? full(so) : unite(x, c.rect[node.inputs[1]]);
        break;
      case OpKind::Add:
      case OpKind::Concat:
        out = x;
        for (int v : node.inputs) out = unite(out, c.rect[v]);
        break;
      default:  // elementwise, per position, or whole channels: the input's cone
        out = x;
    }
    const bool per_position = node.kind == OpKind::Clip || node.kind == OpKind::Affine ||
                              node.kind == OpKind::Activation || (node.kind == OpKind::Add && node.inputs.size() == 2);
    if (per_position && out.area() * 10 < so.plane() * 8) {
      c.windowed_tangent[li] = true;
      c.window_elems = std::max(c.window_elems, so.channels() * out.area());
    }
  }
  // Compact: written by a windowed launch and read only by windowed launches (never the output).
  c.compact.assign(graph_.values.size(), false);
  for (size_t li = 0; li < launches_.size(); ++li)
    if (c.windowed_tangent[li]) c.compact[graph_.nodes[launches_[li].node].output] = true;
  c.compact[graph_.output] = false;
  for (size_t li = 0; li < launches_.size(); ++li)
    if (!c.windowed_tangent[li])
      for (int v : graph_.nodes[launches_[li].node].inputs) c.compact[v] = false;
  return c;
}

template <typename T>
void GraphPlan<T>::conv_window(size_t si, int n, const T* in, const T* base_in, T* out, const T* base_out,
                               Workspace& ws, const Cone& cone) const {
  const NodeLaunch& st = launches_[si];
  const Node& node = graph_.nodes[st.node];
  const Cone::Rect& o = cone.rect[node.output];
  const Window& win = node.win;
  ConvDesc d = st.conv;  // the window as its own unpadded convolution
  d.h = (o.r1 - o.r0 - 1) * win.sh + (win.kh - 1) * win.dh + 1;
  d.w = (o.c1 - o.c0 - 1) * win.sw + (win.kw - 1) * win.dw + 1;
  d.ho = o.r1 - o.r0;
  d.wo = o.c1 - o.c0;
  d.win.pad_top = d.win.pad_left = d.win.pad_bottom = d.win.pad_right = 0;
  const size_t bytes = static_cast<size_t>(cone.window_elems) * n * sizeof(T);
  for (DeviceBuffer* b : {&ws.window_in, &ws.window_out, &ws.window_base})  // grown once per cone size
    if ((b != &ws.window_base || base_in) && b->bytes() < bytes) *b = DeviceBuffer(be_, bytes);
  T* sub_in = ws.window_in.template as<T>();
  T* sub_out = ws.window_out.template as<T>();
  T* sub_base = ws.window_base.template as<T>();
  const int r0 = o.r0 * win.sh - win.pad_top, c0 = o.c0 * win.sw - win.pad_left;
  be_.copy_window(n, d.cin, in, st.conv.h, st.conv.w, r0, c0, sub_in, d.h, d.w, 0, 0, d.h, d.w);
  if (base_in) {  // the input's change, zero bit for bit where the patch does not reach
    be_.copy_window(n, d.cin, base_in, st.conv.h, st.conv.w, r0, c0, sub_base, d.h, d.w, 0, 0, d.h, d.w);
    be_.subtract(static_cast<int64_t>(n) * d.cin * d.h * d.w, sub_in, sub_base, sub_in);
  }
  be_.conv2d_forward(d, weights_[st.node].template as<T>(), nullptr, sub_in, sub_out, n);
  if (base_out) {
    be_.copy_window(n, d.cout, base_out, st.conv.ho, st.conv.wo, o.r0, o.c0, sub_base, d.ho, d.wo, 0, 0, d.ho, d.wo);
    be_.add_forward(static_cast<int64_t>(n) * d.cout * d.ho * d.wo, sub_out, sub_base, sub_out);
  }
  be_.copy_window(n, d.cout, sub_out, d.ho, d.wo, 0, 0, out, st.conv.ho, st.conv.wo, o.r0, o.c0, d.ho, d.wo);
}

template <typename T>
void GraphPlan<T>::patched_forward(int n, const T* x, T* y, Workspace& ws, const Cone& cone,
                                   const ConvStore& store) const {
  T* arena = ws.forward_arena.template as<T>();
  for (size_t si = 0; si < launches_.size(); ++si) {
    const NodeLaunch& st = launches_[si];
    const Node& node = graph_.nodes[st.node];
    at_node(node, "patched forward", [&] {
      if (!cone.windowed[si]) return launch_forward(si, n, x, y, arena, nullptr);
      T* out = value_ptr(node.output, n, x, y, arena);
      const int64_t in_count = graph_.values[node.inputs[0]].shape.numel();
      const T* base_in = stored(store, conv_store_in_[si], in_count, store.first_slot);
      const T* base_out = stored(store, conv_store_out_[si], st.count, store.first_slot);
      be_.copy_on_device(out, base_out, sizeof(T) * n * st.count);  // outside the cone: the base point's output
      conv_window(si, n, value_ptr(node.inputs[0], n, x, y, arena), base_in, out, base_out, ws, cone);
    });
  }
}

template <typename T>
void GraphPlan<T>::carry_store(const ConvStore& store, int from) const {
  for (size_t si = 0; si < launches_.size(); ++si)
    if (conv_store_in_[si] >= 0)
      for (auto [offset, count] : {std::pair{conv_store_in_[si], graph_.values[graph_.nodes[launches_[si].node].inputs[0]].shape.numel()},
                                   std::pair{conv_store_out_[si], launches_[si].count}})
        be_.copy_on_device(stored(store, offset, count, 0), stored(store, offset, count, from), sizeof(T) * count);
}

template <typename T>
void GraphPlan<T>::grow_windows(Workspace& ws, const Cone& cone, int n) const {
  const size_t bytes = static_cast<size_t>(cone.window_elems) * n * sizeof(T);
  for (DeviceBuffer* b : {&ws.window_in, &ws.window_out, &ws.window_base})  // grown once per cone size
    if (b->bytes() < bytes) *b = DeviceBuffer(be_, bytes);
}

template <typename T>
void GraphPlan<T>::tangent_window(size_t si, int n, const T* tx, T* ty, T* arena, const void* keep, Workspace& ws,
                                  const Cone& cone) const {
  const NodeLaunch& st = launches_[si];
  const Node& node = graph_.nodes[st.node];
  const Shape& so = graph_.values[node.output].shape;
  const Cone::Rect& r = cone.rect[node.output];
  const int c = static_cast<int>(so.channels()), h = static_cast<int>(so.height()), w = static_cast<int>(so.width());
  T* in_buf = ws.window_in.template as<T>();
  T* out_buf = ws.window_out.template as<T>();
  T* aux_buf = ws.window_base.template as<T>();
  // Value v's tangent on the window `want` (may hang over the plane: zeros there), from its
  // storage: compact over its own rect, or the whole plane. Where v is compact on that very
  // window, its slot is used as it is.
  auto window_of = [&](int v, const Cone::Rect& want, T* scratch) -> const T* {
    const T* p = value_ptr(v, n, tx, ty, arena);
    const Shape& s = graph_.values[v].shape;
    const Cone::Rect& have = cone.rect[v];
    const bool compact = cone.compact[v];
    if (compact && have.r0 == want.r0 && have.r1 == want.r1 && have.c0 == want.c0 && have.c1 == want.c1) return p;
    const int sh = compact ? have.r1 - have.r0 : static_cast<int>(s.height());
    const int sw = compact ? have.c1 - have.c0 : static_cast<int>(s.width());
    const int or0 = compact ? have.r0 : 0, oc0 = compact ? have.c0 : 0;
    const int wh = want.r1 - want.r0, ww = want.c1 - want.c0;
    be_.copy_window(n, static_cast<int>(s.channels()), p, sh, sw, want.r0 - or0, want.c0 - oc0, scratch, wh, ww, 0, 0,
                    wh, ww);
    return scratch;
  };
  T* out = value_ptr(node.output, n, tx, ty, arena);
  const int64_t window_count = static_cast<int64_t>(n) * c * r.area();
  if (r.area() == 0) {  // the box does not reach this value
    if (!cone.compact[node.output]) be_.zero(out, sizeof(T) * n * st.count);
    return;
  }
  switch (node.kind) {
    case OpKind::Conv: {  // unpadded on the window of the input its output window reads
      const Window& win = node.win;
      ConvDesc d = st.conv;
      d.ho = r.r1 - r.r0;
      d.wo = r.c1 - r.c0;
      d.h = (d.ho - 1) * win.sh + (win.kh - 1) * win.dh + 1;
      d.w = (d.wo - 1) * win.sw + (win.kw - 1) * win.dw + 1;
      d.win.pad_top = d.win.pad_left = d.win.pad_bottom = d.win.pad_right = 0;
      const int r0 = r.r0 * win.sh - win.pad_top, c0 = r.c0 * win.sw - win.pad_left;
      const T* x = window_of(node.inputs[0], {r0, r0 + d.h, c0, c0 + d.w}, in_buf);
      be_.conv2d_forward(d, weights_[st.node].template as<T>(), nullptr, x, out_buf, n);
      break;
    }
    case OpKind::Clip:
      be_.clip_tangent_window(n, c, h, w, r.window(), static_cast<const uint64_t*>(keep),
                              window_of(node.inputs[0], r, in_buf), out_buf);
      break;
    case OpKind::Affine:  // scale * t per channel
      be_.affine_backward(c, r.area(), weights_[st.node].template as<T>(), window_of(node.inputs[0], r, in_buf),
                          out_buf, n, false);
      break;
    case OpKind::Activation: {  // f'(x) * t, with the saved derivative's window
      be_.copy_window(n, c, static_cast<const T*>(keep), h, w, r.r0, r.c0, aux_buf, r.r1 - r.r0, r.c1 - r.c0, 0, 0,
                      r.r1 - r.r0, r.c1 - r.c0);
      be_.mul_backward(1, 1, window_count, false, nullptr, aux_buf, window_of(node.inputs[0], r, in_buf), out_buf,
                       false, nullptr, false);
      break;
    }
    case OpKind::Add:  // both inputs on the output's window (the union of theirs)
      be_.add_forward(window_count, window_of(node.inputs[0], r, in_buf), window_of(node.inputs[1], r, aux_buf),
                      out_buf);
      break;
    case OpKind::MaxPool: {
      const Cone::Rect& ri = cone.rect[node.inputs[0]];
      be_.maxpool_tangent_window(st.pool, static_cast<const int32_t*>(keep), ri.window(),
                                 window_of(node.inputs[0], ri, in_buf), r.window(), out_buf, n);
      break;
    }
    default:
      throw Error(std::string("internal: no windowed tangent for ") + op_name(node.kind));
  }
  // Into the output's storage: compact as it is, or a whole plane, zero outside the cone.
  if (cone.compact[node.output]) {
    be_.copy_on_device(out, out_buf, sizeof(T) * window_count);
  } else {
    be_.zero(out, sizeof(T) * n * st.count);
    be_.copy_window(n, c, out_buf, r.r1 - r.r0, r.c1 - r.c0, 0, 0, out, h, w, r.r0, r.c0, r.r1 - r.r0, r.c1 - r.c0);
  }
}

template <typename T>
void GraphPlan<T>::tangent(int n, const T* tx, T* ty, Workspace& ws, const Cone* cone) const {
  if (n > ws.capacity || (!ws.saved.bytes() && saved_bytes(n)))
    throw Error("internal: tangent pass without the saved state of a forward of " + std::to_string(n) + " samples");
  if (cone) grow_windows(ws, *cone, n);
  T* arena = ws.forward_arena.template as<T>();
  const auto* saved = ws.saved.template as<uint8_t>();
  for (size_t si = 0; si < launches_.size(); ++si) {
    const NodeLaunch& st = launches_[si];
    const Node& node = graph_.nodes[st.node];
    const T* in0 = value_ptr(node.inputs[0], n, tx, ty, arena);
    T* out = value_ptr(node.output, n, tx, ty, arena);
    const T* w = weights_[st.node].template as<T>();
    const void* keep = saved + saved_offset(static_cast<int>(si), n);
    at_node(node, "tangent", [&] {
      if (cone && cone->windowed_tangent[si]) return tangent_window(si, n, tx, ty, arena, keep, ws, *cone);
      switch (node.kind) {
        case OpKind::Conv:
          be_.conv2d_forward(st.conv, w, nullptr, in0, out, n);
          break;
        case OpKind::Linear:
          be_.linear_forward(static_cast<int>(graph_.values[node.inputs[0]].shape.numel()), static_cast<int>(st.count),
                             w, nullptr, in0, out, n);
          break;
        case OpKind::Affine: {  // scale * t, as its backward
          const Shape& s = graph_.values[node.output].shape;
          be_.affine_backward(static_cast<int>(s.channels()), s.plane(), w, in0, out, n, false);
          break;
        }
        case OpKind::Clip:  // gated by the saved mask, as its backward
          be_.clip_backward(st.count * n, static_cast<const uint64_t*>(keep), in0, out, false);
          break;
        case OpKind::MaxPool:
          be_.maxpool_tangent(st.pool, static_cast<const int32_t*>(keep), in0, out, n);
          break;
        case OpKind::AvgPool:  // linear without a bias: the tangent is the forward
        case OpKind::Add:
        case OpKind::Concat:
        case OpKind::Slice:
        case OpKind::ChannelMean:
        case OpKind::ChannelShuffle:
          launch_forward(si, n, tx, ty, arena, nullptr);
          break;
        case OpKind::Mul: {  // t_a * b + a * t_b, with a and b saved by the forward
          const Shape& sa = graph_.values[node.inputs[0]].shape;
          const bool per_channel = graph_.values[node.inputs[1]].shape != sa;
          const T* a = static_cast<const T*>(keep);
          const T* b = a + n * st.count;
          const int c = static_cast<int>(sa.channels());
          be_.mul_forward(n, c, sa.plane(), per_channel, in0, b, out, false);
          be_.mul_forward(n, c, sa.plane(), per_channel, a, value_ptr(node.inputs[1], n, tx, ty, arena), out, true);
          break;
        }
        case OpKind::Activation:  // f'(x) * t
          be_.mul_backward(1, 1, st.count * n, false, nullptr, static_cast<const T*>(keep), in0, out, false, nullptr,
                           false);
          break;
        case OpKind::LayerNorm: {
          const Shape& so = graph_.values[node.output].shape;
          const T* xhat = static_cast<const T*>(keep);
          be_.layernorm_tangent(n, static_cast<int>(so.channels()), so.plane(), w, xhat, xhat + n * st.count, in0,
                                out);
          break;
        }
      }
    });
  }
}

template Cone GraphPlan<float>::cone(const Box&) const;
template Cone GraphPlan<double>::cone(const Box&) const;
template void GraphPlan<float>::tangent(int, const float*, float*, Workspace&, const Cone*) const;
template void GraphPlan<float>::patched_forward(int, const float*, float*, Workspace&, const Cone&,
                                                const ConvStore&) const;
template void GraphPlan<double>::patched_forward(int, const double*, double*, Workspace&, const Cone&,
                                                 const ConvStore&) const;
template void GraphPlan<float>::carry_store(const ConvStore&, int) const;
template void GraphPlan<double>::carry_store(const ConvStore&, int) const;
template void GraphPlan<double>::tangent(int, const double*, double*, Workspace&, const Cone*) const;

}  // namespace ipna
