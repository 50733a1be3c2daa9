// Residual-quantization block kernel, written once over a tiny SIMD "traits"
// type and compiled once per ISA (rq_cpu.cpp: scalar, rq_cpu_avx2.cpp,
// rq_cpu_avx512.cpp). Include it from a .cpp right after one of simd_scalar.h /
// simd_avx2.h / simd_avx512.h (the `Isa` wrappers and PYSID_ISA); it defines the entry
// points rq_block_<isa>, rq_assign_bounded_<isa>, rq_tile_rows_<isa>, rq_lanes_<isa>
// (rq_cpu_plan.h).
//
// Everything here has internal linkage (anonymous namespace, no std:: templates),
// so code compiled with AVX-512 flags can never be shared with the scalar path.
//
// Algorithm (per block of input rows, residuals kept in this thread's scratch):
//   level l: scores s[row][k] = ||c_k||^2 - 2 r_row . c_k for every beam row and
//   code, from a register-blocked microkernel (kRowsMax rows x kPanelsMax panels
//   of W codes, broadcast r[row][j], FMA against the packed panel row [j][W]).
//   Greedy fuses a per-lane running (min, argmin) into the microkernel epilogue
//   (no score matrix); beam search writes the tile's scores to a small buffer and
//   keeps a sorted top-B list per input row in (score, beam rank, code) order.

namespace {

using pysid::rqcpu::Bounds;
using pysid::rqcpu::Plan;
using pysid::rqcpu::Scratch;

using V = Isa::V;
using VI = Isa::VI;
using M = Isa::M;
constexpr int W = Isa::W;

// Register tile (rows x panels of W codes) per path: AVX-512 12 x 2 (24 zmm accumulators
// + 2 panel rows + 1 broadcast), AVX2 6 x 2 (12 ymm + 2 + 1), portable 4 x 1.
constexpr int kRowsMax = Isa::kLevel == pysid::kIsaAvx512 ? 12 : Isa::kLevel == pysid::kIsaAvx2 ? 6 : 4;
constexpr int kPanelsMax = Isa::kLevel == pysid::kIsaScalar ? 1 : 2;

// ---------------------------------------------------------------- microkernel
// a: R rows of residuals (stride lda floats) ; b: P panels [d][W] (stride ldb floats) ;
// bn: P*W norms. MODE 0: store scores to out[r*ldo + p*W + t].
// MODE 1: merge into the running per-lane (min, argmin) minv/mini[r*W + t];
// panels are visited in increasing code order and the compare is strict, so each
// lane keeps its lowest index among exact ties. MODE 2: MODE 1 and the per-lane
// second-lowest score minv2[r*W + t].
template <int R, int P, int MODE>
void micro(const float* __restrict a, int64_t lda, int64_t d, const float* __restrict b,
           int64_t ldb, const float* __restrict bn, int32_t k0, float* __restrict out,
           int64_t ldo, float* __restrict minv, int32_t* __restrict mini, float* __restrict minv2) {
  V acc[R][P];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
    for (int p = 0; p < P; ++p) acc[r][p] = Isa::zero();
  for (int64_t j = 0; j < d; ++j) {
    V bv[P];
#pragma GCC unroll 8
    for (int p = 0; p < P; ++p) bv[p] = Isa::load(b + p * ldb + j * W);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const V av = Isa::set1(a[r * lda + j]);
#pragma GCC unroll 8
      for (int p = 0; p < P; ++p) acc[r][p] = Isa::fmadd(av, bv[p], acc[r][p]);
    }
  }
  const V m2 = Isa::set1(-2.0f);
  if constexpr (MODE == 0) {
    (void)minv2;
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
      for (int p = 0; p < P; ++p)
        Isa::store(out + r * ldo + p * W, Isa::fmadd(acc[r][p], m2, Isa::load(bn + p * W)));
  } else {
    (void)out;
    (void)ldo;
    VI id[P];
#pragma GCC unroll 8
    for (int p = 0; p < P; ++p) id[p] = Isa::iota(k0 + p * W);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      V mv = Isa::load(minv + r * W);
      VI mi = Isa::loadi(mini + r * W);
      V mv2 = MODE == 2 ? Isa::load(minv2 + r * W) : mv;
#pragma GCC unroll 8
      for (int p = 0; p < P; ++p) {
        const V s = Isa::fmadd(acc[r][p], m2, Isa::load(bn + p * W));
        const M lt = Isa::lt(s, mv);
        if constexpr (MODE == 2) mv2 = Isa::blend(lt, Isa::min(mv2, s), mv);  // lt ? old min : min(mv2, s)
        mv = Isa::blend(lt, mv, s);
        mi = Isa::blendi(lt, mi, id[p]);
      }
      Isa::store(minv + r * W, mv);
      Isa::storei(mini + r * W, mi);
      if constexpr (MODE == 2) Isa::store(minv2 + r * W, mv2);
    }
  }
}

using MicroFn = void (*)(const float*, int64_t, int64_t, const float*, int64_t, const float*,
                         int32_t, float*, int64_t, float*, int32_t*, float*);

template <int MODE, int R, int P>
void fill_table(MicroFn* t) {
  t[(R - 1) * kPanelsMax + (P - 1)] = &micro<R, P, MODE>;
  if constexpr (P > 1) {
    fill_table<MODE, R, P - 1>(t);
  } else if constexpr (R > 1) {
    fill_table<MODE, R - 1, kPanelsMax>(t);
  }
}

