// Fuzz target: the .npy reader.
#include <cstdio>

#include "engine/error.h"
#include "loaders/npy.h"
#include "tests/fuzz/fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = ipna::fuzz::write_temp(data, size, ".npy");
  try {
    ipna::NpyArray a = ipna::read_npy(path);
    int64_t count = 1;
    for (int64_t d : a.shape) count *= d;
    if (count != static_cast<int64_t>(a.data.size())) std::abort();  // shape and data must agree
  } catch (const ipna::Error&) {
  }
  std::remove(path.c_str());
  return 0;
}
