// pybind11 bindings for the k-means kernels (kmeans.h).
//
// Signature style. rq_encode and trie_* take data_ptr() integers and outputs the
// caller allocated; these two instead take the torch tensors themselves and return
// new tensors, because the binding is asked to check shapes, dtypes and
// contiguity itself. They still need no libtorch: the tensors are inspected
// through their Python attributes (dtype, device, shape, is_contiguous(),
// data_ptr()) and outputs are made with torch.empty, so the module keeps working
// with any torch version. The GIL is released while the kernel runs.
//
//   kmeans_update(x, codes, weights, k) -> (sums, counts)
//     x       [N, D] float32 / float16 / bfloat16, CPU, contiguous (N >= 0, D >= 0)
//     codes   [N]    int32, CPU, contiguous, each in [0, k)
//     weights None or [N] float32, CPU, contiguous (assumed >= 0; not checked)
//     k       int >= 1
//     sums    [k, D] float64: sum over rows i with codes[i] == c of w_i * x_i
//     counts  [k]    float64: sum of w_i over those rows (w_i = 1 when weights is None)
//     Empty clusters: sums 0, counts 0. Bit-identical for any thread count and any
//     SIMD path (float64 accumulation of exact products, fixed order: kmeans.h).
//
//   kmeanspp_candidates(x, cand, mind, weights) -> (dist, pot)
//     x       [N, D] float32 / float16 / bfloat16, CPU, contiguous
//     cand    [T, D] float32, CPU, contiguous, 1 <= T <= 64
//     mind    [N]    float32, CPU, contiguous (+inf allowed)
//     weights None or [N] float32, CPU, contiguous
//     dist    [N, T] float32: sum_d (x[i, d] - cand[t, d])^2, from the differences in float32
//     pot     [T]    float64: sum_i w_i * min(mind[i], dist[i, t]), fixed-order float64 sum
//     Bit-identical for any thread count; AVX2 and AVX-512 give the same bits (kmeans.h).
//   kmeanspp_commit(dist, best, mind, weights) -> cum
//     dist [N, T] float32, best int in [0, T), mind [N] float32 (updated in place:
//     min(mind, dist[:, best])), weights None or [N] float32;
//     cum [N] float64 = cumsum((weights * mind).double()) of the updated mind.
//   kmeanspp_pack(x) -> panels [ceil(N / 32) * 2, D, 16] float32 (16 rows transposed, zero padded)
//   kmeanspp_run(panels, N, weights, u, c0, mind, cum) -> chosen [steps] int64
//     Greedy k-means++ centres c0 .. c0 + steps - 1 (u [steps, T] float64 uniforms,
//     1 <= T <= 64); mind [N] float32 and cum [N] float64 updated in place. The same
//     bits as kmeanspp_candidates + kmeanspp_commit step by step (csrc/kmeans.h).
//
// Errors (raised before any work, so no partial result ever escapes):
//   TypeError  an argument is not a torch.Tensor, or has the wrong dtype
//   ValueError wrong device, number of dims, size, non-contiguous, k < 1, T outside
//              [1, 64], a code outside [0, k) (the message names the first such row)
//   RuntimeError out of memory.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "bind_status.h"
#include "kmeans.h"

namespace py = pybind11;

namespace {

// torch objects looked up once (the module is imported on the first call, not at load).
struct TorchObjs {
  py::object tensor, empty, float32, float16, bfloat16, float64, int32, int64;
};

const TorchObjs& torch_objs() {
  PYBIND11_CONSTINIT static py::gil_safe_call_once_and_store<TorchObjs> storage;
  return storage
      .call_once_and_store_result([] {
        py::module_ torch = py::module_::import("torch");
        return TorchObjs{torch.attr("Tensor"),  torch.attr("empty"),   torch.attr("float32"),
                         torch.attr("float16"), torch.attr("bfloat16"), torch.attr("float64"),
                         torch.attr("int32"),   torch.attr("int64")};
      })
      .get_stored();
}

std::string type_name(const py::handle& obj) {
  return py::str(py::type::handle_of(obj).attr("__name__")).cast<std::string>();
}

std::string to_text(const py::handle& obj) { return py::str(obj).cast<std::string>(); }

// One tensor argument: checked to be a CPU torch.Tensor, its dtype and shape read once.
struct Arg {
  const char* fn;
  const char* name;
  py::object t;
  py::object dtype;
  py::tuple shape;

