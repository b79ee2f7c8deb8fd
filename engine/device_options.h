// Parsing of device strings: "cpu[/winograd|/bf16]", or "cuda[:N][/fp32|/tf32|/bf16][/cap=MiB]".
// Host-only, so it is tested on machines without a GPU.
#pragma once
#include <cstddef>
#include <string>

namespace ipna {

enum class GpuMath { Fp32, Tf32, Bf16 };

// How the CPU's float32 convolutions compute (float64 is always our direct reference):
// Fp32 direct (the default; PyTorch's CPU arithmetic); Winograd F(4x4, 3x3) for the 3x3
// stride-1 convolutions oneDNN has it for, direct elsewhere (about half the convolution time
// of a ResNet; its transforms cost accuracy: 2x to 8x direct float32's error per convolution,
// up to 300x through a whole attribution, see the README); Bf16 direct with inputs and weights
// rounded to bf16, accumulated in float32, the values kept NHWC between convolutions stored as bf16
// (gradients and attribution sums float32; AVX-512 BF16 or AMX; refused elsewhere).
enum class CpuMath { Fp32, Winograd, Bf16 };

struct DeviceOptions {
  bool cuda = false;
  int index = 0;
  GpuMath math = GpuMath::Tf32;  // PyTorch's default for convolutions
  size_t memory_cap = 0;         // bytes the engine may use on the card; 0 = all that is free
  CpuMath cpu_math = CpuMath::Fp32;
};

// Throws ipna::Error with the accepted forms on anything else.
DeviceOptions parse_device(const std::string& device);

}  // namespace ipna
