// pybind11 module pysid._C: the CPU kernels, in the one binding style of bind_common.h
// (pointers as integers + sizes; the Python layer validates and allocates; GIL released;
// statuses raised by raise_for_status). The trie, k-means and dedup bindings live in
// bind_trie.cpp / bind_kmeans.cpp / bind_dedup.cpp.
#include <pybind11/pybind11.h>

#include <cstdint>

#include "bind_common.h"
#include "rq.h"

namespace py = pybind11;
using pysid::ptr;

void pysid_bind_trie(pybind11::module_& m);    // bind_trie.cpp
void pysid_bind_kmeans(pybind11::module_& m);  // bind_kmeans.cpp
void pysid_bind_dedup(pybind11::module_& m);   // bind_dedup.cpp

PYBIND11_MODULE(_C, m) {
  m.doc() = "pysid CPU kernels (no libtorch; raw pointers)";
  m.def("cpu_isa", &pysid::cpu_isa);
  m.def("status_codes", &pysid::status_codes_py,
        "The C++ status table (csrc/status.h): [(name, value, exception, message)].");
  m.def("dtype_codes", &pysid::dtype_codes_py, "The C++ dtype table (csrc/status.h): [(name, value, torch name)].");
  m.def(
      "rq_encode",
      [](std::uintptr_t x, int64_t n, int64_t d, std::uintptr_t codebooks, std::uintptr_t offsets,
         int64_t levels, int64_t beam_width, std::uintptr_t quantized, std::uintptr_t distances,
         std::uintptr_t codes) {
        int status;
        PYSID_NOGIL(status = pysid::rq_encode_cpu(ptr<const float>(x), n, d, ptr<const float>(codebooks),
                                                  ptr<const int64_t>(offsets), levels, beam_width,
                                                  ptr<float>(quantized), ptr<float>(distances),
                                                  ptr<int32_t>(codes)));
        pysid::raise_for_status(status, "rq_encode");
      },
      py::arg("x"), py::arg("n"), py::arg("d"), py::arg("codebooks"), py::arg("offsets"),
      py::arg("levels"), py::arg("beam_width"), py::arg("quantized"), py::arg("distances"),
      py::arg("codes"));
  pysid_bind_trie(m);
  pysid_bind_kmeans(m);
  pysid_bind_dedup(m);
}
