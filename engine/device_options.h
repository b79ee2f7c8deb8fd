// Parsing of device strings: "cpu[/bf16]", or "cuda[:N][/fp32|/tf32|/bf16][/cap=MiB]".
// Host-only, so it is tested on machines without a GPU.
#pragma once
#include <cstddef>
#include <string>

namespace ipna {

enum class GpuMath { Fp32, Tf32, Bf16 };

struct DeviceOptions {
  bool cuda = false;
  int index = 0;
  GpuMath math = GpuMath::Tf32;  // PyTorch's default for convolutions
  size_t memory_cap = 0;         // bytes the engine may use on the card; 0 = all that is free
  // CPU: convolutions with inputs and weights rounded to bf16, accumulated and stored in float32
  // (AVX-512 BF16 or AMX; refused elsewhere).
  bool cpu_bf16 = false;
};

// Throws ipna::Error with the accepted forms on anything else.
DeviceOptions parse_device(const std::string& device);

}  // namespace ipna
