// Execution plan of one graph (f1 or f2) on a backend: weights uploaded once,
// every activation and gradient placed at a fixed offset of one arena by a
// liveness pass at plan time (offsets are per sample, so an arena for n
// samples is n times the per-sample peak). Forward keeps only what backward
// needs: a bit per Clip element, an index per MaxPool output, the derivative
// per smooth Activation element, both factors of a Mul, x_hat and 1/sigma of a
// LayerNorm; convs, linear layers, pools, adds, concatenations, slices and
// channel shuffles need nothing but their weights and shapes. Values are NCHW,
// except that a workspace may ask forward and backward to keep NHWC the values
// that convolutions preferring it make and read (choose_layouts).
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "engine/backend.h"
#include "engine/error.h"
#include "engine/graph.h"

namespace ipna {

// A receptive-field cone: a rectangle of each value's plane (the whole plane
// after a global op), and which launches run on their cone window only.
struct Cone {
  struct Rect {
    int r0 = 0, r1 = 0, c0 = 0, c1 = 0;
    int64_t area() const { return static_cast<int64_t>(r1 - r0) * (c1 - c0); }
    PlaneWindow window() const { return {r0, c0, r1 - r0, c1 - c0}; }
  };
  std::vector<Rect> rect;  // per value
  // Per launch: runs on its cone window (convolutions and per-position ops, Clip, Affine,
  // Activation, Add, MaxPool, whose cone covers under 80% of their plane). Both forms use
  // the same set: the tangent form carries tangents on the windows, the difference form the
  // patch's changes of the values.
  std::vector<bool> windowed;
  // Per value: kept as [n, C, rect height, rect width] in its arena slot (the tangent, or the
  // change from the base point), because a windowed launch writes it and only windowed
  // launches read it; others are whole planes (the tangent, zero outside the cone, or the
  // value at the patch point).
  std::vector<bool> compact;
  int64_t window_elems = 0;  // per sample: the largest cone window, in or out
};

// Boxes whose cones have the same geometry (GraphPlan::same_geometry: the same window sizes, paddings
// and flags, at other positions of the planes), whose patch passes run as one batch: box j's n samples
// are samples j n .. j n + n - 1 of every tensor. The convolutions and the ops without per-position
// state run once on all of them (one launch where there were k, which is what a device queueing
// small launches on one stream gains); the ops that read the base pass at the box's position (masks,
// pool indices, derivatives, the base point's values) and the window copies run once per box. Empty:
// whole planes, one box.
using ConeGroup = std::vector<const Cone*>;

template <typename T>
class GraphPlan {
 public:
  GraphPlan(const Graph& g, Backend<T>& backend);
  GraphPlan(GraphPlan&&) noexcept;
  ~GraphPlan();

  // Buffers for batches of up to `capacity` samples, allocated once and reused
  // by every chunk of the step loop.
  struct Workspace {
    int capacity = 0;
    DeviceBuffer forward_arena, backward_arena, saved;
    // Cone windows of the patch passes: a launch's input, its output, and a third (a second
    // input, a saved derivative, the base point's values).
    DeviceBuffer window_in, window_out, window_aux;
    // The head's output at the line's x0 and its change along d (prepare_line), and its output
    // gradient summed over a batch (backward_sum).
    DeviceBuffer line_ends, head_gradient;
    bool line_ready = false;
    // Forward and backward keep the values the plan chose NHWC (Backend::prefers_nhwc, see
    // keeps_nhwc): set by a caller that runs nothing else on this workspace, since the patch passes
    // and the value store read values (and Clip masks) by their planes.
    bool channels_last = false;
    bool line_nhwc = false;  // line_ends are NHWC
    // With channels_last: the graph's output (or its gradient) NHWC, and a launch's input and output
    // (or their gradients) NCHW for a launch that runs NCHW only on NHWC values.
    DeviceBuffer output_nhwc, transposed_in, transposed_out;
    // The secant rule (Quadrature::Secant): a batch holds consecutive path points, and forward
    // keeps for each sample i >= 1 the slopes of its nonlinearities over the step from sample i - 1
    // (Clip and activations per element, MaxPool's share of each output between the two samples'
    // argmaxes, Mul's factors averaged over the step), which backward then uses in place of the
    // derivatives at the sample: the gradient of sample i summed over the inputs, times the step,
    // is then F's change over the step exactly. Set before reserve (the saved state's size depends
    // on it); not with values stored as bf16 (Backend::stores_bf16).
    bool secant = false;
    DeviceBuffer secant_input;  // an elementwise launch's input, which it may overwrite
  };
  Workspace make_workspace(int capacity, bool with_backward, bool secant = false) const;
  // Grows ws to hold `capacity` samples (and backward state) only when it is
  // too small, so repeated runs reuse the same memory.
  void reserve(Workspace& ws, int capacity, bool with_backward) const;
  // The first node the secant rule has no slopes for (a LayerNorm), or null.
  const Node* without_secant() const;

