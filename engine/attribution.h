// The attribution API: integrated gradients to the input, conductance and IPNA
// at the split layer (SPEC.md), any subset in one fused pass over the Riemann
// steps, on a pruned model or not, on any backend.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "engine/graph.h"

namespace ipna {

enum class Precision { F32, F64 };

// A run's split activations h(x_k) and gradients g(x_k) = dF/dh at its points,
// on the host in the run's precision: what Attributor::refine pairs its new
// points with to refine conductance. Only the engine reads it.
struct SplitSamples;

// IPNA as the original computes it (SPEC.md): g(x_k) * (h(x_{k-1} + d*1_S) - h(x_{k-1})),
// or in tangent form (SPEC.md "IPNA, tangent form"): g(x_k) * J_h(x_k) (d*1_S), a
// forward-mode pass reusing the masks of the pass at x_k. The tangent form sums
// to IG inside the box at every m, and is linear in the box.
enum class IpnaForm { Difference, Tangent };

// IG's quadrature over the schedule's steps (Captum's riemann_right, riemann_left,
// riemann_middle, riemann_trapezoid). Conductance and IPNA pair g(x_k) with the
// step into x_k, the right rule, whatever IG uses; a run asking for them and IG
// by another rule takes IG's gradients at its own points.
// Secant: each step's gradient through the slopes of the network's nonlinearities
// over the step (each ReLU's (y_k - y_{k-1}) / (z_k - z_{k-1}), a max pool's output
// shared between the two argmaxes, a product's factors averaged; F's gradient in
// the logits averaged by Simpson's rule), the Rescale rule of DeepLIFT applied
// to each step. A step's IG and conductance then sum to F(x_k) - F(x_{k-1})
// exactly, so completeness holds at every m, and the jumps of the gradient where
// a ReLU switches inside a step are integrated rather than sampled (SPEC.md
// "Non-uniform paths"; README "Steps"). IPNA in the tangent form only (f1's
// tangent through the same slopes: its patch sums equal this rule's IG inside the
// box), on whole planes; no LayerNorm. Each chunk of steps also evaluates the
// point before it.
enum class Quadrature { Right, Left, Middle, Trapezoid, Secant };

struct AttributionRequest {
  int target_class = -1;
  TargetKind target = TargetKind::Probability;
  int steps = 256;                  // m of SPEC.md
  // The path's schedule 0 = a_0 < a_1 < ... < a_m = 1, x_k = x' + a_k (x - x')
  // (SPEC.md "Non-uniform paths"). Empty: a_k = k/m, the original's. Given,
  // it holds m + 1 values and `steps` is m (or 0).
  std::vector<double> schedule;
  Quadrature quadrature = Quadrature::Right;
  bool integrated_gradients = false;
  bool conductance = false;
  std::vector<Box> boxes;           // one IPNA map per box
  IpnaForm ipna_form = IpnaForm::Difference;
  // Patch passes compute each convolution only on the box's receptive-field
  // cone (the difference form starting from the base point's outputs, kept by
  // its forward and counted in the memory budget); false runs them on whole
  // planes, for comparison.
  bool receptive_field_cones = true;
  // On cones, boxes whose cones have the same geometry (equal sizes away from the image's edges, as a
  // grid's inner boxes) run their patch passes in groups of up to this many, one batch a group
  // (ConeGroup in engine/plan.h): results equal one box at a time. The groups use only the memory
  // budget the chunk of steps leaves, smaller where it is short. 0: the device's choice
  // (Backend::boxes_per_patch_pass: 1 on the CPU, 8 on CUDA).
  int box_batch = 0;
  // Pruned model: h is multiplied by this mask (one value per split neuron)
  // before f2. Empty: the model as it is.
  std::vector<double> split_mask;
  // Keep h and g at every point in the result (AttributionResult::split_samples)
  // when they take at most kSplitSamplesMaxBytes; with conductance or the
  // difference form only (what refine needs to refine them).
  bool keep_split_samples = false;
  int chunk = 0;                    // steps per batch; 0: picked from the memory budget
  size_t memory_budget = 0;         // bytes for the batch buffers; 0: the device's default
                                    // (CPU: min(256 MiB, free/4); CUDA: 70% of free device memory)
  std::function<void(int done, int total)> progress;  // called after each chunk of steps
};

struct AttributionResult {
  Shape input_shape, split_shape;
  std::vector<double> ig;                  // input-shaped, empty unless requested
  std::vector<double> conductance;         // split-shaped, empty unless requested
  std::vector<std::vector<double>> ipna;   // one split-shaped map per box
  double f_input = 0, f_baseline = 0;      // F(x), F(x')
  double ig_sum = 0, ig_gap = 0;           // gap: sum IG - (F(x) - F(x'))
  double conductance_sum = 0, conductance_gap = 0;
  std::vector<double> ipna_sum;            // per box
  std::vector<double> ig_in_box;           // per box, sum of IG inside it (with IG)
  std::vector<double> ipna_gap;            // per box: sum IPNA - IG inside (with IG)
  int evaluations = 0;                     // points where F and its gradient were computed (by refine: the new ones)
  int chunk = 0;
  int patch_passes = 0;                    // per step: the boxes' groups (AttributionRequest::box_batch)
  size_t workspace_bytes = 0;              // batch buffers of the pass
  double seconds = 0;                      // the whole run, algorithm search included
  double algorithm_search_seconds = 0;     // of which choosing algorithms (cuDNN's Find: first runs only)
  std::shared_ptr<const SplitSamples> split_samples;  // with keep_split_samples, when they fit
};

constexpr size_t kSplitSamplesMaxBytes = size_t{1} << 30;

class Attributor {
 public:
  Attributor(const SplitModel& model, Precision precision, const std::string& device = "cpu");
  ~Attributor();
  Attributor(const Attributor&) = delete;
  Attributor& operator=(const Attributor&) = delete;

