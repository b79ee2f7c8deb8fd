// Hostile and broken files: every loader must refuse them with an ipna::Error
// naming the file and what is wrong, before allocating what the file claims.
// The files are the fuzz corpus's regression inputs (tests/fuzz/corpus/*/crash-*,
// made by tests/fuzz/make_seeds.py); CTest also replays every corpus file
// through the fuzz targets.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <functional>

#include "engine/error.h"
#include "loaders/idx.h"
#include "loaders/image.h"
#include "loaders/npy.h"
#include "loaders/onnx_loader.h"

namespace ipna::test {
namespace {

std::string corpus(const std::string& target, const std::string& file) {
  return std::string(IPNA_TEST_DATA) + "/fuzz/corpus/" + target + "/" + file;
}

// The message names the file, contains every needle and is plain text (no
// bytes of freed memory, as a use-after-free once put there).
void expect_refused(const std::function<void()>& load, const std::string& path,
                    const std::vector<std::string>& needles) {
  ASSERT_TRUE(std::filesystem::exists(path)) << path;
  try {
    load();
    ADD_FAILURE() << path << ": accepted";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find(path), std::string::npos) << m;
    for (const auto& n : needles) EXPECT_NE(m.find(n), std::string::npos) << "'" << n << "' not in: " << m;
    EXPECT_TRUE(std::all_of(m.begin(), m.end(), [](unsigned char c) { return std::isprint(c); })) << m;
  }
}

TEST(HostileInput, OnnxFilesThatOnceCrashedAreRefusedByName) {
  const std::vector<std::pair<std::string, std::vector<std::string>>> cases{
      {"crash-gather-index.onnx", {"Gather", "index 10 is out of range"}},
      {"crash-slice-step0.onnx", {"Slice", "step is 0"}},
      {"crash-transpose-repeat.onnx", {"Transpose", "'perm'", "not a permutation"}},
      {"crash-unsqueeze-axis.onnx", {"Unsqueeze", "axis 7 is out of range"}},
      {"crash-concat-axis.onnx", {"Concat", "axis 5 is out of range"}},
      {"crash-gather-axis.onnx", {"Gather", "axis 3 is out of range"}},
      {"crash-constantofshape-huge.onnx", {"ConstantOfShape", "more than 16777216 elements"}},
      {"crash-initializer-dims.onnx", {"initializer 'fc'", "more than"}},
      {"crash-node-without-output.onnx", {"node 0 (op Relu) has no output"}},
      {"crash-conv-missing-weight.onnx", {"op Conv", "missing input W"}},
      {"crash-reshape-infer.onnx", {"Reshape", "more than one -1"}},
  };
  for (const auto& [file, needles] : cases) {
    const std::string p = corpus("onnx", file);
    expect_refused([&] { load_onnx(p); }, p, needles);
  }
}

TEST(HostileInput, OnnxNodesTheOutputDoesNotNeedAreNotEvaluated) {
  // seed-dead-node.onnx: a Gather with index 99 feeding nothing.
  Graph g = load_onnx(corpus("onnx", "seed-dead-node.onnx"));
  EXPECT_EQ(g.nodes.size(), 1u);  // the Linear; Shape and Gather were never folded
}

TEST(HostileInput, OnnxFoldedShapeArithmeticGivesThePadsAndReshape) {
  // Pads [0,0,1,2, 0,0,2,1] built from ConstantOfShape + Slice + Concat fold into the Conv;
  // Reshape(a, Concat(Unsqueeze(Gather(Shape(x), 0)), Cast(Squeeze(Transpose([[-1]]))))) is [N,-1].
  Graph g = load_onnx(corpus("onnx", "seed-pad-fold-reshape.onnx"));
  ASSERT_EQ(g.nodes.size(), 4u);  // Conv, AveragePool, MatMul and the Add of a constant
  EXPECT_EQ(g.nodes[3].kind, OpKind::Affine);
  const Window& w = g.nodes[0].win;
  EXPECT_EQ(g.nodes[0].kind, OpKind::Conv);
  EXPECT_EQ(w.pad_top, 1);
  EXPECT_EQ(w.pad_left, 2);
  EXPECT_EQ(w.pad_bottom, 2);
  EXPECT_EQ(w.pad_right, 1);
  EXPECT_EQ(g.values[g.nodes[0].output].shape, (Shape{3, 7, 7}));
  EXPECT_EQ(g.nodes[1].kind, OpKind::AvgPool);
  EXPECT_TRUE(g.nodes[1].win.count_include_pad);
  EXPECT_EQ(g.values[g.nodes[1].output].shape, (Shape{3, 4, 4}));
  EXPECT_TRUE(g.find_value("flat").has_value());
}

TEST(HostileInput, NpyFilesAreCheckedAgainstTheirSizeBeforeAllocating) {
  const std::vector<std::pair<std::string, std::vector<std::string>>> cases{
      {"crash-header-length.npy", {"header of 4294967295 bytes"}},
      {"crash-claims-2e9.npy", {"truncated", "[2000000000]", "16000000000 bytes", "the file has 64"}},
      {"crash-negative-shape.npy", {"malformed .npy header", "non-negative integer"}},
      {"crash-text-shape.npy", {"malformed .npy header", "non-negative integer"}},
      {"crash-overflow-shape.npy", {"shape entry is too large"}},
      {"crash-product-overflow.npy", {"more than 2^31 elements"}},
  };
  for (const auto& [file, needles] : cases) {
    const std::string p = corpus("npy", file);
    expect_refused([&] { read_npy(p); }, p, needles);
  }
  NpyArray a = read_npy(corpus("npy", "seed-f8-batch.npy"));
  EXPECT_EQ(a.shape, (std::vector<int64_t>{1, 2, 3, 3}));
  EXPECT_EQ(a.data.size(), 18u);
  EXPECT_TRUE(read_npy(corpus("npy", "seed-scalar.npy")).shape.empty());
  EXPECT_EQ(read_npy(corpus("npy", "seed-v2.npy")).data[5], 5.0);
}

TEST(HostileInput, IdxTruncatedDownloadAndLyingHeaders) {
  const std::string trunc = corpus("idx", "crash-truncated-download.idx.gz");
  expect_refused([&] { read_idx_images(trunc); }, trunc, {"unexpected end of file", "truncated or corrupt download"});
  const std::string huge = corpus("idx", "crash-huge-dims.idx"), neg = corpus("idx", "crash-negative-dims.idx");
  expect_refused([&] { read_idx_images(huge); }, huge, {"announces more than 4 GiB"});
  expect_refused([&] { read_idx_images(neg); }, neg, {"announces more than 4 GiB"});
  const std::string labels = corpus("idx", "crash-labels-huge.idx");
  expect_refused([&] { read_idx_labels(labels); }, labels, {"truncated IDX file: 2 of the 4294967295 bytes"});
  IdxImages im = read_idx_images(corpus("idx", "seed-images.idx.gz"));
  EXPECT_EQ(im.count, 2);
  EXPECT_EQ(im.rows, 5);
  EXPECT_EQ(im.cols, 3);
  EXPECT_EQ(read_idx_labels(corpus("idx", "seed-labels.idx")).size(), 5u);
}

TEST(HostileInput, ImagesOnlyJpegAndPngWithinThePixelCap) {
  for (const char* file : {"crash-pgm16.pgm", "crash-tga-huge.tga"}) {
    const std::string p = corpus("image", file);
    expect_refused([&] { load_image_rgb(p); }, p, {"not a JPEG or PNG"});
  }
  const std::string claims = corpus("image", "crash-claims-20000x20000.jpg");
  expect_refused([&] { load_image_rgb(claims); }, claims, {"20000x20000 pixels is more than"});
  const std::string trunc = corpus("image", "crash-truncated.jpg");
  expect_refused([&] { load_image_rgb(trunc); }, trunc, {"cannot decode JPEG", "Premature end"});
  for (const char* file : {"seed-rgb.png", "seed-gray.png", "seed-rgba.png", "seed-palette.png", "seed-gray16.png",
                           "seed-rgb.jpg", "seed-gray.jpg", "seed-progressive.jpg"}) {
    Image img = load_image_rgb(corpus("image", file));
    EXPECT_GT(img.width, 0) << file;
    EXPECT_EQ(img.pixels.size(), static_cast<size_t>(img.width) * img.height * 3) << file;
  }
  // The cap is checked from the header: a 6x8 PNG passes at 48 pixels and not at 47.
  EXPECT_NO_THROW(load_image_rgb(corpus("image", "seed-rgb.png"), 48));
  EXPECT_THROW(load_image_rgb(corpus("image", "seed-rgb.png"), 47), Error);
}

}  // namespace
}  // namespace ipna::test