// Scores of `rows` residual rows (stride d) against the np panels of one level.
template <int MODE>
void level_scores(const float* a, int64_t rows, int64_t d, const float* panels,
                  const float* norms, int64_t np, float* out, int64_t ldo, float* minv,
                  int32_t* mini, float* minv2) {
  MicroFn tab[kRowsMax * kPanelsMax];
  fill_table<MODE, kRowsMax, kPanelsMax>(tab);
  const int64_t ldb = d * W;
  // Panel group outer, row tile inner: the group's panels (kPanelsMax*d*W floats)
  // stay in L1 while the block's residual rows stream from L2.
  for (int64_t pg = 0; pg < np; pg += kPanelsMax) {
    const int64_t P = (np - pg < kPanelsMax) ? np - pg : kPanelsMax;
    for (int64_t r0 = 0; r0 < rows; r0 += kRowsMax) {
      const int64_t R = (rows - r0 < kRowsMax) ? rows - r0 : kRowsMax;
      tab[(R - 1) * kPanelsMax + (P - 1)](a + r0 * d, d, d, panels + pg * ldb, ldb,
                                          norms + pg * W, static_cast<int32_t>(pg * W),
                                          out ? out + r0 * ldo + pg * W : nullptr, ldo,
                                          minv ? minv + r0 * W : nullptr,
                                          mini ? mini + r0 * W : nullptr,
                                          minv2 ? minv2 + r0 * W : nullptr);
    }
  }
}

// ------------------------------------------------------------ vector helpers
inline float hsum(V v) { return Isa::hsum(v); }

// dst = src - c (dst may alias src); returns ||dst||^2 (fp32).
inline float sub_sqnorm(float* dst, const float* src, const float* c, int64_t d) {
  V acc = Isa::zero();
  int64_t j = 0;
  for (; j + W <= d; j += W) {
    const V r = Isa::sub(Isa::load(src + j), Isa::load(c + j));
    Isa::store(dst + j, r);
    acc = Isa::fmadd(r, r, acc);
  }
  float s = hsum(acc);
  for (; j < d; ++j) {
    const float r = src[j] - c[j];
    dst[j] = r;
    s += r * r;
  }
  return s;
}

inline float sqnorm(const float* v, int64_t d) {
  V acc = Isa::zero();
  int64_t j = 0;
  for (; j + W <= d; j += W) {
    const V r = Isa::load(v + j);
    acc = Isa::fmadd(r, r, acc);
  }
  float s = hsum(acc);
  for (; j < d; ++j) s += v[j] * v[j];
  return s;
}

inline void copy_floats(float* dst, const float* src, int64_t cnt) {
  for (int64_t j = 0; j < cnt; ++j) dst[j] = src[j];
}

// q = sum_l cb[off[l] + codes[l]] in level order.
inline void sum_codewords(const Plan& p, const int32_t* code_row, float* q) {
  const int64_t d = p.d;
  const float* c0 = p.cb + (p.off[0] + code_row[0]) * d;
  copy_floats(q, c0, d);
  for (int64_t l = 1; l < p.levels; ++l) {
    const float* c = p.cb + (p.off[l] + code_row[l]) * d;
    int64_t j = 0;
    for (; j + W <= d; j += W) Isa::store(q + j, Isa::add(Isa::load(q + j), Isa::load(c + j)));
    for (; j < d; ++j) q[j] += c[j];
  }
}

// ------------------------------------------------------------------- greedy
// res = src - c, q = c (first level) or q + c; returns ||res||^2 (fp32).
inline float sub_acc_sqnorm(float* res, const float* src, const float* c, float* q, bool first,
                            int64_t d) {
  V acc = Isa::zero();
  int64_t j = 0;
  for (; j + W <= d; j += W) {
    const V cv = Isa::load(c + j);
    const V r = Isa::sub(Isa::load(src + j), cv);
    Isa::store(res + j, r);
    Isa::store(q + j, first ? cv : Isa::add(Isa::load(q + j), cv));
    acc = Isa::fmadd(r, r, acc);
  }
  float s = hsum(acc);
  for (; j < d; ++j) {
    const float r = src[j] - c[j];
    res[j] = r;
    q[j] = first ? c[j] : q[j] + c[j];
    s += r * r;
  }
  return s;
}

inline void prefetch_row(const float* row, int64_t d) {
  for (int64_t j = 0; j < d; j += 16) __builtin_prefetch(row + j);
}

void block_greedy(const Plan& p, int64_t i0, int64_t m, float* scratch, const Scratch& S) {
  const int64_t d = p.d, L = p.levels;
  const float* x = p.x + i0 * d;
  float* res = scratch + S.res[0];
  float* qacc = scratch + S.qacc;  // the block's quantized rows, written out once at the end
  float* minv = scratch + S.minv;
  float* minv2 = p.second ? scratch + S.minv2 : nullptr;  // one level only (Plan::second)
  int32_t* mini = reinterpret_cast<int32_t*>(scratch + S.mini);
  int32_t* codes = p.codes + i0 * L;
  const V inf = Isa::set1(__builtin_inff());
  const VI zi = Isa::iota(0);
  constexpr int64_t kAhead = 4;  // codeword rows prefetched ahead of the residual update
  for (int64_t l = 0; l < L; ++l) {
    const float* src = (l == 0) ? x : res;  // level 0 reads the input rows in place
    const int64_t pb = p.pofs[l], np = p.pofs[l + 1] - pb;
    for (int64_t i = 0; i < m; ++i) {
      Isa::store(minv + i * W, inf);
      Isa::storei(mini + i * W, zi);  // any valid code: lanes beyond k_l hold +inf scores
      if (minv2) Isa::store(minv2 + i * W, inf);
    }
    if (minv2)
      level_scores<2>(src, m, d, p.panels + pb * d * W, p.pnorms + pb * W, np, nullptr, 0, minv,
                      mini, minv2);
    else
      level_scores<1>(src, m, d, p.panels + pb * d * W, p.pnorms + pb * W, np, nullptr, 0, minv,
                      mini, nullptr);
    const float* cbl = p.cb + p.off[l] * d;
    for (int64_t i = 0; i < m; ++i) {
      // lowest index among the lanes holding the minimum (each lane already holds
      // its own first minimum); branch-free but for the rare exact tie across lanes
      const V mv = Isa::load(minv + i * W);
      const int32_t* mi = mini + i * W;
      unsigned mask = Isa::movemask(Isa::eq(mv, Isa::set1(Isa::hmin(mv))));
      int32_t bk = mi[0];  // (no lane equal: NaN scores only; keep a valid code)
      if (mask) {
        bk = mi[__builtin_ctz(mask)];
        for (mask &= mask - 1; mask; mask &= mask - 1) {
          const int32_t k = mi[__builtin_ctz(mask)];
          bk = k < bk ? k : bk;
        }
      }
      codes[i * L + l] = bk;
      if (minv2) {  // second-lowest score: the other lanes' minima and the winner lane's second
        const float* m1 = minv + i * W;
        const float* m2 = minv2 + i * W;
        const int64_t lane = bk % W;  // code bk sits in lane bk mod W of its panel
        float sec = __builtin_inff();
        for (int64_t t = 0; t < W; ++t) {
          const float v = (t == lane) ? m2[t] : m1[t];
          sec = v < sec ? v : sec;
        }
        p.second[i0 + i] = sec;
      }
      if (i < kAhead) prefetch_row(cbl + bk * d, d);
    }
    for (int64_t i = 0; i < m; ++i) {
      if (i + kAhead < m) prefetch_row(cbl + codes[(i + kAhead) * L + l] * d, d);
      p.dist[(i0 + i) * L + l] = sub_acc_sqnorm(res + i * d, src + i * d,
                                                cbl + codes[i * L + l] * d, qacc + i * d, l == 0, d);
    }
  }
  if (p.q) copy_floats(p.q + i0 * d, qacc, m * d);  // the block's rows of q are contiguous (null: not wanted)
}

