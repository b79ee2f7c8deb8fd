// One network of torchvision blocks (tools/make_exporter_fixtures.py) as
// PyTorch's two exporters write it: the TorchScript exporter (opset 13,
// decomposed LayerNorm and GELU, HardSwish as HardSigmoid * x) and the dynamo
// exporter (opset 18, LayerNormalization, Gelu, HardSwish, Split, ReduceMean
// with axes as an input, weights as external data, module paths only in node
// metadata). Both must load, split at the module path 'b3', and give PyTorch's
// float64 logits, split activations, IG, conductance and IPNA.
#include <gtest/gtest.h>

#include <filesystem>

#include "engine/attribution.h"
#include "engine/error.h"
#include "loaders/onnx_loader.h"
#include "tests/fixtures.h"
#include "tests/net_builder.h"

namespace ipna::test {
namespace {

const std::string kDir = std::string(IPNA_TEST_DATA) + "/data/exporters";

class Exporter : public ::testing::TestWithParam<std::string> {};

TEST_P(Exporter, MatchesPyTorchThroughTheModulePath) {
  const auto meta = read_json(kDir + "/meta.json");
  const std::string model = kDir + "/" + GetParam() + "/model.onnx";
  SplitModel m = load_split_model(model, meta["split"].get<std::string>());  // a module path, not a tensor name
  const auto x = npy(kDir + "/x.npy");
  const std::vector<double> x0(x.size(), 0.0);
  Attributor f64(m, Precision::F64), f32(m, Precision::F32);
  EXPECT_LT(rel_err(f64.logits(x), npy(kDir + "/logits.npy")), 1e-12) << GetParam();
  EXPECT_LT(rel_err(f64.split_activations(x), npy(kDir + "/h.npy")), 1e-12) << GetParam();

  AttributionRequest r;
  r.target_class = meta["class"];
  r.target = TargetKind::Logit;
  r.steps = meta["steps"];
  r.integrated_gradients = r.conductance = true;
  for (auto& b : meta["boxes"]) r.boxes.push_back({b[0], b[1], b[2], b[3]});
  const auto& kappa = meta["kappa"];
  for (Precision p : {Precision::F64, Precision::F32}) {
    const double u = p == Precision::F64 ? 0x1p-53 : 0x1p-24, floor = p == Precision::F64 ? 1e-9 : 1e-4;
    const std::string what = GetParam() + (p == Precision::F64 ? " f64" : " f32");
    AttributionResult res = (p == Precision::F64 ? f64 : f32).run(x, x0, r);
    EXPECT_LT(rel_err(res.ig, npy(kDir + "/ref_ig.npy")), floor) << what << " IG";
    EXPECT_LT(rel_err(res.conductance, npy(kDir + "/ref_cond.npy")),
              std::max(floor, 8 * u * kappa["cond"].get<double>()))
        << what << " conductance";
    for (size_t b = 0; b < r.boxes.size(); ++b)
      EXPECT_LT(rel_err(res.ipna[b], npy(kDir + "/ref_ipna" + std::to_string(b) + ".npy")),
                std::max(floor, 8 * u * kappa["ipna"][b].get<double>()))
          << what << " IPNA box " << b;
    EXPECT_NEAR(res.f_input, meta["F_x"].get<double>(), floor * (std::abs(meta["F_x"].get<double>()) + 1e-3)) << what;
  }
}

INSTANTIATE_TEST_SUITE_P(Loader, Exporter, ::testing::Values("torchscript", "dynamo"));

TEST(LoaderExternalData, MissingOrEscapingDataFilesAreNamed) {
  // The dynamo export without its .data file, and with a location outside the model's folder.
  const auto dir = std::filesystem::temp_directory_path() / "ipna_external_data";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::filesystem::copy_file(kDir + "/dynamo/model.onnx", dir / "model.onnx");
  try {
    load_onnx((dir / "model.onnx").string());
    ADD_FAILURE() << "loaded without its external data";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.onnx.data"), std::string::npos) << e.what();
  }
  std::filesystem::copy_file(kDir + "/dynamo/model.onnx.data", dir / "model.onnx.data");
  std::filesystem::resize_file(dir / "model.onnx.data", 1000);
  try {
    load_onnx((dir / "model.onnx").string());
    ADD_FAILURE() << "loaded truncated external data";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("past the end"), std::string::npos) << e.what();
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace ipna::test
