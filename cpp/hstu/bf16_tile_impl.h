// SPDX-License-Identifier: Apache-2.0
// Part of hstu_kernels_impl.h, included by it INSIDE the per-ISA namespace (no include guard, no includes):
// the bfloat16 operands and GEMMs of the bf16 attention path (compiled only in hstu_cpu_amx.cpp, where
// RECOPS_HSTU_BF16 is 1; the other ISA objects see the declarations, which their discarded `if constexpr
// (kBf16)` branches never use).
//
// Every GEMM is C[M x N] fp32 (+)= A[M x K] B[K x N] with A bf16 row-major (lda elements) and B "pair packed"
// (the VNNI layout both units read): Bp[k / 2][n][k % 2], ldb = elements per pair row (>= 2N). M and N are
// multiples of 16, K of 32; operands are zero-padded to those sizes by the packers below. AMX: 2 x 2 blocks of
// 16 x 16 fp32 tiles (tiles 0-3 C, 4-5 A, 6-7 B), TDPBF16PS per 32-deep step; AVX512-BF16: 4 rows x 4 vectors of
// VDPBF16PS accumulators, the A pair broadcast. Accumulation is fp32 everywhere; inputs are rounded to bf16 once
// (the products of two bf16 values are exact in fp32).

constexpr bool kBf16 = RECOPS_HSTU_BF16 != 0;
constexpr int64_t kBf16Rows = 16;  // M and N granule of the bf16 GEMMs
constexpr int64_t kBf16Depth = 32;  // K granule