// -------------------------------------------------------------- beam search
struct TopB {
  float* s;
  int32_t* b;
  int32_t* k;
  int64_t cap, cnt;
  // Keep the best `cap` by (score, beam rank, code): candidates arrive in
  // (beam rank, code) order, so a newcomer goes after every equal score.
  inline void push(float sc, int32_t beam, int32_t code) {
    int64_t j;
    if (cnt < cap) {
      j = cnt++;
    } else {
      if (!(sc < s[cap - 1])) return;
      j = cap - 1;
    }
    while (j > 0 && s[j - 1] > sc) {
      s[j] = s[j - 1];
      b[j] = b[j - 1];
      k[j] = k[j - 1];
      --j;
    }
    s[j] = sc;
    b[j] = beam;
    k[j] = code;
  }
};

// An upper bound on the cap-th best total score of one input row: the W lane
// minima of its best beam's scores are W distinct candidates, so the cap-th
// smallest of them (cap <= W) bounds the final cut. +inf when it cannot tell.
inline float beam_bound(const float* srow, float rb, int64_t kl, int64_t cap) {
  if (cap > W) return __builtin_inff();
  V mn = Isa::load(srow);  // lanes >= kl hold +inf scores (zero-padded panels)
  for (int64_t k0 = W; k0 < kl; k0 += W) mn = Isa::min(mn, Isa::load(srow + k0));
  alignas(64) float t[W];
  Isa::store(t, mn);
  // partial selection sort: the cap smallest to the front
  for (int64_t a = 0; a < cap; ++a) {
    int64_t best = a;
    for (int64_t c = a + 1; c < W; ++c)
      if (t[c] < t[best]) best = c;
    const float tmp = t[a];
    t[a] = t[best];
    t[best] = tmp;
  }
  return t[cap - 1] + rb;  // same fp sum as the candidates' totals (monotone rounding)
}

void block_beam(const Plan& p, int64_t i0, int64_t m, float* scratch, const Scratch& S) {
  const int64_t d = p.d, L = p.levels;
  int cur = 0;
  int64_t nb = 1;
  const float* x = p.x + i0 * d;
  {
    float* rn = scratch + S.rn[0];
    for (int64_t i = 0; i < m; ++i) rn[i] = sqnorm(x + i * d, d);
  }
  float* scores = scratch + S.scores;
  const int64_t ldo = p.kpad_max;
  TopB top;
  top.s = scratch + S.cand;
  top.b = reinterpret_cast<int32_t*>(scratch + S.cand + p.bcap);
  top.k = reinterpret_cast<int32_t*>(scratch + S.cand + 2 * p.bcap);
  for (int64_t l = 0; l < L; ++l) {
    const int64_t pb = p.pofs[l], np = p.pofs[l + 1] - pb;
    const int64_t kl = p.off[l + 1] - p.off[l];
    const int64_t nbn = p.nbeams[l];
    const float* res = (l == 0) ? x : scratch + S.res[cur];  // level 0 reads the input in place
    const float* rn = scratch + S.rn[cur];
    const int32_t* hc = reinterpret_cast<const int32_t*>(scratch + S.hc[cur]);
    const float* hd = scratch + S.hd[cur];
    float* res2 = scratch + S.res[cur ^ 1];
    float* rn2 = scratch + S.rn[cur ^ 1];
    int32_t* hc2 = reinterpret_cast<int32_t*>(scratch + S.hc[cur ^ 1]);
    float* hd2 = scratch + S.hd[cur ^ 1];
    level_scores<0>(res, m * nb, d, p.panels + pb * d * W, p.pnorms + pb * W, np, scores, ldo,
                    nullptr, nullptr, nullptr);
    const float* cbl = p.cb + p.off[l] * d;
    for (int64_t o = 0; o < m; ++o) {
      top.cap = nbn;
      top.cnt = 0;
      // candidates above the bound can never make the cut: skip them unseen
      const V bound = Isa::set1(beam_bound(scores + o * nb * ldo, rn[o * nb], kl, nbn));
      for (int64_t bb = 0; bb < nb; ++bb) {
        const int64_t row = o * nb + bb;
        const float rb = rn[row];
        const V rbv = Isa::set1(rb);
        const float* srow = scores + row * ldo;
        for (int64_t k0 = 0; k0 < kl; k0 += W) {
          const V tot = Isa::add(Isa::load(srow + k0), rbv);
          unsigned mask = Isa::movemask(Isa::le(tot, bound));
          while (mask) {
            const int t = __builtin_ctz(mask);
            mask &= mask - 1;
            const int64_t k = k0 + t;
            if (k >= kl) break;
            top.push(srow[k] + rb, static_cast<int32_t>(bb), static_cast<int32_t>(k));
          }
        }
      }
      // only NaN scores can leave the list short: keep every beam index valid anyway
      for (int64_t j = top.cnt; j < nbn; ++j) {
        top.s[j] = __builtin_inff();
        top.b[j] = 0;
        top.k[j] = 0;
      }
      // new beams of input row o, in rank order
      for (int64_t j = 0; j < nbn; ++j) {
        const int64_t parent = o * nb + top.b[j];
        const int64_t dst = o * nbn + j;
        rn2[dst] = sub_sqnorm(res2 + dst * d, res + parent * d, cbl + top.k[j] * d, d);
        for (int64_t t = 0; t < l; ++t) {
          hc2[dst * L + t] = hc[parent * L + t];
          hd2[dst * L + t] = hd[parent * L + t];
        }
        hc2[dst * L + l] = top.k[j];
        hd2[dst * L + l] = rn2[dst];
      }
    }
    cur ^= 1;
    nb = nbn;
  }
  const int32_t* hc = reinterpret_cast<const int32_t*>(scratch + S.hc[cur]);
  const float* hd = scratch + S.hd[cur];
  for (int64_t o = 0; o < m; ++o) {
    const int64_t best = o * nb;  // rank 0
    for (int64_t l = 0; l < L; ++l) {
      p.codes[(i0 + o) * L + l] = hc[best * L + l];
      p.dist[(i0 + o) * L + l] = hd[best * L + l];
    }
    sum_codewords(p, p.codes + (i0 + o) * L, p.q + (i0 + o) * d);
  }
}

