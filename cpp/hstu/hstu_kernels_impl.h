// SPDX-License-Identifier: Apache-2.0
// HSTU attention CPU kernels, compiled once per instruction set. Included only by hstu_cpu_<isa>.cpp, which
// defines RECOPS_HSTU_ISA (the namespace), RECOPS_HSTU_VBYTES (vector register bytes) and RECOPS_HSTU_NV
// (vectors per micro-kernel row) and wraps the include in `#pragma GCC target`. Everything here lives in that
// ISA's namespace and calls no std:: templates, so no function compiled for a wide ISA can be merged by the
// linker into code that runs on a narrower CPU.
//
// Tiling (flash-attention style, no softmax so no running statistics):
//   forward task = (sequence, 64-row query block), all heads: for each 64-row key block that has a valid pair,
//   build the bias and mask tiles once, then per head S = (alpha q) k^T, P = SiLU(S + bias) * mask,
//   O += P v. Tiles with no valid pair are skipped; tiles where every pair is valid skip the mask.
//   backward task = one sequence, all heads, so dq/dk/dv rows and the sequence's bias partials have one owner
//   (deterministic, no atomics): key blocks outer, query blocks inner, dk/dv accumulated per key block, dq per
//   sequence.
// Small GEMMs use a register-blocked micro-kernel: 4 rows x NV vectors of accumulators, A broadcast, B loaded.

namespace recops::hstu::RECOPS_HSTU_ISA {

#if defined(__x86_64__) || defined(__i386__)
#define RECOPS_SIMD_RCP_BYTES RECOPS_HSTU_VBYTES
#endif
#include "common/simd_math.inc"
#undef RECOPS_SIMD_RCP_BYTES

constexpr int kMR = 4;  // micro-kernel rows; every packed M dimension is a multiple of it

template <typename T>
struct Vec {
  typedef T type __attribute__((vector_size(RECOPS_HSTU_VBYTES)));
  static constexpr int kW = RECOPS_HSTU_VBYTES / sizeof(T);
};
template <typename T>
using V = typename Vec<T>::type;
typedef int32_t VI32 __attribute__((vector_size(RECOPS_HSTU_VBYTES)));

inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }
inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

template <typename T>
inline V<T> vload(const T* p) {
  V<T> v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}
template <typename T>
inline void vstore(T* p, V<T> v) {
  __builtin_memcpy(p, &v, sizeof(v));
}

// C[M x N] (+)= op(A)[M x K] B[K x N] for a kMR x NV-vector block of C; op(A) = A [M x K] (lda = row
// stride) or, with kTransA, the transpose of A [K x M] (so P^T dO needs no explicit transpose: A is only
// ever read one broadcast scalar at a time).
template <typename T, int NV, bool kAccumulate, bool kTransA = false>
inline void micro(int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb, T* C, int64_t ldc) {
  constexpr int W = Vec<T>::kW;
  V<T> acc[kMR][NV];
  for (int r = 0; r < kMR; ++r) {
    for (int v = 0; v < NV; ++v) acc[r][v] = kAccumulate ? vload(C + r * ldc + v * W) : V<T>{};
  }
  for (int64_t k = 0; k < K; ++k) {
    V<T> b[NV];
    for (int v = 0; v < NV; ++v) b[v] = vload(B + k * ldb + v * W);
    for (int r = 0; r < kMR; ++r) {
      const T a = kTransA ? A[k * lda + r] : A[r * lda + k];
      for (int v = 0; v < NV; ++v) acc[r][v] += a * b[v];
    }
  }
  for (int r = 0; r < kMR; ++r) {
    for (int v = 0; v < NV; ++v) vstore(C + r * ldc + v * W, acc[r][v]);
  }
}

// C[M x N] (+)= op(A)[M x K] B[K x N]; M a multiple of kMR, N a multiple of the vector width.
template <typename T, bool kAccumulate, bool kTransA = false>
void gemm(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb, T* C,
          int64_t ldc) {
  constexpr int W = Vec<T>::kW;
  constexpr int NV = RECOPS_HSTU_NV;
  const int64_t a_step = kTransA ? 1 : lda;  // A offset between row blocks of op(A)
  int64_t n = 0;
  for (; n + NV * W <= N; n += NV * W) {
    for (int64_t m = 0; m < M; m += kMR) {
      micro<T, NV, kAccumulate, kTransA>(K, A + m * a_step, lda, B + n, ldb, C + m * ldc + n, ldc);
    }
  }
  for (; n < N; n += W) {
    for (int64_t m = 0; m < M; m += kMR) {
      micro<T, 1, kAccumulate, kTransA>(K, A + m * a_step, lda, B + n, ldb, C + m * ldc + n, ldc);
    }
  }
}