// float -> bf16, round to nearest even (NaN stays NaN).
inline uint16_t f2bf(float f) {
  uint32_t u;
  __builtin_memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
inline float bf2f(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  __builtin_memcpy(&f, &u, 4);
  return f;
}

// The tile configuration (every tile 16 rows x 64 bytes); once per task, and tile_done() after it.
void bf16_begin(bool amx);
void bf16_done(bool amx);
template <bool kAccumulate>
void bgemm(bool amx, int64_t M, int64_t N, int64_t K, const uint16_t* A, int64_t lda, const uint16_t* B, int64_t ldb,
           float* C, int64_t ldc);
// dst [rows_pad x cols_pad] row-major (ldd) = src rows r < rows (stride lds), columns c < cols, zero elsewhere.
void bf16_rows(const uint16_t* src, int64_t lds, int64_t rows, int64_t cols, int64_t rows_pad, int64_t cols_pad,
               uint16_t* dst, int64_t ldd);
// dst [BKP x KP] (ldd) = bf16(src^T): dst[c][r] = src[r][c] for r < R, 0 for R <= r < KP (KP a multiple of 32).
void bf16_from_f32_t(const float* src, int64_t lds, int64_t R, int64_t BKP, int64_t KP, uint16_t* dst, int64_t ldd);
// Pair-packed B = X [K x N] (rows k < Kv of stride ldx, columns n < Nv): Bp[p][n][e] = X[2p + e][n], zero padded
// to Kp / 2 pair rows of Np columns.
void bf16_pairs(const uint16_t* X, int64_t ldx, int64_t Kv, int64_t Nv, int64_t Kp, int64_t Np, uint16_t* Bp);
// Pair-packed B = Y^T for Y [N x K] (rows n < Nv of stride ldy, columns k < Kv): Bp[p][n][e] = Y[n][2p + e]
// (Np a multiple of 16).
void bf16_pairs_t(const uint16_t* Y, int64_t ldy, int64_t Nv, int64_t Kv, int64_t Kp, int64_t Np, uint16_t* Bp);
// dst[e] = bf16(mul * src[e]), e < count.
void bf16_store(const float* src, float mul, int64_t count, uint16_t* dst);
// dst[0 .. 15] = bf16(v) (16 floats of one vector; the pointwise loops write P / dS this way).
inline void store_bf16(uint16_t* dst, V<float> v);
// sum_e a[e] b[e] over bf16 vectors (exact products, fp32 sums).
float bf16_dot(const uint16_t* a, const uint16_t* b, int64_t count);

#if RECOPS_HSTU_BF16

inline void store_bf16(uint16_t* dst, V<float> v) {
  const __m256bh h = _mm512_cvtneps_pbh((__m512)v);
  __builtin_memcpy(dst, &h, 32);
}

struct alignas(64) TileConfig {
  uint8_t palette, start_row, reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

void bf16_begin(bool amx) {
  if (!amx) return;
  TileConfig c;
  __builtin_memset(&c, 0, sizeof(c));
  c.palette = 1;
  for (int t = 0; t < 8; ++t) {
    c.colsb[t] = 64;
    c.rows[t] = 16;
  }
  _tile_loadconfig(&c);
}

void bf16_done(bool amx) {
  if (amx) _tile_release();
}

// One MB x NB block of 16 x 16 C tiles (MB, NB in {1, 2}).
template <int MB, int NB, bool kAcc>
inline void amx_block(int64_t K, const uint16_t* A, int64_t lda, const uint16_t* B, int64_t ldb, float* C,
                      int64_t ldc) {
  const int64_t sa = lda * 2, sb = ldb * 2, sc = ldc * 4;
  float* C1 = C + 16 * ldc;
  if (kAcc) {
    _tile_loadd(0, C, sc);
    if (NB > 1) _tile_loadd(1, C + 16, sc);
    if (MB > 1) _tile_loadd(2, C1, sc);
    if (MB > 1 && NB > 1) _tile_loadd(3, C1 + 16, sc);
  } else {
    _tile_zero(0);
    if (NB > 1) _tile_zero(1);
    if (MB > 1) _tile_zero(2);
    if (MB > 1 && NB > 1) _tile_zero(3);
  }
  for (int64_t k = 0; k < K; k += kBf16Depth) {
    const uint16_t* b = B + (k / 2) * ldb;
    _tile_loadd(4, A + k, sa);
    _tile_loadd(6, b, sb);
    _tile_dpbf16ps(0, 4, 6);
    if (NB > 1) {
      _tile_loadd(7, b + 32, sb);
      _tile_dpbf16ps(1, 4, 7);
    }
    if (MB > 1) {
      _tile_loadd(5, A + 16 * lda + k, sa);
      _tile_dpbf16ps(2, 5, 6);
      if (NB > 1) _tile_dpbf16ps(3, 5, 7);
    }
  }
  _tile_stored(0, C, sc);
  if (NB > 1) _tile_stored(1, C + 16, sc);
  if (MB > 1) _tile_stored(2, C1, sc);
  if (MB > 1 && NB > 1) _tile_stored(3, C1 + 16, sc);
}

template <int MB, bool kAcc>
inline void amx_rows(int64_t N, int64_t K, const uint16_t* A, int64_t lda, const uint16_t* B, int64_t ldb, float* C,
                     int64_t ldc) {
  int64_t n = 0;
  for (; n + 32 <= N; n += 32) amx_block<MB, 2, kAcc>(K, A, lda, B + 2 * n, ldb, C + n, ldc);
  if (n < N) amx_block<MB, 1, kAcc>(K, A, lda, B + 2 * n, ldb, C + n, ldc);
}

// AVX512-BF16: MR rows x NV vectors of 16 columns.
template <int MR, int NV, bool kAcc>
inline void dp_micro(int64_t K, const uint16_t* A, int64_t lda, const uint16_t* B, int64_t ldb, float* C,
                     int64_t ldc) {
  __m512 acc[MR][NV];
  for (int r = 0; r < MR; ++r) {
    for (int v = 0; v < NV; ++v) acc[r][v] = kAcc ? _mm512_loadu_ps(C + r * ldc + 16 * v) : _mm512_setzero_ps();
  }
  for (int64_t p = 0; p < K / 2; ++p) {
    __m512bh b[NV];
    for (int v = 0; v < NV; ++v) b[v] = (__m512bh)_mm512_loadu_si512(B + p * ldb + 32 * v);
    for (int r = 0; r < MR; ++r) {
      int32_t pair;
      __builtin_memcpy(&pair, A + r * lda + 2 * p, 4);
      const __m512bh a = (__m512bh)_mm512_set1_epi32(pair);
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], a, b[v]);
    }
  }
  for (int r = 0; r < MR; ++r) {
    for (int v = 0; v < NV; ++v) _mm512_storeu_ps(C + r * ldc + 16 * v, acc[r][v]);
  }
}