// ------------------------------------------------- bounded k-means assignment
// The same codes and distances as the greedy one-level search, skipping the search
// for rows that provably keep their code (Hamerly's bound, with Elkan's half the
// distance to the nearest other centre). Bounds are on true (real-arithmetic)
// distances; a row is skipped only if every other code's float score is provably
// above the kept code's, so the kernel could not have returned anything else.
//
// Float error of the kernel's scores: |s_j - (||x - c_j||^2 - ||x||^2)| <= eps for every
// code j, eps = 2 (d + 4) 2^-24 (||x|| + max_j ||c_j||)^2 (the d fused products of the
// dot, the rounded norm and the final FMA, with a factor 2 to spare). Each squared
// distance sub_acc_sqnorm returns is within a factor 1 + 2 (d + 4) 2^-24 of the truth.
inline double score_eps(double xn2, double cmax, int64_t d) {
  const double t = __builtin_sqrt(xn2) + cmax;
  return 2.0 * static_cast<double>(d + 4) * 0x1p-24 * t * t;
}

inline double dist_upper(float dd, int64_t d) {  // >= the true distance, from a float squared distance
  return __builtin_sqrt(static_cast<double>(dd) * (1.0 + 2.0 * static_cast<double>(d + 4) * 0x1p-24) + 1e-30);
}

void assign_bounded(const Plan& p, Bounds& b, int64_t i0, int64_t i1, float* scratch) {
  const Scratch S = pysid::rqcpu::rq_scratch_layout(p);
  const int64_t d = p.d, cap = p.block_rows;
  float* rows = scratch + S.gather;                                      // [cap, d] gathered rows
  int64_t* ids = reinterpret_cast<int64_t*>(rows + cap * d);             // [cap] their indices
  int32_t* gcode = reinterpret_cast<int32_t*>(ids + cap);                // [cap]
  float* gdist = reinterpret_cast<float*>(gcode + cap);                  // [cap]
  float* gsec = gdist + cap;                                             // [cap]
  float* res = scratch + S.res[0];  // a scratch row for the distance to the kept centre
  float* qtmp = scratch + S.qacc;
  Plan g = p;  // the search plan over the gathered rows
  g.x = rows;
  g.codes = gcode;
  g.dist = gdist;
  g.second = gsec;
  g.q = nullptr;
  constexpr double kUp = 1.0 + 1e-9, kDown = 1.0 - 1e-9;  // slack for float64 rounding
  int64_t cnt = 0;
  auto flush = [&]() {
    block_greedy(g, 0, cnt, scratch, S);
    for (int64_t t = 0; t < cnt; ++t) {
      const int64_t i = ids[t];
      p.codes[i] = gcode[t];
      p.dist[i] = gdist[t];
      const double lo = static_cast<double>(gsec[t]) + b.xnorm2[i] - score_eps(b.xnorm2[i], b.cmax, d);
      b.lower[i] = lo > 0.0 ? __builtin_sqrt(lo) * kDown : 0.0;
    }
    b.searched += cnt;
    cnt = 0;
  };
  constexpr int64_t kRowsAhead = 8;  // rows prefetched ahead: the checks would wait on memory
  for (int64_t i = i0; i < i1; ++i) {
    const float* xi = p.x + i * d;
    if (i + kRowsAhead < i1) prefetch_row(xi + kRowsAhead * d, d);
    if (b.shift) {
      const int32_t a = p.codes[i];
      const float dd = sub_acc_sqnorm(res, xi, p.cb + a * d, qtmp, true, d);  // as the kernel would
      const double u = dist_upper(dd, d);
      const double l = b.lower[i] - (a == b.shift_arg ? b.shift_max2 : b.shift_max) * kUp;
      const double e = 2.0 * b.half[a] * kDown - u;
      const double lb = l > e ? l : e;
      if (lb > 0.0 && u * u + 2.0 * score_eps(b.xnorm2[i], b.cmax, d) < lb * lb * kDown) {
        p.dist[i] = dd;
        b.lower[i] = l;
        continue;
      }
    } else {  // a float32 norm, lowered by its error bound: never above the true ||x||^2
      b.xnorm2[i] = static_cast<double>(sqnorm(xi, d)) * (1.0 - 2.0 * static_cast<double>(d + 4) * 0x1p-24);
    }
    copy_floats(rows + cnt * d, xi, d);
    ids[cnt++] = i;
    if (cnt == cap) flush();
  }
  if (cnt) flush();
}