inline V<float> vexp(V<float> x) { return simd_exp(x); }

inline V<double> vexp(V<double> x) {  // float64 is the gradcheck path: exact libm exp
  for (int i = 0; i < Vec<double>::kW; ++i) x[i] = ::exp(x[i]);
  return x;
}

// 1 / d for float vectors: the hardware estimate and one Newton step (simd_math.inc); a vector division would
// cost as much as the tile's GEMM work per element.
inline V<float> vrecip(V<float> d) { return simd_recip(d); }

inline V<double> vrecip(V<double> d) { return 1.0 / d; }  // float64: the gradcheck path, exact

template <typename T>
inline V<T> vsigmoid(V<T> s) {
  return vrecip(T(1) + vexp(-s));
}

inline HstuMask seq_mask(const HstuFwdParams& a, int64_t b, int64_t n) {
  return HstuMask::make(a.contextual_len, a.max_attn_len, n, a.num_targets ? a.num_targets[b] : 0);
}

inline int64_t time_bucket(double x, const HstuPlan& plan, int64_t num_buckets) {
  if (x < 1.0) x = 1.0;
  // First guess from the exponent and mantissa bits (|error| < 0.09 in log2), then exact fix-up against
  // the thresholds, which were computed with the formula's own double-precision log.
  uint64_t bits;
  __builtin_memcpy(&bits, &x, sizeof(bits));
  const double e = static_cast<double>(static_cast<int64_t>((bits >> 52) & 0x7ff) - 1023);
  const uint64_t mbits = (bits & 0xfffffffffffffULL) | 0x3ff0000000000000ULL;
  double mant;
  __builtin_memcpy(&mant, &mbits, sizeof(mant));
  int64_t k = static_cast<int64_t>((e + mant - 1.0) * plan.log2_to_bucket);
  k = imin(imax(k, 0), num_buckets - 1);
  if (plan.single_step_buckets) {  // the guess is within one bucket: one step each way
    k -= (k > 0 && x < plan.bucket_thr[k]) ? 1 : 0;
    k += (k < num_buckets - 1 && x >= plan.bucket_thr[k + 1]) ? 1 : 0;
    return k;
  }
  while (k > 0 && x < plan.bucket_thr[k]) --k;
  while (k < num_buckets - 1 && x >= plan.bucket_thr[k + 1]) ++k;
  return k;
}

// The bucket of x = |t' - t| straight from the formula where the thresholds stop being exact integers
// (x >= 9e15: the formula's own double log), else from the thresholds.
inline int32_t exact_bucket(double x, const HstuPlan& plan, int64_t num_buckets) {
  if (x >= 9.0e15) return static_cast<int32_t>(time_bucket_formula(x, plan.time_bucket_base, num_buckets));
  return static_cast<int32_t>(time_bucket(x, plan, num_buckets));
}

// Half-width vectors for the time buckets: WF/2 doubles (VH), their int64 compare masks (VI64) and WF/2 floats.
typedef double VH __attribute__((vector_size(RECOPS_HSTU_VBYTES)));
typedef int64_t VI64 __attribute__((vector_size(RECOPS_HSTU_VBYTES)));
typedef float VFH __attribute__((vector_size(RECOPS_HSTU_VBYTES / 2)));

// max(|tq - t[l]|, 1) for WF/2 timestamps, in double like the formula.
inline VH abs_diff_half(double tq, const int64_t* t) {
  VI64 tv;
  __builtin_memcpy(&tv, t, sizeof(tv));
  VH d = tq - __builtin_convertvector(tv, VH);
  d = d < 0 ? -d : d;
  return d < 1.0 ? 1.0 : d;
}

