// pybind11 bindings for the k-means kernels (kmeans.h), in the one binding style of
// bind_common.h: pointers (tensor.data_ptr()) and sizes; pysid/_native_kmeans.py checks
// every argument and allocates every output first; the GIL is released while a kernel runs.
//
//   kmeans_update(x, x_dtype, n, d, codes, weights, k, sums, counts)
//   kmeanspp_candidates(x, x_dtype, n, d, cand, t, mind, weights, dist, pot)
//   kmeanspp_commit(dist, n, t, best, mind, weights, cum)
//   kmeanspp_pack(x, x_dtype, n, d, panels)
//   kmeanspp_run(panels, n, d, weights, t, u, c0, steps, mind, cum, chosen)
//   kmeans_assign_bounded(x, n, d, centroids, k, shift, codes, distances, lower, xnorm2) -> searched
//   kmeans_assign_topm(x, n, d, centroids, k, m, codes, distances, cand)
//   kmeans_assign_candidates(x, n, d, centroids, k, cand, m, codes, distances)
//   kmeans_assign_bf16(x, n, d, cand, k, codes, distances)
//   kmeans_seed_path() -> the path kmeans_assign_bf16 takes ("avx512bf16", "avx512", "avx2", "scalar")
//   kmeanspp_panel_floats(n, d) -> floats of kmeanspp_pack's panels
// Shapes, dtypes and semantics: kmeans.h. weights / shift may be 0 (null).
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "bind_common.h"
#include "kmeans.h"

namespace py = pybind11;
using pysid::ptr;