// ------------------------------------- k-means assignment with candidate lists
// The value of rank r (0-based) among v[0 .. c) (reorders v). Hoare quickselect, middle pivot.
inline float select_rank(float* v, int64_t c, int64_t r) {
  int64_t lo = 0, hi = c - 1;
  while (lo < hi) {
    const float piv = v[lo + (hi - lo) / 2];
    int64_t i = lo, j = hi;
    while (i <= j) {
      while (v[i] < piv) ++i;
      while (piv < v[j]) --j;
      if (i <= j) {
        const float t = v[i];
        v[i] = v[j];
        v[j] = t;
        ++i;
        --j;
      }
    }
    if (r <= j) hi = j;
    else if (r >= i) lo = i;
    else return v[r];
  }
  return v[r];
}

// Full search of one level that also keeps each row's mc lowest-score codes (the
// candidates of the restricted passes below). The scores are the greedy kernel's
// (MODE 0 stores exactly the values MODE 1 compares), the code is chosen by MODE 1's
// rule (per-lane running minimum over panels in code order with a strict compare, then
// the lowest code among the lanes holding the minimum) and the distance by the same
// sub_acc_sqnorm call: codes and distances are bit-identical to block_greedy's.
// Candidates: the mc lowest scores (among equal scores the lower codes), listed in
// increasing code order, cand[i * mc + j]. scratch: topm_scratch_floats(p, mc) floats.
void assign_topm(const Plan& p, int64_t i0, int64_t m, float* scratch, int64_t mc, int32_t* cand) {
  const int64_t d = p.d;
  const int64_t kl = p.off[1] - p.off[0];
  const int64_t np = p.pofs[1] - p.pofs[0];
  const int64_t ldo = np * W;
  float* scores = scratch;                        // [block_rows][ldo]
  float* res = scores + pysid::rqcpu::rq_round_up(p.block_rows * ldo, pysid::rqcpu::kAlign);  // [d]
  float* qtmp = res + pysid::rqcpu::rq_round_up(d, pysid::rqcpu::kAlign);                     // [d]
  float* cv = qtmp + pysid::rqcpu::rq_round_up(d, pysid::rqcpu::kAlign);   // [ldo] passing scores
  float* cs = cv + pysid::rqcpu::rq_round_up(ldo, pysid::rqcpu::kAlign);   // [ldo] (a copy to select in)
  int32_t* ck = reinterpret_cast<int32_t*>(cs + pysid::rqcpu::rq_round_up(ldo, pysid::rqcpu::kAlign));  // [ldo]
  const float* x = p.x + i0 * d;
  level_scores<0>(x, m, d, p.panels, p.pnorms, np, scores, ldo, nullptr, nullptr, nullptr);
  const VI zi = Isa::iota(0);
  const float inf = __builtin_inff();
  for (int64_t i = 0; i < m; ++i) {
    const float* srow = scores + i * ldo;
    // MODE 1's choice, from the same scores; and each lane's second-lowest score
    V mv = Isa::set1(inf), mv2 = mv;
    VI mi = zi;
    for (int64_t pg = 0; pg < np; ++pg) {
      const V sv = Isa::load(srow + pg * W);
      const M lt = Isa::lt(sv, mv);
      mv2 = Isa::blend(lt, Isa::min(mv2, sv), mv);
      mv = Isa::blend(lt, mv, sv);
      mi = Isa::blendi(lt, mi, Isa::iota(static_cast<int32_t>(pg * W)));
    }
    alignas(64) int32_t mis[W];
    Isa::storei(mis, mi);
    const float vmin = Isa::hmin(mv);
    unsigned mask = Isa::movemask(Isa::eq(mv, Isa::set1(vmin)));
    int32_t bk = mis[0];
    if (mask) {
      bk = mis[__builtin_ctz(mask)];
      for (mask &= mask - 1; mask; mask &= mask - 1) {
        const int32_t k = mis[__builtin_ctz(mask)];
        bk = k < bk ? k : bk;
      }
    }
    p.codes[i0 + i] = bk;
    p.dist[i0 + i] = sub_acc_sqnorm(res, x + i * d, p.cb + bk * d, qtmp, true, d);
    // the mc lowest scores. bound: the lowest of the 2W lane values (each lane's two lowest
    // scores: 2W distinct codes) with at least mc of them at or below it, so at least mc
    // codes score <= bound and every one of the mc lowest does (+inf when mc > 2W). Every
    // score <= bound is gathered in code order, the mc-th lowest found among them, then the
    // codes below it and the first codes equal to it are kept.
    int32_t* cr = cand + (i0 + i) * mc;
    float bound = inf;
    if (mc <= 2 * W) {  // counts of lane values <= each lane value, without branches
      alignas(64) float lv[2 * W];
      Isa::store(lv, mv);
      Isa::store(lv + W, mv2);
      const V one = Isa::set1(1.0f), zero = Isa::zero();
      V ca = zero, cb2 = zero;
      for (int u = 0; u < 2 * W; ++u) {
        const V bu = Isa::set1(lv[u]);
        ca = Isa::add(ca, Isa::blend(Isa::le(bu, mv), zero, one));
        cb2 = Isa::add(cb2, Isa::blend(Isa::le(bu, mv2), zero, one));
      }
      const V need = Isa::set1(static_cast<float>(mc));
      const V infv = Isa::set1(inf);
      bound = Isa::hmin(Isa::min(Isa::blend(Isa::le(need, ca), infv, mv), Isa::blend(Isa::le(need, cb2), infv, mv2)));
    }
    const V bv = Isa::set1(bound);
    int64_t c = 0;
    for (int64_t k0 = 0; k0 < kl; k0 += W) {
      unsigned msk = Isa::movemask(Isa::le(Isa::load(srow + k0), bv));
      while (msk) {
        const int t = __builtin_ctz(msk);
        msk &= msk - 1;
        const int64_t k = k0 + t;
        if (k >= kl) break;
        cv[c] = srow[k];
        ck[c++] = static_cast<int32_t>(k);
      }
    }
    if (c <= mc) {  // (fewer only with NaN scores: pad with the code)
      for (int64_t j = 0; j < c; ++j) cr[j] = ck[j];
      for (int64_t j = c; j < mc; ++j) cr[j] = bk;
      continue;
    }
    if (c - mc <= 4) {  // a few too many (the usual case): drop the last-ranked ones
      for (int64_t r = mc; r < c; ++r) {
        float wv = -inf;
        int64_t wj = 0;
        for (int64_t j = 0; j < c; ++j) {  // the highest score, among equal ones the highest code
          const bool ge = ck[j] >= 0 && cv[j] >= wv;
          wv = ge ? cv[j] : wv;
          wj = ge ? j : wj;
        }
        ck[wj] = -1;
      }
      int64_t o = 0;
      for (int64_t j = 0; j < c; ++j)
        if (ck[j] >= 0) cr[o++] = ck[j];
      continue;
    }
    for (int64_t j = 0; j < c; ++j) cs[j] = cv[j];
    const float th = select_rank(cs, c, mc - 1);
    int64_t below = 0;
    for (int64_t j = 0; j < c; ++j) below += cv[j] < th;
    int64_t eq_left = mc - below, o = 0;
    for (int64_t j = 0; j < c && o < mc; ++j) {
      if (cv[j] < th) {
        cr[o++] = ck[j];
      } else if (cv[j] == th && eq_left > 0) {
        cr[o++] = ck[j];
        --eq_left;
      }
    }
  }
}

