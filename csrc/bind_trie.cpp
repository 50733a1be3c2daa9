// pybind11 bindings for the trie kernels (trie.h), in the one binding style of
// bind_common.h: pointers arrive as integers (tensor.data_ptr()); per-level arrays as
// lists of such integers. The Python layer owns validation and allocation.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "bind_common.h"
#include "trie.h"

namespace py = pybind11;

using pysid::ptr;
void pysid_bind_trie(py::module_& m) {
  // Returns (status, dup_a, dup_b): kOk, or kDuplicateCodes with the colliding rows dup_a, dup_b
  // (returned, not raised: the caller names the rows in its own error).
  m.def(
      "trie_sort",
      [](std::uintptr_t codes, int64_t M, int64_t L, std::uintptr_t vocab, std::uintptr_t perm,
         std::uintptr_t lcp) {
        int64_t dup[2] = {-1, -1};
        int status;
        PYSID_NOGIL(status = pysid::trie_sort_cpu(ptr<const int64_t>(codes), M, L,
                                        ptr<const int64_t>(vocab), ptr<int64_t>(perm),
                                        ptr<int8_t>(lcp), dup));
        if (status != pysid::kDuplicateCodes) pysid::raise_for_status(status, "trie_sort");
        return py::make_tuple(status, dup[0], dup[1]);
      },
      py::arg("codes"), py::arg("M"), py::arg("L"), py::arg("vocab"), py::arg("perm"),
      py::arg("lcp"));
  m.def(
      "trie_fill",
      [](std::uintptr_t codes, int64_t M, int64_t L, std::uintptr_t perm, std::uintptr_t lcp,
         const std::vector<std::uintptr_t>& offsets, const std::vector<std::uintptr_t>& child_codes,
         int code_bytes) {
        if (static_cast<int64_t>(offsets.size()) != L ||
            static_cast<int64_t>(child_codes.size()) != L)
          throw std::invalid_argument("trie_fill: need one offsets and one codes pointer per level");
        std::vector<int32_t*> off(L);
        std::vector<void*> cc(L);
        for (int64_t d = 0; d < L; ++d) {
          off[d] = ptr<int32_t>(offsets[d]);
          cc[d] = ptr<void>(child_codes[d]);
        }
        int status;
        PYSID_NOGIL(status = pysid::trie_fill_cpu(ptr<const int64_t>(codes), M, L,
                                        ptr<const int64_t>(perm), ptr<const int8_t>(lcp),
                                        off.data(), cc.data(), code_bytes));
        pysid::raise_for_status(status, "trie_fill");
      },
      py::arg("codes"), py::arg("M"), py::arg("L"), py::arg("perm"), py::arg("lcp"),
      py::arg("offsets"), py::arg("child_codes"), py::arg("code_bytes"));
  m.def(
      "trie_walk",
      [](std::uintptr_t prefixes, int64_t N, int64_t t, int64_t stride,
         const std::vector<std::uintptr_t>& offsets, const std::vector<std::uintptr_t>& child_codes,
         int code_bytes, std::uintptr_t nodes) {
        if (static_cast<int64_t>(offsets.size()) < t ||
            static_cast<int64_t>(child_codes.size()) < t)
          throw std::invalid_argument("trie_walk: need one offsets and one codes pointer per level");
        std::vector<const int32_t*> off(offsets.size());
        std::vector<const void*> cc(child_codes.size());
        for (size_t d = 0; d < offsets.size(); ++d) off[d] = ptr<const int32_t>(offsets[d]);
        for (size_t d = 0; d < child_codes.size(); ++d) cc[d] = ptr<const void>(child_codes[d]);
        int status;
        PYSID_NOGIL(status = pysid::trie_walk_cpu(ptr<const int64_t>(prefixes), N, t, stride, off.data(),
                                        cc.data(), code_bytes, ptr<int64_t>(nodes)));
        pysid::raise_for_status(status, "trie_walk");
      },
      py::arg("prefixes"), py::arg("N"), py::arg("t"), py::arg("stride"), py::arg("offsets"),
      py::arg("child_codes"), py::arg("code_bytes"), py::arg("nodes"));
  m.def(
      "beam_step",
      [](std::uintptr_t logprobs, int64_t lp_stride, int64_t V, std::uintptr_t beam_scores,
         std::uintptr_t nodes, int64_t B, int64_t K, std::uintptr_t offsets, int64_t n_nodes,
         std::uintptr_t child_codes, int code_bytes, std::uintptr_t banned, int64_t E,
         std::uintptr_t out_scores, std::uintptr_t out_parent, std::uintptr_t out_token,
         std::uintptr_t out_node) {
        int status;
        PYSID_NOGIL(status = pysid::beam_step_cpu(
              ptr<const float>(logprobs), lp_stride, V, ptr<const float>(beam_scores),
              ptr<const int64_t>(nodes), B, K, ptr<const int32_t>(offsets), n_nodes,
              ptr<const void>(child_codes), code_bytes,
              banned ? ptr<const int64_t>(banned) : nullptr, E, ptr<float>(out_scores),
              ptr<int64_t>(out_parent), ptr<int64_t>(out_token), ptr<int64_t>(out_node)));
        pysid::raise_for_status(status, "beam_step");
      },
      py::arg("logprobs"), py::arg("lp_stride"), py::arg("V"), py::arg("beam_scores"),
      py::arg("nodes"), py::arg("B"), py::arg("K"), py::arg("offsets"), py::arg("n_nodes"),
      py::arg("child_codes"), py::arg("code_bytes"), py::arg("banned"), py::arg("E"),
      py::arg("out_scores"), py::arg("out_parent"), py::arg("out_token"), py::arg("out_node"));
}
