// make_backend: a device string to a backend. The only place that knows every
// backend, so the CPU backend does not depend on CUDA.
#include <type_traits>

#include "engine/backend.h"
#include "engine/cpu/cpu_backend.h"
#include "engine/device_options.h"
#include "engine/error.h"
#ifdef IPNA_WITH_CUDA
#include "engine/cuda/cuda_backend.h"
#endif

namespace ipna {

template <typename T>
std::unique_ptr<Backend<T>> make_backend(const std::string& device) {
  const DeviceOptions opt = parse_device(device);
  if (!opt.cuda) {
    if constexpr (std::is_same_v<T, double>) {
      if (opt.cpu_math != CpuMath::Fp32)
        throw Error("device '" + device + "': " + (opt.cpu_math == CpuMath::Bf16 ? "bf16" : "Winograd") +
                    " convolutions are an option of float32 precision (float64 is always direct)");
      return std::make_unique<CpuBackend<T>>();
    } else {
      if (opt.cpu_math == CpuMath::Bf16 && !__builtin_cpu_supports("avx512bf16"))
        throw Error("device '" + device + "': this CPU has no bf16 instructions (AVX-512 BF16 or AMX); use cpu");
      return std::make_unique<CpuBackend<T>>(opt.cpu_math);
    }
  }
  if constexpr (std::is_same_v<T, double>) {
    throw Error("device '" + device + "': the CUDA backend computes in float32 (fp32 or tf32); use float32 precision");
  } else {
#ifdef IPNA_WITH_CUDA
    return make_cuda_backend(opt);
#else
    throw Error("device '" + device + "': this build has no CUDA backend (configure with -DIPNA_WITH_CUDA=ON)");
#endif
  }
}
template std::unique_ptr<Backend<float>> make_backend<float>(const std::string&);
template std::unique_ptr<Backend<double>> make_backend<double>(const std::string&);

}  // namespace ipna