// Restricted assignment of rows [i0, i1): each row's code is the candidate of least canonical
// score (the score of this path's full search: fl(||c||^2 - 2 x.c), x.c one float32 chain over d
// ascending, chain_step, ||c||^2 = cnorm: canonical squared norms) among cand[i * mc .. + mc), the
// first in list order among equal scores; its distance is ||x - c||^2 from the differences. So a
// row whose list holds its full-search code gets that code, bit for bit. The chain is latency-bound:
// it only decides the near-ties of fast scores (assign_cand).
//
// One step of the full search's dot-product chain on this path: a fused multiply-add (AVX2 /
// AVX-512: the canonical chain); the portable path's full search rounds a * b + c twice (built
// without FMA on x86-64), so its re-score does the same and keeps its full search's codes.
inline float chain_step(float a, float b, float c) {
  if constexpr (Isa::kLevel == pysid::kIsaScalar) {
    return a * b + c;
  } else {
    return __builtin_fmaf(a, b, c);
  }
}

inline float canon_score(const float* x, const float* c, int64_t d, float cn) {
  float s = 0.0f;
  for (int64_t e = 0; e < d; ++e) s = chain_step(x[e], c[e], s);
  return cn - 2.0f * s;  // 2 s is exact: one rounding
}

// x.c over d in W-wide chunks, a horizontal sum, then the tail (a fast dot, not the canonical one).
inline float fast_dot(const float* x, const float* c, int64_t d) {
  V a = Isa::zero();
  int64_t e = 0;
  for (; e + W <= d; e += W) a = Isa::fmadd(Isa::load(x + e), Isa::load(c + e), a);
  float s = Isa::hsum(a);
  for (; e < d; ++e) s += x[e] * c[e];
  return s;
}

// The restricted search's error bound (cand_code): the fast score of every candidate is within
//   E = ka ||x|| cmax + kc cn_max + tiny
// of its canonical score, with u = 2^-24, n = 2 ceil(d / W) + 2W + 8 roundings at most on any
// product's path of the fast sum (its lane chain, fused or not, the horizontal sum, the tail),
// gamma_n = n u / (1 - n u), Cauchy-Schwarz (sum_e |x_e c_e| <= ||x|| ||c||) and
//   ka = 1.02 (2 gamma_n + 2 gamma_d' + 9 u) (d' = d; 2d on the portable path: chain_step),
//   kc = 4.1 u, tiny = (d + 8) 2^-140
// (the two roundings of cn - 2 dot, the roundings of the comparisons and float32 underflow
// included). cmax >= max_k ||c_k|| and cn_max = max_k cnorm_k (cbound[0], cbound[1]: over all k
// centroids) and ||x|| are upper bounds (a factor 1.01 + d u covers their own float32 sums and
// square roots).
struct CandBound {
  float ka, kc, tiny, up;
  explicit CandBound(int64_t d) {
    const double u = 0x1p-24, dd = static_cast<double>(d);
    const double n = static_cast<double>(2 * ((d + W - 1) / W) + 2 * W + 8);
    const double nc = Isa::kLevel == pysid::kIsaScalar ? 2 * dd : dd;  // the chain's roundings (chain_step)
    ka = static_cast<float>(1.02 * (2 * n * u / (1 - n * u) + 2 * nc * u / (1 - nc * u) + 9 * u));
    kc = static_cast<float>(4.1 * u);
    tiny = static_cast<float>(static_cast<double>(d + 8) * 0x1p-140);
    up = static_cast<float>(1.01 + dd * u);
  }
  float e(float xnrm, const float* cbound) const { return ka * xnrm * cbound[0] + kc * cbound[1] + tiny; }
};

constexpr int64_t kFastCap = 1024;  // longest list cand_code takes (assign_cand re-scores longer ones)

