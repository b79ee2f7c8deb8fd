// Shared by the fuzz targets: the loaders read files, so each input is written
// to a per-process temporary file first. Every loader must either succeed or
// throw ipna::Error; anything else (a crash, a sanitizer report, another
// exception type) is a finding.
#pragma once
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>

namespace ipna::fuzz {

inline std::string write_temp(const uint8_t* data, size_t size, const char* suffix) {
  const std::string path = "/tmp/ipna_fuzz_" + std::to_string(getpid()) + suffix;
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) std::abort();
  if (size && std::fwrite(data, 1, size, f) != size) std::abort();
  std::fclose(f);
  return path;
}

}  // namespace ipna::fuzz