  // x and baseline are one input sample each (input-shaped, normalised).
  AttributionResult run(const std::vector<double>& x, const std::vector<double>& baseline,
                        const AttributionRequest& req);
  // req's run (2m steps) from `coarse`, the same request's run at m steps on a
  // schedule made of every other point of req's (a_k of m = a_2k of 2m), each
  // of its steps split into two equal halves (PathWarp::subdividing; uniform
  // steps are): only the m new points are evaluated and the coarse sums count
  // with half their weight, equal to run(x, baseline, req) up to rounding. IG by
  // the right, left or trapezoid rule (not the midpoint rule: its points are
  // not nested) and the tangent form as they are; conductance and the difference
  // form from the coarse run's kept split samples, each new point paired with
  // the coarse points on either side (the difference form's patch passes from
  // the coarse point before also run f1 there again, without f2 or a backward).
  AttributionResult refine(const std::vector<double>& x, const std::vector<double>& baseline,
                           const AttributionRequest& req, const AttributionResult& coarse);
  // Logits of the model (pruned by split_mask when it is not empty) at x, or
  // at n samples laid end to end in x (n * classes values back).
  std::vector<double> logits(const std::vector<double>& x, const std::vector<double>& split_mask = {}, int n = 1);
  // h = f1(x).
  std::vector<double> split_activations(const std::vector<double>& x);

  const SplitModel& model() const;
  std::string device_name() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// F from the logits z of one sample: the softmax probability of class y, or its logit.
double target_value(TargetKind kind, const double* z, int classes, int y);

// Neuron scores summed over each channel's rows and columns.
std::vector<double> channel_scores(const std::vector<double>& neuron_scores, const Shape& split_shape);

enum class Granularity { Neuron, Channel };
struct PruneSpec {
  double percent = -1;   // top p percent of the units (rounded to nearest), or
  int64_t count = -1;    // the top k units
  Granularity granularity = Granularity::Neuron;
};
// A split-shaped 0/1 mask zeroing the units with the largest signed score
// (ties broken by index). Channel granularity ranks channel sums and zeroes
// whole channels.
std::vector<double> prune_mask(const std::vector<double>& neuron_scores, const Shape& split_shape,
                               const PruneSpec& spec);

// The black image normalised per channel: (0 - mean[c]) / std[c]. With no
// mean/std given: ImageNet's (0.485, 0.456, 0.406) / (0.229, 0.224, 0.225)
// for 3 channels, zeros otherwise.
std::vector<double> black_baseline(const Shape& input_shape, std::vector<double> mean = {},
                                   std::vector<double> std = {});

// A grid of rows x cols boxes over an h x w plane; the last row and column take the remainder.
std::vector<Box> grid_boxes(int h, int w, int rows, int cols);

// Sums of a C,H,W map inside and outside a box.
double sum_in_box(const std::vector<double>& map, const Shape& shape, const Box& box);

}  // namespace ipna
