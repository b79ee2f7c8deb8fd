// NumPy .npy files (format 1.0/2.0, little-endian float32/float64, C order):
// the exchange format for inputs, reference outputs and attribution maps.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace ipna {

struct NpyArray {
  std::vector<int64_t> shape;
  std::vector<double> data;
};

NpyArray read_npy(const std::string& path);
// Written to a temporary file and renamed, so a failed write leaves nothing.
void write_npy(const std::string& path, const std::vector<double>& data, const std::vector<int64_t>& shape,
               bool as_float32 = false);

}  // namespace ipna
