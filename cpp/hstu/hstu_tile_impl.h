// SPDX-License-Identifier: Apache-2.0
// Part of hstu_kernels_impl.h, included by it INSIDE the per-ISA namespace (no include guard, no includes):
// vectors, the register-blocked GEMM micro-kernel, SiLU pieces, in-register transposes and packing, scratch.

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

struct RowBlockLimits {
  int64_t cols, depth;  // columns of C and the depth (A columns) one row block computes
};

// C (+)= A B row block by row block, each block's columns and depth from limits(m).
template <typename T, bool kAccumulate, typename Limits>
void gemm_row_blocks(int64_t M, const T* A, int64_t lda, const T* B, int64_t ldb, T* C, int64_t ldc,
                     Limits&& limits) {
  constexpr int W = Vec<T>::kW;
  constexpr int NV = RECOPS_HSTU_NV;
  for (int64_t m = 0; m < M; m += kMR) {
    const RowBlockLimits l = limits(m);
    const T* a = A + m * lda;
    T* c = C + m * ldc;
    int64_t n = 0;
    for (; n + NV * W <= l.cols; n += NV * W) micro<T, NV, kAccumulate>(l.depth, a, lda, B + n, ldb, c + n, ldc);
    for (; n < l.cols; n += W) micro<T, 1, kAccumulate>(l.depth, a, lda, B + n, ldb, c + n, ldc);
  }
}

// The GEMMs of a diagonal tile under the plain causal mask (i0 == j0: row r sees key columns c <= r), skipping
// what the mask zeroes: gemm_diag_scores (S = A B) computes only the columns [0, round_up(m + kMR, W)) of row block
// m (the rest of S is left as it was: the caller must not read it unmasked); gemm_diag_values (C += A B) reads only
// the first min(K, m + kMR) columns of A (the probabilities past the diagonal are 0).
template <typename T>
void gemm_diag_scores(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb, T* C,
                      int64_t ldc) {
  gemm_row_blocks<T, false>(M, A, lda, B, ldb, C, ldc, [&](int64_t m) {
    return RowBlockLimits{imin(N, round_up(m + kMR, Vec<T>::kW)), K};
  });
}

template <typename T>
void gemm_diag_values(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb, T* C,
                      int64_t ldc) {
  gemm_row_blocks<T, true>(M, A, lda, B, ldb, C, ldc, [&](int64_t m) { return RowBlockLimits{N, imin(K, m + kMR)}; });
}

// C[M x N] += A^T B for a plain-causal diagonal tile, A [K x M] read transposed: row block m of C (key rows m ..
// m + kMR - 1) takes only the rows k >= m of A and B (the query rows at or below the diagonal; the others are 0).
template <typename T>
void gemm_diag_trans(int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb, T* C,
                     int64_t ldc) {
  constexpr int W = Vec<T>::kW;
  constexpr int NV = RECOPS_HSTU_NV;
  for (int64_t m = 0; m < M && m < K; m += kMR) {
    const T* a = A + m * lda + m;
    const T* b = B + m * ldb;
    int64_t n = 0;
    for (; n + NV * W <= N; n += NV * W) micro<T, NV, true, true>(K - m, a, lda, b + n, ldb, C + m * ldc + n, ldc);
    for (; n < N; n += W) micro<T, 1, true, true>(K - m, a, lda, b + n, ldb, C + m * ldc + n, ldc);
  }
}

#if RECOPS_HSTU_BF16
// The bf16 object's exp: 2^n * 2^f (n = round(x log2 e), |f| <= 1/2, degree-5 Taylor polynomial of 2^f, relative
// error < 3e-6, far below the 2^-9 of the bf16 rounding P and dS get next), scaled by VSCALEFPS; NaN stays NaN,
// x < -104 (-inf included) gives exactly 0.
inline V<float> vexp(V<float> x) {
  const V<float> lo = V<float>{} - 104.0f, hi = V<float>{} + 89.0f;
  V<float> xc = x >= lo ? x : lo;
  xc = xc <= hi ? xc : hi;
  const V<float> t = xc * 1.44269504088896341f;
  const V<float> n = (V<float>)_mm512_roundscale_ps((__m512)t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const V<float> f = t - n;
  V<float> p = V<float>{} + 1.3333558146e-3f;
  p = p * f + 9.6181291076e-3f;
  p = p * f + 5.5504108665e-2f;
  p = p * f + 2.4022650696e-1f;
  p = p * f + 6.9314718056e-1f;
  p = p * f + 1.0f;
  const V<float> r = (V<float>)_mm512_scalef_ps((__m512)p, (__m512)n);
  return x != x ? x : (x >= lo ? r : V<float>{});
}
#else
inline V<float> vexp(V<float> x) { return simd_exp(x); }
#endif

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

// Per-thread scratch blocks from the pool of hstu_plan.h (reused across calls: no fresh pages, no faults).
struct Scratch {
  char* blocks[256] = {};
  int64_t sizes[256] = {};
  int n = 0;
  Scratch(int threads, int64_t bytes) : n(threads) {
    for (int t = 0; t < n; ++t) blocks[t] = static_cast<char*>(scratch_get(bytes, &sizes[t]));
  }
  ~Scratch() {
    for (int t = 0; t < n; ++t) scratch_put(blocks[t], sizes[t]);
  }
  bool ok() const {
    for (int t = 0; t < n; ++t) {
      if (!blocks[t]) return false;
    }
    return true;
  }
};
