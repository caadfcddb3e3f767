// SPDX-License-Identifier: Apache-2.0
#include "losses/ordinal.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "common/check.h"
#include "common/checked_math.h"
#include "common/cpu_isa.h"
#include "common/parallel.h"
#include "losses/ordinal_math.h"

namespace recops::losses {
namespace {

// log1p(x) for x >= 0 as log(u) * x / (u - 1), u = 1 + x: the rounding of u cancels, leaving a few ulp, and
// log is several times faster than glibc's log1pf (the hot call of this file).
template <typename acc_t>
inline acc_t log1p_pos(acc_t x) {
  const acc_t u = acc_t(1) + x;
  return u == acc_t(1) ? x : std::log(u) * (x / (u - acc_t(1)));
}

// log1mexp(d) = log(1 - exp(-d)) and r = 1 / expm1(d) for d > 0, each from one transcendental pair.
template <typename acc_t>
inline void log1mexp_inv_expm1(acc_t d, acc_t& log1mexp, acc_t& inv_expm1) {
  if (d < acc_t(0.6931471805599453)) {
    const acc_t em = std::expm1(-d);  // in (-1/2, 0): exact where 1 - exp(-d) would cancel
    log1mexp = std::log(-em);
    inv_expm1 = (acc_t(1) + em) / -em;
  } else {
    const acc_t e = std::exp(-d);
    log1mexp = std::log1p(-e);
    inv_expm1 = e / (acc_t(1) - e);
  }
}

// softplus(x) = -logsigmoid(-x) and sigmoid(x) of x = sign * z from the pre-pass values e = exp(-|z|) and
// l = log1p(e) (never overflows).
template <typename acc_t>
inline void softplus_sigmoid(acc_t z, acc_t e, acc_t l, bool negate, acc_t& softplus, acc_t& sigmoid) {
  const acc_t x = negate ? -z : z;
  softplus = std::max(x, acc_t(0)) + l;
  sigmoid = (x >= 0 ? acc_t(1) : e) / (acc_t(1) + e);
}

// The pre-pass: e[i] = exp(-|z[i]|), l[i] = log1p(e[i]); float32 runs the vectorised per-ISA kernels.
inline void exp_log1p(const float* z, int64_t n, float* e, float* l) {
  isa_pick(&generic::exp_log1p, &avx2::exp_log1p)(z, n, e, l);
}
inline void log1mexp_batch(const float* d, int64_t n, float* l1m, float* inv) {
  isa_pick(&generic::log1mexp, &avx2::log1mexp)(d, n, l1m, inv);
}
inline void log1mexp_batch(const double* d, int64_t n, double* l1m, double* inv) {
  for (int64_t i = 0; i < n; ++i) log1mexp_inv_expm1(d[i], l1m[i], inv[i]);
}
inline void exp_log1p(const double* z, int64_t n, double* e, double* l) {
  for (int64_t i = 0; i < n; ++i) {
    e[i] = std::exp(-std::abs(z[i]));
    l[i] = log1p_pos(e[i]);
  }
}

// Loss of one sample at level k in [0, T] given z [T], and dL/dz into dz [T] (when non-null). Only
// z[0, min(k + 1, T)) is read and only dz[0, min(k + 1, T)) is written: higher levels do not enter the loss.
// See ordinal.h for the formulas.
template <typename acc_t>
acc_t sample_nll(const acc_t* z, const acc_t* e, const acc_t* l, int64_t num_levels, int64_t k, bool nested,
                 acc_t min_gap, acc_t l1m, acc_t inv, acc_t* dz) {
  const int64_t t_max = num_levels;
  if (t_max == 0) return 0;
  if (dz) std::fill(dz, dz + std::min(k + 1, t_max), acc_t(0));
  acc_t sp, sig, loss = 0;
  if (k == 0) {
    const acc_t mult = nested ? acc_t(t_max) : acc_t(1);
    softplus_sigmoid(z[0], e[0], l[0], false, sp, sig);
    if (dz) dz[0] = mult * sig;
    return mult * sp;
  }
  // -logsigmoid(z_s) for s <= k (nested) or s = k = T (plain): softplus(-z), d/dz = -sigmoid(-z).
  for (int64_t s = nested ? 1 : (k == t_max ? k : k + 1); s <= k; ++s) {
    softplus_sigmoid(z[s - 1], e[s - 1], l[s - 1], true, sp, sig);
    loss += sp;
    if (dz) dz[s - 1] = -sig;
  }
  if (k < t_max) {
    const acc_t mult = nested ? acc_t(t_max - k) : acc_t(1);
    const acc_t a = z[k - 1], b = z[k];
    acc_t sp_a, sig_a, sp_b, sig_b;
    softplus_sigmoid(a, e[k - 1], l[k - 1], true, sp_a, sig_a);  // -logsigmoid(a), sigmoid(-a)
    softplus_sigmoid(b, e[k], l[k], false, sp_b, sig_b);        // -logsigmoid(-b), sigmoid(b)
    const acc_t gap = a - b;
    if (!(gap >= min_gap)) inv = 0;  // clamped: the frozen log1mexp term passes no gradient
    loss += mult * (sp_a + sp_b - l1m);
    if (dz) {
      dz[k - 1] -= mult * (sig_a + inv);
      dz[k] += mult * (sig_b + inv);
    }
  }
  return loss;
}

void check_common(const char* op, int64_t num_samples, double min_gap, Reduction reduction,
                  int64_t grad_loss_stride) {
  RECOPS_CHECK(num_samples >= 0, op, ": batch size must be >= 0, got ", num_samples);
  RECOPS_CHECK(min_gap > 0 && std::isfinite(min_gap), op, ": min_gap must be finite and > 0, got ", min_gap);
  RECOPS_CHECK(reduction == Reduction::kNone || reduction == Reduction::kSum || reduction == Reduction::kMean,
               op, ": reduction must be 0 (none), 1 (sum) or 2 (mean), got ", static_cast<int>(reduction));
  RECOPS_CHECK(grad_loss_stride == 0 || grad_loss_stride == 1, op, ": grad_loss_stride must be 0 or 1, got ",
               grad_loss_stride);
}

// Throws naming the lowest b with labels[b] outside [0, hi]. Parallel scan, serial throw.
void check_labels(const char* op, const char* arg, const int64_t* labels, int64_t num_samples, int64_t hi,
                  int num_threads) {
  const int64_t nblocks = (num_samples + kLossBlock - 1) / kLossBlock;
  std::vector<int64_t> first_bad(nblocks, -1);
  parallel_for(0, nblocks, 16, num_threads, [&](int64_t k0, int64_t k1) {
    for (int64_t blk = k0; blk < k1; ++blk) {
      const int64_t end = std::min(num_samples, (blk + 1) * kLossBlock);
      for (int64_t b = blk * kLossBlock; b < end; ++b) {
        if (labels[b] < 0 || labels[b] > hi) {
          first_bad[blk] = b;
          break;
        }
      }
    }
  });
  for (int64_t blk = 0; blk < nblocks; ++blk) {
    const int64_t b = first_bad[blk];
    RECOPS_CHECK(b < 0, op, ": ", arg, "[", b, "] must be in [0, ", hi + 1, "), got ", b < 0 ? 0 : labels[b]);
  }
}

// Adds the per-block partials [nblocks][stride] in block order (deterministic for any thread count): entry 0 is the
// weighted loss (reduced into loss[0] unless reduction is none), entries 1.. the parameter gradients (out).
template <typename scalar_t>
void finish_partials(const std::vector<double>& partials, int64_t nblocks, int64_t stride, Reduction reduction,
                     int64_t num_samples, bool with_grad, scalar_t* loss, scalar_t* out) {
  std::vector<double> total(static_cast<size_t>(stride), 0.0);
  for (int64_t blk = 0; blk < nblocks; ++blk) {
    for (int64_t i = 0; i < stride; ++i) total[i] += partials[blk * stride + i];
  }
  if (reduction != Reduction::kNone) {
    loss[0] = static_cast<scalar_t>(reduction == Reduction::kMean && num_samples > 0 ? total[0] / num_samples
                                                                                     : total[0]);
  }
  if (with_grad) {
    for (int64_t i = 1; i < stride; ++i) out[i - 1] = static_cast<scalar_t>(total[i]);
  }
}

// The shared driver: per block, z_fn(b, z) fills z [T] for sample b, and sink(b, m_b, dz) scatters the
// per-sample gradient (dz = dL_b/dz, m_b its multiplier) into per-sample outputs and the block's partial
// sums `part` [1 + P] (part[0] is the weighted loss). Partials are added in block order afterwards.
template <typename scalar_t, typename ZFn, typename SinkFn>
void run_blocks(const char* op, int64_t num_samples, int64_t num_levels, int64_t num_partials,
                const int64_t* levels, const scalar_t* weights, Reduction reduction, double min_gap,
                bool nested, const scalar_t* grad_loss, int64_t grad_loss_stride, bool with_grad, scalar_t* loss,
                int num_threads, const ZFn& z_fn, const SinkFn& sink, scalar_t* partial_out) {
  using acc_t = scalar_t;
  const int64_t nblocks = (num_samples + kLossBlock - 1) / kLossBlock;
  const int64_t stride = 1 + num_partials;
  checked_mul(checked_mul(nblocks, stride, op), 8, op);
  std::vector<double> partials(nblocks * stride, 0.0);
  const int64_t block_elems = checked_mul(kLossBlock, num_levels, op);
  const acc_t inv_b = reduction == Reduction::kMean && num_samples > 0 ? acc_t(1) / acc_t(num_samples) : 1;
  const acc_t gap = static_cast<acc_t>(min_gap);
  parallel_for(0, nblocks, 1, num_threads, [&](int64_t k0, int64_t k1) {
    // Per thread: z, exp(-|z|) and log1p of a whole block (sample-major), then dz of one sample. Entries a
    // sample's z_fn leaves unset are never read; zero-initialised so the pre-pass sees finite numbers.
    // Plus, per sample, the clamped gap of the log(sigma(a) - sigma(b)) term and its log1mexp / 1/expm1.
    std::vector<acc_t> buf(3 * block_elems + 3 * kLossBlock + num_levels, acc_t(0));
    acc_t* zb = buf.data();
    acc_t* eb = zb + block_elems;
    acc_t* lb = eb + block_elems;
    acc_t* gb = lb + block_elems;
    acc_t* l1mb = gb + kLossBlock;
    acc_t* invb = l1mb + kLossBlock;
    acc_t* dz = with_grad ? invb + kLossBlock : nullptr;
    for (int64_t blk = k0; blk < k1; ++blk) {
      double* part = partials.data() + blk * stride;
      const int64_t begin = blk * kLossBlock, end = std::min(num_samples, (blk + 1) * kLossBlock);
      for (int64_t b = begin; b < end; ++b) z_fn(b, zb + (b - begin) * num_levels);
      exp_log1p(zb, (end - begin) * num_levels, eb, lb);
      // Samples without the term get a harmless gap of 1. An infinite score makes z_{k-1} - z_k = inf - inf
      // (NaN) where the true gap is finite: the clamped gap keeps the limit (loss +inf, finite gradient).
      for (int64_t b = begin; b < end; ++b) {
        const int64_t k = levels[b], o = (b - begin) * num_levels;
        const acc_t d = k >= 1 && k < num_levels ? zb[o + k - 1] - zb[o + k] : acc_t(1);
        gb[b - begin] = std::isnan(d) ? gap : std::max(d, gap);
      }
      log1mexp_batch(gb, end - begin, l1mb, invb);
      double loss_sum = 0;
      for (int64_t b = begin; b < end; ++b) {
        const int64_t o = (b - begin) * num_levels;
        const acc_t w = weights ? weights[b] : acc_t(1);
        const acc_t l = w * sample_nll<acc_t>(zb + o, eb + o, lb + o, num_levels, levels[b], nested, gap,
                                                  l1mb[b - begin], invb[b - begin], dz);
        if (reduction == Reduction::kNone) loss[b] = static_cast<scalar_t>(l);
        else loss_sum += l;
        if (with_grad) {
          const acc_t g = grad_loss ? static_cast<acc_t>(grad_loss[b * grad_loss_stride]) : acc_t(1);
          sink(b, w * g * inv_b, dz, part + 1);
        }
      }
      part[0] = loss_sum;
    }
  });
  finish_partials(partials, nblocks, stride, reduction, num_samples, with_grad, loss, partial_out);
}

// float32 GNOLR (cos) or proportional odds (scores, cos null) with 1 <= T <= kGnolrMaxFused: the fused
// vectorised block kernel (ordinal_math_impl.h), blocks of kLossBlock samples over the threads, block partials
// added in block order (deterministic). grad_params: [2T] = d gamma (GNOLR only), d thresholds.
void fused_blocks(const float* cos, const float* scores, int64_t num_samples, int64_t num_levels,
                 const float* gamma, const float* thresholds, const int64_t* levels, const float* weights,
                 Reduction reduction, double min_gap, bool nested, const float* grad_loss, int64_t grad_loss_stride,
                 bool with_grad, float* loss, float* grad_cos, float* grad_params, int num_threads) {
  const int64_t nblocks = (num_samples + kLossBlock - 1) / kLossBlock;
  const int64_t stride = 1 + 2 * num_levels;
  std::vector<double> partials(static_cast<size_t>(nblocks * stride), 0.0);
  const auto gnolr_block = isa_pick(&generic::gnolr_block, &avx2::gnolr_block);
  parallel_for(0, nblocks, 1, num_threads, [&](int64_t k0, int64_t k1) {
    std::vector<float> scratch(static_cast<size_t>((4 + 3 * num_levels) * kLossBlock));
    for (int64_t blk = k0; blk < k1; ++blk) {
      const int64_t begin = blk * kLossBlock, n = std::min(num_samples, begin + kLossBlock) - begin;
      GnolrBlock b;
      b.cos = cos ? cos + begin * num_levels : nullptr;
      b.scores = scores ? scores + begin : nullptr;
      b.levels = levels + begin;
      b.weights = weights ? weights + begin : nullptr;
      b.grad_loss = grad_loss ? grad_loss + begin * grad_loss_stride : nullptr;
      b.grad_loss_stride = grad_loss_stride;
      b.gamma = gamma;
      b.thresholds = thresholds;
      b.n = n;
      b.num_levels = num_levels;
      b.inv_b = reduction == Reduction::kMean && num_samples > 0 ? 1.0f / static_cast<float>(num_samples) : 1.0f;
      b.min_gap = static_cast<float>(min_gap);
      b.nested = nested;
      b.with_grad = with_grad;
      b.loss = reduction == Reduction::kNone ? loss + begin : nullptr;
      b.grad_cos = with_grad ? grad_cos + begin * (scores ? 1 : num_levels) : nullptr;
      b.scratch = scratch.data();
      b.part = partials.data() + blk * stride;
      gnolr_block(b);
    }
  });
  finish_partials(partials, nblocks, stride, reduction, num_samples, with_grad, loss, grad_params);
}

}  // namespace

template <typename scalar_t>
void check_ordinal_data(const char* op, const char* arg, const int64_t* labels, int64_t num_samples, int64_t hi,
                        const scalar_t* thresholds, int64_t num_thresholds, int num_threads) {
  for (int64_t t = 0; thresholds != nullptr && t + 1 < num_thresholds; ++t) {
    RECOPS_CHECK(thresholds[t] < thresholds[t + 1], op, ": thresholds must be strictly increasing, got thresholds[",
                 t, "]=", thresholds[t], " >= thresholds[", t + 1, "]=", thresholds[t + 1]);
  }
  check_labels(op, arg, labels, num_samples, hi, num_threads);
}

template void check_ordinal_data<float>(const char*, const char*, const int64_t*, int64_t, int64_t, const float*,
                                        int64_t, int);
template void check_ordinal_data<double>(const char*, const char*, const int64_t*, int64_t, int64_t, const double*,
                                         int64_t, int);

namespace {

template <typename scalar_t>
void ordinal_logistic_loss_typed(const scalar_t* scores, int64_t num_samples, const scalar_t* thresholds,
                           int64_t num_thresholds, const int64_t* labels, const scalar_t* weights,
                           Reduction reduction, double min_gap, const scalar_t* grad_loss,
                           int64_t grad_loss_stride, bool with_grad, scalar_t* loss, scalar_t* grad_scores,
                           scalar_t* grad_thresholds, int num_threads) {
  constexpr const char* kOp = "ordinal_logistic_loss";
  check_common(kOp, num_samples, min_gap, reduction, grad_loss_stride);
  RECOPS_CHECK(num_thresholds >= 0, kOp, ": thresholds size must be >= 0, got ", num_thresholds);
  check_ordinal_data(kOp, "labels", labels, num_samples, num_thresholds, thresholds, num_thresholds, num_threads);
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (num_thresholds >= 1 && num_thresholds <= kGnolrMaxFused) {
      std::vector<float> both(with_grad ? 2 * num_thresholds : 0);
      fused_blocks(nullptr, scores, num_samples, num_thresholds, /*gamma=*/nullptr, thresholds, labels, weights,
                   reduction, min_gap, /*nested=*/false, grad_loss, grad_loss_stride, with_grad, loss, grad_scores,
                   both.data(), num_threads);
      if (with_grad) std::copy(both.begin() + num_thresholds, both.end(), grad_thresholds);
      return;
    }
  }
  using acc_t = scalar_t;
  // z_t = f - theta_t; only the one or two z next to the label enter the loss.
  auto z_fn = [&](int64_t b, acc_t* z) {
    const int64_t k = labels[b];
    const acc_t f = scores[b];
    if (k > 0) z[k - 1] = f - thresholds[k - 1];
    if (k < num_thresholds) z[k] = f - thresholds[k];
  };
  auto sink = [&](int64_t b, acc_t m, const acc_t* dz, double* part) {
    const int64_t k = labels[b];
    acc_t g = 0;
    if (k > 0) {
      g += dz[k - 1];
      part[k - 1] -= m * dz[k - 1];
    }
    if (k < num_thresholds) {
      g += dz[k];
      part[k] -= m * dz[k];
    }
    grad_scores[b] = static_cast<scalar_t>(m * g);
  };
  run_blocks<scalar_t>(kOp, num_samples, num_thresholds, num_thresholds, labels, weights, reduction, min_gap,
                       /*nested=*/false, grad_loss, grad_loss_stride, with_grad, loss, num_threads, z_fn, sink,
                       grad_thresholds);
}

template <typename scalar_t>
void gnolr_loss_typed(const scalar_t* cos, int64_t num_samples, int64_t num_levels, const scalar_t* gamma,
                const scalar_t* thresholds, const int64_t* levels, const scalar_t* weights, Reduction reduction,
                double min_gap, bool nested, const scalar_t* grad_loss, int64_t grad_loss_stride,
                bool with_grad, scalar_t* loss, scalar_t* grad_cos, scalar_t* grad_gamma, scalar_t* grad_thresholds,
                int num_threads) {
  constexpr const char* kOp = "gnolr_loss";
  check_common(kOp, num_samples, min_gap, reduction, grad_loss_stride);
  RECOPS_CHECK(num_levels >= 0, kOp, ": number of levels T must be >= 0, got ", num_levels);
  checked_mul(num_samples, num_levels, kOp);
  check_ordinal_data<scalar_t>(kOp, "levels", levels, num_samples, num_levels, nullptr, 0, num_threads);
  using acc_t = scalar_t;
  const int64_t t_all = num_levels;
  // Levels above k + 1 never enter the loss: z is built only up to min(k + 1, T).
  auto z_fn = [&](int64_t b, acc_t* z) {
    const scalar_t* c = cos + b * t_all;
    const int64_t t_end = std::min(levels[b] + 1, t_all);
    acc_t s = 0;
    for (int64_t t = 0; t < t_end; ++t) {
      s += gamma[t] * c[t];
      z[t] = s - thresholds[t];
    }
  };
  // grad_gamma partials at part[0, T), grad_thresholds partials at part[T, 2T).
  auto sink = [&](int64_t b, acc_t m, const acc_t* dz, double* part) {
    const scalar_t* c = cos + b * t_all;
    scalar_t* gc = grad_cos + b * t_all;
    const int64_t t_end = std::min(levels[b] + 1, t_all);
    for (int64_t t = t_end; t < t_all; ++t) gc[t] = 0;
    acc_t suffix = 0;
    for (int64_t t = t_end - 1; t >= 0; --t) {
      suffix += dz[t];
      const acc_t ms = m * suffix;
      gc[t] = static_cast<scalar_t>(ms * gamma[t]);
      part[t] += ms * c[t];
      part[t_all + t] -= m * dz[t];
    }
  };
  std::vector<scalar_t> both(with_grad ? 2 * t_all : 0);
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (num_levels >= 1 && num_levels <= kGnolrMaxFused) {
      fused_blocks(cos, nullptr, num_samples, num_levels, gamma, thresholds, levels, weights, reduction, min_gap,
                   nested, grad_loss, grad_loss_stride, with_grad, loss, grad_cos, both.data(), num_threads);
      if (with_grad) {
        std::copy(both.begin(), both.begin() + t_all, grad_gamma);
        std::copy(both.begin() + t_all, both.end(), grad_thresholds);
      }
      return;
    }
  }
  run_blocks<scalar_t>(kOp, num_samples, num_levels, 2 * num_levels, levels, weights, reduction, min_gap, nested,
                       grad_loss, grad_loss_stride, with_grad, loss, num_threads, z_fn, sink, both.data());
  if (with_grad) {
    std::copy(both.begin(), both.begin() + t_all, grad_gamma);
    std::copy(both.begin() + t_all, both.end(), grad_thresholds);
  }
}

}  // namespace

