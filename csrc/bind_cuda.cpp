// pybind11 module pysid._cuda: the CUDA kernels (no libtorch), in the one binding style of
// bind_common.h. Pointers and the stream arrive as integers; offsets is a HOST int64
// pointer (levels + 1 values).
#include <pybind11/pybind11.h>

#include <cstdint>

#include "bind_common.h"
#include "cuda/rq_cuda.h"

namespace py = pybind11;
using pysid::ptr;

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "pysid CUDA kernels (no libtorch; raw pointers and the caller's stream)";
  m.def("status_codes", &pysid::status_codes_py,
        "The C++ status table (csrc/status.h): [(name, value, exception, message)].");
  m.def("dtype_codes", &pysid::dtype_codes_py, "The C++ dtype table (csrc/status.h): [(name, value, torch name)].");
  m.def(
      "rq_encode",
      [](std::uintptr_t x, int x_dtype, int64_t n, int64_t d, std::uintptr_t codebooks, std::uintptr_t offsets,
         int64_t levels, int64_t beam_width, std::uintptr_t quantized, std::uintptr_t distances,
         std::uintptr_t codes, std::uintptr_t stream) {
        int status;
        PYSID_NOGIL(status = pysid::rq_encode_cuda(ptr<const void>(x), x_dtype, n, d, ptr<const float>(codebooks),
                                                   ptr<const int64_t>(offsets), levels, beam_width,
                                                   ptr<float>(quantized), ptr<float>(distances),
                                                   ptr<int32_t>(codes), stream));
        pysid::raise_for_status(status, "CUDA rq_encode");
      },
      py::arg("x"), py::arg("x_dtype"), py::arg("n"), py::arg("d"), py::arg("codebooks"), py::arg("offsets"),
      py::arg("levels"), py::arg("beam_width"), py::arg("quantized"), py::arg("distances"), py::arg("codes"),
      py::arg("stream"));
}