template <bool kAccumulate>
void bgemm(bool amx, int64_t M, int64_t N, int64_t K, const uint16_t* A, int64_t lda, const uint16_t* B, int64_t ldb,
           float* C, int64_t ldc) {
  if (amx) {
    int64_t m = 0;
    for (; m + 32 <= M; m += 32) amx_rows<2, kAccumulate>(N, K, A + m * lda, lda, B, ldb, C + m * ldc, ldc);
    if (m < M) amx_rows<1, kAccumulate>(N, K, A + m * lda, lda, B, ldb, C + m * ldc, ldc);
    return;
  }
  for (int64_t m = 0; m < M; m += 4) {
    int64_t n = 0;
    for (; n + 64 <= N; n += 64) dp_micro<4, 4, kAccumulate>(K, A + m * lda, lda, B + 2 * n, ldb, C + m * ldc + n, ldc);
    for (; n < N; n += 16) dp_micro<4, 1, kAccumulate>(K, A + m * lda, lda, B + 2 * n, ldb, C + m * ldc + n, ldc);
  }
}
template void bgemm<false>(bool, int64_t, int64_t, int64_t, const uint16_t*, int64_t, const uint16_t*, int64_t,
                           float*, int64_t);
template void bgemm<true>(bool, int64_t, int64_t, int64_t, const uint16_t*, int64_t, const uint16_t*, int64_t, float*,
                          int64_t);

void bf16_rows(const uint16_t* src, int64_t lds, int64_t rows, int64_t cols, int64_t rows_pad, int64_t cols_pad,
               uint16_t* dst, int64_t ldd) {
  for (int64_t r = 0; r < rows_pad; ++r) {
    uint16_t* d = dst + r * ldd;
    int64_t c = 0;
    if (r < rows) {
      const uint16_t* s = src + r * lds;
      for (; c + 32 <= cols; c += 32) _mm512_storeu_si512(d + c, _mm512_loadu_si512(s + c));
      for (; c < cols; ++c) d[c] = s[c];
    }
    for (; c < cols_pad; ++c) d[c] = 0;
  }
}

void bf16_from_f32_t(const float* src, int64_t lds, int64_t R, int64_t BKP, int64_t KP, uint16_t* dst, int64_t ldd) {
  for (int64_t r0 = 0; r0 < KP; r0 += 16) {
    for (int64_t c0 = 0; c0 < BKP; c0 += 16) {
      V<float> t[16];
      for (int i = 0; i < 16; ++i) t[i] = r0 + i < R ? vload(src + (r0 + i) * lds + c0) : V<float>{};
      transpose_block(t);  // t[i] = column c0 + i of the rows r0 .. r0 + 15
      for (int i = 0; i < 16; ++i) {
        __m256bh h = _mm512_cvtneps_pbh((__m512)t[i]);
        __builtin_memcpy(dst + (c0 + i) * ldd + r0, &h, 32);
      }
    }
  }
}

