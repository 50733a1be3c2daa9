// pybind11 bindings for the CUDA kernels (no libtorch). Pointers and the
// stream arrive as integers; offsets as a Python list (host).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <stdexcept>
#include <string>
#include <vector>

#include "bind_status.h"
#include "rq.h"
#include "cuda/rq_cuda.h"

namespace py = pybind11;

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "pysid CUDA kernels (no libtorch; raw pointers and the caller's stream)";
  m.def(
      "rq_encode",
      [](std::uintptr_t x, int x_dtype, int64_t n, int64_t d, std::uintptr_t codebooks,
         std::vector<int64_t> offsets, int64_t beam_width, std::uintptr_t quantized,
         std::uintptr_t distances, std::uintptr_t codes, std::uintptr_t stream) {
        const int64_t levels = static_cast<int64_t>(offsets.size()) - 1;
        int status;
        {
          py::gil_scoped_release release;
          status = pysid::rq_encode_cuda(
              reinterpret_cast<const void*>(x), x_dtype, n, d,
              reinterpret_cast<const float*>(codebooks), offsets.data(), levels, beam_width,
              reinterpret_cast<float*>(quantized), reinterpret_cast<float*>(distances),
              reinterpret_cast<int32_t*>(codes), stream);
        }
        pysid::raise_for_status(status, "CUDA rq_encode");
      },
      py::arg("x"), py::arg("x_dtype"), py::arg("n"), py::arg("d"), py::arg("codebooks"),
      py::arg("offsets"), py::arg("beam_width"), py::arg("quantized"), py::arg("distances"),
      py::arg("codes"), py::arg("stream"));
}
