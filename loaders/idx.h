// IDX files (MNIST / Fashion-MNIST), gzipped or not, through zlib.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace ipna {

struct IdxImages {
  int count = 0, rows = 0, cols = 0;
  std::vector<uint8_t> pixels;  // count * rows * cols
};

IdxImages read_idx_images(const std::string& path);
std::vector<uint8_t> read_idx_labels(const std::string& path);

// A Fashion-MNIST style folder: t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz
// (split "test") or train-*. Debian's dataset-fashion-mnist installs one at
// /usr/share/datasets/fashion-mnist.
struct IdxDataset {
  IdxImages images;
  std::vector<uint8_t> labels;
};
IdxDataset read_idx_dataset(const std::string& folder, const std::string& split = "test");
extern const char* const kFashionMnistDir;

}  // namespace ipna
