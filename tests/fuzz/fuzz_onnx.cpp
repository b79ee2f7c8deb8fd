// Fuzz target: the ONNX loader, then what `info` and a split do with the graph.
#include <cstdio>

#include "engine/error.h"
#include "loaders/onnx_loader.h"
#include "tests/fuzz/fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = ipna::fuzz::write_temp(data, size, ".onnx");
  try {
    ipna::Graph g = ipna::load_onnx(path);
    g.macs_per_sample();
    for (const std::string& name : g.split_candidates()) {
      const int v = *g.find_value(name);
      if (!ipna::not_a_cut(g, v) && g.values[g.output].shape.rank() == 1) {
        ipna::SplitModel m = ipna::split_graph(g, name);
        m.f1.validate();
        m.f2.validate();
        break;
      }
    }
  } catch (const ipna::Error&) {
  }
  std::remove(path.c_str());
  return 0;
}
