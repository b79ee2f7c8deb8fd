// One exception type for every user-facing failure: the message names the
// file, node, tensor or argument at fault and what was expected, so the CLI
// can print it verbatim and exit nonzero.
#pragma once
#include <stdexcept>
#include <string>

namespace ipna {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// The user stopped the work (Ctrl-C): never recorded as a failed item, always passed on.
class Interrupted : public Error {
 public:
  Interrupted() : Error("interrupted") {}
};

}  // namespace ipna