  Arg(const char* fn_, const char* name_, const py::object& obj, const TorchObjs& th)
      : fn(fn_), name(name_), t(obj) {
    if (!py::isinstance(t, th.tensor))
      throw py::type_error(prefix() + " must be a torch.Tensor, got " + type_name(t));
    if (!t.attr("is_cpu").cast<bool>())
      throw py::value_error(prefix() + " must be on the CPU, got device " + to_text(t.attr("device")));
    dtype = t.attr("dtype");
    shape = py::tuple(t.attr("shape"));
  }
  std::string prefix() const { return std::string(fn) + ": " + name; }
  int64_t dims() const { return static_cast<int64_t>(shape.size()); }
  int64_t size(size_t i) const { return shape[i].cast<int64_t>(); }
  std::string shape_str() const { return to_text(shape); }
  void dtype_is(const py::object& want, const char* want_name) const {
    if (!dtype.is(want))
      throw py::type_error(prefix() + " must be torch." + want_name + ", got " + to_text(dtype));
  }
  // 1-D of length n
  void vector_of(int64_t n) const {
    if (dims() != 1 || size(0) != n)
      throw py::value_error(prefix() + " must have shape [N] (N = x.shape[0] = " + std::to_string(n) +
                            "), got " + shape_str());
  }
  std::uintptr_t ptr() const {
    if (!t.attr("is_contiguous")().cast<bool>())
      throw py::value_error(prefix() + " must be contiguous (call .contiguous() first)");
    return t.attr("data_ptr")().cast<std::uintptr_t>();
  }
};

// x: [N, D] float32 / float16 / bfloat16; returns the dtype code
int check_x(const Arg& x, const TorchObjs& th, int64_t* n, int64_t* d) {
  int code;
  if (x.dtype.is(th.float32)) code = 0;
  else if (x.dtype.is(th.float16)) code = 1;
  else if (x.dtype.is(th.bfloat16)) code = 2;
  else
    throw py::type_error(x.prefix() + " must be torch.float32, torch.float16 or torch.bfloat16, got " +
                         to_text(x.dtype));
  if (x.dims() != 2) throw py::value_error(x.prefix() + " must be 2-D [N, D], got shape " + x.shape_str());
  *n = x.size(0);
  *d = x.size(1);
  return code;
}

// weights: None or [N] float32; returns 0 for None
std::uintptr_t check_weights(const char* fn, const py::object& w, const TorchObjs& th, int64_t n) {
  if (w.is_none()) return 0;
  const Arg a(fn, "weights", w, th);
  a.dtype_is(th.float32, "float32");
  a.vector_of(n);
  return a.ptr();
}

py::object empty(const TorchObjs& th, py::tuple shape, const py::object& dtype) {
  return th.empty(shape, py::arg("dtype") = dtype);
}

std::uintptr_t data_ptr(const py::object& t) { return t.attr("data_ptr")().cast<std::uintptr_t>(); }

template <typename T>
T* kptr(std::uintptr_t p) { return reinterpret_cast<T*>(p); }

}  // namespace