inline V<float> concat_halves(VFH lo, VFH hi) {
#if RECOPS_HSTU_VBYTES == 64
  return __builtin_shufflevector(lo, hi, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
#elif RECOPS_HSTU_VBYTES == 32
  return __builtin_shufflevector(lo, hi, 0, 1, 2, 3, 4, 5, 6, 7);
#else
  return __builtin_shufflevector(lo, hi, 0, 1, 2, 3);
#endif
}

// Whether any lane of a compare mask is set (an OR over its 64-bit words).
inline bool any_lane(VI32 m) {
  uint64_t w[RECOPS_HSTU_VBYTES / 8];
  __builtin_memcpy(w, &m, sizeof(w));
  uint64_t acc = 0;
  for (int i = 0; i < RECOPS_HSTU_VBYTES / 8; ++i) acc |= w[i];
  return acc != 0;
}

// brk[c] = bucket(|tq - ts[c]|) and brow[c] += time_bias[brk[c]], for c < C (brk has room for C rounded up to
// the float vector width). The bucket is floor(ln(x) / base) in float vectors; lanes whose value lies within
// `margin` of a bucket edge (or x >= 9e15, beyond the exact thresholds) take the exact double-precision path,
// so every bucket equals the formula's: the float error of y is below 1e-5 * (1 + 1 / base), a tenth of margin.
template <typename T>
inline void time_bias_row(double tq, const int64_t* __restrict ts, int64_t C, const HstuPlan& plan,
                          int64_t num_buckets, const T* __restrict tb, T* __restrict brow, int32_t* __restrict brk) {
  constexpr int WF = Vec<float>::kW;
  const float inv_base = static_cast<float>(1.0 / plan.time_bucket_base);
  const float margin = 1e-4f * (1.0f + inv_base);
  const int32_t last = static_cast<int32_t>(num_buckets - 1);
  if (margin >= 0.25f) {  // a tiny base: buckets narrower than the float error allows, exact path throughout
    for (int64_t c = 0; c < C; ++c) {
      const double d = tq - static_cast<double>(ts[c]);
      brk[c] = exact_bucket(d < 0 ? -d : d, plan, num_buckets);
    }
  } else {
    for (int64_t c0 = 0; c0 < C; c0 += WF) {
      V<float> x;
      int wide = 0;
      if (c0 + WF <= C) {  // whole vector: |tq - t| in two halves of double lanes
        VH lo = abs_diff_half(tq, ts + c0), hi = abs_diff_half(tq, ts + c0 + WF / 2);
        const VI64 w = (lo >= 9.0e15) | (hi >= 9.0e15);
        for (int l = 0; l < WF / 2; ++l) wide |= static_cast<int>(w[l] & 1);
        x = concat_halves(__builtin_convertvector(lo, VFH), __builtin_convertvector(hi, VFH));
      } else {
        for (int l = 0; l < WF; ++l) {
          const double d0 = tq - static_cast<double>(ts[imin(c0 + l, C - 1)]);
          const double d = d0 < 0 ? -d0 : d0;
          wide |= d >= 9.0e15;
          x[l] = static_cast<float>(d < 1.0 ? 1.0 : d);
        }
      }
      const V<float> y = simd_log(x) * inv_base;
      VI32 k = __builtin_convertvector(y, VI32);
      const V<float> frac = y - __builtin_convertvector(k, V<float>);
      const VI32 near = ((frac < margin) | (frac > 1.0f - margin)) & (x > 1.0f);
      k = k < 0 ? 0 : k;
      k = k > last ? last : k;
      __builtin_memcpy(brk + c0, &k, sizeof(k));
      if (wide || any_lane(near)) {
        for (int64_t c = c0; c < imin(c0 + WF, C); ++c) {
          const double d = tq - static_cast<double>(ts[c]);
          brk[c] = exact_bucket(d < 0 ? -d : d, plan, num_buckets);
        }
      }
    }
  }
  for (int64_t c = 0; c < C; ++c) brow[c] += tb[brk[c]];
}

// Bias tile [RP x ldt] (pos + time bias), mask tile (1/0) and, if buckets != null, the time buckets, for
// query rows i0 + [0, R) and key rows j0 + [0, C) of the sequence starting at global row s. Padding is 0.
// `buckets` [RP x ldt] receives the time buckets when time_bias is set.
template <typename T>
void fill_tiles(const HstuFwdParams& a, const HstuPlan& plan, const HstuMask& mk, int64_t s, int64_t n,
                int64_t i0, int64_t R, int64_t RP, int64_t j0, int64_t C, int64_t ldt, bool all_valid,
                T* bias, T* mask, int32_t* buckets) {
  const int64_t N = a.max_seq_len;
  const int64_t* ts = a.timestamps ? a.timestamps + s + j0 : nullptr;
  for (int64_t r = 0; r < RP; ++r) {
    T* brow = bias + r * ldt;
    T* mrow = mask + r * ldt;
    const bool in = r < R;
    const int64_t i = i0 + r;
    // pos_bias[(N - 1) + (j - i)] is a contiguous slice along a row.
    const T* prow = (in && a.pos_bias) ? typed<T>(a.pos_bias) + (N - 1) + j0 - i : nullptr;
    for (int64_t c = 0; c < ldt; ++c) brow[c] = (prow && c < C) ? prow[c] : T(0);
    if (in && a.time_bias) {
      const double tq = static_cast<double>(a.timestamps[s + imin(i + 1, n - 1)]);
      time_bias_row(tq, ts, C, plan, a.num_buckets, typed<T>(a.time_bias), brow, buckets + r * ldt);
    }
    if (all_valid) {
      for (int64_t c = 0; c < ldt; ++c) mrow[c] = (in && c < C) ? T(1) : T(0);
    } else if (mk.c == 0 && mk.window == 0 && mk.m == n) {  // plain causal: j <= i
      const int64_t lim = in ? imin(C, i - j0 + 1) : 0;
      for (int64_t c = 0; c < ldt; ++c) mrow[c] = c < lim ? T(1) : T(0);
    } else {
      for (int64_t c = 0; c < ldt; ++c) mrow[c] = (in && c < C && mk.valid(i, j0 + c)) ? T(1) : T(0);
    }
  }
}

// In-register transpose of a W x W block (r[i] = row i in, column i out): log2(W) rounds of interleaving row i
// with row i + W/2 (low halves into 2i, high halves into 2i + 1).
inline void transpose_block(V<float>* r) {
  constexpr int W = Vec<float>::kW;
  for (int round = 1; round < W; round *= 2) {
    V<float> t[W];
    for (int i = 0; i < W / 2; ++i) {
#if RECOPS_HSTU_VBYTES == 64
      t[2 * i] = __builtin_shufflevector(r[i], r[i + W / 2], 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
      t[2 * i + 1] =
          __builtin_shufflevector(r[i], r[i + W / 2], 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
#elif RECOPS_HSTU_VBYTES == 32
      t[2 * i] = __builtin_shufflevector(r[i], r[i + W / 2], 0, 8, 1, 9, 2, 10, 3, 11);
      t[2 * i + 1] = __builtin_shufflevector(r[i], r[i + W / 2], 4, 12, 5, 13, 6, 14, 7, 15);
#else
      t[2 * i] = __builtin_shufflevector(r[i], r[i + W / 2], 0, 4, 1, 5);
      t[2 * i + 1] = __builtin_shufflevector(r[i], r[i + W / 2], 2, 6, 3, 7);
#endif
    }
    for (int i = 0; i < W; ++i) r[i] = t[i];
  }
}

inline void transpose_block(V<double>* r) {  // float64 (gradcheck path): plain element swaps
  constexpr int W = Vec<double>::kW;
  for (int i = 0; i < W; ++i) {
    for (int j = i + 1; j < W; ++j) {
      const double x = r[i][j];
      r[i][j] = r[j][i];
      r[j][i] = x;
    }
  }
}

// dst[d * BKP + c] = row_c[d] for c < BKP and d < D, where row_c = base + c * row_stride for c < C and rows past C
// are zero: W x W blocks through registers, then the columns past the last whole block one by one.
template <typename T>
void pack_transposed(const T* base, int64_t row_stride, int64_t C, int64_t D, int64_t BKP, T* dst) {
  constexpr int W = Vec<T>::kW;
  int64_t d0 = 0;
  for (; d0 + W <= D; d0 += W) {
    for (int64_t c0 = 0; c0 < BKP; c0 += W) {
      V<T> r[W];
      for (int i = 0; i < W; ++i) r[i] = c0 + i < C ? vload(base + (c0 + i) * row_stride + d0) : V<T>{};
      transpose_block(r);
      for (int i = 0; i < W; ++i) vstore(dst + (d0 + i) * BKP + c0, r[i]);
    }
  }
  for (; d0 < D; ++d0) {
    for (int64_t c = 0; c < BKP; ++c) dst[d0 * BKP + c] = c < C ? base[c * row_stride + d0] : T(0);
  }
}

// Bump allocator over one aligned block of per-thread scratch.
struct Arena {
  char* base = nullptr;
  int64_t used = 0;
  template <typename U>
  U* take(int64_t count) {  // with a null base it only measures
    U* p = base ? reinterpret_cast<U*>(base + used) : nullptr;
    used += round_up(count * static_cast<int64_t>(sizeof(U)), 64);
    return p;
  }
};

struct Scratch {
  char* blocks[256] = {};
  int n = 0;
  Scratch(int threads, int64_t bytes) : n(threads) {
    for (int t = 0; t < n; ++t) {
      void* p = nullptr;
      if (posix_memalign(&p, 64, static_cast<size_t>(bytes)) != 0) p = nullptr;
      blocks[t] = static_cast<char*>(p);
    }
  }
  ~Scratch() {
    for (int t = 0; t < n; ++t) free(blocks[t]);
  }
  bool ok() const {
    for (int t = 0; t < n; ++t) {
      if (!blocks[t]) return false;
    }
    return true;
  }
};

// ---------------------------------------------------------------------------------------------------------
// forward

template <typename T>
struct FwdLayout {
  int64_t DQ, DQP, DVP, BKP;
  template <typename Fn>
  void carve(Arena& ar, int64_t H, Fn&& fn) const {
    fn(ar.take<T>(H * kBlockQ * DQ), ar.take<T>(H * kBlockQ * DVP), ar.take<T>(kBlockQ * BKP),
       ar.take<T>(kBlockQ * BKP), ar.take<T>(kBlockQ * BKP), ar.take<int32_t>(kBlockQ * BKP));
  }
};

// One key block of one head, packed for the forward GEMMs: K^T [DQ x BKP] then V [BKP x DVP], zero-padded.
template <typename T>
int64_t packed_kv_size(const FwdLayout<T>& lay) {
  return lay.DQ * lay.BKP + lay.BKP * lay.DVP;
}

template <typename T>
void pack_kv_block(const HstuFwdParams& a, const FwdLayout<T>& lay, int64_t b, int64_t kb, T* dst) {
  const int64_t s = a.offsets[b], n = a.offsets[b + 1] - s;
  const int64_t j0 = kb * kBlockK, C = imin(kBlockK, n - j0);
  const int64_t DQ = lay.DQ, BKP = lay.BKP, DVP = lay.DVP;
  for (int64_t h = 0; h < a.num_heads; ++h) {
    T* Kt = dst + h * packed_kv_size(lay);
    T* Vp = Kt + DQ * BKP;
    pack_transposed(typed<T>(a.k) + (s + j0) * a.k_row + h * a.k_head, a.k_row, C, DQ, BKP, Kt);
    for (int64_t c = 0; c < BKP; ++c) {
      const T* vs = c < C ? typed<T>(a.v) + (s + j0 + c) * a.v_row + h * a.v_head : nullptr;
      for (int64_t d = 0; d < DVP; ++d) Vp[c * DVP + d] = (c < C && d < a.dv) ? vs[d] : T(0);
    }
  }
}

// Query blocks [qb0, qb1) of sequence b, all heads. K/V key blocks are packed into the thread's `kv` buffer
// on first use (blocks are visited in increasing order).
template <typename T>
void fwd_task(const HstuFwdParams& a, const HstuPlan& plan, const FwdLayout<T>& lay, int64_t b, int64_t qb0,
              int64_t qb1, char* mem, T* kv) {
  constexpr int W = Vec<T>::kW;
  const int64_t H = a.num_heads, DQ = lay.DQ, DV = a.dv, DVP = lay.DVP, BKP = lay.BKP;
  Arena ar{mem, 0};
  T *Qp, *Oacc, *S, *bias, *mask;
  int32_t* buckets;
  lay.carve(ar, H, [&](T* q_, T* o_, T* s_, T* b_, T* m_, int32_t* k_) {
    Qp = q_; Oacc = o_; S = s_; bias = b_; mask = m_; buckets = k_;
  });
  const int64_t s = a.offsets[b], n = a.offsets[b + 1] - s;
  const HstuMask mk = seq_mask(a, b, n);
  const T alpha = static_cast<T>(a.alpha);
  const bool has_bias = a.pos_bias || a.time_bias;
  const int64_t block_elems = H * packed_kv_size(lay);
  int64_t packed_upto = 0;

  for (int64_t qb = qb0; qb < qb1; ++qb) {
    const int64_t i0 = qb * kBlockQ, R = imin(kBlockQ, n - i0), RP = round_up(R, kMR);
    for (int64_t h = 0; h < H; ++h) {
      T* qh = Qp + h * kBlockQ * DQ;
      for (int64_t r = 0; r < RP; ++r) {
        const T* src = r < R ? typed<T>(a.q) + (s + i0 + r) * a.q_row + h * a.q_head : nullptr;
        for (int64_t d = 0; d < DQ; ++d) qh[r * DQ + d] = r < R ? alpha * src[d] : T(0);
      }
      T* oh = Oacc + h * kBlockQ * DVP;
      for (int64_t x = 0; x < RP * DVP; ++x) oh[x] = T(0);
    }

    const int64_t nkb = (n + kBlockK - 1) / kBlockK;
    for (int64_t kb = 0; kb < nkb; ++kb) {
      const int64_t j0 = kb * kBlockK, C = imin(kBlockK, n - j0);
      if (!mk.any(i0, i0 + R - 1, j0, j0 + C - 1)) continue;
      for (; packed_upto <= kb; ++packed_upto) pack_kv_block(a, lay, b, packed_upto, kv + packed_upto * block_elems);
      const bool all_valid = mk.all(i0, i0 + R - 1, j0, j0 + C - 1);
      if (has_bias || !all_valid) {
        fill_tiles(a, plan, mk, s, n, i0, R, RP, j0, C, BKP, all_valid, bias, mask, buckets);
      }
      for (int64_t h = 0; h < H; ++h) {
        const T* Kt = kv + kb * block_elems + h * packed_kv_size(lay);
        const T* Vp = Kt + DQ * BKP;
        gemm<T, false>(RP, BKP, DQ, Qp + h * kBlockQ * DQ, DQ, Kt, BKP, S, BKP);
        for (int64_t r = 0; r < RP; ++r) {
          T* srow = S + r * BKP;
          for (int64_t c = 0; c < BKP; c += W) {
            V<T> x = vload(srow + c);
            if (has_bias) x += vload(bias + r * BKP + c);
            V<T> p = x * vsigmoid<T>(x);
            if (!all_valid) p *= vload(mask + r * BKP + c);
            vstore(srow + c, p);
          }
        }
        gemm<T, true>(RP, DVP, C, S, BKP, Vp, DVP, Oacc + h * kBlockQ * DVP, DVP);
      }
    }

    for (int64_t r = 0; r < R; ++r) {
      const T sc = a.row_scale ? typed<T>(a.row_scale)[s + i0 + r] : static_cast<T>(a.scale);
      for (int64_t h = 0; h < H; ++h) {
        const T* src = Oacc + h * kBlockQ * DVP + r * DVP;
        T* dst = typed<T>(a.out) + ((s + i0 + r) * H + h) * DV;
        for (int64_t d = 0; d < DV; ++d) dst[d] = sc * src[d];
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// backward

template <typename T>
struct BwdLayout {
  int64_t DQ, DV, DQP, DVP, BKP, NQ, NB;
  struct Bufs {
    T *dQacc, *Kt, *Kp, *Vt, *dKacc, *dVacc, *Qp, *dOp, *S, *P, *dP, *bias, *mask, *dSsum, *dT4;
    int32_t* buckets;
  };
  Bufs carve(Arena& ar, int64_t H) const {
    Bufs x;
    x.dQacc = ar.take<T>(H * NQ * DQP);
    x.Kt = ar.take<T>(H * DQ * BKP);
    x.Kp = ar.take<T>(H * BKP * DQP);
    x.Vt = ar.take<T>(H * DV * BKP);
    x.dKacc = ar.take<T>(H * BKP * DQP);
    x.dVacc = ar.take<T>(H * BKP * DVP);
    x.Qp = ar.take<T>(H * NQ * DQP);
    x.dOp = ar.take<T>(H * NQ * DVP);
    x.S = ar.take<T>(kBlockQ * BKP);
    x.P = ar.take<T>(kBlockQ * BKP);
    x.dP = ar.take<T>(kBlockQ * BKP);
    x.bias = ar.take<T>(kBlockQ * BKP);
    x.mask = ar.take<T>(kBlockQ * BKP);
    x.dSsum = ar.take<T>(kBlockQ * BKP);
    x.buckets = ar.take<int32_t>(kBlockQ * BKP);
    x.dT4 = ar.take<T>(4 * NB);
    return x;
  }
};

template <typename T>
void bwd_task(const HstuBwdParams& a, const HstuPlan& plan, const BwdLayout<T>& lay, int64_t b, char* mem) {
  constexpr int W = Vec<T>::kW;
  const int64_t H = a.num_heads, DQ = lay.DQ, DV = lay.DV, DQP = lay.DQP, DVP = lay.DVP, BKP = lay.BKP;
  const int64_t N = a.max_seq_len;
  Arena ar{mem, 0};
  auto x = lay.carve(ar, H);
  const int64_t s = a.offsets[b], n = a.offsets[b + 1] - s;
  if (n == 0) return;
  const HstuMask mk = seq_mask(a, b, n);
  const T alpha = static_cast<T>(a.alpha);
  const bool has_bias = a.pos_bias || a.time_bias;
  T* dpos = a.d_pos_bias ? static_cast<T*>(plan.pos_partials) + b * (2 * N - 1) : nullptr;
  T* dtime = a.d_time_bias ? static_cast<T*>(plan.time_partials) + b * a.num_buckets : nullptr;
  const int64_t nblk_q = (n + kBlockQ - 1) / kBlockQ, nblk_k = (n + kBlockK - 1) / kBlockK;
  for (int64_t i = 0; i < H * nblk_q * kBlockQ * DQP; ++i) x.dQacc[i] = T(0);
  // alpha * q and dout of the whole sequence, packed once per head (rows up to a multiple of kMR zeroed).
  const int64_t NQ = lay.NQ, nr = round_up(n, kMR);
  for (int64_t h = 0; h < H; ++h) {
    for (int64_t r = 0; r < nr; ++r) {
      const bool in = r < n;
      const T* qsrc = in ? typed<T>(a.q) + (s + r) * a.q_row + h * a.q_head : nullptr;
      const T* gsrc = in ? typed<T>(a.grad_out) + ((s + r) * H + h) * DV : nullptr;
      T* qd = x.Qp + (h * NQ + r) * DQP;
      T* gd = x.dOp + (h * NQ + r) * DVP;
      for (int64_t d = 0; d < DQP; ++d) qd[d] = (in && d < DQ) ? alpha * qsrc[d] : T(0);
      for (int64_t d = 0; d < DVP; ++d) gd[d] = (in && d < DV) ? gsrc[d] : T(0);
    }
  }
  // d time_bias in four interleaved partials: neighbouring keys mostly share a bucket, and one accumulator
  // would chain every add through the previous one's store.
  const int64_t nb = a.num_buckets;
  if (dtime) {
    for (int64_t i = 0; i < 4 * nb; ++i) x.dT4[i] = T(0);
  }

  for (int64_t kb = 0; kb < nblk_k; ++kb) {
    const int64_t j0 = kb * kBlockK, C = imin(kBlockK, n - j0);
    for (int64_t h = 0; h < H; ++h) {
      T* kt = x.Kt + h * DQ * BKP;
      T* kp = x.Kp + h * BKP * DQP;
      T* vt = x.Vt + h * DV * BKP;
      const T* k0 = typed<T>(a.k) + (s + j0) * a.k_row + h * a.k_head;
      const T* v0 = typed<T>(a.v) + (s + j0) * a.v_row + h * a.v_head;
      for (int64_t c = 0; c < BKP; ++c) {
        for (int64_t d = 0; d < DQP; ++d) kp[c * DQP + d] = (c < C && d < DQ) ? k0[c * a.k_row + d] : T(0);
      }
      pack_transposed(k0, a.k_row, C, DQ, BKP, kt);
      pack_transposed(v0, a.v_row, C, DV, BKP, vt);
    }
    for (int64_t i = 0; i < H * BKP * DQP; ++i) x.dKacc[i] = T(0);
    for (int64_t i = 0; i < H * BKP * DVP; ++i) x.dVacc[i] = T(0);

    for (int64_t qb = 0; qb < nblk_q; ++qb) {
      const int64_t i0 = qb * kBlockQ, R = imin(kBlockQ, n - i0), RP = round_up(R, kMR);
      if (!mk.any(i0, i0 + R - 1, j0, j0 + C - 1)) continue;
      const bool all_valid = mk.all(i0, i0 + R - 1, j0, j0 + C - 1);
      fill_tiles(a, plan, mk, s, n, i0, R, RP, j0, C, BKP, all_valid, x.bias, x.mask, x.buckets);
      if (has_bias) {
        for (int64_t i = 0; i < RP * BKP; ++i) x.dSsum[i] = T(0);
      }
      for (int64_t h = 0; h < H; ++h) {
        const T* Qp = x.Qp + (h * NQ + i0) * DQP;
        const T* dOp = x.dOp + (h * NQ + i0) * DVP;
        gemm<T, false>(RP, BKP, DQ, Qp, DQP, x.Kt + h * DQ * BKP, BKP, x.S, BKP);
        for (int64_t r = 0; r < RP; ++r) {
          const T sc =
              r < R ? (a.row_scale ? typed<T>(a.row_scale)[s + i0 + r] : static_cast<T>(a.scale)) : T(0);
          for (int64_t c = 0; c < BKP; c += W) {
            V<T> sv = vload(x.S + r * BKP + c) + vload(x.bias + r * BKP + c);
            const V<T> sig = vsigmoid<T>(sv);
            V<T> m = V<T>{} + sc;
            if (!all_valid) m *= vload(x.mask + r * BKP + c);
            vstore(x.P + r * BKP + c, sv * sig * m);
            vstore(x.S + r * BKP + c, sig * (T(1) + sv * (T(1) - sig)) * m);  // SiLU'(s) * scale * mask
          }
        }
        gemm<T, true, true>(BKP, DVP, R, x.P, BKP, dOp, DVP, x.dVacc + h * BKP * DVP, DVP);
        gemm<T, false>(RP, BKP, DV, dOp, DVP, x.Vt + h * DV * BKP, BKP, x.dP, BKP);
        for (int64_t r = 0; r < RP; ++r) {
          for (int64_t c = 0; c < BKP; c += W) {
            const V<T> ds = vload(x.dP + r * BKP + c) * vload(x.S + r * BKP + c);
            vstore(x.dP + r * BKP + c, ds);
            if (has_bias) vstore(x.dSsum + r * BKP + c, vload(x.dSsum + r * BKP + c) + ds);
          }
        }
        gemm<T, true, true>(BKP, DQP, R, x.dP, BKP, Qp, DQP, x.dKacc + h * BKP * DQP, DQP);
        gemm<T, true>(RP, DQP, C, x.dP, BKP, x.Kp + h * BKP * DQP, DQP, x.dQacc + (h * nblk_q * kBlockQ + i0) * DQP,
                      DQP);
      }
      if (has_bias) {
        for (int64_t r = 0; r < R; ++r) {
          const T* g = x.dSsum + r * BKP;
          if (dpos) {
            T* prow = dpos + (N - 1) + j0 - (i0 + r);  // contiguous along the row, like the forward slice
            for (int64_t c = 0; c < C; ++c) prow[c] += g[c];
          }
          if (dtime) {
            const int32_t* kr = x.buckets + r * BKP;
            for (int64_t c = 0; c < C; ++c) x.dT4[(c & 3) * nb + kr[c]] += g[c];
          }
        }
      }
    }
    for (int64_t c = 0; c < C; ++c) {
      for (int64_t h = 0; h < H; ++h) {
        const T* dks = x.dKacc + h * BKP * DQP + c * DQP;
        const T* dvs = x.dVacc + h * BKP * DVP + c * DVP;
        T* dkd = typed<T>(a.dk) + ((s + j0 + c) * H + h) * DQ;
        T* dvd = typed<T>(a.dv_out) + ((s + j0 + c) * H + h) * DV;
        for (int64_t d = 0; d < DQ; ++d) dkd[d] = dks[d];
        for (int64_t d = 0; d < DV; ++d) dvd[d] = dvs[d];
      }
    }
  }
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t h = 0; h < H; ++h) {
      const T* src = x.dQacc + (h * nblk_q * kBlockQ + r) * DQP;
      T* dst = typed<T>(a.dq) + ((s + r) * H + h) * DQ;
      for (int64_t d = 0; d < DQ; ++d) dst[d] = alpha * src[d];
    }
  }
  if (dtime) {
    for (int64_t k = 0; k < nb; ++k) dtime[k] += (x.dT4[k] + x.dT4[nb + k]) + (x.dT4[2 * nb + k] + x.dT4[3 * nb + k]);
  }
}

template <typename T>
void run_fwd(const HstuFwdParams& a, const HstuPlan& plan, int threads) {
  constexpr int W = Vec<T>::kW;
  FwdLayout<T> lay{a.dqk, round_up(a.dqk, W), round_up(a.dv, W), round_up(kBlockK, W)};
  Arena probe;
  lay.carve(probe, a.num_heads, [](T*, T*, T*, T*, T*, int32_t*) {});
  const int64_t kv_elems = (plan.max_len + kBlockK - 1) / kBlockK * a.num_heads * packed_kv_size(lay);
  const int64_t kv_offset = probe.used;  // bytes
  probe.take<T>(kv_elems);
  const int nt = static_cast<int>(imax(1, imin(imin(threads, 256), plan.num_tasks)));
  Scratch scratch(nt, probe.used);
  if (!scratch.ok()) throw_alloc_failure("hstu_attention");
  parallel_tasks(plan.num_tasks, nt, [&](int64_t t, int tid) {
    char* mem = scratch.blocks[tid];
    fwd_task(a, plan, lay, plan.task_seq[t], plan.task_qbegin[t], plan.task_qend[t], mem,
             reinterpret_cast<T*>(mem + kv_offset));
  });
}

template <typename T>
void run_bwd(const HstuBwdParams& a, const HstuPlan& plan, int threads) {
  constexpr int W = Vec<T>::kW;
  BwdLayout<T> lay{a.dqk, a.dv, round_up(a.dqk, W), round_up(a.dv, W), round_up(kBlockK, W),
                   round_up(a.max_seq_len, kBlockQ), a.time_bias ? a.num_buckets : 0};
  Arena probe;
  lay.carve(probe, a.num_heads);
  const int nt = static_cast<int>(imax(1, imin(imin(threads, 256), plan.num_seq_tasks)));
  Scratch scratch(nt, probe.used);
  if (!scratch.ok()) throw_alloc_failure("hstu_attention_backward");
  parallel_tasks(plan.num_seq_tasks, nt, [&](int64_t t, int tid) {
    bwd_task(a, plan, lay, plan.seq_order[t], scratch.blocks[tid]);
  });
}

template void run_fwd<float>(const HstuFwdParams&, const HstuPlan&, int);
template void run_fwd<double>(const HstuFwdParams&, const HstuPlan&, int);
template void run_bwd<float>(const HstuBwdParams&, const HstuPlan&, int);
template void run_bwd<double>(const HstuBwdParams&, const HstuPlan&, int);

}  // namespace recops::hstu::RECOPS_HSTU_ISA