// The fast best candidate among cr[0 .. mc) (the least fast score, the first in list order among
// equal ones), mc <= kFastCap. The dot products run over d in W-wide chunks, eight (four, one)
// candidates at a time, then a horizontal sum; the scores go to fs [kFastCap + W] and the best is
// found with vector compares (no branch per candidate: their order is random). *thr = its fast
// score + 2 E; *proven: every other candidate's fast score exceeds *thr, so the returned code is
// the canonical best (every other canonical score >= fast_q - E > fast_b + E >= canonical_b).
// Otherwise the canonical best is among the candidates q with fs[q] <= *thr (near_ties_push).
inline int32_t cand_code(const float* x, const int32_t* cr, int64_t mc, int64_t d, const float* cb,
                         const float* cnorm, float e2, float* fs, float* thr, bool* proven) {
  int64_t j = 0;
  // eight candidates at a time: eight independent FMA chains (four leave the FMA units half
  // idle on the chains' latency)
  for (; j + 8 <= mc; j += 8) {
    const float* cp[8];
#pragma GCC unroll 8
    for (int q = 0; q < 8; ++q) cp[q] = cb + static_cast<int64_t>(cr[j + q]) * d;
    V a[8];
#pragma GCC unroll 8
    for (int q = 0; q < 8; ++q) a[q] = Isa::zero();
    int64_t e = 0;
    for (; e + W <= d; e += W) {
      const V xv = Isa::load(x + e);
#pragma GCC unroll 8
      for (int q = 0; q < 8; ++q) a[q] = Isa::fmadd(xv, Isa::load(cp[q] + e), a[q]);
    }
    float s[8];
#pragma GCC unroll 8
    for (int q = 0; q < 8; ++q) s[q] = Isa::hsum(a[q]);
    for (; e < d; ++e) {
#pragma GCC unroll 8
      for (int q = 0; q < 8; ++q) s[q] += x[e] * cp[q][e];
    }
    for (int q = 0; q < 8; ++q) fs[j + q] = cnorm[cr[j + q]] - 2.0f * s[q];
  }
  for (; j + 4 <= mc; j += 4) {
    const float* c0 = cb + static_cast<int64_t>(cr[j]) * d;
    const float* c1 = cb + static_cast<int64_t>(cr[j + 1]) * d;
    const float* c2 = cb + static_cast<int64_t>(cr[j + 2]) * d;
    const float* c3 = cb + static_cast<int64_t>(cr[j + 3]) * d;
    V a0 = Isa::zero(), a1 = Isa::zero(), a2 = Isa::zero(), a3 = Isa::zero();
    int64_t e = 0;
    for (; e + W <= d; e += W) {
      const V xv = Isa::load(x + e);
      a0 = Isa::fmadd(xv, Isa::load(c0 + e), a0);
      a1 = Isa::fmadd(xv, Isa::load(c1 + e), a1);
      a2 = Isa::fmadd(xv, Isa::load(c2 + e), a2);
      a3 = Isa::fmadd(xv, Isa::load(c3 + e), a3);
    }
    float s[4] = {Isa::hsum(a0), Isa::hsum(a1), Isa::hsum(a2), Isa::hsum(a3)};
    for (; e < d; ++e) {
      s[0] += x[e] * c0[e];
      s[1] += x[e] * c1[e];
      s[2] += x[e] * c2[e];
      s[3] += x[e] * c3[e];
    }
    for (int q = 0; q < 4; ++q) fs[j + q] = cnorm[cr[j + q]] - 2.0f * s[q];
  }
  for (; j < mc; ++j) fs[j] = cnorm[cr[j]] - 2.0f * fast_dot(x, cb + static_cast<int64_t>(cr[j]) * d, d);
  const int64_t nv = (mc + W - 1) / W;
  for (int64_t q = mc; q < nv * W; ++q) fs[q] = __builtin_inff();
  V vm = Isa::load(fs);
  for (int64_t v = 1; v < nv; ++v) vm = Isa::min(vm, Isa::load(fs + v * W));
  const float best = Isa::hmin(vm);
  const V vb = Isa::set1(best);
  int64_t bp = mc;  // the first position of the best score
  for (int64_t v = 0; v < nv && bp == mc; ++v) {
    const unsigned m = Isa::movemask(Isa::eq(Isa::load(fs + v * W), vb));
    if (m) bp = v * W + __builtin_ctz(m);
  }
  *thr = best + e2;
  const V vt = Isa::set1(*thr);
  int64_t at_or_below = 0;  // scores <= thr: the best itself and its near-ties
  for (int64_t v = 0; v < nv; ++v)
    at_or_below += __builtin_popcount(Isa::movemask(Isa::le(Isa::load(fs + v * W), vt)));
  *proven = bp < mc && at_or_below == 1;  // NaN scores or bound: re-scored
  return cr[bp < mc ? bp : 0];
}

// ||x - c||^2 from the differences (one accumulator over W-wide chunks, then the tail) for two rows
// at once (two independent chains; each row's sum is the same sequence as for one row).
inline void cand_dist2(const float* xa, const float* ca, const float* xb, const float* cb2, int64_t d, float* da,
                       float* db) {
  V a = Isa::zero(), b = Isa::zero();
  int64_t e = 0;
  for (; e + W <= d; e += W) {
    const V dfa = Isa::sub(Isa::load(xa + e), Isa::load(ca + e));
    const V dfb = Isa::sub(Isa::load(xb + e), Isa::load(cb2 + e));
    a = Isa::fmadd(dfa, dfa, a);
    b = Isa::fmadd(dfb, dfb, b);
  }
  float sa = Isa::hsum(a), sb = Isa::hsum(b);
  for (int64_t t = e; t < d; ++t) sa += (xa[t] - ca[t]) * (xa[t] - ca[t]);
  for (int64_t t = e; t < d; ++t) sb += (xb[t] - cb2[t]) * (xb[t] - cb2[t]);
  *da = sa;
  *db = sb;
}

// Near-ties of the restricted search: (row, candidate) pairs whose canonical score decides the
// row's code, re-scored in batches (eight independent FMA chains at a time: the chain is
// latency-bound) and resolved row by row (its code and its distance). A row's pairs are
// contiguous, in list order.
constexpr int64_t kPairCap = 1024;
struct NearTies {
  int64_t n = 0;
  int64_t row[kPairCap];
  int32_t code[kPairCap];
  float score[kPairCap];
};