void pysid_bind_kmeans(py::module_& m) {
  m.def(
      "kmeans_update",
      [](const py::object& x_, const py::object& codes_, const py::object& weights, int64_t k) {
        const char* fn = "kmeans_update";
        const TorchObjs& th = torch_objs();
        const Arg x(fn, "x", x_, th);
        int64_t n, d;
        const int dt = check_x(x, th, &n, &d);
        const std::uintptr_t xp = x.ptr();
        const Arg codes(fn, "codes", codes_, th);
        codes.dtype_is(th.int32, "int32");
        codes.vector_of(n);
        const std::uintptr_t cp = codes.ptr();
        const std::uintptr_t wp = check_weights(fn, weights, th, n);
        if (k < 1) throw py::value_error("kmeans_update: k must be >= 1, got " + std::to_string(k));
        py::object sums = empty(th, py::make_tuple(k, d), th.float64);
        py::object counts = empty(th, py::make_tuple(k), th.float64);
        const std::uintptr_t sp = data_ptr(sums), np = data_ptr(counts);
        int64_t bad_row = -1;
        int status;
        {
          py::gil_scoped_release release;
          status = pysid::kmeans_update_cpu(kptr<const void>(xp), dt, n, d, kptr<const int32_t>(cp),
                                            kptr<const float>(wp), k, kptr<double>(sp),
                                            kptr<double>(np), &bad_row);
        }
        if (status == pysid::kCodeOutOfRange)
          throw py::value_error("kmeans_update: codes[" + std::to_string(bad_row) + "] = " +
                                std::to_string(kptr<const int32_t>(cp)[bad_row]) +
                                " is out of range [0, " + std::to_string(k) + ")");
        pysid::raise_for_status(status, fn);
        return py::make_tuple(sums, counts);
      },
      py::arg("x"), py::arg("codes"), py::arg("weights"), py::arg("k"),
      "Per-cluster float64 sums [k, D] and weight totals [k] of x's rows grouped by codes "
      "(deterministic; see csrc/bind_kmeans.cpp).");
  m.def(
      "kmeanspp_candidates",
      [](const py::object& x_, const py::object& cand_, const py::object& mind_,
         const py::object& weights) {
        const char* fn = "kmeanspp_candidates";
        const TorchObjs& th = torch_objs();
        const Arg x(fn, "x", x_, th);
        int64_t n, d;
        const int dt = check_x(x, th, &n, &d);
        const std::uintptr_t xp = x.ptr();
        const Arg cand(fn, "cand", cand_, th);
        cand.dtype_is(th.float32, "float32");
        if (cand.dims() != 2 || cand.size(1) != d)
          throw py::value_error("kmeanspp_candidates: cand must have shape [T, D] (D = x.shape[1] = " +
                                std::to_string(d) + "), got " + cand.shape_str());
        const int64_t t = cand.size(0);
        if (t < 1 || t > pysid::kmeanspp_max_candidates)
          throw py::value_error("kmeanspp_candidates: the number of candidates T = cand.shape[0] must "
                                "be in [1, " + std::to_string(pysid::kmeanspp_max_candidates) +
                                "], got " + std::to_string(t));
        const std::uintptr_t cp = cand.ptr();
        const Arg mind(fn, "mind", mind_, th);
        mind.dtype_is(th.float32, "float32");
        mind.vector_of(n);
        const std::uintptr_t mp = mind.ptr();
        const std::uintptr_t wp = check_weights(fn, weights, th, n);
        py::object dist = empty(th, py::make_tuple(n, t), th.float32);
        py::object pot = empty(th, py::make_tuple(t), th.float64);
        const std::uintptr_t dp = data_ptr(dist), pp = data_ptr(pot);
        int status;
        {
          py::gil_scoped_release release;
          status = pysid::kmeanspp_candidates_cpu(kptr<const void>(xp), dt, n, d, kptr<const float>(cp),
                                                  t, kptr<const float>(mp), kptr<const float>(wp),
                                                  kptr<float>(dp), kptr<double>(pp));
        }
        pysid::raise_for_status(status, fn);
        return py::make_tuple(dist, pot);
      },
      py::arg("x"), py::arg("cand"), py::arg("mind"), py::arg("weights"),
      "Squared distances [N, T] (float32) of x's rows to T candidate centres and each "
      "candidate's k-means++ potential [T] (float64, deterministic; see csrc/bind_kmeans.cpp).");
  m.def(
      "kmeanspp_commit",
      [](const py::object& dist_, int64_t best, const py::object& mind_, const py::object& weights) {
        const char* fn = "kmeanspp_commit";
        const TorchObjs& th = torch_objs();
        const Arg dist(fn, "dist", dist_, th);
        dist.dtype_is(th.float32, "float32");
        if (dist.dims() != 2 || dist.size(1) < 1)
          throw py::value_error("kmeanspp_commit: dist must have shape [N, T], T >= 1, got " + dist.shape_str());
        const int64_t n = dist.size(0), t = dist.size(1);
        if (best < 0 || best >= t)
          throw py::value_error("kmeanspp_commit: best = " + std::to_string(best) + " is out of range [0, " +
                                std::to_string(t) + ")");
        const std::uintptr_t dp = dist.ptr();
        const Arg mind(fn, "mind", mind_, th);
        mind.dtype_is(th.float32, "float32");
        mind.vector_of(n);
        const std::uintptr_t mp = mind.ptr();
        const std::uintptr_t wp = check_weights(fn, weights, th, n);
        py::object cum = empty(th, py::make_tuple(n), th.float64);
        const std::uintptr_t cp = data_ptr(cum);
        int status;
        {
          py::gil_scoped_release release;
          status = pysid::kmeanspp_commit_cpu(kptr<const float>(dp), n, t, best, kptr<float>(mp),
                                              kptr<const float>(wp), kptr<double>(cp));
        }
        pysid::raise_for_status(status, fn);
        return cum;
      },
      py::arg("dist"), py::arg("best"), py::arg("mind"), py::arg("weights"),
      "mind <- min(mind, dist[:, best]) in place; returns cumsum((weights * mind).double()) "
      "(the next k-means++ draw's weights; see csrc/bind_kmeans.cpp).");
  m.def(
      "kmeanspp_pack",
      [](const py::object& x_) {
        const char* fn = "kmeanspp_pack";
        const TorchObjs& th = torch_objs();
        const Arg x(fn, "x", x_, th);
        int64_t n, d;
        const int dt = check_x(x, th, &n, &d);
        const std::uintptr_t xp = x.ptr();
        const int64_t rows = pysid::kmeanspp_panel_floats(n, 1);
        py::object panels = empty(th, py::make_tuple(rows / 16, d, 16), th.float32);
        const std::uintptr_t pp = data_ptr(panels);
        int status;
        {
          py::gil_scoped_release release;
          status = pysid::kmeanspp_pack_cpu(kptr<const void>(xp), dt, n, d, kptr<float>(pp));
        }
        pysid::raise_for_status(status, fn);
        return panels;
      },
      py::arg("x"),
      "x [N, D] as float32 row panels [ceil(N / 32) * 2, D, 16] (16 rows transposed, zero "
      "padded) for kmeanspp_run.");
  m.def(
      "kmeanspp_run",
      [](const py::object& panels_, int64_t n, const py::object& weights, const py::object& u_,
         int64_t c0, const py::object& mind_, const py::object& cum_) {
        const char* fn = "kmeanspp_run";
        const TorchObjs& th = torch_objs();
        if (n < 1) throw py::value_error("kmeanspp_run: N must be >= 1, got " + std::to_string(n));
        if (c0 < 0) throw py::value_error("kmeanspp_run: c0 must be >= 0, got " + std::to_string(c0));
        const Arg panels(fn, "panels", panels_, th);
        panels.dtype_is(th.float32, "float32");
        const int64_t npan = pysid::kmeanspp_panel_floats(n, 1) / 16;
        if (panels.dims() != 3 || panels.size(0) != npan || panels.size(2) != 16)
          throw py::value_error("kmeanspp_run: panels must have shape [" + std::to_string(npan) +
                                ", D, 16] (kmeanspp_pack of N = " + std::to_string(n) + " rows), got " +
                                panels.shape_str());
        const int64_t d = panels.size(1);
        const std::uintptr_t pp = panels.ptr();
        const std::uintptr_t wp = check_weights(fn, weights, th, n);
        const Arg u(fn, "u", u_, th);
        u.dtype_is(th.float64, "float64");
        if (u.dims() != 2 || u.size(1) < 1 || u.size(1) > pysid::kmeanspp_max_candidates)
          throw py::value_error("kmeanspp_run: u must have shape [steps, T] with 1 <= T <= " +
                                std::to_string(pysid::kmeanspp_max_candidates) + ", got " + u.shape_str());
        const int64_t steps = u.size(0), t = u.size(1);
        const std::uintptr_t up = u.ptr();
        const Arg mind(fn, "mind", mind_, th);
        mind.dtype_is(th.float32, "float32");
        mind.vector_of(n);
        const std::uintptr_t mp = mind.ptr();
        const Arg cum(fn, "cum", cum_, th);
        cum.dtype_is(th.float64, "float64");
        cum.vector_of(n);
        const std::uintptr_t cp = cum.ptr();
        py::object chosen = empty(th, py::make_tuple(steps), th.int64);
        const std::uintptr_t op = data_ptr(chosen);
        int status;
        {
          py::gil_scoped_release release;
          status = pysid::kmeanspp_run_cpu(kptr<const float>(pp), n, d, kptr<const float>(wp), t,
                                           kptr<const double>(up), c0, steps, kptr<float>(mp),
                                           kptr<double>(cp), kptr<int64_t>(op));
        }
        pysid::raise_for_status(status, fn);
        return chosen;
      },
      py::arg("panels"), py::arg("n"), py::arg("weights"), py::arg("u"), py::arg("c0"), py::arg("mind"),
      py::arg("cum"),
      "Greedy k-means++ centres c0 .. c0 + steps - 1 on packed rows: returns the chosen rows [steps] "
      "int64; mind [N] float32 and cum [N] float64 are updated in place (see csrc/kmeans.h).");
  m.attr("kmeanspp_max_candidates") = pysid::kmeanspp_max_candidates;
}
