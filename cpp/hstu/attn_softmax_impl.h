// SPDX-License-Identifier: Apache-2.0
// Part of hstu_kernels_impl.h, included by it INSIDE the per-ISA namespace (no include guard, no includes):
// the pointwise pieces of the softmax attention (kind kSoftmax): the online softmax of a forward score tile,
// the backward's probabilities from the saved log-sum-exp, and the attention-dropout keep scales
// (attention_dropout.h). The tiling, packing, mask tiles and GEMMs are the HSTU kernel's own.

template <typename T>
inline T hmax(V<T> v) {
  T m = v[0];
  for (int l = 1; l < Vec<T>::kW; ++l) m = v[l] > m ? v[l] : m;
  return m;
}

template <typename T>
inline T hsum(V<T> v) {
  T s = T(0);
  for (int l = 0; l < Vec<T>::kW; ++l) s += v[l];
  return s;
}

typedef uint32_t VU __attribute__((vector_size(RECOPS_HSTU_VBYTES)));
#include "hstu/dropout_simd.inc"

inline float scalar_exp(float x) { return ::expf(x); }
inline double scalar_exp(double x) { return ::exp(x); }
inline float scalar_log(float x) { return ::logf(x); }
inline double scalar_log(double x) { return ::log(x); }

// The dropout of one (head, query row): dst[c] = keep(i, j0 + c) ? 1 / (1 - p) : 0 for c in [0, BKP).
struct DropoutTile {
  uint64_t seed;
  int64_t b;
  uint32_t threshold;
  double inv_keep;
};

// Sequence b's dropout of call a (its threshold and keep scale; used only when a.dropout_p > 0).
inline DropoutTile dropout_tile(const HstuFwdParams& a, int64_t b) {
  return DropoutTile{a.seed, b, dropout_threshold(a.dropout_p), 1.0 / (1.0 - a.dropout_p)};
}

template <typename T>
inline void dropout_row(const DropoutTile& d, int64_t h, int64_t i, int64_t j0, int64_t BKP, T* dst) {
  const uint32_t key = dropout_row_key(d.seed, d.b, h, i);
  const T inv = static_cast<T>(d.inv_keep);
  if constexpr (sizeof(T) == 4) {
    constexpr int WF = Vec<float>::kW;
    for (int64_t c = 0; c < BKP; c += WF) {
      const VU x = dropout_bits_vec(key, j0 + c);
      const V<float> keep = (x >= d.threshold) ? (V<float>{} + inv) : V<float>{};
      vstore(dst + c, keep);
    }
  } else {
    for (int64_t c = 0; c < BKP; ++c) dst[c] = dropout_bits(key, j0 + c) >= d.threshold ? inv : T(0);
  }
}

// The scores of a tile row with the disallowed keys at -inf: from the mask tile (1 = allowed) when the tile is
// masked, else the columns c >= C (the padding, or past the diagonal of a plain causal tile); the bf16 path's
// scores are multiplied by sscale first (alpha; the fp32 path folds it into q).
template <typename T>
inline V<T> masked_scores(const T* srow, const T* mrow, int64_t c, int64_t C, T sscale) {
  V<T> x = vload(srow + c);
  if constexpr (kBf16) x *= sscale;
  const V<T> ninf = V<T>{} - __builtin_inf();
  if (mrow) return vload(mrow + c) != T(0) ? x : ninf;
  if (c + Vec<T>::kW <= C) return x;
  V<T> col;
  for (int l = 0; l < Vec<T>::kW; ++l) col[l] = static_cast<T>(c + l);
  return col < static_cast<T>(C) ? x : ninf;
}

// The columns a tile row may see without a mask tile: C, or up to the diagonal under the plain causal mask
// (causal_j0 = j0 >= 0: row i sees key columns c <= i - j0).
inline int64_t row_limit(int64_t C, int64_t causal_j0, int64_t i) {
  if (causal_j0 < 0) return C;
  const int64_t lim = i - causal_j0 + 1;
  return lim < 0 ? 0 : (lim < C ? lim : C);
}

