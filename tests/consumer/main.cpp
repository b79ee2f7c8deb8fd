// IG and IPNA of the shipped Fashion-MNIST CNN through the installed library:
// prints the completeness gap and the tangent form's patch gap, which the test checks.
#include <cstdio>

#include "engine/attribution.h"
#include "loaders/onnx_loader.h"

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  const ipna::SplitModel model = ipna::load_split_model(argv[1], "hidden");
  ipna::Attributor engine(model, ipna::Precision::F64);
  std::vector<double> x(784);
  for (size_t i = 0; i < x.size(); ++i) x[i] = (i % 29) / 29.0;
  ipna::AttributionRequest req;
  req.target_class = 3;
  req.steps = 64;
  req.integrated_gradients = true;
  req.boxes = {{0, 0, 14, 14}};
  req.ipna_form = ipna::IpnaForm::Tangent;
  const ipna::AttributionResult r = engine.run(x, std::vector<double>(784, 0.0), req);
  std::printf("ig_gap_check %.3g\npatch_gap %.3g\n", r.ig_sum - r.ig_gap - (r.f_input - r.f_baseline),
              r.ipna_sum[0] - r.ig_in_box[0]);
  return 0;
}