void pysid_bind_kmeans(py::module_& m) {
  m.def(
      "kmeans_update",
      [](std::uintptr_t x, int x_dtype, int64_t n, int64_t d, std::uintptr_t codes, std::uintptr_t weights,
         int64_t k, std::uintptr_t sums, std::uintptr_t counts) {
        int64_t bad_row = -1;
        int status;
        PYSID_NOGIL(status = pysid::kmeans_update_cpu(ptr<const void>(x), x_dtype, n, d, ptr<const int32_t>(codes),
                                                      ptr<const float>(weights), k, ptr<double>(sums),
                                                      ptr<double>(counts), &bad_row));
        std::string detail;
        if (status == pysid::kCodeOutOfRange)
          detail = "codes[" + std::to_string(bad_row) + "] = " + std::to_string(ptr<const int32_t>(codes)[bad_row]) +
                   " is out of range [0, " + std::to_string(k) + ")";
        pysid::raise_for_status(status, "kmeans_update", detail);
      },
      py::arg("x"), py::arg("x_dtype"), py::arg("n"), py::arg("d"), py::arg("codes"), py::arg("weights"),
      py::arg("k"), py::arg("sums"), py::arg("counts"),
      "Per-cluster float64 sums [k, D] and weight totals [k] of x's rows grouped by codes (kmeans.h).");
  m.def(
      "kmeanspp_candidates",
      [](std::uintptr_t x, int x_dtype, int64_t n, int64_t d, std::uintptr_t cand, int64_t t, std::uintptr_t mind,
         std::uintptr_t weights, std::uintptr_t dist, std::uintptr_t pot) {
        int status;
        PYSID_NOGIL(status = pysid::kmeanspp_candidates_cpu(ptr<const void>(x), x_dtype, n, d, ptr<const float>(cand),
                                                            t, ptr<const float>(mind), ptr<const float>(weights),
                                                            ptr<float>(dist), ptr<double>(pot)));
        pysid::raise_for_status(status, "kmeanspp_candidates");
      },
      py::arg("x"), py::arg("x_dtype"), py::arg("n"), py::arg("d"), py::arg("cand"), py::arg("t"), py::arg("mind"),
      py::arg("weights"), py::arg("dist"), py::arg("pot"),
      "Squared distances [N, T] of x's rows to T candidate centres and their k-means++ potentials [T] (kmeans.h).");
  m.def(
      "kmeanspp_commit",
      [](std::uintptr_t dist, int64_t n, int64_t t, int64_t best, std::uintptr_t mind, std::uintptr_t weights,
         std::uintptr_t cum) {
        int status;
        PYSID_NOGIL(status = pysid::kmeanspp_commit_cpu(ptr<const float>(dist), n, t, best, ptr<float>(mind),
                                                        ptr<const float>(weights), ptr<double>(cum)));
        pysid::raise_for_status(status, "kmeanspp_commit");
      },
      py::arg("dist"), py::arg("n"), py::arg("t"), py::arg("best"), py::arg("mind"), py::arg("weights"),
      py::arg("cum"), "mind <- min(mind, dist[:, best]) in place; cum <- cumsum((weights * mind).double()).");
  m.def(
      "kmeanspp_pack",
      [](std::uintptr_t x, int x_dtype, int64_t n, int64_t d, std::uintptr_t panels) {
        int status;
        PYSID_NOGIL(status = pysid::kmeanspp_pack_cpu(ptr<const void>(x), x_dtype, n, d, ptr<float>(panels)));
        pysid::raise_for_status(status, "kmeanspp_pack");
      },
      py::arg("x"), py::arg("x_dtype"), py::arg("n"), py::arg("d"), py::arg("panels"),
      "x [N, D] as float32 row panels [ceil(N / 32) * 2, D, 16] (16 rows transposed, zero padded).");
  m.def(
      "kmeanspp_run",
      [](std::uintptr_t panels, int64_t n, int64_t d, std::uintptr_t weights, int64_t t, std::uintptr_t u,
         int64_t c0, int64_t steps, std::uintptr_t mind, std::uintptr_t cum, std::uintptr_t chosen) {
        int status;
        PYSID_NOGIL(status = pysid::kmeanspp_run_cpu(ptr<const float>(panels), n, d, ptr<const float>(weights), t,
                                                     ptr<const double>(u), c0, steps, ptr<float>(mind),
                                                     ptr<double>(cum), ptr<int64_t>(chosen)));
        pysid::raise_for_status(status, "kmeanspp_run");
      },
      py::arg("panels"), py::arg("n"), py::arg("d"), py::arg("weights"), py::arg("t"), py::arg("u"), py::arg("c0"),
      py::arg("steps"), py::arg("mind"), py::arg("cum"), py::arg("chosen"),
      "Greedy k-means++ centres c0 .. c0 + steps - 1 on packed rows (kmeans.h).");
  m.def(
      "kmeans_assign_bounded",
      [](std::uintptr_t x, int64_t n, int64_t d, std::uintptr_t centroids, int64_t k, std::uintptr_t shift,
         std::uintptr_t codes, std::uintptr_t distances, std::uintptr_t lower, std::uintptr_t xnorm2) {
        int status;
        int64_t searched = 0;
        PYSID_NOGIL(status = pysid::kmeans_assign_bounded_cpu(ptr<const float>(x), n, d, ptr<const float>(centroids),
                                                              k, ptr<const double>(shift), ptr<int32_t>(codes),
                                                              ptr<float>(distances), ptr<double>(lower),
                                                              ptr<double>(xnorm2), &searched));
        pysid::raise_for_status(status, "kmeans_assign_bounded");
        return searched;
      },
      py::arg("x"), py::arg("n"), py::arg("d"), py::arg("centroids"), py::arg("k"), py::arg("shift"),
      py::arg("codes"), py::arg("distances"), py::arg("lower"), py::arg("xnorm2"),
      "Bounded k-means assignment (kmeans.h: kmeans_assign_bounded_cpu); returns the rows searched.");
  m.def(
      "kmeans_assign_topm",
      [](std::uintptr_t x, int64_t n, int64_t d, std::uintptr_t centroids, int64_t k, int64_t mc,
         std::uintptr_t codes, std::uintptr_t distances, std::uintptr_t cand) {
        int status;
        PYSID_NOGIL(status = pysid::kmeans_assign_topm_cpu(ptr<const float>(x), n, d, ptr<const float>(centroids), k,
                                                           mc, ptr<int32_t>(codes), ptr<float>(distances),
                                                           ptr<int32_t>(cand)));
        pysid::raise_for_status(status, "kmeans_assign_topm");
      },
      py::arg("x"), py::arg("n"), py::arg("d"), py::arg("centroids"), py::arg("k"), py::arg("m"), py::arg("codes"),
      py::arg("distances"), py::arg("cand"),
      "Nearest centroid of every row and its m nearest candidates (kmeans.h: kmeans_assign_topm_cpu).");
  m.def(
      "kmeans_assign_candidates",
      [](std::uintptr_t x, int64_t n, int64_t d, std::uintptr_t centroids, int64_t k, std::uintptr_t cand,
         int64_t mc, std::uintptr_t codes, std::uintptr_t distances) {
        int status;
        PYSID_NOGIL(status = pysid::kmeans_assign_candidates_cpu(ptr<const float>(x), n, d,
                                                                 ptr<const float>(centroids), k,
                                                                 ptr<const int32_t>(cand), mc, ptr<int32_t>(codes),
                                                                 ptr<float>(distances)));
        pysid::raise_for_status(status, "kmeans_assign_candidates");
      },
      py::arg("x"), py::arg("n"), py::arg("d"), py::arg("centroids"), py::arg("k"), py::arg("cand"), py::arg("m"),
      py::arg("codes"), py::arg("distances"),
      "The assignment restricted to each row's candidates (kmeans.h: kmeans_assign_candidates_cpu).");
  m.def(
      "kmeans_assign_bf16",
      [](std::uintptr_t x, int64_t n, int64_t d, std::uintptr_t cand, int64_t k, std::uintptr_t codes,
         std::uintptr_t distances) {
        int status;
        PYSID_NOGIL(status = pysid::kmeans_assign_bf16_cpu(ptr<const float>(x), n, d, ptr<const float>(cand), k,
                                                           ptr<int32_t>(codes), ptr<float>(distances)));
        pysid::raise_for_status(status, "kmeans_assign_bf16");
      },
      py::arg("x"), py::arg("n"), py::arg("d"), py::arg("cand"), py::arg("k"), py::arg("codes"),
      py::arg("distances"),
      "The k-means|| seeding assignment in bfloat16 (kmeans.h: kmeans_assign_bf16_cpu).");
  m.def("kmeans_seed_path", [] { return std::string(pysid::kmeans_seed_path()); },
        "The path kmeans_assign_bf16 takes now (PYSID_CPU_ISA / PYSID_CPU_BF16 lower it).");
  m.def("kmeanspp_panel_floats", &pysid::kmeanspp_panel_floats, py::arg("n"), py::arg("d"),
        "Floats of kmeanspp_pack's panels for N rows of D values.");
  m.attr("kmeanspp_max_candidates") = pysid::kmeanspp_max_candidates;
}
