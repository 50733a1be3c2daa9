// pybind11 bindings of the dedup kernel (dedup.h), in the one binding style of bind_common.h.
#include <pybind11/pybind11.h>

#include <cstdint>

#include "bind_common.h"
#include "dedup.h"

namespace py = pybind11;
using pysid::ptr;

void pysid_bind_dedup(py::module_& m) {
  m.def(
      "reassign_groups",
      [](std::uintptr_t group_ptr, int64_t G, std::uintptr_t cand, std::uintptr_t score, int64_t M, int64_t mm,
         std::uintptr_t occ_ptr, std::uintptr_t occ, int64_t k_last, std::uintptr_t out) {
        int status;
        PYSID_NOGIL(status = pysid::reassign_groups_cpu(ptr<const int64_t>(group_ptr), G, ptr<const int32_t>(cand),
                                                        ptr<const float>(score), M, mm, ptr<const int64_t>(occ_ptr),
                                                        ptr<const int32_t>(occ), k_last, ptr<int32_t>(out)));
        pysid::raise_for_status(status, "reassign_groups");
      },
      py::arg("group_ptr"), py::arg("G"), py::arg("cand"), py::arg("score"), py::arg("M"), py::arg("m"),
      py::arg("occ_ptr"), py::arg("occ"), py::arg("k_last"), py::arg("out"));
  m.def(
      "reassign_scan",
      [](std::uintptr_t sorted, std::uintptr_t rows, int64_t n, int idx_bits, int64_t kmin, int64_t k_last,
         std::uintptr_t taken, int64_t T, std::uintptr_t count, std::uintptr_t group_ptr,
         std::uintptr_t mover_rows, std::uintptr_t occ_ptr, std::uintptr_t occ) {
        int status;
        PYSID_NOGIL(status = pysid::reassign_scan_cpu(
                        ptr<const int64_t>(sorted), ptr<const int64_t>(rows), n, idx_bits, kmin, k_last,
                        ptr<const int64_t>(taken), T, ptr<int64_t>(count), ptr<int64_t>(group_ptr),
                        ptr<int64_t>(mover_rows), ptr<int64_t>(occ_ptr),
                        ptr<int32_t>(occ)));
        pysid::raise_for_status(status, "reassign_scan");
      },
      py::arg("sorted"), py::arg("rows"), py::arg("n"), py::arg("idx_bits"), py::arg("kmin"), py::arg("k_last"),
      py::arg("taken"), py::arg("T"), py::arg("count"), py::arg("group_ptr"),
      py::arg("mover_rows"), py::arg("occ_ptr"), py::arg("occ"));
}