  // Which values the difference form's patched forward reads at the base point
  // for some of `cones`, and where each starts in a store slot (-1: not kept).
  // A value that an elementwise node (Clip, activation) makes from a kept value
  // is not kept itself: its base is that node applied to the kept one's, on
  // whatever window is read (the store's size and its reading from memory are
  // what the difference form pays over the tangent form).
  struct StoreLayout {
    std::vector<int64_t> offset;  // per value
    std::vector<int> made_by;     // per value: the elementwise node giving its base from a kept input, or -1
    int64_t elems = 0;            // per slot (one sample)
  };
  StoreLayout store_layout(const std::vector<Cone>& cones) const;
  // Slots of the base points' values, laid out by a StoreLayout.
  struct ValueStore {
    T* data = nullptr;
    int slots = 0, first_slot = 0;
    const StoreLayout* layout = nullptr;
  };
  // A line of points x0 + k_i d. A convolution is affine, so where the graph starts with one that
  // alone reads the input (the head: a stem convolution with its BatchNorm folded in), its output
  // at x0 + k d is conv(x0) + k conv(d) without bias: two samples of it instead of n.
  bool has_line_head() const { return line_head_; }
  // Makes the head's two samples for the line through x0 along d, kept in ws until it is reset
  // (reserve growing it). They are computed in float64 on the host CPU and rounded once: made by
  // float32 convolutions, their rounding errors would repeat at every point of the line, where
  // those of the points' own convolutions differ from point to point and average out over a path's
  // sums (IG on the EfficientNet-Lite0 example: 2.5e-3 from float64's against 6.9e-4 for the plain
  // pass, 4.2e-4 with this).
  void prepare_line(const std::vector<double>& x0, const std::vector<double>& d, Workspace& ws) const;
  // y = graph(x) for n samples. With `save`, keeps the masks backward needs in ws.
  // With a value store, also copies the values its layout keeps there, samples
  // going to slots first_slot.. of `slots`. With `on_line` (n values k_i), x holds the points
  // x0 + k_i d of the line last prepared in ws, and the head (if any) is made from its two samples.
  void forward(int n, const T* x, T* y, Workspace& ws, bool save, ValueStore store = {},
               const std::vector<double>* on_line = nullptr) const;
  // The difference form of IPNA on a cone: y_i = graph(x_i) where x_i differs
  // from a base point only inside the cone's box, with the base point's values
  // (those a store layout of this cone keeps) in store slot i. A windowed
  // launch computes the change of its output from the changes of its inputs on
  // its cone window (linear ops: the op without bias on the changes; Clip,
  // activations, MaxPool: the op at base + change minus the op at base), kept
  // compact where the cone says; a value some whole-plane launch reads is
  // written whole, base plus change, and every other launch runs on whole
  // planes, as in forward.
  // With equal_samples (the input's change from the base point the same in every sample: a box's
  // patch with equal steps), a windowed convolution that reads the input runs on one sample and
  // copies its result to the others.
  // With a group of k cones, x and y hold k boxes' n samples each (ws room for n k), every box at the same
  // n base points.
  void patched_forward(int n, const T* x, T* y, Workspace& ws, const ConeGroup& cones, const ValueStore& store,
                       bool equal_samples = false) const;
  // Moves store slot `from` to slot 0 (the next chunk's first base point).
  void carry_store(const ValueStore& store, int from) const;
  // dx = (d graph / d x)^T dy at the points of the last saving forward.
  void backward(int n, const T* dy, T* dx, Workspace& ws) const;
  // acc += sum_i w_i (d graph / d x)^T dy_i (w empty: every w_i = 1), at the points of the last
  // saving forward. A head's input gradient is linear in its output gradient and the same map
  // for every sample, so the sum is taken at its output and the head's backward runs once; dx
  // (room for n input gradients) is used only without a head.
  void backward_sum(int n, const T* dy, const std::vector<double>& w, T* dx, T* acc, Workspace& ws) const;