__attribute__((noinline)) void near_ties_resolve(const float* xall, int64_t d, const float* cb, const float* cnorm,
                                                 NearTies& p, int32_t* codes, float* dist) {
  int64_t t = 0;
  for (; t + 8 <= p.n; t += 8) {
    const float* xr[8];
    const float* cr[8];
    float acc[8];
#pragma GCC unroll 8
    for (int q = 0; q < 8; ++q) {
      xr[q] = xall + p.row[t + q] * d;
      cr[q] = cb + static_cast<int64_t>(p.code[t + q]) * d;
      acc[q] = 0.0f;
    }
    for (int64_t e = 0; e < d; ++e) {
#pragma GCC unroll 8
      for (int q = 0; q < 8; ++q) acc[q] = chain_step(xr[q][e], cr[q][e], acc[q]);
    }
#pragma GCC unroll 8
    for (int q = 0; q < 8; ++q) p.score[t + q] = cnorm[p.code[t + q]] - 2.0f * acc[q];
  }
  for (; t < p.n; ++t)
    p.score[t] = canon_score(xall + p.row[t] * d, cb + static_cast<int64_t>(p.code[t]) * d, d, cnorm[p.code[t]]);
  for (t = 0; t < p.n;) {  // per row: the least canonical score, the first in list order among equal ones
    const int64_t r = p.row[t];
    float best = p.score[t];
    int32_t bk = p.code[t];
    for (++t; t < p.n && p.row[t] == r; ++t) {
      if (p.score[t] < best) {
        best = p.score[t];
        bk = p.code[t];
      }
    }
    codes[r] = bk;
    float dr, unused;
    cand_dist2(xall + r * d, cb + static_cast<int64_t>(bk) * d, xall + r * d, cb + static_cast<int64_t>(bk) * d, d,
               &dr, &unused);
    dist[r] = dr;
  }
  p.n = 0;
}

// Queues row i's candidates that may hold its canonical best: fast scores fs[q] <= thr = fast_b + 2 E
// (every fast score is within E of the canonical one: the canonical best always passes).
__attribute__((noinline)) void near_ties_push(int64_t i, const int32_t* cr, int64_t mc, const float* fs, float thr,
                                              NearTies& p) {
  for (int64_t q = 0; q < mc; ++q) {
    if (!(fs[q] > thr)) {  // NaN: queued
      p.row[p.n] = i;
      p.code[p.n] = cr[q];
      ++p.n;
    }
  }
}

void assign_cand(const float* xall, int64_t i0, int64_t i1, int64_t d, const float* cb, const float* cnorm,
                 const float* cbound, const int32_t* cand, int64_t mc, int32_t* codes, float* dist) {
  const CandBound bd(d);
  NearTies ties;
  float fs[kFastCap + W];
  // row i's code: proven by the fast scores, or queued (its candidates near the fast best)
  auto code_of = [&](int64_t i) -> bool {
    const float* x = xall + i * d;
    if (mc > kFastCap) {  // a list longer than cand_code takes: every candidate's canonical score
      float cbest = __builtin_inff();
      codes[i] = cand[i * mc];
      for (int64_t q = 0; q < mc; ++q) {
        const int32_t code = cand[i * mc + q];
        const float sc = canon_score(x, cb + static_cast<int64_t>(code) * d, d, cnorm[code]);
        if (sc < cbest) {
          cbest = sc;
          codes[i] = code;
        }
      }
      return true;
    }
    const float e2 = 2.0f * bd.e(bd.up * __builtin_sqrtf(fast_dot(x, x, d)), cbound);
    float thr;
    bool proven;
    codes[i] = cand_code(x, cand + i * mc, mc, d, cb, cnorm, e2, fs, &thr, &proven);
    if (proven) return true;
    if (ties.n + mc > kPairCap) near_ties_resolve(xall, d, cb, cnorm, ties, codes, dist);
    near_ties_push(i, cand + i * mc, mc, fs, thr, ties);
    return false;  // its code and distance come with near_ties_resolve
  };
  // rows in pairs: the two distance chains (one accumulator each, latency-bound) run side by side
  for (int64_t i = i0; i < i1; i += 2) {
    const int64_t i2 = i + 1 < i1 ? i + 1 : i;  // an odd last row is paired with itself
    const float* xa = xall + i * d;
    if (i + 2 < i1) prefetch_row(xa + 2 * d, d);
    if (i + 3 < i1) prefetch_row(xa + 3 * d, d);
    const bool pa = code_of(i);
    const bool pb = i2 == i ? pa : code_of(i2);
    if (!pa && !pb) continue;
    const int64_t ia = pa ? i : i2, ib = pb ? i2 : i;  // a single proven row is paired with itself
    float da, db;
    cand_dist2(xall + ia * d, cb + static_cast<int64_t>(codes[ia]) * d, xall + ib * d,
               cb + static_cast<int64_t>(codes[ib]) * d, d, &da, &db);
    dist[ia] = da;
    dist[ib] = db;
  }
  near_ties_resolve(xall, d, cb, cnorm, ties, codes, dist);
}

constexpr int64_t tile_rows() { return kRowsMax; }

void block_impl(const Plan& p, int64_t i0, int64_t m, float* scratch) {
  const Scratch S = pysid::rqcpu::rq_scratch_layout(p);
  if (p.beam == 1)
    block_greedy(p, i0, m, scratch, S);
  else
    block_beam(p, i0, m, scratch, S);
}

}  // namespace

namespace pysid {
namespace rqcpu {
void PYSID_ISA_FN(rq_block)(const Plan& plan, int64_t i0, int64_t m, float* scratch) {
  block_impl(plan, i0, m, scratch);
}
void PYSID_ISA_FN(rq_assign_bounded)(const Plan& plan, Bounds& b, int64_t i0, int64_t i1, float* scratch) {
  assign_bounded(plan, b, i0, i1, scratch);
}
int64_t PYSID_ISA_FN(rq_tile_rows)() { return tile_rows(); }
void PYSID_ISA_FN(rq_assign_topm)(const Plan& plan, int64_t i0, int64_t m, float* scratch, int64_t mc,
                                  int32_t* cand) {
  assign_topm(plan, i0, m, scratch, mc, cand);
}
void PYSID_ISA_FN(rq_assign_cand)(const float* x, int64_t i0, int64_t i1, int64_t d, const float* cb,
                                  const float* cnorm, const float* cbound, const int32_t* cand, int64_t mc,
                                  int32_t* codes, float* dist) {
  assign_cand(x, i0, i1, d, cb, cnorm, cbound, cand, mc, codes, dist);
}
int64_t PYSID_ISA_FN(rq_lanes)() { return W; }
}  // namespace rqcpu
}  // namespace pysid
