// Access to the models and PyTorch/Captum references that tools/make_fixtures.py
// writes (CTest runs it first; IPNA_FIXTURES points at its folder).
#pragma once
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "loaders/npy.h"

namespace ipna::test {

inline std::string fixture_dir() {
  const char* d = std::getenv("IPNA_FIXTURES");
  return d ? d : "";
}

// Fails (never skips) when the fixtures are missing: the comparison must run.
inline bool fixtures_present() {
  std::string d = fixture_dir();
  if (d.empty() || !std::ifstream(d + "/DONE")) {
    ADD_FAILURE() << "reference fixtures not found (IPNA_FIXTURES='" << d
                  << "'); run: /usr/bin/python3 tools/make_fixtures.py --out DIR and set IPNA_FIXTURES=DIR";
    return false;
  }
  return true;
}

inline nlohmann::json read_json(const std::string& path) {
  std::ifstream f(path);
  return nlohmann::json::parse(f);
}

inline std::vector<double> npy(const std::string& path) { return read_npy(path).data; }

}  // namespace ipna::test
