// ONNX models to the graph IR (engine/graph.h), through Debian's libonnx
// protobuf classes. Conv networks only: see kSupportedOps. BatchNormalization
// is folded into the conv before it; Flatten, Reshape to [N,-1], Identity,
// Dropout and a trailing Softmax become aliases of the tensor they pass on.
#pragma once
#include <string>

#include "engine/graph.h"

namespace ipna {

extern const char* const kSupportedOps;

// Throws ipna::Error naming the file, node, op and attribute at fault.
Graph load_onnx(const std::string& path);

// The two forms a user gives a model in: one file split at a tensor name, or
// the original's two partial models (first's output feeds the second).
SplitModel load_split_model(const std::string& path, const std::string& split_name);
SplitModel load_two_part_model(const std::string& first_path, const std::string& second_path);

}  // namespace ipna
