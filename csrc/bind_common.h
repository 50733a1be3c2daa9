// Shared by the pybind11 binding files (bind_*.cpp): the one binding convention.
//   - every array arrives as a raw pointer (tensor.data_ptr(), a Python int) plus sizes;
//     the Python layer validates dtypes, shapes, devices and contiguity and allocates
//     every output before the call (none is created here);
//   - the GIL is released while the kernel runs (PYSID_NOGIL);
//   - a kernel's status becomes a Python exception in raise_for_status, here only.
#pragma once
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "status.h"

namespace pysid {

// A pointer argument (a Python int from tensor.data_ptr(); 0 = null).
template <typename T>
inline T* ptr(std::uintptr_t p) { return reinterpret_cast<T*>(p); }

// Text of a status code (the message column of PYSID_STATUS_TABLE).
inline const char* status_message(int status) {
  switch (status) {
#define PYSID_STATUS_MSG(name, value, exc, msg) \
  case value: return msg;
    PYSID_STATUS_TABLE(PYSID_STATUS_MSG)
#undef PYSID_STATUS_MSG
    default: return nullptr;
  }
}

// kOk: nothing; else ValueError or RuntimeError (the table's exception column):
// "pysid native <what> failed: <detail, or else the table's message>".
inline void raise_for_status(int status, const char* what, const std::string& detail = std::string()) {
  if (status == kOk) return;
  std::string msg = std::string("pysid native ") + what + " failed: ";
  const char* text = status_message(status);
  msg += !detail.empty() ? detail : text ? std::string(text) : "status " + std::to_string(status);
  int exc = 2;
  switch (status) {
#define PYSID_STATUS_EXC(name, value, kind, m) \
  case value: exc = kind; break;
    PYSID_STATUS_TABLE(PYSID_STATUS_EXC)
#undef PYSID_STATUS_EXC
    default: break;
  }
  if (exc == 1) throw std::invalid_argument(msg);  // pybind11: ValueError
  throw std::runtime_error(msg);                   // pybind11: RuntimeError
}

// The tables as Python lists, for tests/test_native_tables.py:
//   status_codes() -> [(name, value, "ValueError" | "RuntimeError" | None, message)]
//   dtype_codes()  -> [(name, value, torch dtype name)]
inline pybind11::list status_codes_py() {
  pybind11::list out;
#define PYSID_STATUS_ROW(name, value, exc, msg)                                                    \
  out.append(pybind11::make_tuple(#name, value,                                                    \
                                  exc == 0 ? pybind11::object(pybind11::none())                    \
                                           : pybind11::object(pybind11::str(exc == 1 ? "ValueError" \
                                                                                     : "RuntimeError")), \
                                  msg));
  PYSID_STATUS_TABLE(PYSID_STATUS_ROW)
#undef PYSID_STATUS_ROW
  return out;
}

inline pybind11::list dtype_codes_py() {
  pybind11::list out;
#define PYSID_DTYPE_ROW(name, value, torch_name) out.append(pybind11::make_tuple(#name, value, torch_name));
  PYSID_DTYPE_TABLE(PYSID_DTYPE_ROW)
#undef PYSID_DTYPE_ROW
  return out;
}

}  // namespace pysid

// Runs `stmt` with the GIL released.
#define PYSID_NOGIL(stmt)                          \
  do {                                             \
    pybind11::gil_scoped_release pysid_release_;   \
    stmt;                                          \
  } while (0)
