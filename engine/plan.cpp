#include "engine/plan.h"

#include <algorithm>
#include <map>
#include <set>

#include "engine/cpu/cpu_backend.h"
#include "engine/error.h"

namespace ipna {
namespace {

constexpr int64_t kAlignElems = 64;  // keep every slot 256-byte aligned for floats

int64_t round_up(int64_t v, int64_t a) { return (v + a - 1) / a * a; }

// First-fit placement of slots in a linear arena; sizes in per-sample elements.
class ArenaPlanner {
 public:
  int64_t allocate(int64_t size) {
    size = round_up(std::max<int64_t>(size, 1), kAlignElems);
    int64_t at = 0;
    for (const auto& [off, sz] : live_) {
      if (off - at >= size) break;
      at = std::max(at, off + sz);
    }
    live_[at] = size;
    peak_ = std::max(peak_, at + size);
    return at;
  }
  void release(int64_t off) { live_.erase(off); }
  int64_t peak() const { return peak_; }

 private:
  std::map<int64_t, int64_t> live_;
  int64_t peak_ = 0;
};

// Ops whose output may take their dying input's slot (each element read before it is written).
bool is_elementwise(OpKind k) {
  return k == OpKind::Clip || k == OpKind::Affine || k == OpKind::Add || k == OpKind::Activation;
}

// Ops that run alike on NCHW and NHWC batches (the same op on every element).
bool layout_free(OpKind k) { return k == OpKind::Clip || k == OpKind::Add || k == OpKind::Activation; }

// A Conv/Linear kernel in T, each output's row times its scale (a folded BatchNorm), in double.
template <typename T>
DeviceBuffer upload_kernel(Backend<T>& be, const std::vector<float>& k, const std::vector<double>& scale) {
  if (k.empty()) return {};
  std::vector<T> host(k.size());
  const size_t per = scale.empty() ? k.size() : k.size() / scale.size();
  for (size_t i = 0; i < k.size(); ++i) host[i] = static_cast<T>(scale.empty() ? k[i] : k[i] * scale[i / per]);
  DeviceBuffer buf(be, host.size() * sizeof(T));
  be.copy_to_device(buf.as<void>(), host.data(), host.size() * sizeof(T));
  return buf;
}

template <typename T>
DeviceBuffer upload(Backend<T>& be, const std::vector<double>& v) {
  if (v.empty()) return {};
  std::vector<T> host(v.begin(), v.end());
  DeviceBuffer buf(be, host.size() * sizeof(T));
  be.copy_to_device(buf.as<void>(), host.data(), host.size() * sizeof(T));
  return buf;
}

}  // namespace

template <typename T>
GraphPlan<T>::GraphPlan(const Graph& g, Backend<T>& backend) : graph_(g.without_weights()), be_(backend) {
  g.validate();
  const int nv = static_cast<int>(graph_.values.size());
  const int nn = static_cast<int>(graph_.nodes.size());
  for (int i = 0; i < nn; ++i) {
    const Node& node = graph_.nodes[i];
    NodeLaunch st;
    st.node = i;
    const Shape& in = graph_.values[node.inputs[0]].shape;
    const Shape& out = graph_.values[node.output].shape;
    st.count = out.numel();
    if (node.kind == OpKind::Conv) {
      st.conv = {static_cast<int>(in.dims[0]), static_cast<int>(in.dims[1]), static_cast<int>(in.dims[2]),
                 static_cast<int>(out.dims[0]), static_cast<int>(out.dims[1]), static_cast<int>(out.dims[2]),
                 node.groups, node.win};
    } else if (node.kind == OpKind::MaxPool || node.kind == OpKind::AvgPool) {
      st.pool = {static_cast<int>(in.dims[0]), static_cast<int>(in.dims[1]), static_cast<int>(in.dims[2]),
                 static_cast<int>(out.dims[1]), static_cast<int>(out.dims[2]), node.win};
    }
    launches_.push_back(st);
    const Node& full = g.nodes[i];
    weights_.push_back(full.kernel.empty() ? upload(be_, full.weight) : upload_kernel(be_, full.kernel, full.kernel_scale));
    biases_.push_back(upload(be_, g.nodes[i].bias));
    DeviceBuffer perm;
    if (!node.permutation.empty()) {
      perm = DeviceBuffer(be_, node.permutation.size() * sizeof(int32_t));
      std::vector<int32_t> p(node.permutation.begin(), node.permutation.end());
      be_.copy_to_device(perm.as<void>(), p.data(), p.size() * sizeof(int32_t));
    }
    permutations_.push_back(std::move(perm));
  }

  if (nn > 0) {
    const Node& first = graph_.nodes[0];
    int readers = 0;
    for (const Node& node : graph_.nodes)
      for (int v : node.inputs) readers += v == graph_.input;
    line_head_ =
        first.kind == OpKind::Conv && first.inputs[0] == graph_.input && readers == 1 && first.output != graph_.output;
  }
  if (line_head_) {  // the input, the head and its output (no copy of the other nodes' weights)
    head_ = std::make_unique<Graph>();
    head_->values = {g.values[g.input], g.values[g.nodes[0].output]};
    head_->nodes = {g.nodes[0]};
    head_->nodes[0].inputs = {0};
    head_->nodes[0].output = 1;
    head_->input = 0;
    head_->output = 1;
  }

  choose_layouts();

  // Forward liveness: a value lives from its node to its last reader.
  std::vector<int> last_use(nv, -1);
  for (int i = 0; i < nn; ++i)
    for (int v : graph_.nodes[i].inputs) last_use[v] = std::max(last_use[v], i);
  fwd_offset_.assign(nv, -1);
  {
    ArenaPlanner arena;
    std::vector<bool> handed_on(nv, false);
    for (int i = 0; i < nn; ++i) {
      const Node& node = graph_.nodes[i];
      const int out = node.output;
      if (out != graph_.output) {
        int64_t off = -1;
        if (is_elementwise(node.kind))
          for (int v : node.inputs)
            if (fwd_offset_[v] >= 0 && last_use[v] == i && !handed_on[v]) {
              off = fwd_offset_[v];  // in place: the input dies here
              handed_on[v] = true;
              break;
            }
        fwd_offset_[out] = off >= 0 ? off : arena.allocate(graph_.values[out].shape.numel());
        if (last_use[out] < 0) arena.release(fwd_offset_[out]);
      }
      std::set<int> ins(node.inputs.begin(), node.inputs.end());
      for (int v : ins)
        if (fwd_offset_[v] >= 0 && last_use[v] == i && !handed_on[v]) arena.release(fwd_offset_[v]);
    }
    fwd_peak_ = arena.peak();
  }

  // Backward liveness: a value's gradient lives from its first writer (its
  // last reader in forward order) until its producer has consumed it.
  bwd_offset_.assign(nv, -1);
  bwd_accumulate_.assign(nn, {});
  {
    ArenaPlanner arena;
    std::vector<bool> written(nv, false), handed_on(nv, false);
    written[graph_.output] = true;
    for (int i = nn - 1; i >= 0; --i) {
      const Node& node = graph_.nodes[i];
      const int out = node.output;
      bool out_in_arena = bwd_offset_[out] >= 0;
      for (int v : node.inputs) {
        bool acc = written[v];
        if (!written[v] && v != graph_.input) {
          if (is_elementwise(node.kind) && out_in_arena && !handed_on[out]) {
            bwd_offset_[v] = bwd_offset_[out];
            handed_on[out] = true;
          } else {
            bwd_offset_[v] = arena.allocate(graph_.values[v].shape.numel());
          }
        }
        written[v] = true;
        bwd_accumulate_[i].push_back(acc);
      }
      if (out_in_arena && !handed_on[out]) arena.release(bwd_offset_[out]);
    }
    bwd_peak_ = arena.peak();
  }
}

// Which values a channels_last workspace keeps NHWC. Values tied by elementwise ops (Clip, Add,
// Activation, which run alike on either layout) share one layout, chosen per group: NHWC where more
// of the convolutions that make or read the group prefer NHWC than other launches (which then read or
// write it through a transpose) touch it, the graph's output counting as one such launch (its
// transposes out and, in backward, in) and the line's head as none (a line makes its output from two
// samples, transposed once). The graph's input, values without a plane (or of one position, where the
// layouts agree) and the inputs and outputs of Concat and Mul stay NCHW.
template <typename T>
void GraphPlan<T>::choose_layouts() {
  const int nv = static_cast<int>(graph_.values.size());
  nhwc_.assign(nv, false);
  bf16_.assign(nv, false);
  prefers_nhwc_.assign(launches_.size(), false);
  for (size_t si = 0; si < launches_.size(); ++si)
    prefers_nhwc_[si] = graph_.nodes[launches_[si].node].kind == OpKind::Conv && be_.prefers_nhwc(launches_[si].conv);
  if (std::none_of(prefers_nhwc_.begin(), prefers_nhwc_.end(), [](bool p) { return p; })) return;
  std::vector<int> group(nv);
  for (int v = 0; v < nv; ++v) group[v] = v;
  const auto root = [&](int v) {
    while (group[v] != v) v = group[v] = group[group[v]];
    return v;
  };
  for (const Node& node : graph_.nodes)
    if (layout_free(node.kind))
      for (int v : node.inputs) group[root(v)] = root(node.output);
  std::vector<int> gain(nv, 0);
  std::vector<bool> nchw_only(nv, false);
  for (size_t si = 0; si < launches_.size(); ++si) {
    const Node& node = graph_.nodes[launches_[si].node];
    if (layout_free(node.kind)) continue;
    const bool several = node.inputs.size() > 1;
    for (int v : node.inputs) {
      if (several) nchw_only[root(v)] = true;
      gain[root(v)] += prefers_nhwc_[si] ? 1 : -1;
    }
    if (several) nchw_only[root(node.output)] = true;
    const bool line_made = si == 0 && line_head_;
    if (!line_made) gain[root(node.output)] += prefers_nhwc_[si] ? 1 : -1;
  }
  nchw_only[root(graph_.input)] = true;
  gain[root(graph_.output)] -= 1;
  for (int v = 0; v < nv; ++v) {
    const Shape& s = graph_.values[v].shape;
    if (s.rank() != 3 || s.plane() <= 1) nchw_only[root(v)] = true;
  }
  for (int v = 0; v < nv; ++v) nhwc_[v] = !nchw_only[root(v)] && gain[root(v)] > 0;
  // bf16 storage covers the NHWC groups: their convolutions, elementwise ops and transposes all run
  // on it, except the line's head, which makes its output from float32 ends (its group stays float32).
  if (be_.stores_bf16())
    for (int v = 0; v < nv; ++v) bf16_[v] = nhwc_[v] && !(line_head_ && root(v) == root(graph_.nodes[0].output));
  int64_t in_widest = 0, out_widest = 0;
  for (size_t si = 0; si < launches_.size(); ++si) {
    const Node& node = graph_.nodes[launches_[si].node];
    if (converts(si, false)) in_widest = std::max(in_widest, graph_.values[node.inputs[0]].shape.numel());
    if (converts(si, true)) out_widest = std::max(out_widest, graph_.values[node.output].shape.numel());
  }
  transpose_elems_ = in_widest + out_widest + (nhwc_[graph_.output] ? output_numel() : 0);
}

template <typename T>
bool GraphPlan<T>::converts(size_t si, bool output) const {
  const Node& node = graph_.nodes[launches_[si].node];
  if (prefers_nhwc_[si] || layout_free(node.kind)) return false;
  return nhwc_[output ? node.output : node.inputs[0]];
}

template <typename T>
size_t GraphPlan<T>::saved_bytes(int n, bool secant) const {
  return saved_offset(static_cast<int>(launches_.size()), n, secant);
}

// What backward needs of each node, for n samples: a bit per Clip element, an
// index per MaxPool output, the derivative per Activation element, both
// factors of a Mul, x_hat and 1/sigma of a LayerNorm; nothing for the rest.
// Under the secant rule a slope per Clip element, and per MaxPool output its
// index and its share between two argmaxes (after the indices, 256-byte aligned).
template <typename T>
size_t GraphPlan<T>::saved_size(int launch, int n, bool secant) const {
  const NodeLaunch& st = launches_[launch];
  const Node& node = graph_.nodes[st.node];
  const size_t count = static_cast<size_t>(n) * st.count;
  switch (node.kind) {
    case OpKind::Clip:
      return secant ? count * sizeof(T) : (count + 63) / 64 * sizeof(uint64_t);
    case OpKind::MaxPool:
      return secant ? secant_share_offset(count) + count * sizeof(T) : count * sizeof(int32_t);
    case OpKind::Activation: return count * sizeof(T);
    case OpKind::Mul: return (count + static_cast<size_t>(n) * graph_.values[node.inputs[1]].shape.numel()) * sizeof(T);
    case OpKind::LayerNorm:
      return (count + static_cast<size_t>(n) * graph_.values[node.output].shape.plane()) * sizeof(T);
    default: return 0;
  }
}

template <typename T>
size_t GraphPlan<T>::saved_offset(int launch, int n, bool secant) const {
  size_t off = 0;
  for (int i = 0; i < launch; ++i) off += (saved_size(i, n, secant) + 255) / 256 * 256;
  return off;
}

template <typename T>
size_t GraphPlan<T>::bytes_per_sample(bool with_backward, bool secant) const {
  size_t b = static_cast<size_t>(fwd_peak_) * sizeof(T);
  if (with_backward) b += static_cast<size_t>(bwd_peak_) * sizeof(T) + saved_bytes(1, secant);
  if (secant) {  // secant_input
    int64_t widest = 0;
    for (const NodeLaunch& st : launches_) widest = std::max(widest, st.count);
    b += static_cast<size_t>(widest) * sizeof(T);
  }
  return b + static_cast<size_t>(transpose_elems_) * sizeof(T);
}

template <typename T>
typename GraphPlan<T>::Workspace GraphPlan<T>::make_workspace(int capacity, bool with_backward, bool secant) const {
  Workspace ws;
  ws.capacity = capacity;
  ws.secant = secant;
  ws.forward_arena = DeviceBuffer(be_, static_cast<size_t>(fwd_peak_) * capacity * sizeof(T));
  if (with_backward) {
    ws.backward_arena = DeviceBuffer(be_, static_cast<size_t>(bwd_peak_) * capacity * sizeof(T));
    ws.saved = DeviceBuffer(be_, saved_bytes(capacity, secant));
  }
  return ws;
}

template <typename T>
const Node* GraphPlan<T>::without_secant() const {
  for (const NodeLaunch& st : launches_)
    if (graph_.nodes[st.node].kind == OpKind::LayerNorm) return &graph_.nodes[st.node];
  return nullptr;
}

template <typename T>
void GraphPlan<T>::reserve(Workspace& ws, int capacity, bool with_backward) const {
  const bool has_backward = ws.backward_arena.bytes() >= static_cast<size_t>(bwd_peak_) * ws.capacity * sizeof(T) &&
                            ws.saved.bytes() >= saved_bytes(ws.capacity, ws.secant);
  if (ws.capacity >= capacity && ws.forward_arena.bytes() && (!with_backward || has_backward)) return;
  const bool keep_backward = with_backward || (ws.capacity && has_backward);
  const bool channels_last = ws.channels_last, secant = ws.secant;
  capacity = std::max(capacity, ws.capacity);
  ws = Workspace();  // release first: the old and new arenas need not coexist
  ws = make_workspace(std::max(capacity, 1), keep_backward, secant);
  ws.channels_last = channels_last;
}

template <typename T>
ConvDesc GraphPlan<T>::conv_in_layout(size_t si, bool channels_last, bool forward) const {
  ConvDesc d = launches_[si].conv;
  if (channels_last && prefers_nhwc_[si]) {
    const Node& node = graph_.nodes[launches_[si].node];
    d.in_nhwc = nhwc_[node.inputs[0]];
    d.out_nhwc = nhwc_[node.output];
    d.in_bf16 = forward && bf16_[node.inputs[0]];
    d.out_bf16 = forward && bf16_[node.output];
  }
  return d;
}

template <typename T>
T* GraphPlan<T>::room(DeviceBuffer& b, int64_t count) const {
  const size_t bytes = static_cast<size_t>(std::max<int64_t>(count, 1)) * sizeof(T);
  if (b.bytes() < bytes) {
    b.reset();
    b = DeviceBuffer(be_, bytes);
  }
  return b.as<T>();
}

template <typename T>
void GraphPlan<T>::transpose(int v, int n, const T* src, T* dst, bool to_nhwc, bool forward, bool accumulate) const {
  const Shape& s = graph_.values[v].shape;
  be_.transpose_layout(n, static_cast<int>(s.channels()), s.plane(), src, dst, to_nhwc, forward && bf16_[v],
                       accumulate);
}

template <typename T>
void GraphPlan<T>::launch_in_layout(size_t si, int n, const T* x, T* y, T* arena, void* keep, Workspace& ws) const {
  if (!ws.channels_last) return launch_forward(si, n, x, y, arena, keep);
  const Node& node = graph_.nodes[launches_[si].node];
  const T* in0 = nullptr;
  T* out = nullptr;
  if (converts(si, false)) {
    const int u = node.inputs[0];
    T* t = room(ws.transposed_in, n * graph_.values[u].shape.numel());
    transpose(u, n, value_ptr(u, n, x, y, arena), t, false, true, false);
    in0 = t;
  }
  if (converts(si, true)) out = room(ws.transposed_out, n * graph_.values[node.output].shape.numel());
  launch_forward(si, n, x, y, arena, keep, true, in0, out);
  if (out) transpose(node.output, n, out, value_ptr(node.output, n, x, y, arena), true, true, false);
}

template <typename T>
T* GraphPlan<T>::value_ptr(int v, int n, const T* x, T* y, T* arena) const {
  if (v == graph_.input) return const_cast<T*>(x);
  if (v == graph_.output) return y;
  return arena + fwd_offset_[v] * n;
}

template <typename T>
T* GraphPlan<T>::grad_ptr(int v, int n, const T* dy, T* dx, T* arena) const {
  if (v == graph_.input) return dx;
  if (v == graph_.output) return const_cast<T*>(dy);
  return arena + bwd_offset_[v] * n;
}

template <typename T>
void GraphPlan<T>::launch_forward(size_t si, int n, const T* x, T* y, T* arena, void* keep, bool channels_last,
                                  const T* in0_at, T* out_at) const {
  const NodeLaunch& st = launches_[si];
  const Node& node = graph_.nodes[st.node];
  const T* in0 = in0_at ? in0_at : value_ptr(node.inputs[0], n, x, y, arena);
  T* out = out_at ? out_at : value_ptr(node.output, n, x, y, arena);
  const T* w = weights_[st.node].template as<T>();
  const T* b = biases_[st.node].template as<T>();
  switch (node.kind) {
    case OpKind::Conv:
      be_.conv2d_forward(conv_in_layout(si, channels_last, true), w, b, in0, out, n);
      break;
    case OpKind::Linear:
      be_.linear_forward(static_cast<int>(graph_.values[node.inputs[0]].shape.numel()), static_cast<int>(st.count), w,
                         b, in0, out, n);
      break;
    case OpKind::Affine: {
      const Shape& s = graph_.values[node.output].shape;
      be_.affine_forward(static_cast<int>(s.channels()), s.plane(), w, b, in0, out, n);
      break;
    }
    case OpKind::Clip:
      if (channels_last && bf16_[node.output])
        be_.clip_forward_bf16(st.count * n, static_cast<T>(node.lo), static_cast<T>(node.hi),
                              reinterpret_cast<const Bf16Bits*>(in0), reinterpret_cast<Bf16Bits*>(out),
                              static_cast<uint64_t*>(keep));
      else
        be_.clip_forward(st.count * n, static_cast<T>(node.lo), static_cast<T>(node.hi), in0, out,
                         static_cast<uint64_t*>(keep));
      break;
    case OpKind::MaxPool:
      be_.maxpool_forward(st.pool, in0, out, static_cast<int32_t*>(keep), n);
      break;
    case OpKind::AvgPool:
      be_.avgpool_forward(st.pool, in0, out, n);
      break;
    case OpKind::Add: {
      const T* in1 = value_ptr(node.inputs[1], n, x, y, arena);
      if (channels_last && bf16_[node.output])
        be_.add_forward_bf16(st.count * n, reinterpret_cast<const Bf16Bits*>(in0),
                             reinterpret_cast<const Bf16Bits*>(in1), reinterpret_cast<Bf16Bits*>(out));
      else
        be_.add_forward(st.count * n, in0, in1, out);
      break;
    }
    case OpKind::Concat: {
      const Shape& so = graph_.values[node.output].shape;
      int at = 0;
      for (int v : node.inputs) {
        const int c = static_cast<int>(graph_.values[v].shape.channels());
        be_.copy_channels(n, so.plane(), c, value_ptr(v, n, x, y, arena), c, 0, out, static_cast<int>(so.channels()),
                          at, false);
        at += c;
      }
      break;
    }
    case OpKind::Slice: {
      const Shape& si = graph_.values[node.inputs[0]].shape;
      be_.copy_channels(n, si.plane(), node.channel_count, in0, static_cast<int>(si.channels()), node.channel_offset,
                        out, node.channel_count, 0, false);
      break;
    }
    case OpKind::Mul: {
      const Shape& sa = graph_.values[node.inputs[0]].shape;
      const T* in1 = value_ptr(node.inputs[1], n, x, y, arena);
      const bool per_channel = graph_.values[node.inputs[1]].shape != sa;
      if (keep) {  // both factors, for backward
        T* saved_a = static_cast<T*>(keep);
        be_.copy_on_device(saved_a, in0, sizeof(T) * n * st.count);
        be_.copy_on_device(saved_a + n * st.count, in1, sizeof(T) * n * graph_.values[node.inputs[1]].shape.numel());
      }
      be_.mul_forward(n, static_cast<int>(sa.channels()), sa.plane(), per_channel, in0, in1, out, false);
      break;
    }
    case OpKind::Activation:
      if (channels_last && bf16_[node.output])
        be_.activation_forward_bf16(node.activation, st.count * n, static_cast<T>(node.alpha),
                                    static_cast<T>(node.beta), reinterpret_cast<const Bf16Bits*>(in0),
                                    reinterpret_cast<Bf16Bits*>(out), static_cast<T*>(keep));
      else
        be_.activation_forward(node.activation, st.count * n, static_cast<T>(node.alpha), static_cast<T>(node.beta),
                               in0, out, static_cast<T*>(keep));
      break;
    case OpKind::ChannelMean: {
      const Shape& si = graph_.values[node.inputs[0]].shape;
      be_.channel_mean_forward(n, static_cast<int>(si.channels()), si.plane(), in0, out);
      break;
    }
    case OpKind::LayerNorm: {
      const Shape& so = graph_.values[node.output].shape;
      T* xhat = static_cast<T*>(keep);
      be_.layernorm_forward(n, static_cast<int>(so.channels()), so.plane(), static_cast<T>(node.eps), w, b, in0, out,
                            xhat, xhat ? xhat + n * st.count : nullptr);
      break;
    }
    case OpKind::ChannelShuffle: {
      const Shape& so = graph_.values[node.output].shape;
      be_.channel_shuffle(n, static_cast<int>(so.channels()), so.plane(), permutations_[st.node].template as<int32_t>(),
                          in0, out, false, false);
      break;
    }
  }
}

template <typename T>
GraphPlan<T>::GraphPlan(GraphPlan&&) noexcept = default;

template <typename T>
GraphPlan<T>::~GraphPlan() = default;

template <typename T>
void GraphPlan<T>::launch_secant(size_t si, int n, const T* x, T* y, T* arena, void* keep, Workspace& ws) const {
  const NodeLaunch& st = launches_[si];
  const Node& node = graph_.nodes[st.node];
  const T* in0 = value_ptr(node.inputs[0], n, x, y, arena);
  T* out = value_ptr(node.output, n, x, y, arena);
  const int64_t count = st.count * n;
  switch (node.kind) {
    case OpKind::Clip:
    case OpKind::Activation: {  // the slope from the input and output of both samples; the launch may work in place
      // (Elementwise across samples, so in whichever layout the workspace keeps the values.)
      const T* z = in0;
      if (out == in0) {
        T* copy = room(ws.secant_input, count);
        be_.copy_on_device(copy, in0, sizeof(T) * count);
        z = copy;
      }
      const bool smooth = node.kind == OpKind::Activation;
      launch_in_layout(si, n, x, y, arena, smooth ? keep : nullptr, ws);  // an activation's derivative: short steps'
      be_.secant_slopes(st.count, n, z, out, static_cast<T*>(keep), smooth);
      break;
    }
    case OpKind::MaxPool: {  // its shares from the input it ran on: NCHW, transposed there if the value is NHWC
      launch_in_layout(si, n, x, y, arena, keep, ws);
      const T* ran_on = ws.channels_last && converts(si, false) ? ws.transposed_in.template as<T>() : in0;
      be_.maxpool_secant_weights(st.pool, static_cast<const int32_t*>(keep), ran_on,
                                 reinterpret_cast<T*>(static_cast<uint8_t*>(keep) + secant_share_offset(count)), n);
      break;
    }
    case OpKind::Mul: {
      launch_in_layout(si, n, x, y, arena, keep, ws);
      T* a = static_cast<T*>(keep);
      be_.pair_mean(st.count, n, a);
      be_.pair_mean(graph_.values[node.inputs[1]].shape.numel(), n, a + count);
      break;
    }
    case OpKind::LayerNorm:
      throw Error("the secant rule has no slopes for a LayerNorm");
    default:  // linear: nothing kept, or what it keeps is what its backward needs at any point
      launch_in_layout(si, n, x, y, arena, keep, ws);
  }
}

template <typename T>
void GraphPlan<T>::prepare_line(const std::vector<double>& x0, const std::vector<double>& d, Workspace& ws) const {
  if (!line_head_) return;
  const int64_t count = launches_[0].count;
  std::vector<double> ends(2 * count);
  // Its float64 plans live for this call only: a plan is prepared once per run, and most plans with a
  // head never are (f2, whose input is not on a line).
  CpuBackend<double> cpu;
  Graph without_bias = *head_;
  std::fill(without_bias.nodes[0].bias.begin(), without_bias.nodes[0].bias.end(), 0.0);
  const GraphPlan<double> with_bias(*head_, cpu), along(without_bias, cpu);
  auto host = with_bias.make_workspace(1, false);
  with_bias.forward(1, x0.data(), ends.data(), host, false);
  along.forward(1, d.data(), ends.data() + count, host, false);
  ws.line_nhwc = ws.channels_last && nhwc_[graph_.nodes[0].output];
  if (ws.line_nhwc) {
    const Shape& s = graph_.values[graph_.nodes[0].output].shape;
    const int64_t c = s.channels(), plane = s.plane();
    const std::vector<double> nchw = ends;
    for (int64_t at = 0; at < 2 * count; at += count)
      for (int64_t k = 0; k < c; ++k)
        for (int64_t i = 0; i < plane; ++i) ends[at + i * c + k] = nchw[at + k * plane + i];
  }
  const std::vector<T> rounded(ends.begin(), ends.end());
  const size_t bytes = rounded.size() * sizeof(T);
  if (ws.line_ends.bytes() < bytes) ws.line_ends = DeviceBuffer(be_, bytes);
  be_.copy_to_device(ws.line_ends.template as<void>(), rounded.data(), bytes);
  ws.line_ready = true;
}

template <typename T>
void GraphPlan<T>::forward(int n, const T* x, T* y, Workspace& ws, bool save, ValueStore store,
                           const std::vector<double>* on_line) const {
  if (n > ws.capacity) throw Error("internal: batch of " + std::to_string(n) + " exceeds workspace");
  if (save && !ws.saved.bytes() && saved_bytes(n, ws.secant))
    throw Error("internal: forward with save needs a workspace made with_backward");
  if (save && ws.secant && ws.channels_last && be_.stores_bf16())
    throw Error("internal: the secant rule on values stored as bf16");
  if (store.data && ws.channels_last) throw Error("internal: a value store from a channels_last workspace");
  T* arena = ws.forward_arena.template as<T>();
  // The graph's output NHWC: made in scratch, transposed into y at the end.
  T* const y_nchw = y;
  if (ws.channels_last && nhwc_[graph_.output]) y = room(ws.output_nhwc, n * output_numel());
  auto* saved = ws.saved.template as<uint8_t>();
  auto keep_value = [&](int v) {
    be_.copy_on_device(stored(store, v, store.first_slot), value_ptr(v, n, x, y, arena),
                       sizeof(T) * n * graph_.values[v].shape.numel());
  };
  const auto kept = [&](int v) { return store.data && store.layout->offset[v] >= 0; };
  if (kept(graph_.input)) keep_value(graph_.input);
  for (size_t si = 0; si < launches_.size(); ++si) {
    const Node& node = graph_.nodes[launches_[si].node];
    at_node(node, "forward", [&] {
      if (si == 0 && on_line && line_head_) {
        if (!ws.line_ready) throw Error("internal: forward on a line before prepare_line");
        if (ws.line_nhwc != (ws.channels_last && nhwc_[node.output]))
          throw Error("internal: a line prepared in another layout than the workspace's");
        if (static_cast<int>(on_line->size()) != n) throw Error("internal: a line of points needs one k per sample");
        const T* ends = ws.line_ends.template as<T>();
        PointBatch along;
        along.k = *on_line;
        be_.make_points(graph_.values[node.output].shape, ends, ends + launches_[0].count, along,
                        value_ptr(node.output, n, x, y, arena));
      } else {
        void* keep = save ? saved + saved_offset(static_cast<int>(si), n, ws.secant) : nullptr;
        if (keep && ws.secant)
          launch_secant(si, n, x, y, arena, keep, ws);
        else
          launch_in_layout(si, n, x, y, arena, keep, ws);
      }
      if (kept(node.output)) keep_value(node.output);
    });
  }
  if (y != y_nchw) transpose(graph_.output, n, y, y_nchw, false, true, false);
}

template <typename T>
void GraphPlan<T>::backward(int n, const T* dy, T* dx, Workspace& ws) const {
  backward_from(0, n, dy, dx, ws);
}

template <typename T>
void GraphPlan<T>::backward_sum(int n, const T* dy, const std::vector<double>& w, T* dx, T* acc, Workspace& ws) const {
  if (!line_head_) {
    backward(n, dy, dx, ws);
    be_.sum_batch(input_numel(), n, dx, w, acc);
    return;
  }
  backward_from(1, n, dy, dx, ws);
  const NodeLaunch& st = launches_[0];
  const Node& node = graph_.nodes[st.node];
  const size_t bytes = sizeof(T) * static_cast<size_t>(st.count);
  if (ws.head_gradient.bytes() < bytes) ws.head_gradient = DeviceBuffer(be_, bytes);
  T* g = ws.head_gradient.template as<T>();
  at_node(node, "backward", [&] {
    be_.zero(g, bytes);
    be_.sum_batch(st.count, n, grad_ptr(node.output, n, dy, dx, ws.backward_arena.template as<T>()), w, g);
    if (ws.channels_last && nhwc_[node.output]) {
      T* t = room(ws.transposed_out, st.count);
      transpose(node.output, 1, g, t, false, false, false);
      g = t;
    }
    be_.conv2d_backward_data(st.conv, weights_[st.node].template as<T>(), g, acc, 1, true);
  });
}

template <typename T>
void GraphPlan<T>::backward_from(int first, int n, const T* dy, T* dx, Workspace& ws) const {
  T* arena = ws.backward_arena.template as<T>();
  auto* saved = ws.saved.template as<uint8_t>();
  const bool cl = ws.channels_last;
  if (cl && nhwc_[graph_.output]) {  // the output's gradient NHWC, as the ops made the output
    T* t = room(ws.output_nhwc, n * output_numel());
    transpose(graph_.output, n, dy, t, true, false, false);
    dy = t;
  }
  for (int si = static_cast<int>(launches_.size()) - 1; si >= first; --si) {
    const NodeLaunch& st = launches_[si];
    const Node& node = graph_.nodes[st.node];
    const T* g = grad_ptr(node.output, n, dy, dx, arena);
    T* gin = grad_ptr(node.inputs[0], n, dy, dx, arena);
    bool acc = bwd_accumulate_[st.node][0];
    // A launch that runs NCHW only, on NHWC values: its output's gradient transposed in, its input's
    // made in scratch and transposed (and added) out.
    T* const gin_nhwc = cl && converts(static_cast<size_t>(si), false) ? gin : nullptr;
    const bool acc_nhwc = acc;
    if (cl && converts(static_cast<size_t>(si), true)) {
      T* t = room(ws.transposed_out, n * graph_.values[node.output].shape.numel());
      transpose(node.output, n, g, t, false, false, false);
      g = t;
    }
    if (gin_nhwc) {
      gin = room(ws.transposed_in, n * graph_.values[node.inputs[0]].shape.numel());
      acc = false;
    }
    const T* w = weights_[st.node].template as<T>();
    const void* keep = saved + saved_offset(si, n, ws.secant);
    at_node(node, "backward", [&] {
      switch (node.kind) {
        case OpKind::Conv:
          be_.conv2d_backward_data(conv_in_layout(static_cast<size_t>(si), cl, false), w, g, gin, n, acc);
          break;
        case OpKind::Linear:
          be_.linear_backward_data(static_cast<int>(graph_.values[node.inputs[0]].shape.numel()),
                                   static_cast<int>(st.count), w, g, gin, n, acc);
          break;
        case OpKind::Affine: {
          const Shape& s = graph_.values[node.output].shape;
          be_.affine_backward(static_cast<int>(s.channels()), s.plane(), w, g, gin, n, acc);
          break;
        }
        case OpKind::Clip:
          if (ws.secant)  // dx = dy * the slope, as an activation's
            be_.mul_backward(1, 1, st.count * n, false, nullptr, static_cast<const T*>(keep), g, gin, acc, nullptr,
                             false);
          else
            be_.clip_backward(st.count * n, static_cast<const uint64_t*>(keep), g, gin, acc);
          break;
        case OpKind::MaxPool:
          if (ws.secant)
            be_.maxpool_backward_secant(
                st.pool, static_cast<const int32_t*>(keep),
                reinterpret_cast<const T*>(static_cast<const uint8_t*>(keep) + secant_share_offset(st.count * n)), g,
                gin, n, acc);
          else
            be_.maxpool_backward(st.pool, static_cast<const int32_t*>(keep), g, gin, n, acc);
          break;
        case OpKind::AvgPool:
          be_.avgpool_backward(st.pool, g, gin, n, acc);
          break;
        case OpKind::Add:
          be_.accumulate(st.count * n, g, gin, acc);
          be_.accumulate(st.count * n, g, grad_ptr(node.inputs[1], n, dy, dx, arena), bwd_accumulate_[st.node][1]);
          break;
        case OpKind::Concat: {
          const Shape& so = graph_.values[node.output].shape;
          int at = 0;
          for (size_t k = 0; k < node.inputs.size(); ++k) {
            const int c = static_cast<int>(graph_.values[node.inputs[k]].shape.channels());
            be_.copy_channels(n, so.plane(), c, g, static_cast<int>(so.channels()), at,
                              grad_ptr(node.inputs[k], n, dy, dx, arena), c, 0, bwd_accumulate_[st.node][k]);
            at += c;
          }
          break;
        }
        case OpKind::Slice: {
          // The gradient is zero outside the slice's channels.
          const Shape& si = graph_.values[node.inputs[0]].shape;
          if (!acc) be_.zero(gin, sizeof(T) * n * si.numel());
          be_.copy_channels(n, si.plane(), node.channel_count, g, node.channel_count, 0, gin,
                            static_cast<int>(si.channels()), node.channel_offset, true);
          break;
        }
        case OpKind::Mul: {
          const Shape& sa = graph_.values[node.inputs[0]].shape;
          const bool per_channel = graph_.values[node.inputs[1]].shape != sa;
          const T* saved_a = static_cast<const T*>(keep);
          be_.mul_backward(n, static_cast<int>(sa.channels()), sa.plane(), per_channel, saved_a,
                           saved_a + n * st.count, g, gin, acc, grad_ptr(node.inputs[1], n, dy, dx, arena),
                           bwd_accumulate_[st.node][1]);
          break;
        }
        case OpKind::Activation:  // dx = dy * f'(x), f'(x) kept by forward
          be_.mul_backward(1, 1, st.count * n, false, nullptr, static_cast<const T*>(keep), g, gin, acc, nullptr,
                           false);
          break;
        case OpKind::ChannelMean: {
          const Shape& si = graph_.values[node.inputs[0]].shape;
          be_.channel_mean_backward(n, static_cast<int>(si.channels()), si.plane(), g, gin, acc);
          break;
        }
        case OpKind::LayerNorm: {
          const Shape& so = graph_.values[node.output].shape;
          const T* xhat = static_cast<const T*>(keep);
          be_.layernorm_backward(n, static_cast<int>(so.channels()), so.plane(), w, xhat, xhat + n * st.count, g,
                                 gin, acc);
          break;
        }
        case OpKind::ChannelShuffle: {
          const Shape& so = graph_.values[node.output].shape;
          be_.channel_shuffle(n, static_cast<int>(so.channels()), so.plane(),
                              permutations_[st.node].template as<int32_t>(), g, gin, true, acc);
          break;
        }
      }
      if (gin_nhwc) transpose(node.inputs[0], n, gin, gin_nhwc, true, false, acc_nhwc);
    });
  }
}

template <typename T>
int64_t GraphPlan<T>::max_value_numel() const {
  int64_t m = 0;
  for (const Value& v : graph_.values) m = std::max(m, v.shape.numel());
  return m;
}

template class GraphPlan<float>;
template class GraphPlan<double>;

}  // namespace ipna