  // Where the tangent of each value can be nonzero when the input's is nonzero
  // only inside `box` (rows r0:r1, cols c0:c1 of the input plane). With
  // compact_output, the output stays compact where a windowed launch writes it
  // (cone.compact[graph().output]): a caller that only reads it on its cone
  // window is spared writing and reading the zeros (or base values) around it.
  // With compact_input, so does the input where only windowed launches read it
  // (cone.compact[graph().input]): the tangent pass then takes the direction on
  // the box alone, [n, C, box height, box width].
  Cone cone(const Box& box, bool compact_output = false, bool compact_input = false) const;
  // Whether the patch passes of a and b may run as one batch (ConeGroup): every windowed launch has
  // the same window sizes, paddings and compact values in both, only at other positions.
  bool same_geometry(const Cone& a, const Cone& b) const;
  // Forward mode: ty_i = J(x_i) tx_i, the directional derivative at the points
  // of the last saving forward of n samples (linear ops without their bias,
  // Clip gated by its mask, MaxPool routed by its argmax, smooth activations,
  // products and LayerNorm linearised at the saved point). It uses the forward
  // arena and the saved state, not the backward arena. With a cone, each
  // windowed convolution runs on its cone window only. The saved state is that
  // of `saving` where given (ws then needs only a forward arena): tangent passes
  // of several boxes run at once, each in its own ws, at the same saved points.
  // equal_samples: tx the same in every sample, used as in patched_forward. With a group of k
  // cones, tx and ty hold k boxes' n samples each, all at the same n saved points (ws room for n k).
  void tangent(int n, const T* tx, T* ty, Workspace& ws, const ConeGroup& cones = {}, const Workspace* saving = nullptr,
               bool equal_samples = false) const;

  const Graph& graph() const { return graph_; }
  // Whether value v is kept NHWC in a channels_last workspace (choose_layouts), and its forward
  // values there stored as bf16 (Backend::stores_bf16).
  bool keeps_nhwc(int v) const { return nhwc_[v]; }
  bool keeps_bf16(int v) const { return bf16_[v]; }
  int64_t input_numel() const { return graph_.values[graph_.input].shape.numel(); }
  int64_t output_numel() const { return graph_.values[graph_.output].shape.numel(); }
  // Bytes one more sample of batch costs, for choosing the chunk of steps.
  size_t bytes_per_sample(bool with_backward, bool secant = false) const;
  // Elements of the largest per-sample tensor (a batch must keep every tensor under 2^31 elements).
  int64_t max_value_numel() const;

