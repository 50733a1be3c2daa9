// pysid native status codes and dtype codes: the one C++ definition of both tables.
// Every kernel returns an int status (kOk on success); the pybind11 bindings turn a
// non-kOk status into a Python exception with pysid::raise_for_status (bind_common.h).
// The Python twin is pysid/_status.py; tests/test_native_tables.py checks that the two
// agree exactly (through _C.status_codes() and _C.dtype_codes()).
// Plain C++ (no pybind11, no CUDA headers): included by the CPU kernels, the CUDA
// kernels and the bindings alike.
#pragma once

namespace pysid {

// X(enumerator, value, Python exception, message)
//   exception: 0 = none (kOk), 1 = ValueError (bad input), 2 = RuntimeError
#define PYSID_STATUS_TABLE(X)                                                            \
  X(kOk, 0, 0, "ok")                                                                     \
  X(kBadArgument, 1, 1, "bad argument")                                                  \
  X(kOutOfMemory, 2, 2, "out of memory")                                                 \
  X(kCudaError, 3, 2, "CUDA launch error")                                               \
  X(kDuplicateCodes, 10, 1, "two items share one code tuple")                            \
  X(kNonFinite, 11, 1, "NaN in the log-probs or beam scores of a live beam")             \
  X(kBadNode, 12, 1, "a node id is out of range for this level")                         \
  X(kCodeOutOfRange, 20, 1, "a code is out of range [0, k)")

enum Status : int {
#define PYSID_STATUS_ENUM(name, value, exc, msg) name = value,
  PYSID_STATUS_TABLE(PYSID_STATUS_ENUM)
#undef PYSID_STATUS_ENUM
};

// Element types of inputs that may be half precision (the x_dtype argument of the CUDA
// rq_encode and the k-means kernels). X(enumerator, value, torch dtype name)
#define PYSID_DTYPE_TABLE(X) \
  X(kFloat32, 0, "float32")  \
  X(kFloat16, 1, "float16")  \
  X(kBFloat16, 2, "bfloat16")

enum DType : int {
#define PYSID_DTYPE_ENUM(name, value, torch_name) name = value,
  PYSID_DTYPE_TABLE(PYSID_DTYPE_ENUM)
#undef PYSID_DTYPE_ENUM
};

}  // namespace pysid
