// The receptive-field cones of IPNA's patch passes, and the two passes that
// use them: the tangent (forward-mode) pass, and the difference form's
// forward at the patch point. A patch changes (and its tangent is nonzero in)
// the cone of S only, so the convolutions and the per-position ops (Clip,
// Affine, Activation, Add, MaxPool) need to run only on their cone windows: a
// convolution on the window of its input that its output window reads
// (positions beyond the plane read as zero, which is the padding), given as
// the input's compact rect with the rest of that window as padding.
// Both passes carry what is zero outside the cone: the tangent, or the patch's
// change of each value from the base point (kept by the base point's forward),
// which linear ops map as the tangent (without bias) and Clip, activations and
// MaxPool as f(base + change) - f(base). A value that only windowed launches
// write and read is kept compactly, [n, C, rect], in its arena slot: a patch
// pass touches whole planes only where a whole-plane op (a global pool, a
// gate, a convolution whose cone covers most of its plane) or the output
// needs them; there a tangent is written with exact zeros outside the cone,
// and the patched value as the base value plus the change.
#include <algorithm>

#include "engine/error.h"
#include "engine/plan.h"

namespace ipna {

namespace {

using Rect = Cone::Rect;

Rect full(const Shape& s) { return {0, static_cast<int>(s.height()), 0, static_cast<int>(s.width())}; }

Rect unite(const Rect& a, const Rect& b) {
  if (a.area() == 0) return b;
  if (b.area() == 0) return a;
  return {std::min(a.r0, b.r0), std::max(a.r1, b.r1), std::min(a.c0, b.c0), std::max(a.c1, b.c1)};
}

int floor_div(int a, int b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

// Output positions [lo, hi) of one axis whose window taps o*s - p + t*d meet input positions [a, b).
void window_out(int a, int b, int k, int s, int p, int d, int out, int& lo, int& hi) {
  if (b <= a) {  // nothing in, nothing out
    lo = hi = 0;
    return;
  }
  const int span = (k - 1) * d;
  lo = std::max(0, -floor_div(-(a + p - span), s));  // ceil((a + p - span) / s)
  hi = std::min(out, floor_div(b - 1 + p, s) + 1);
  if (hi < lo) hi = lo;
}

// The input positions a max-pool's output window reads, within the plane (where the pool's
// padding would read, the difference form's windowed pool pads instead).
Rect pool_input_window(const PoolDesc& p, const Rect& out) {
  const Window& w = p.win;
  return {
      std::max(0, out.r0 * w.sh - w.pad_top), std::min(p.h, (out.r1 - 1) * w.sh - w.pad_top + (w.kh - 1) * w.dh + 1),
      std::max(0, out.c0 * w.sw - w.pad_left), std::min(p.w, (out.c1 - 1) * w.sw - w.pad_left + (w.kw - 1) * w.dw + 1)};
}

// A convolution on a cone window of its output, as its own unpadded convolution, and the window
// of the input it reads (which may hang over the plane).
ConvDesc window_conv(const ConvDesc& whole, const Rect& r, Rect& in) {
  ConvDesc d = whole;
  const Window& w = whole.win;
  d.ho = r.r1 - r.r0;
  d.wo = r.c1 - r.c0;
  d.h = (d.ho - 1) * w.sh + (w.kh - 1) * w.dh + 1;
  d.w = (d.wo - 1) * w.sw + (w.kw - 1) * w.dw + 1;
  d.win.pad_top = d.win.pad_left = d.win.pad_bottom = d.win.pad_right = 0;
  const int r0 = r.r0 * w.sh - w.pad_top, c0 = r.c0 * w.sw - w.pad_left;
  in = {r0, r0 + d.h, c0, c0 + d.w};
  return d;
}

// What the convolution on output window `out` reads, and its descriptor d: a compact input (`have`,
// its rect, at `stored`) as it is, the rest of the input window as asymmetric padding (outside its
// cone an input's change or tangent is zero, as the plane's own padding is), which spares copying
// the window with its zero halo out of the rect and the backend's staging of that larger window;
// otherwise (a whole-plane input, or a strided convolution that skips the rect's last rows or
// columns) null: the convolution then reads the input window `in`, unpadded, which the caller copies.
template <typename T>
const T* conv_input(const ConvDesc& whole, const Rect& out, bool compact, const Rect& have, const T* stored,
                    ConvDesc& d, Rect& in) {
  d = window_conv(whole, out, in);
  if (!compact || have.area() == 0 || have.r0 < in.r0 || have.r1 > in.r1 || have.c0 < in.c0 || have.c1 > in.c1)
    return nullptr;
  d.h = have.r1 - have.r0;
  d.w = have.c1 - have.c0;
  d.win.pad_top = have.r0 - in.r0;
  d.win.pad_bottom = in.r1 - have.r1;
  d.win.pad_left = have.c0 - in.c0;
  d.win.pad_right = in.c1 - have.c1;
  return stored;
}

bool same_conv_window(const ConvDesc& a, const ConvDesc& b) {
  return a.h == b.h && a.w == b.w && a.ho == b.ho && a.wo == b.wo && a.win.pad_top == b.win.pad_top &&
         a.win.pad_bottom == b.win.pad_bottom && a.win.pad_left == b.win.pad_left && a.win.pad_right == b.win.pad_right;
}

// The max pool on the output window r alone, reading the input window `in` (pool_input_window) with the
// pool's padding where the window hangs over the plane.
PoolDesc window_pool(const PoolDesc& whole, const Rect& r, const Rect& in) {
  PoolDesc p = whole;
  p.h = in.r1 - in.r0;
  p.w = in.c1 - in.c0;
  p.ho = r.r1 - r.r0;
  p.wo = r.c1 - r.c0;
  p.win.pad_top = in.r0 - (r.r0 * p.win.sh - whole.win.pad_top);
  p.win.pad_left = in.c0 - (r.c0 * p.win.sw - whole.win.pad_left);
  return p;
}

// Whether the elementwise node (Clip or an activation) gives 0 at 0.
bool maps_zero_to_zero(const Node& node) {
  if (node.kind == OpKind::Clip) return node.lo <= 0 && node.hi >= 0;
  switch (node.activation) {
    case ActivationFn::Sigmoid:
      return false;
    case ActivationFn::HardSigmoid:  // clip(alpha * 0 + beta, 0, 1)
      return node.beta <= 0;
    case ActivationFn::Tanh:
    case ActivationFn::HardSwish:
    case ActivationFn::SiLU:
    case ActivationFn::GeluErf:
    case ActivationFn::GeluTanh:
    case ActivationFn::Erf:
      return true;
  }
  return false;
}

}  // namespace

template <typename T>
template <typename Want>
const T* GraphPlan<T>::read_windows(int v, int n, const T* p, const ConeGroup& cones, Want&& want, T* scratch) const {
  const Shape& s = graph_.values[v].shape;
  const bool compact = cones.front()->compact[v];
  const Cone::Rect first = want(*cones.front()), &have = cones.front()->rect[v];
  // (the group's geometry is the same: one box holds v compact on its window if every box does)
  if (compact && have.r0 == first.r0 && have.r1 == first.r1 && have.c0 == first.c0 && have.c1 == first.c1) return p;
  const int c = static_cast<int>(s.channels());
  const int sh = compact ? have.r1 - have.r0 : static_cast<int>(s.height());
  const int sw = compact ? have.c1 - have.c0 : static_cast<int>(s.width());
  const int wh = first.r1 - first.r0, ww = first.c1 - first.c0;
  const int64_t from_box = static_cast<int64_t>(n) * c * sh * sw, to_box = static_cast<int64_t>(n) * c * wh * ww;
  for (size_t j = 0; j < cones.size(); ++j) {
    const Cone::Rect w = want(*cones[j]), &at = cones[j]->rect[v];
    be_.copy_window(n, c, p + j * from_box, sh, sw, w.r0 - (compact ? at.r0 : 0), w.c0 - (compact ? at.c0 : 0),
                    scratch + j * to_box, wh, ww, 0, 0, wh, ww);
  }
  return scratch;
}

template <typename T>
template <typename Read>
void GraphPlan<T>::conv_window(size_t si, int n, int u, const T* u_storage, const ConeGroup& cones, bool equal_samples,
                               Read&& read, T* scratch, T* result) const {
  const NodeLaunch& st = launches_[si];
  const Node& node = graph_.nodes[st.node];
  const int v = node.output, k = static_cast<int>(cones.size());
  const Cone& cone = *cones.front();
  ConvDesc d;
  Cone::Rect in;
  const T* src = conv_input(st.conv, cone.rect[v], cone.compact[u], cone.rect[u], u_storage, d, in);
  if (!src)
    src = read([&](const Cone& c) {
      Cone::Rect box_in;
      window_conv(st.conv, c.rect[v], box_in);
      return box_in;
    });
  const T* w = weights_[st.node].template as<T>();
  // Every sample's input the same within a box (its direction, equal steps): the convolution of the
  // box's first sample, copied to the others in doublings of the samples already made.
  if (!(equal_samples && u == graph_.input)) return be_.conv2d_forward(d, w, nullptr, src, result, n * k);
  const int64_t per_in = static_cast<int64_t>(d.cin) * d.h * d.w;
  const int64_t per = graph_.values[v].shape.channels() * cone.rect[v].area();
  if (k > 1) {  // the boxes' first samples side by side, their results then moved to where each box starts
    for (int j = 0; j < k; ++j) be_.copy_on_device(scratch + j * per_in, src + j * n * per_in, sizeof(T) * per_in);
    be_.conv2d_forward(d, w, nullptr, scratch, result, k);
    for (int j = k - 1; j > 0 && n > 1; --j)
      be_.copy_on_device(result + j * n * per, result + j * per, sizeof(T) * per);
  } else {
    be_.conv2d_forward(d, w, nullptr, src, result, 1);
  }
  for (int j = 0; j < k; ++j)
    for (int made = 1; made < n; made *= 2)
      be_.copy_on_device(result + (j * n + made) * per, result + j * n * per,
                         sizeof(T) * per * std::min(made, n - made));
}

template <typename T>
void GraphPlan<T>::write_window(int v, int n, T* window, T* out, const ConeGroup& cones, bool onto_base, T* aux) const {
  const Shape& s = graph_.values[v].shape;
  const Cone::Rect& r = cones.front()->rect[v];
  const int c = static_cast<int>(s.channels()), h = static_cast<int>(s.height()), w = static_cast<int>(s.width());
  const int wh = r.r1 - r.r0, ww = r.c1 - r.c0;
  const int k = static_cast<int>(cones.size());
  const int64_t per_box = static_cast<int64_t>(n) * c * wh * ww, plane_box = n * s.numel();
  if (onto_base) {  // the patched values: the bases plus the changes on the windows
    for (int j = 0; j < k; ++j) {
      const Cone::Rect& at = cones[j]->rect[v];
      be_.copy_window(n, c, out + j * plane_box, h, w, at.r0, at.c0, aux + j * per_box, wh, ww, 0, 0, wh, ww);
    }
    be_.add_forward(k * per_box, window, aux, window);
  } else {  // the tangents: zero outside the cones
    be_.zero(out, sizeof(T) * k * plane_box);
  }
  for (int j = 0; j < k; ++j) {
    const Cone::Rect& at = cones[j]->rect[v];
    be_.copy_window(n, c, window + j * per_box, wh, ww, 0, 0, out + j * plane_box, h, w, at.r0, at.c0, wh, ww);
  }
}

template <typename T>
void GraphPlan<T>::apply_elementwise(const Node& node, int64_t count, const T* src, T* dst) const {
  if (node.kind == OpKind::Clip)
    be_.clip_forward(count, static_cast<T>(node.lo), static_cast<T>(node.hi), src, dst, nullptr);
  else
    be_.activation_forward(node.activation, count, static_cast<T>(node.alpha), static_cast<T>(node.beta), src, dst,
                           nullptr);
}

template <typename T>
void GraphPlan<T>::base_plane(const ValueStore& store, int v, int n, T* dst) const {
  const int64_t count = static_cast<int64_t>(n) * graph_.values[v].shape.numel();
  const int maker = store.layout->made_by[v];
  if (maker < 0) return be_.copy_on_device(dst, stored(store, v, store.first_slot), sizeof(T) * count);
  const Node& node = graph_.nodes[maker];
  apply_elementwise(node, count, stored(store, node.inputs[0], store.first_slot), dst);
}

template <typename T>
void GraphPlan<T>::base_window(const ValueStore& store, int v, int n, const Cone::Rect& want, T* dst) const {
  const int maker = store.layout->made_by[v];
  const int from = maker < 0 ? v : graph_.nodes[maker].inputs[0];
  const Shape& s = graph_.values[from].shape;
  const int wh = want.r1 - want.r0, ww = want.c1 - want.c0;
  be_.copy_window(n, static_cast<int>(s.channels()), stored(store, from, store.first_slot),
                  static_cast<int>(s.height()), static_cast<int>(s.width()), want.r0, want.c0, dst, wh, ww, 0, 0, wh,
                  ww);
  if (maker >= 0)  // (zeros beyond the plane stay zeros: a made value's op maps 0 to 0, see store_layout)
    apply_elementwise(graph_.nodes[maker], static_cast<int64_t>(n) * s.channels() * wh * ww, dst, dst);
}

template <typename T>
Cone GraphPlan<T>::cone(const Box& box, bool compact_output, bool compact_input) const {
  Cone c;
  c.rect.resize(graph_.values.size());
  c.windowed.assign(launches_.size(), false);
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
        // Below 80% of the plane: worth it. A line head (has_line_head) always: the difference form then
        // adds its change to the base point's value made on the line, equal to it outside the cone.
        if (node.kind == OpKind::Conv && (out.area() * 10 < so.plane() * 8 || (li == 0 && line_head_))) {
          c.windowed[li] = true;
          const int64_t hr = (out.r1 - out.r0 - 1) * w.sh + (w.kh - 1) * w.dh + 1;
          const int64_t wr = (out.c1 - out.c0 - 1) * w.sw + (w.kw - 1) * w.dw + 1;
          c.window_elems = std::max({c.window_elems, st.conv.cin * hr * wr, st.conv.cout * out.area()});
        }
        if (node.kind == OpKind::MaxPool && out.area() * 10 < so.plane() * 8) {
          c.windowed[li] = true;
          c.window_elems = std::max(
              {c.window_elems, so.channels() * out.area(), so.channels() * pool_input_window(st.pool, out).area()});
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
      c.windowed[li] = true;
      c.window_elems = std::max(c.window_elems, so.channels() * out.area());
    }
  }
  // Compact: written by a windowed launch and read only by windowed launches (the output only if asked).
  c.compact.assign(graph_.values.size(), false);
  for (size_t li = 0; li < launches_.size(); ++li)
    if (c.windowed[li]) c.compact[graph_.nodes[launches_[li].node].output] = true;
  if (!compact_output) c.compact[graph_.output] = false;
  c.compact[graph_.input] = compact_input;
  for (size_t li = 0; li < launches_.size(); ++li)
    if (!c.windowed[li])
      for (int v : graph_.nodes[launches_[li].node].inputs) c.compact[v] = false;
  return c;
}

template <typename T>
bool GraphPlan<T>::same_geometry(const Cone& a, const Cone& b) const {
  if (a.windowed != b.windowed || a.compact != b.compact || a.window_elems != b.window_elems) return false;
  auto same_size = [](const Rect& x, const Rect& y) {
    return x.r1 - x.r0 == y.r1 - y.r0 && x.c1 - x.c0 == y.c1 - y.c0;
  };
  for (size_t v = 0; v < a.rect.size(); ++v)
    if (!same_size(a.rect[v], b.rect[v])) return false;
  for (size_t li = 0; li < launches_.size(); ++li) {
    if (!a.windowed[li]) continue;
    const NodeLaunch& st = launches_[li];
    const Node& node = graph_.nodes[st.node];
    const Rect &ra = a.rect[node.output], &rb = b.rect[node.output];
    switch (node.kind) {
      case OpKind::Conv: {  // the same descriptor, each reading its compact input or each its window
        const int u = node.inputs[0];
        ConvDesc da, db;
        Rect ia, ib;
        const int tag = 0;
        const bool reads_a = conv_input(st.conv, ra, a.compact[u], a.rect[u], &tag, da, ia) != nullptr;
        const bool reads_b = conv_input(st.conv, rb, b.compact[u], b.rect[u], &tag, db, ib) != nullptr;
        if (reads_a != reads_b || !same_conv_window(da, db)) return false;
        break;
      }
      case OpKind::MaxPool: {  // the same pool on the window, with the same padding where it hangs over the plane
        const Rect ia = pool_input_window(st.pool, ra), ib = pool_input_window(st.pool, rb);
        const PoolDesc pa = window_pool(st.pool, ra, ia), pb = window_pool(st.pool, rb, ib);
        const Rect &ua = a.rect[node.inputs[0]], &ub = b.rect[node.inputs[0]];
        if (!same_size(ia, ib) || pa.win.pad_top != pb.win.pad_top || pa.win.pad_left != pb.win.pad_left ||
            ua.r0 - ia.r0 != ub.r0 - ib.r0 || ua.c0 - ia.c0 != ub.c0 - ib.c0)
          return false;
        break;
      }
      default:  // per position: each input where it lies on the output's window (read in place or copied)
        for (int u : node.inputs) {
          const Rect &ua = a.rect[u], &ub = b.rect[u];
          if (ua.r0 - ra.r0 != ub.r0 - rb.r0 || ua.c0 - ra.c0 != ub.c0 - rb.c0) return false;
        }
    }
  }
  return true;
}

template <typename T>
void GraphPlan<T>::grow_windows(Workspace& ws, const Cone& cone, int n) const {
  const size_t bytes = static_cast<size_t>(cone.window_elems) * n * sizeof(T);
  for (DeviceBuffer* b : {&ws.window_in, &ws.window_out, &ws.window_aux})  // grown once per cone size
    if (b->bytes() < bytes) *b = DeviceBuffer(be_, bytes);
}

template <typename T>
void GraphPlan<T>::tangent_window(size_t si, int n, const T* tx, T* ty, T* arena, const void* keep, Workspace& ws,
                                  const ConeGroup& cones, bool equal_samples) const {
  const NodeLaunch& st = launches_[si];
  const Node& node = graph_.nodes[st.node];
  const Shape& so = graph_.values[node.output].shape;
  const Cone& cone = *cones.front();  // the group's geometry; positions are each box's own
  const int k = static_cast<int>(cones.size());
  const Cone::Rect& r = cone.rect[node.output];
  const int c = static_cast<int>(so.channels()), h = static_cast<int>(so.height()), w = static_cast<int>(so.width());
  T* in_buf = ws.window_in.template as<T>();
  T* aux_buf = ws.window_aux.template as<T>();
  // Value v's tangent on each box's window want(cone) (zero beyond its cone and the plane).
  auto windows_of = [&](int v, auto&& want, T* scratch) {
    return read_windows(v, n, value_ptr(v, n * k, tx, ty, arena), cones, want, scratch);
  };
  auto output_window = [&](const Cone& box) { return box.rect[node.output]; };
  T* out = value_ptr(node.output, n * k, tx, ty, arena);
  // A compact output is the window itself: written in place, no copy. An elementwise launch may share
  // its input's storage; it then reads that input either on this very window (the same element it
  // writes) or from a copy in in_buf or aux_buf, never from the storage it overwrites.
  const bool compact = cone.compact[node.output];
  T* result = compact ? out : ws.window_out.template as<T>();
  const int64_t per_box = static_cast<int64_t>(n) * c * r.area();
  if (r.area() == 0) {  // the box does not reach this value
    if (!compact) be_.zero(out, sizeof(T) * n * k * st.count);
    return;
  }
  switch (node.kind) {
    case OpKind::Conv: {  // on the input's compact rect, padded, or unpadded on the window it reads
      const int u = node.inputs[0];
      conv_window(
          si, n, u, value_ptr(u, n * k, tx, ty, arena), cones, equal_samples,
          [&](auto&& want) { return windows_of(u, want, in_buf); }, aux_buf, result);
      break;
    }
    case OpKind::Clip: {
      const T* t = windows_of(node.inputs[0], output_window, in_buf);
      for (int j = 0; j < k; ++j)
        be_.clip_tangent_window(n, c, h, w, cones[j]->rect[node.output].window(), static_cast<const uint64_t*>(keep),
                                t + j * per_box, result + j * per_box);
      break;
    }
    case OpKind::Affine:  // scale * t per channel
      be_.affine_backward(c, r.area(), weights_[st.node].template as<T>(),
                          windows_of(node.inputs[0], output_window, in_buf), result, n * k, false);
      break;
    case OpKind::Activation: {  // f'(x) * t, with the saved derivative's windows
      for (int j = 0; j < k; ++j) {
        const Cone::Rect& at = cones[j]->rect[node.output];
        be_.copy_window(n, c, static_cast<const T*>(keep), h, w, at.r0, at.c0, aux_buf + j * per_box, at.r1 - at.r0,
                        at.c1 - at.c0, 0, 0, at.r1 - at.r0, at.c1 - at.c0);
      }
      be_.mul_backward(1, 1, k * per_box, false, nullptr, aux_buf, windows_of(node.inputs[0], output_window, in_buf),
                       result, false, nullptr, false);
      break;
    }
    case OpKind::Add:  // both inputs on the output's window (the union of theirs)
      be_.add_forward(k * per_box, windows_of(node.inputs[0], output_window, in_buf),
                      windows_of(node.inputs[1], output_window, aux_buf), result);
      break;
    case OpKind::MaxPool: {
      const int u = node.inputs[0];
      const T* t = windows_of(
          u, [&](const Cone& box) { return box.rect[u]; }, in_buf);
      const int64_t in_box = static_cast<int64_t>(n) * c * cone.rect[u].area();
      for (int j = 0; j < k; ++j)
        be_.maxpool_tangent_window(st.pool, static_cast<const int32_t*>(keep), cones[j]->rect[u].window(),
                                   t + j * in_box, cones[j]->rect[node.output].window(), result + j * per_box, n);
      break;
    }
    default:
      throw Error(std::string("internal: no windowed tangent for ") + op_name(node.kind));
  }
  if (!compact) write_window(node.output, n, result, out, cones, false, aux_buf);
}

template <typename T>
void GraphPlan<T>::difference_window(size_t si, int n, const T* x, T* y, T* arena, Workspace& ws,
                                     const ConeGroup& cones, const ValueStore& store, bool equal_samples) const {
  const NodeLaunch& st = launches_[si];
  const Node& node = graph_.nodes[st.node];
  const Shape& so = graph_.values[node.output].shape;
  const Cone& cone = *cones.front();  // the group's geometry; positions are each box's own
  const int k = static_cast<int>(cones.size());
  const Cone::Rect& r = cone.rect[node.output];
  const int c = static_cast<int>(so.channels());
  T* in_buf = ws.window_in.template as<T>();
  T* out_buf = ws.window_out.template as<T>();
  T* aux_buf = ws.window_aux.template as<T>();
  auto output_window = [&](const Cone& box) { return box.rect[node.output]; };
  // Value v's elements on each box's window want(cone), [k n, C, window].
  auto window_count = [&](int v, const Cone::Rect& window) {
    return static_cast<int64_t>(n) * k * graph_.values[v].shape.channels() * window.area();
  };
  // The base point's value v on each box's window (every box has the same n base points).
  auto base_of = [&](int v, auto&& want, T* dst) {
    const int64_t per_box = window_count(v, want(cone)) / k;
    for (int j = 0; j < k; ++j) base_window(store, v, n, want(*cones[j]), dst + j * per_box);
  };
  // The change of value v on `want` (zero beyond its cone and its plane): read from its compact
  // slot, or for a whole-plane value, its windows less the base point's (`aux` holds that).
  auto change_of = [&](int v, auto&& want, T* scratch, T* aux) -> const T* {
    const T* p = read_windows(v, n, value_ptr(v, n * k, x, y, arena), cones, want, scratch);
    if (cone.compact[v]) return p;
    base_of(v, want, aux);
    be_.subtract(window_count(v, want(cone)), scratch, aux, scratch);
    return scratch;
  };
  T* out = value_ptr(node.output, n * k, x, y, arena);
  // A compact output is the window itself: written in place, no copy.
  const bool compact = cone.compact[node.output];
  T* result = compact ? out : out_buf;  // (an elementwise launch's input is read as in tangent_window)
  const int64_t count = window_count(node.output, r), per_box = count / k;
  // The base point's value of the output on whole planes, for each box.
  auto base_planes = [&] {
    for (int j = 0; j < k; ++j) base_plane(store, node.output, n, out + j * n * st.count);
  };
  if (r.area() == 0) {  // the patch does not reach this value
    if (!compact) base_planes();
    return;
  }
  // Value v at the patch point on `want`, into dst, with its base point's windows in aux: a
  // whole-plane value holds it already, a compact one holds the change to add to the base.
  auto patched_of = [&](int v, auto&& want, T* dst, T* aux) {
    base_of(v, want, aux);
    const T* p = read_windows(v, n, value_ptr(v, n * k, x, y, arena), cones, want, dst);
    if (!cone.compact[v]) return;
    be_.add_forward(window_count(v, want(cone)), p, aux, dst);
  };
  // f(base + change) - f(base) on the output's window, f elementwise, in place on out_buf (not on
  // result: a compact output may share its input's storage, whose window read_windows may be gathering).
  auto elementwise_change = [&](auto&& f) {
    patched_of(node.inputs[0], output_window, out_buf, aux_buf);
    f(out_buf);
    f(aux_buf);
    be_.subtract(count, out_buf, aux_buf, result);
  };
  switch (node.kind) {
    case OpKind::Conv: {  // linear: the convolution without bias of the change, on its window as in tangent_window
      const int u = node.inputs[0];
      conv_window(
          si, n, u, value_ptr(u, n * k, x, y, arena), cones, equal_samples,
          [&](auto&& want) { return change_of(u, want, in_buf, aux_buf); }, aux_buf, result);
      break;
    }
    case OpKind::Affine:  // scale * change per channel
      be_.affine_backward(c, r.area(), weights_[st.node].template as<T>(),
                          change_of(node.inputs[0], output_window, in_buf, aux_buf), result, n * k, false);
      break;
    case OpKind::Add: {
      const T* a = change_of(node.inputs[0], output_window, in_buf, aux_buf);
      const T* b = change_of(node.inputs[1], output_window, aux_buf, out_buf);
      be_.add_forward(count, a, b, result);
      break;
    }
    case OpKind::Clip: {
      const int u = node.inputs[0];
      const T lo = static_cast<T>(node.lo), hi = static_cast<T>(node.hi);
      if (cone.compact[u] && store.layout->made_by[u] < 0) {  // the base read in place from the store
        const T* change = read_windows(u, n, value_ptr(u, n * k, x, y, arena), cones, output_window, in_buf);
        for (int j = 0; j < k; ++j)
          be_.clip_difference_window(n, c, static_cast<int>(so.height()), static_cast<int>(so.width()),
                                     cones[j]->rect[node.output].window(), lo, hi, stored(store, u, store.first_slot),
                                     change + j * per_box, result + j * per_box);
        break;
      }
      elementwise_change([&](T* v) { be_.clip_forward(count, lo, hi, v, v, nullptr); });
      break;
    }
    case OpKind::Activation:
      elementwise_change([&](T* v) {
        be_.activation_forward(node.activation, count, static_cast<T>(node.alpha), static_cast<T>(node.beta), v, v,
                               nullptr);
      });
      break;
    case OpKind::MaxPool: {  // the pool of base + change on the part of the plane the window reads, padded beyond
      auto input_window = [&](const Cone& box) { return pool_input_window(st.pool, box.rect[node.output]); };
      const Cone::Rect in = input_window(cone);
      const int u = node.inputs[0], maker = store.layout->made_by[u];
      const Node* clip = maker >= 0 && graph_.nodes[maker].kind == OpKind::Clip ? &graph_.nodes[maker] : nullptr;
      if (cone.compact[u] && (maker < 0 || clip)) {  // the base read in place from the store (a ReLU's made there)
        const T* change = read_windows(u, n, value_ptr(u, n * k, x, y, arena), cones, input_window, in_buf);
        const int64_t in_box = window_count(u, in) / k;
        for (int j = 0; j < k; ++j)
          be_.maxpool_difference_window(st.pool, input_window(*cones[j]).window(), cones[j]->rect[node.output].window(),
                                        stored(store, clip ? clip->inputs[0] : u, store.first_slot), clip != nullptr,
                                        static_cast<T>(clip ? clip->lo : 0), static_cast<T>(clip ? clip->hi : 0),
                                        change + j * in_box, result + j * per_box, n);
        break;
      }
      const PoolDesc p = window_pool(st.pool, r, in);
      patched_of(u, input_window, in_buf, aux_buf);  // and the base's windows in aux_buf
      be_.maxpool_forward(p, in_buf, out_buf, nullptr, n * k);
      be_.maxpool_forward(p, aux_buf, in_buf, nullptr, n * k);  // the base's pool: exact, so not kept in the store
      be_.subtract(count, out_buf, in_buf, result);
      break;
    }
    default:
      throw Error(std::string("internal: no windowed difference for ") + op_name(node.kind));
  }
  if (!compact) {
    base_planes();
    write_window(node.output, n, result, out, cones, true, aux_buf);
  }
}

template <typename T>
void GraphPlan<T>::patched_forward(int n, const T* x, T* y, Workspace& ws, const ConeGroup& cones,
                                   const ValueStore& store, bool equal_samples) const {
  const int batch = n * static_cast<int>(cones.size());
  if (cones.empty()) throw Error("internal: a patched forward without a cone");
  if (batch > ws.capacity) throw Error("internal: batch of " + std::to_string(batch) + " exceeds workspace");
  if (ws.channels_last) throw Error("internal: a patched forward on a channels_last workspace");
  grow_windows(ws, *cones.front(), batch);
  T* arena = ws.forward_arena.template as<T>();
  for (size_t si = 0; si < launches_.size(); ++si)
    at_node(graph_.nodes[launches_[si].node], "patched forward", [&] {
      if (cones.front()->windowed[si]) return difference_window(si, n, x, y, arena, ws, cones, store, equal_samples);
      launch_forward(si, batch, x, y, arena, nullptr);
    });
}

template <typename T>
typename GraphPlan<T>::StoreLayout GraphPlan<T>::store_layout(const std::vector<Cone>& cones) const {
  // What difference_window reads at the base point: the inputs of Clip, activations and MaxPool
  // (f(base + change)), and any whole-plane value a windowed launch reads or writes (its change is
  // its value less the base's, and it is written as base plus change). MaxPool's base output is
  // the pool of the base input window it reads anyway.
  std::vector<bool> need(graph_.values.size(), false);
  for (const Cone& cone : cones)
    for (size_t li = 0; li < launches_.size(); ++li) {
      if (!cone.windowed[li]) continue;
      const Node& node = graph_.nodes[launches_[li].node];
      if (!cone.compact[node.output]) need[node.output] = true;
      if (cone.rect[node.output].area() == 0) continue;
      const bool nonlinear =
          node.kind == OpKind::Clip || node.kind == OpKind::Activation || node.kind == OpKind::MaxPool;
      if (nonlinear) need[node.inputs[0]] = true;
      for (int v : node.inputs)
        if (!cone.compact[v]) need[v] = true;
    }
  StoreLayout layout;
  layout.offset.assign(graph_.values.size(), -1);
  layout.made_by.assign(graph_.values.size(), -1);
  // A Clip or activation output whose input is kept is made from it when read. Windows hang
  // over the plane with zeros, so only ops that map 0 to 0 qualify (ReLU-like clips, and
  // activations that vanish at 0); the others' outputs are kept.
  for (const NodeLaunch& st : launches_) {
    const Node& node = graph_.nodes[st.node];
    if (node.kind != OpKind::Clip && node.kind != OpKind::Activation) continue;
    const int u = node.inputs[0];
    if (need[node.output] && need[u] && layout.made_by[u] < 0 && maps_zero_to_zero(node))
      layout.made_by[node.output] = st.node;
  }
  for (size_t v = 0; v < need.size(); ++v)
    if (need[v] && layout.made_by[v] < 0) {
      layout.offset[v] = layout.elems;
      layout.elems += graph_.values[v].shape.numel();
    }
  return layout;
}

template <typename T>
void GraphPlan<T>::carry_store(const ValueStore& store, int from) const {
  for (size_t v = 0; v < graph_.values.size(); ++v)
    if (store.layout->offset[v] >= 0)
      be_.copy_on_device(stored(store, static_cast<int>(v), 0), stored(store, static_cast<int>(v), from),
                         sizeof(T) * graph_.values[v].shape.numel());
}

template <typename T>
void GraphPlan<T>::tangent(int n, const T* tx, T* ty, Workspace& ws, const ConeGroup& cones, const Workspace* saving,
                           bool equal_samples) const {
  if (!saving) saving = &ws;
  const int k = cones.empty() ? 1 : static_cast<int>(cones.size()), batch = n * k;
  if (batch > ws.capacity || n > saving->capacity || (!saving->saved.bytes() && saved_bytes(n, saving->secant)))
    throw Error("internal: tangent pass without the saved state of a forward of " + std::to_string(n) + " samples");
  if (ws.channels_last || saving->channels_last)  // the masks it reads by their planes
    throw Error("internal: a tangent pass on a channels_last workspace");
  // Under the secant rule the tangent of sample i is taken over the step from sample i - 1, with the slopes
  // f1's backward uses (the tangent form's patch sums then equal that rule's IG inside the box); on whole planes.
  const bool secant = saving->secant;
  if (secant && !cones.empty()) throw Error("internal: a tangent pass of the secant rule on a cone");
  if (!cones.empty()) grow_windows(ws, *cones.front(), batch);
  T* arena = ws.forward_arena.template as<T>();
  const auto* saved = saving->saved.template as<uint8_t>();
  for (size_t si = 0; si < launches_.size(); ++si) {
    const NodeLaunch& st = launches_[si];
    const Node& node = graph_.nodes[st.node];
    const T* in0 = value_ptr(node.inputs[0], batch, tx, ty, arena);
    T* out = value_ptr(node.output, batch, tx, ty, arena);
    const T* w = weights_[st.node].template as<T>();
    const void* keep = saved + saved_offset(static_cast<int>(si), n, secant);
    // A launch that reads the saved state of the n points runs once per box on the box's n samples.
    const int64_t in_count = graph_.values[node.inputs[0]].shape.numel();
    auto per_box = [&](auto&& launch) {
      for (int j = 0; j < k; ++j) launch(in0 + j * n * in_count, out + j * n * st.count, j);
    };
    at_node(node, "tangent", [&] {
      if (!cones.empty() && cones.front()->windowed[si])
        return tangent_window(si, n, tx, ty, arena, keep, ws, cones, equal_samples);
      switch (node.kind) {
        case OpKind::Conv:
          be_.conv2d_forward(st.conv, w, nullptr, in0, out, batch);
          break;
        case OpKind::Linear:
          be_.linear_forward(static_cast<int>(in_count), static_cast<int>(st.count), w, nullptr, in0, out, batch);
          break;
        case OpKind::Affine: {  // scale * t, as its backward
          const Shape& s = graph_.values[node.output].shape;
          be_.affine_backward(static_cast<int>(s.channels()), s.plane(), w, in0, out, batch, false);
          break;
        }
        case OpKind::Clip:  // gated by the saved mask, as its backward
          per_box([&](const T* t, T* y, int) {
            if (secant)
              be_.mul_backward(1, 1, st.count * n, false, nullptr, static_cast<const T*>(keep), t, y, false, nullptr,
                               false);
            else
              be_.clip_backward(st.count * n, static_cast<const uint64_t*>(keep), t, y, false);
          });
          break;
        case OpKind::MaxPool:
          per_box([&](const T* t, T* y, int) {
            if (secant)
              be_.maxpool_tangent_secant(
                  st.pool, static_cast<const int32_t*>(keep),
                  reinterpret_cast<const T*>(static_cast<const uint8_t*>(keep) + secant_share_offset(st.count * n)), t,
                  y, n);
            else
              be_.maxpool_tangent(st.pool, static_cast<const int32_t*>(keep), t, y, n);
          });
          break;
        case OpKind::AvgPool:  // linear without a bias: the tangent is the forward
        case OpKind::Add:
        case OpKind::Concat:
        case OpKind::Slice:
        case OpKind::ChannelMean:
        case OpKind::ChannelShuffle:
          launch_forward(si, batch, tx, ty, arena, nullptr);
          break;
        case OpKind::Mul: {  // t_a * b + a * t_b, with a and b saved by the forward
          const Shape& sa = graph_.values[node.inputs[0]].shape;
          const int v1 = node.inputs[1];
          const bool per_channel = graph_.values[v1].shape != sa;
          const T* a = static_cast<const T*>(keep);
          const T* b = a + n * st.count;
          const int c = static_cast<int>(sa.channels());
          const T* t1 = value_ptr(v1, batch, tx, ty, arena);
          per_box([&](const T* t, T* y, int j) {
            be_.mul_forward(n, c, sa.plane(), per_channel, t, b, y, false);
            be_.mul_forward(n, c, sa.plane(), per_channel, a, t1 + j * n * graph_.values[v1].shape.numel(), y, true);
          });
          break;
        }
        case OpKind::Activation:  // f'(x) * t
          per_box([&](const T* t, T* y, int) {
            be_.mul_backward(1, 1, st.count * n, false, nullptr, static_cast<const T*>(keep), t, y, false, nullptr,
                             false);
          });
          break;
        case OpKind::LayerNorm: {
          const Shape& so = graph_.values[node.output].shape;
          const T* xhat = static_cast<const T*>(keep);
          per_box([&](const T* t, T* y, int) {
            be_.layernorm_tangent(n, static_cast<int>(so.channels()), so.plane(), w, xhat, xhat + n * st.count, t, y);
          });
          break;
        }
      }
    });
  }
}

template Cone GraphPlan<float>::cone(const Box&, bool, bool) const;
template Cone GraphPlan<double>::cone(const Box&, bool, bool) const;
template bool GraphPlan<float>::same_geometry(const Cone&, const Cone&) const;
template bool GraphPlan<double>::same_geometry(const Cone&, const Cone&) const;
template void GraphPlan<float>::tangent(int, const float*, float*, Workspace&, const ConeGroup&, const Workspace*,
                                        bool) const;
template void GraphPlan<float>::patched_forward(int, const float*, float*, Workspace&, const ConeGroup&,
                                                const ValueStore&, bool) const;
template void GraphPlan<double>::patched_forward(int, const double*, double*, Workspace&, const ConeGroup&,
                                                 const ValueStore&, bool) const;
template GraphPlan<float>::StoreLayout GraphPlan<float>::store_layout(const std::vector<Cone>&) const;
template GraphPlan<double>::StoreLayout GraphPlan<double>::store_layout(const std::vector<Cone>&) const;
template void GraphPlan<float>::carry_store(const ValueStore&, int) const;
template void GraphPlan<double>::carry_store(const ValueStore&, int) const;
template void GraphPlan<double>::tangent(int, const double*, double*, Workspace&, const ConeGroup&, const Workspace*,
                                         bool) const;

}  // namespace ipna
