// SPDX-License-Identifier: Apache-2.0
// float32 math of the ordinal losses, compiled once per instruction set: the including .cpp defines
// RECOPS_LOSS_ISA (the namespace) and sets `#pragma GCC target`. Everything runs on 8-lane vectors: the
// transcendental pre-pass of the scalar path (exp_log1p, log1mexp) and the fused GNOLR / proportional-odds block.
#include "losses/ordinal_math.h"  // and through it every standard header used here

namespace recops::losses::RECOPS_LOSS_ISA {
namespace {

#include "common/simd_math.inc"

// Sum of x[0, n) in double, four lanes at a time (a fixed order: deterministic for any thread count).
inline double sum_double(const float* x, int64_t n) {
  double lane[4] = {0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    for (int j = 0; j < 4; ++j) lane[j] += static_cast<double>(x[i + j]);
  }
  for (; i < n; ++i) lane[0] += static_cast<double>(x[i]);
  return (lane[0] + lane[1]) + (lane[2] + lane[3]);
}

// Eight float lanes (GCC vector extensions: AVX2 registers in the avx2 build, pairs of SSE registers in the
// generic one). Every helper is branch-free straight-line code with selects.
typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

inline v8f splat(float x) { return v8f{} + x; }
inline v8f sel(v8i m, v8f a, v8f b) { return m ? a : b; }

inline v8f vexp_nonpos(v8f x) { return simd_exp(x); }  // exp(x) for x <= 0 (simd_math.inc)
inline v8f vlog_1_2(v8f u) { return simd_log_1_2(u); }   // log(u) for u in [1, 2]
inline v8f vlog_0_1(v8f x) { return simd_log(x); }        // log(x) for x in (0, 1], subnormals included

// expm1(x) for x in [-ln 2, 0]: Taylor series to x^10 (truncation below 1e-8 relative there).
inline v8f vexpm1_small(v8f x) {
  v8f p = splat(2.7557319224e-7f);
  p = p * x + 2.7557319224e-6f;
  p = p * x + 2.4801587302e-5f;
  p = p * x + 1.9841269841e-4f;
  p = p * x + 1.3888888889e-3f;
  p = p * x + 8.3333333333e-3f;
  p = p * x + 4.1666666667e-2f;
  p = p * x + 1.6666666667e-1f;
  p = p * x + 0.5f;
  p = p * x + 1.0f;
  return p * x;
}

// log1mexp(d) = log(1 - exp(-d)) and inv = 1 / expm1(d) for d > 0: -expm1(-d) = 1 - exp(-d) from the series
// where it would cancel (d < ln 2), from exp beyond (>= 1/2 there).
inline void vlog1mexp(v8f d, v8f& l1m, v8f& inv) {
  const v8f x = -d;
  const v8f em_small = vexpm1_small(sel(x < -0.69314718f, splat(-0.69314718f), x));
  const v8f em = sel(d < 0.69314718f, em_small, vexp_nonpos(x) - 1.0f);  // in [-1, 0)
  l1m = vlog_0_1(-em);
  inv = (1.0f + em) / -em;
}

inline bool any(v8i m) {
  int32_t acc = 0;
  for (int j = 0; j < 8; ++j) acc |= m[j];
  return acc != 0;
}

// softplus(+-z) and sigmoid(+-z) from e = exp(-|z|): log1p(e) = log(u) + (e - (u - 1)) / u with u = 1 + e (the
// first-order correction restores what rounding u lost), and 1 / u shared with the sigmoids.
struct Soft {
  v8f spn, spp, sgn, sgp;  // softplus(-z) = -logsigmoid(z), softplus(z), sigmoid(-z), sigmoid(z)
};

inline Soft soft(v8f z) {
  const v8i pos = z >= 0.0f;
  const v8f e = vexp_nonpos(sel(pos, -z, z));
  const v8f u = 1.0f + e;
  const v8f r = 1.0f / u;
  const v8f l = vlog_1_2(u) + (e - (u - 1.0f)) * r;
  const v8f zero{}, one = splat(1.0f);
  return Soft{sel(z < 0.0f, -z, zero) + l, sel(z > 0.0f, z, zero) + l, sel(pos, e, one) * r, sel(pos, one, e) * r};
}

inline v8f load8(const float* p) {
  v8f v;
  std::memcpy(&v, p, 32);
  return v;
}

// Eight samples at a time over structure-of-arrays copies of the block (cos transposed to [T][n8], levels as
// floats), so every vector load and store is whole; the padding lanes past n get level 0, cos 0 and weight 0
// (finite, and dropped from every sum and output).
template <int T>
void gnolr_block_t(const GnolrBlock& bk) {
  const int64_t n = bk.n;
  const int64_t n8 = (n + 7) / 8 * 8;
  float* lsum = bk.scratch;  // [n8] weighted loss per sample
  float* kf = lsum + n8;     // [n8] level
  float* wf = kf + n8;       // [n8] weight
  float* gf = wf + n8;       // [n8] upstream gradient
  float* ct = gf + n8;       // [T][n8] cos, overwritten by grad_cos
  float* pg = ct + T * n8;   // [T][n8] d gamma terms
  float* pt = pg + T * n8;   // [T][n8] d thresholds terms
  for (int64_t i = 0; i < n8; ++i) {
    const bool in = i < n;
    kf[i] = in ? static_cast<float>(bk.levels[i]) : 0.0f;
    wf[i] = in ? (bk.weights ? bk.weights[i] : 1.0f) : 0.0f;
    gf[i] = in && bk.grad_loss ? bk.grad_loss[i * bk.grad_loss_stride] : 1.0f;
    if (bk.scores) {
      ct[i] = in ? bk.scores[i] : 0.0f;
    } else {
      for (int t = 0; t < T; ++t) ct[t * n8 + i] = in ? bk.cos[i * T + t] : 0.0f;
    }
  }
  const bool olr = bk.scores != nullptr;
  v8f gam[T], th[T];
  for (int t = 0; t < T; ++t) {
    gam[t] = splat(bk.gamma ? bk.gamma[t] : 0.0f);  // no gamma in the proportional-odds mode
    th[t] = splat(bk.thresholds[t]);
  }
  const float tf = static_cast<float>(T);
  const v8f gap_min = splat(bk.min_gap), zero{}, one = splat(1.0f);
  for (int64_t i = 0; i < n8; i += 8) {
    const v8f k = load8(kf + i), w = load8(wf + i), g = load8(gf + i);
    v8f c[T];
    for (int t = 0; t < T; ++t) c[t] = olr ? zero : load8(ct + t * n8 + i);
    const v8f f = olr ? load8(ct + i) : zero;
    v8f z[T];
    v8f s = zero;
    for (int t = 0; t < T; ++t) {
      s += gam[t] * c[t];
      z[t] = (olr ? f : s) - th[t];
    }
    v8f loss = zero, dz[T];
    for (int t = 0; t < T; ++t) dz[t] = zero;
    const v8i k0 = k == 0.0f;
    const v8i has = (k >= 1.0f) & (k < tf);  // samples with the -log(sigmoid(z_k) - sigmoid(z_{k+1})) term
    v8f za = zero, zb = zero;                // z_k and z_{k+1} (1-based), where they exist
    for (int t = 0; t < T; ++t) {
      za = sel(k == static_cast<float>(t + 1), z[t], za);
      zb = sel(k == static_cast<float>(t), z[t], zb);
    }
    v8f spa = zero, sga = zero, spb = zero, sgb = zero;  // softplus(-z_k), sigmoid(-z_k); softplus, sigmoid(z_{k+1})
    if (bk.nested && !olr) {  // -logsigmoid(z_s) for s <= k; k = 0: -T logsigmoid(-z_1)
      for (int t = 0; t < T; ++t) {
        const Soft sf = soft(z[t]);
        const v8i on = k >= static_cast<float>(t + 1);
        loss += sel(on, sf.spn, zero);
        dz[t] = sel(on, -sf.sgn, zero);
        if (t == 0) {
          loss = sel(k0, tf * sf.spp, loss);
          dz[0] = sel(k0, tf * sf.sgp, dz[0]);
        }
        spa = sel(k == static_cast<float>(t + 1), sf.spn, spa);
        sga = sel(k == static_cast<float>(t + 1), sf.sgn, sga);
        spb = sel(k == static_cast<float>(t), sf.spp, spb);
        sgb = sel(k == static_cast<float>(t), sf.sgp, sgb);
      }
    } else {  // plain likelihood: only z_k and z_{k+1} enter; k = 0: -logsigmoid(-z_1); k = T: -logsigmoid(z_T)
      const Soft fa = soft(za), fb = soft(zb);
      spa = fa.spn;
      sga = fa.sgn;
      spb = fb.spp;
      sgb = fb.sgp;
      const v8i kt = k == tf;
      loss = sel(k0, spb, sel(kt, spa, zero));
      for (int t = 0; t < T; ++t) {
        dz[t] = sel(k0 & (k == static_cast<float>(t)), sgb, zero) +
                sel(kt & (k == static_cast<float>(t + 1)), -sga, zero);
      }
    }
    if (T >= 2 && any(has)) {  // the clamped log-difference term (most groups of 8 at low levels skip it)
      const v8f mult = bk.nested && !olr ? tf - k : one;
      const v8f gap0 = za - zb;
      const v8i open = gap0 >= gap_min;
      const v8f gap = sel(open, gap0, gap_min);
      v8f l1m, inv;
      vlog1mexp(gap, l1m, inv);
      inv = sel(open, inv, zero);  // clamped: the frozen term passes no gradient
      loss += sel(has, mult * (spa + spb - l1m), zero);
      for (int t = 0; t < T; ++t) {
        dz[t] += sel(has & (k == static_cast<float>(t + 1)), -mult * (sga + inv), zero);
        dz[t] += sel(has & (k == static_cast<float>(t)), mult * (sgb + inv), zero);
      }
    }
    std::memcpy(lsum + i, &(loss *= w), 32);
    if (bk.with_grad) {
      const v8f m = w * g * bk.inv_b;
      if (olr) {  // d f = sum_t dz_t, d theta_t = -dz_t
        v8f sum = zero;
        for (int t = 0; t < T; ++t) {
          sum += dz[t];
          const v8f ptt = -m * dz[t];
          std::memcpy(pt + t * n8 + i, &ptt, 32);
        }
        const v8f gf8 = m * sum;
        std::memcpy(ct + i, &gf8, 32);
        continue;
      }
      v8f suf = zero, gc[T];
      for (int t = T - 1; t >= 0; --t) {
        suf += dz[t];
        const v8f ms = m * suf;
        gc[t] = ms * gam[t];
        const v8f pgt = sel(k >= static_cast<float>(t), ms * c[t], zero);  // levels above k + 1 are unused
        const v8f ptt = -m * dz[t];
        std::memcpy(pg + t * n8 + i, &pgt, 32);
        std::memcpy(pt + t * n8 + i, &ptt, 32);
      }
      for (int t = 0; t < T; ++t) std::memcpy(ct + t * n8 + i, &gc[t], 32);
    }
  }
  if (bk.with_grad && olr) {
    std::memcpy(bk.grad_cos, ct, static_cast<size_t>(n) * sizeof(float));
  } else if (bk.with_grad) {
    for (int64_t i = 0; i < n; ++i) {
      for (int t = 0; t < T; ++t) bk.grad_cos[i * T + t] = ct[t * n8 + i];
    }
  }
  if (bk.loss) {
    std::memcpy(bk.loss, lsum, static_cast<size_t>(n) * sizeof(float));
  } else {
    bk.part[0] += sum_double(lsum, n);
  }
  if (bk.with_grad) {
    for (int t = 0; t < T; ++t) {
      if (!olr) bk.part[1 + t] += sum_double(pg + t * n8, n);
      bk.part[1 + T + t] += sum_double(pt + t * n8, n);
    }
  }
}

// Runs fn(in, out) over x[0, n) eight at a time, the last partial group through padded copies (padding 1.0f:
// finite for every helper).
template <typename Fn>
void for_groups(const float* x, int64_t n, float* out0, float* out1, Fn fn) {
  for (int64_t i = 0; i < n; i += 8) {
    const int64_t len = std::min<int64_t>(8, n - i);
    v8f in = splat(1.0f), a, b;
    std::memcpy(&in, x + i, static_cast<size_t>(len) * sizeof(float));
    fn(in, a, b);
    std::memcpy(out0 + i, &a, static_cast<size_t>(len) * sizeof(float));
    std::memcpy(out1 + i, &b, static_cast<size_t>(len) * sizeof(float));
  }
}

}  // namespace

void exp_log1p(const float* z, int64_t n, float* e, float* l) {
  for_groups(z, n, e, l, [](v8f zz, v8f& ee, v8f& ll) {
    ee = vexp_nonpos(sel(zz >= 0.0f, -zz, zz));  // exp(-|z|) (NaN stays NaN)
    const v8f u = 1.0f + ee;
    ll = vlog_1_2(u) + (ee - (u - 1.0f)) / u;  // log1p(e): the correction restores what rounding u lost
  });
}

void log1mexp(const float* d, int64_t n, float* log1mexp, float* inv_expm1) {
  for_groups(d, n, log1mexp, inv_expm1, vlog1mexp);
}

bool gnolr_block(const GnolrBlock& b) {
  switch (b.num_levels) {
    case 1: gnolr_block_t<1>(b); return true;
    case 2: gnolr_block_t<2>(b); return true;
    case 3: gnolr_block_t<3>(b); return true;
    case 4: gnolr_block_t<4>(b); return true;
    default: return false;
  }
}

}  // namespace recops::losses::RECOPS_LOSS_ISA
