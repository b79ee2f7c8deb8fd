// Fuzz target: the IDX readers (plain or gzipped), images and labels.
#include <cstdio>

#include "engine/error.h"
#include "loaders/idx.h"
#include "tests/fuzz/fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = ipna::fuzz::write_temp(data, size, ".idx");
  try {
    ipna::IdxImages im = ipna::read_idx_images(path);
    if (static_cast<size_t>(im.count) * im.rows * im.cols != im.pixels.size()) std::abort();
  } catch (const ipna::Error&) {
  }
  try {
    ipna::read_idx_labels(path);
  } catch (const ipna::Error&) {
  }
  std::remove(path.c_str());
  return 0;
}