// Online softmax over one head's score tile S [RP x BKP] (mask tile: 1 = allowed; null when the tile needs none:
// every pair allowed or plain causal, see row_limit), in place: S becomes
// exp(s - m) times the dropout keep scale (drop: null without dropout, else BKP scratch; the bf16 path writes it
// as bf16 to Pb [RP x BKP] instead), the running row
// maximum rmax and sum rsum [RP] are updated and O [RP x DVP] is rescaled to the new maximum. A row with no
// allowed key so far keeps m = -inf, sum 0 and contributes 0 (never NaN: its exponent base is 0).
template <typename T>
void softmax_fwd_tile(T* S, const T* mask, int64_t causal_j0, int64_t R, int64_t RP, int64_t C, int64_t BKP,
                      T* rmax, T* rsum, T* O, int64_t DVP, const DropoutTile* drop, T* keep, int64_t h, int64_t i0,
                      int64_t j0, T sscale, uint16_t* Pb) {
  constexpr int W = Vec<T>::kW;
  const T inf = __builtin_inf();
  const V<T> ninf = V<T>{} - inf;
  for (int64_t r = 0; r < RP; ++r) {
    T* srow = S + r * BKP;
    const T* mrow = mask ? mask + r * BKP : nullptr;
    const int64_t lim = row_limit(C, causal_j0, i0 + r);
    V<T> mx = ninf;
    for (int64_t c = 0; c < BKP; c += W) {
      const V<T> x = masked_scores(srow, mrow, c, lim, sscale);
      vstore(srow + c, x);
      mx = x > mx ? x : mx;
    }
    const T m_old = rmax[r], m_tile = hmax<T>(mx), m_new = m_tile > m_old ? m_tile : m_old;
    const T base = m_new == -inf ? T(0) : m_new;
    const T corr = scalar_exp(m_old - base);
    const bool dropped = drop && r < R;
    if (dropped) dropout_row(*drop, h, i0 + r, j0, BKP, keep);
    V<T> sum = V<T>{};
    for (int64_t c = 0; c < BKP; c += W) {
      V<T> p = vexp(vload(srow + c) - base);
      sum += p;
      if (dropped) p *= vload(keep + c);
      if constexpr (kBf16) {
        store_bf16(Pb + r * BKP + c, p);  // the bf16 path's P goes to its GEMM as bf16 only
      } else {
        vstore(srow + c, p);
      }
    }
    rsum[r] = rsum[r] * corr + hsum<T>(sum);
    rmax[r] = m_new;
    if (corr != T(1)) {
      T* orow = O + r * DVP;
      for (int64_t d = 0; d < DVP; d += W) vstore(orow + d, vload(orow + d) * corr);
    }
  }
}

// Backward probabilities of one head's tile: P = exp(s - lse_i) on allowed keys (0 elsewhere, and for a row
// whose lse is +inf), S <- P (undropped) and Pd <- P times the dropout keep scale (Pd = P without dropout),
// keep [RP x BKP] <- the keep scales when dropout is on.
template <typename T>
void softmax_bwd_scores(T* S, T* Pd, T* keep, const T* mask, int64_t causal_j0, const T* lse, int64_t R, int64_t RP,
                        int64_t C, int64_t BKP, const DropoutTile* drop, int64_t h, int64_t i0, int64_t j0, T sscale) {
  constexpr int W = Vec<T>::kW;
  const T inf = __builtin_inf();
  for (int64_t r = 0; r < RP; ++r) {
    const T l = r < R ? lse[r] : inf;
    T* srow = S + r * BKP;
    T* prow = Pd + r * BKP;
    T* krow = keep + r * BKP;
    const T* mrow = mask ? mask + r * BKP : nullptr;
    const int64_t lim = row_limit(C, causal_j0, i0 + r);
    const bool dropped = drop && r < R;
    if (dropped) {
      dropout_row(*drop, h, i0 + r, j0, BKP, krow);
    } else if (drop) {
      for (int64_t c = 0; c < BKP; ++c) krow[c] = T(0);
    }
    for (int64_t c = 0; c < BKP; c += W) {
      const V<T> p = vexp(masked_scores(srow, mrow, c, lim, sscale) - l);
      vstore(srow + c, p);
      vstore(prow + c, dropped ? p * vload(krow + c) : (drop ? V<T>{} : p));
    }
  }
}