template <typename scalar_t>
void ordinal_logistic_loss(const OrdinalParams& p, int num_threads) {
  using S = scalar_t;
  ordinal_logistic_loss_typed<S>(static_cast<const S*>(p.scores), p.num_samples,
                                 static_cast<const S*>(p.thresholds), p.num_thresholds, p.labels, static_cast<const S*>(p.weights), p.reduction,
                                 p.min_gap, static_cast<const S*>(p.grad_loss), p.grad_loss_stride, p.with_grad,
                                 static_cast<S*>(p.loss), static_cast<S*>(p.grad_scores),
                                 static_cast<S*>(p.grad_thresholds), num_threads);
}

template <typename scalar_t>
void gnolr_loss(const GnolrParams& p, int num_threads) {
  using S = scalar_t;
  gnolr_loss_typed<S>(static_cast<const S*>(p.cos), p.num_samples, p.num_levels, static_cast<const S*>(p.gamma),
                      static_cast<const S*>(p.thresholds), p.labels, static_cast<const S*>(p.weights), p.reduction,
                      p.min_gap, p.nested, static_cast<const S*>(p.grad_loss), p.grad_loss_stride, p.with_grad,
                      static_cast<S*>(p.loss), static_cast<S*>(p.grad_cos), static_cast<S*>(p.grad_gamma),
                      static_cast<S*>(p.grad_thresholds), num_threads);
}

#define RECOPS_INSTANTIATE(S)                                     \
  template void ordinal_logistic_loss<S>(const OrdinalParams&, int); \
  template void gnolr_loss<S>(const GnolrParams&, int);
RECOPS_INSTANTIATE(float)
RECOPS_INSTANTIATE(double)
#undef RECOPS_INSTANTIATE

}  // namespace recops::losses
