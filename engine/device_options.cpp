#include "engine/device_options.h"

#include <cstdlib>

#include "engine/error.h"

namespace ipna {

DeviceOptions parse_device(const std::string& device) {
  const std::string help =
      "device '" + device + "': expected cpu, cpu/winograd, cpu/bf16 or cuda[:N][/fp32|/tf32|/bf16][/cap=MiB]";
  DeviceOptions o;
  if (device == "cpu") return o;
  if (device == "cpu/winograd" || device == "cpu/bf16") {
    o.cpu_math = device == "cpu/winograd" ? CpuMath::Winograd : CpuMath::Bf16;
    return o;
  }
  if (device.rfind("cuda", 0) != 0) throw Error(help);
  o.cuda = true;
  std::string rest = device.substr(4);
  size_t slash = rest.find('/');
  std::string head = rest.substr(0, slash);
  if (!head.empty()) {
    if (head[0] != ':' || head.size() < 2 || head.find_first_not_of("0123456789", 1) != std::string::npos)
      throw Error(help);
    o.index = std::atoi(head.c_str() + 1);
  }
  while (slash != std::string::npos) {
    const size_t next = rest.find('/', slash + 1);
    const std::string part = rest.substr(slash + 1, next == std::string::npos ? std::string::npos : next - slash - 1);
    if (part == "fp32")
      o.math = GpuMath::Fp32;
    else if (part == "tf32")
      o.math = GpuMath::Tf32;
    else if (part == "bf16")
      o.math = GpuMath::Bf16;
    else if (part.rfind("cap=", 0) == 0 && part.size() > 4 &&
             part.find_first_not_of("0123456789", 4) == std::string::npos)
      o.memory_cap = static_cast<size_t>(std::strtoull(part.c_str() + 4, nullptr, 10)) << 20;
    else
      throw Error(help);
    slash = next;
  }
  return o;
}

}  // namespace ipna
