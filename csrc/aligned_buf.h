// A 64-byte aligned scratch buffer freed on scope exit (the CPU dispatchers' only
// allocation helper: a failed alloc() becomes kOutOfMemory, never an exception).
#pragma once
#include <cstdint>
#include <cstdlib>

namespace pysid {

struct AlignedBuf {
  void* p = nullptr;
  AlignedBuf() = default;
  AlignedBuf(const AlignedBuf&) = delete;
  AlignedBuf& operator=(const AlignedBuf&) = delete;
  bool alloc(int64_t bytes) {
    if (bytes <= 0) bytes = 64;
    if (posix_memalign(&p, 64, static_cast<size_t>(bytes)) != 0) p = nullptr;
    return p != nullptr;
  }
  ~AlignedBuf() { std::free(p); }
};

}  // namespace pysid