void bf16_pairs(const uint16_t* X, int64_t ldx, int64_t Kv, int64_t Nv, int64_t Kp, int64_t Np, uint16_t* Bp) {
  for (int64_t p = 0; p < Kp / 2; ++p) {
    const uint16_t* x0 = 2 * p < Kv ? X + 2 * p * ldx : nullptr;
    const uint16_t* x1 = 2 * p + 1 < Kv ? X + (2 * p + 1) * ldx : nullptr;
    uint16_t* d = Bp + p * 2 * Np;
    int64_t n = 0;
    if (x0 && x1) {  // interleave two rows 32 columns at a time
      // word 2i of the low half = a[i], 2i + 1 = b[i] (b's lanes are 32 .. 63 of the two-source index)
      alignas(64) uint16_t lo[32], hi[32];
      for (int i = 0; i < 16; ++i) {
        lo[2 * i] = static_cast<uint16_t>(i);
        lo[2 * i + 1] = static_cast<uint16_t>(32 + i);
        hi[2 * i] = static_cast<uint16_t>(16 + i);
        hi[2 * i + 1] = static_cast<uint16_t>(48 + i);
      }
      const __m512i lo_idx = _mm512_load_si512(lo), hi_idx = _mm512_load_si512(hi);
      for (; n + 32 <= Nv; n += 32) {
        const __m512i a = _mm512_loadu_si512(x0 + n), b = _mm512_loadu_si512(x1 + n);
        _mm512_storeu_si512(d + 2 * n, _mm512_permutex2var_epi16(a, lo_idx, b));
        _mm512_storeu_si512(d + 2 * n + 32, _mm512_permutex2var_epi16(a, hi_idx, b));
      }
    }
    for (; n < Np; ++n) {
      d[2 * n] = (x0 && n < Nv) ? x0[n] : 0;
      d[2 * n + 1] = (x1 && n < Nv) ? x1[n] : 0;
    }
  }
}

void bf16_pairs_t(const uint16_t* Y, int64_t ldy, int64_t Nv, int64_t Kv, int64_t Kp, int64_t Np, uint16_t* Bp) {
  // Bp as 32-bit words: word (p, n) = Y[n][2p .. 2p + 1], a transpose of Y's rows read as words; 16 x 16 word
  // blocks through registers, rows past Nv and elements past Kv loaded as zero (masked loads)
  for (int64_t n0 = 0; n0 < Np; n0 += 16) {
    for (int64_t p0 = 0; p0 < Kp / 2; p0 += 16) {
      const int64_t e0 = 2 * p0, ne = Kv - e0 < 0 ? 0 : (Kv - e0 < 32 ? Kv - e0 : 32);
      const __mmask32 m = ne >= 32 ? ~__mmask32(0) : ((__mmask32(1) << ne) - 1);
      V<float> t[16];
      for (int i = 0; i < 16; ++i) {
        const __m512i row = (n0 + i < Nv && ne > 0) ? _mm512_maskz_loadu_epi16(m, Y + (n0 + i) * ldy + e0)
                                                    : _mm512_setzero_si512();
        t[i] = (V<float>)row;
      }
      transpose_block(t);  // t[i] = the words of pair p0 + i for rows n0 .. n0 + 15
      const int64_t np = Kp / 2 - p0 < 16 ? Kp / 2 - p0 : 16;
      for (int i = 0; i < np; ++i) vstore(reinterpret_cast<float*>(Bp + (p0 + i) * 2 * Np + 2 * n0), t[i]);
    }
  }
}

// dst[e] = bf16(mul * src[e]) for e < count.
void bf16_store(const float* src, float mul, int64_t count, uint16_t* dst) {
  const __m512 vm = _mm512_set1_ps(mul);
  int64_t e = 0;
  for (; e + 16 <= count; e += 16) {
    const __m256bh h = _mm512_cvtneps_pbh(_mm512_mul_ps(vm, _mm512_loadu_ps(src + e)));
    __builtin_memcpy(dst + e, &h, 32);
  }
  for (; e < count; ++e) dst[e] = f2bf(mul * src[e]);
}

float bf16_dot(const uint16_t* a, const uint16_t* b, int64_t count) {
  __m512 acc = _mm512_setzero_ps();
  for (int64_t e = 0; e < count; e += 32) {
    const __mmask32 m = count - e >= 32 ? ~__mmask32(0) : ((__mmask32(1) << (count - e)) - 1);
    acc = _mm512_dpbf16_ps(acc, (__m512bh)_mm512_maskz_loadu_epi16(m, a + e), (__m512bh)_mm512_maskz_loadu_epi16(m, b + e));
  }
  alignas(64) float lane[16];  // (not _mm512_reduce_add_ps: GCC 12 warns on its undefined-vector temporaries)
  _mm512_store_ps(lane, acc);
  float sum = 0.0f;
  for (int i = 0; i < 16; ++i) sum += lane[i];
  return sum;
}

#endif  // RECOPS_HSTU_BF16
