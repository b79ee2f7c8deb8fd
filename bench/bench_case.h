// The workloads both benchmark programs time, named the same way so their
// results line up: <model>/<what>/<steps>.
#pragma once
#include <cstdlib>
#include <string>
#include <vector>

namespace ipna::bench {

struct Case {
  std::string model;  // folder under IPNA_BENCH_MODELS
  std::string what;   // "ig" or "ipna_cond"
  int steps;
  int cls;
  std::vector<int> box;  // x1 y1 x2 y2
  std::string split = "layer2";
};

inline std::vector<Case> cases() {
  return {{"resnet18_112", "ig", 32, 920, {22, 50, 45, 65}},
          {"resnet18_112", "ipna_cond", 32, 920, {22, 50, 45, 65}},
          {"efficientnet_lite0_224", "ig", 64, 920, {45, 100, 90, 130}, "blocks.7"},
          {"lenet", "ig", 256, 3, {0, 0, 14, 14}, "split"},
          {"lenet", "ipna_cond", 256, 3, {0, 0, 14, 14}, "split"},
          {"resnet152_224", "ig", 256, 920, {45, 100, 90, 130}},
          {"resnet152_224", "ipna_cond", 256, 920, {45, 100, 90, 130}}};
}

// IPNA_BENCH_DEVICE: cpu (default), cpu/winograd, cpu/bf16 or a CUDA device string such as cuda:0/tf32.
inline std::string device() {
  const char* d = std::getenv("IPNA_BENCH_DEVICE");
  return d ? d : "cpu";
}

inline std::string models_dir() {
  const char* d = std::getenv("IPNA_BENCH_MODELS");
  return d ? d : "build/bench_models";
}

}  // namespace ipna::bench
