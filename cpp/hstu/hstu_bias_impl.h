// SPDX-License-Identifier: Apache-2.0
// Part of hstu_kernels_impl.h, included by it INSIDE the per-ISA namespace (no include guard, no includes):
// the mask of a sequence, the time buckets and the bias and mask tiles.

inline HstuMask seq_mask(const HstuFwdParams& a, int64_t b, int64_t n) {
  return HstuMask::make(a.contextual_len, a.max_attn_len, n, a.num_targets ? a.num_targets[b] : 0, a.causal,
                        a.min_full_attn_seq_len);
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
    } else if (mk.plain_causal(n)) {  // j <= i
      const int64_t lim = in ? imin(C, i - j0 + 1) : 0;
      for (int64_t c = 0; c < ldt; ++c) mrow[c] = c < lim ? T(1) : T(0);
    } else {
      for (int64_t c = 0; c < ldt; ++c) mrow[c] = (in && c < C && mk.valid(i, j0 + c)) ? T(1) : T(0);
    }
  }
}
