// Shared by the pybind11 binding files: a kernel's status code -> a Python exception.
#pragma once
#include <stdexcept>
#include <string>

#include "rq.h"
#include "trie.h"

namespace pysid {

inline void raise_for_status(int status, const char* what) {
  if (status == kOk) return;
  std::string msg = std::string("pysid native ") + what + " failed: ";
  switch (status) {
    case kBadArgument: throw std::invalid_argument(msg + "bad argument");
    case kOutOfMemory: throw std::runtime_error(msg + "out of memory");
    case kNonFinite: throw std::invalid_argument(msg + "NaN in the log-probs or beam scores of a live beam");
    case kBadNode: throw std::invalid_argument(msg + "a node id is out of range for this level");
    default: throw std::runtime_error(msg + "status " + std::to_string(status));
  }
}

}  // namespace pysid