 private:
  struct NodeLaunch {  // one node of the graph, with its op geometry resolved
    int node;
    ConvDesc conv;
    PoolDesc pool;
    int64_t count = 0;  // per-sample elements of the output
  };
  // Runs one node's launch; a failure (an out-of-memory, a CUDA error caught by
  // IPNA_CUDA_DEBUG's synchronisation) is reported with the node it happened at.
  template <typename F>
  static void at_node(const Node& node, const char* pass, F&& launch) {
    try {
      launch();
    } catch (const Error& e) {
      throw Error("node '" + node.name + "' (" + op_name(node.kind) + ", " + pass + "): " + e.what());
    }
  }
  T* value_ptr(int v, int n, const T* x, T* y, T* arena) const;
  // One node of the forward pass (forward and patched_forward share it); keep: its saved state or null.
  // in0_at, out_at: where it reads its first input and writes its output instead of the values' own.
  void launch_forward(size_t launch, int n, const T* x, T* y, T* arena, void* keep, bool channels_last = false,
                      const T* in0_at = nullptr, T* out_at = nullptr) const;
  // launch_forward in the workspace's layouts: a launch that runs NCHW only reads and writes NHWC
  // values through transposes.
  void launch_in_layout(size_t launch, int n, const T* x, T* y, T* arena, void* keep, Workspace& ws) const;
  // The launch's convolution with its batches' layouts: NHWC where the plan keeps them so, the
  // workspace asks for it and the convolution prefers it; in forward, bf16 where the plan stores them so.
  ConvDesc conv_in_layout(size_t launch, bool channels_last, bool forward) const;
  // Sets nhwc_, bf16_, prefers_nhwc_ and transpose_elems_ (at construction).
  void choose_layouts();
  // Whether the launch reads its first input (output false) or writes its output through a transpose.
  bool converts(size_t launch, bool output) const;
  // dst (+)= src, value v's n samples, NCHW to NHWC (to_nhwc) or back; forward: v's values (bf16 on
  // the NHWC side where bf16_ says), else its gradients.
  void transpose(int v, int n, const T* src, T* dst, bool to_nhwc, bool forward, bool accumulate) const;
  // b with room for count elements (grown, never shrunk).
  T* room(DeviceBuffer& b, int64_t count) const;
  // Value v's window want(cone) of each box's plane (zeros beyond the plane, and beyond its cone rect
  // where it is compact), [k n, C, window], from its storage p, compact or whole: p itself where
  // compact on that very window, else copied into scratch box by box.
  template <typename Want>
  const T* read_windows(int v, int n, const T* p, const ConeGroup& cones, Want&& want, T* scratch) const;
  // A windowed launch's result `window` (its output's cone windows, [k n, C, rect]) into a whole-plane
  // output `out` (a compact one is written in place instead): zero outside the cones (the tangent) or,
  // with `onto_base`, added to the base values that `out` already holds (the difference form; `window`
  // is changed, aux is scratch).
  void write_window(int v, int n, T* window, T* out, const ConeGroup& cones, bool onto_base, T* aux) const;
  // The base point's value v, whole planes of n samples, into dst (read from the store or made from a kept input).
  void base_plane(const ValueStore& store, int v, int n, T* dst) const;
  // The base point's value v on the window `want` of its plane (zeros beyond the plane), into dst.
  void base_window(const ValueStore& store, int v, int n, const Cone::Rect& want, T* dst) const;
  // dst = the elementwise node's op applied to src (count elements; dst may be src).
  void apply_elementwise(const Node& node, int64_t count, const T* src, T* dst) const;
  // The difference form's launch `launch` on its cone windows (plan_tangent.cpp).
  void difference_window(size_t launch, int n, const T* x, T* y, T* arena, Workspace& ws, const ConeGroup& cones,
                         const ValueStore& store, bool equal_samples) const;
  // The tangent form's launch `launch` on its cone windows, values kept compact where the cones say.
  void tangent_window(size_t launch, int n, const T* tx, T* ty, T* arena, const void* keep, Workspace& ws,
                      const ConeGroup& cones, bool equal_samples) const;
  // A windowed convolution of launch `launch` on its output's cone windows, reading input u: on each
  // box's first sample where equal_samples and u is the graph's input, its result then copied to the
  // box's n (tangent_window and difference_window share it; read(want) gives u's windows when the conv
  // cannot read u's compact rects; scratch holds the first samples).
  template <typename Read>
  void conv_window(size_t launch, int n, int u, const T* u_storage, const ConeGroup& cones, bool equal_samples,
                   Read&& read, T* scratch, T* result) const;
  void grow_windows(Workspace& ws, const Cone& cone, int n) const;
  T* grad_ptr(int v, int n, const T* dy, T* dx, T* arena) const;
  // Backward of launches `first` onwards (all: backward; from 1: backward_sum with a head).
  void backward_from(int first, int n, const T* dy, T* dx, Workspace& ws) const;
  // The head alone with its weights, run in float64 on the host CPU by prepare_line.
  std::unique_ptr<Graph> head_;
  size_t saved_size(int launch, int n, bool secant) const;    // bytes backward needs of the launch
  size_t saved_offset(int launch, int n, bool secant) const;  // bytes into ws.saved
  size_t saved_bytes(int n, bool secant) const;
  // Under the secant rule a MaxPool keeps its `count` argmaxes, then each output's share (w) from here.
  static size_t secant_share_offset(size_t count) { return (count * sizeof(int32_t) + 255) / 256 * 256; }
  // forward's launch si under the secant rule (Workspace::secant): the launch, then its slopes.
  void launch_secant(size_t si, int n, const T* x, T* y, T* arena, void* keep, Workspace& ws) const;

  Graph graph_;
  Backend<T>& be_;
  std::vector<NodeLaunch> launches_;
  std::vector<DeviceBuffer> weights_, biases_, permutations_;
  std::vector<int64_t> fwd_offset_, bwd_offset_;  // per value, per-sample elements; -1 = external
  // Sample `slot`'s copy of value v in the store.
  T* stored(const ValueStore& s, int v, int slot) const {
    const int64_t at = s.layout->offset[v];
    if (at < 0) throw Error("internal: value " + graph_.values[v].name + " is not in the store");
    return s.data + at * s.slots + slot * graph_.values[v].shape.numel();
  }
  int64_t fwd_peak_ = 0, bwd_peak_ = 0;
  bool line_head_ = false;  // launch 0 is a convolution that alone reads the input
  std::vector<bool> nhwc_;  // per value: kept NHWC in a channels_last workspace
  std::vector<bool> bf16_;  // per value: NHWC, and stored as bf16 in forward
  std::vector<bool> prefers_nhwc_;  // per launch: a convolution that runs NHWC batches itself
  int64_t transpose_elems_ = 0;     // per sample: the scratch of the transposes
  // Backward: whether the step writes each input's gradient fresh or adds to it.
  std::vector<std::vector<bool>> bwd_accumulate_;
};

}  // namespace ipna
