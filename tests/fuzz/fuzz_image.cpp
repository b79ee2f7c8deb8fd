// Fuzz target: image decoding (JPEG, PNG) and the ImageNet preprocessing.
// Images are capped at 4 megapixels here so each run stays fast; the
// production cap is checked the same way, from the header.
#include <cstdio>

#include "engine/error.h"
#include "loaders/image.h"
#include "tests/fuzz/fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = ipna::fuzz::write_temp(data, size, ".img");
  try {
    ipna::Image img = ipna::load_image_rgb(path, int64_t(1) << 22);
    if (static_cast<size_t>(img.width) * img.height * 3 != img.pixels.size()) std::abort();
    ipna::imagenet_preprocess(img);
  } catch (const ipna::Error&) {
  }
  std::remove(path.c_str());
  return 0;
}
