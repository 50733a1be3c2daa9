// pybind11 bindings for the CPU kernels. Pointers arrive as integers
// (tensor.data_ptr()); the Python layer owns validation and allocation.
#include <pybind11/pybind11.h>
#include <stdexcept>
#include <string>

#include "bind_status.h"
#include "rq.h"

namespace py = pybind11;

void pysid_bind_trie(pybind11::module_& m);  // bind_trie.cpp
void pysid_bind_kmeans(pybind11::module_& m);  // bind_kmeans.cpp

namespace {

template <typename T>
T* ptr(std::uintptr_t p) { return reinterpret_cast<T*>(p); }

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "pysid CPU kernels (no libtorch; raw pointers)";
  m.def("cpu_isa", &pysid::cpu_isa);
  m.def(
      "rq_encode",
      [](std::uintptr_t x, int64_t n, int64_t d, std::uintptr_t codebooks, std::uintptr_t offsets,
         int64_t levels, int64_t beam_width, std::uintptr_t quantized, std::uintptr_t distances,
         std::uintptr_t codes) {
        int status;
        {
          py::gil_scoped_release release;
          status = pysid::rq_encode_cpu(ptr<const float>(x), n, d, ptr<const float>(codebooks),
                                        ptr<const int64_t>(offsets), levels, beam_width,
                                        ptr<float>(quantized), ptr<float>(distances),
                                        ptr<int32_t>(codes));
        }
        pysid::raise_for_status(status, "rq_encode");
      },
      py::arg("x"), py::arg("n"), py::arg("d"), py::arg("codebooks"), py::arg("offsets"),
      py::arg("levels"), py::arg("beam_width"), py::arg("quantized"), py::arg("distances"),
      py::arg("codes"));
  m.def(
      "kmeans_assign_bounded",
      [](std::uintptr_t x, int64_t n, int64_t d, std::uintptr_t centroids, int64_t k, std::uintptr_t shift,
         std::uintptr_t codes, std::uintptr_t distances, std::uintptr_t lower, std::uintptr_t xnorm2) {
        int status;
        int64_t searched = 0;
        {
          py::gil_scoped_release release;
          status = pysid::kmeans_assign_bounded_cpu(ptr<const float>(x), n, d, ptr<const float>(centroids), k,
                                                    ptr<const double>(shift), ptr<int32_t>(codes),
                                                    ptr<float>(distances), ptr<double>(lower),
                                                    ptr<double>(xnorm2), &searched);
        }
        pysid::raise_for_status(status, "kmeans_assign_bounded");
        return searched;
      },
      py::arg("x"), py::arg("n"), py::arg("d"), py::arg("centroids"), py::arg("k"), py::arg("shift"),
      py::arg("codes"), py::arg("distances"), py::arg("lower"), py::arg("xnorm2"),
      "Bounded k-means assignment (rq.h: kmeans_assign_bounded_cpu); returns the rows searched.");
  pysid_bind_trie(m);
  pysid_bind_kmeans(m);
}
