// SPDX-License-Identifier: Apache-2.0
// Vectorised transcendental pre-pass of the ordinal losses (float32), one build per instruction set.
#pragma once

// The standard headers of ordinal_math_impl.h, included before the ISA files' target pragma.
#include <algorithm>
#include <cstdint>
#include <cstring>

namespace recops::losses {

// e[i] = exp(-|z[i]|) and l[i] = log1p(e[i]) for i < n (about 1-2 ulp; NaN propagates, exp below -87 -> 0).
// From them: softplus(+-z) = max(+-z, 0) + l, sigmoid(z) = (z >= 0 ? 1 : e) / (1 + e).
// log1mexp[i] = log(1 - exp(-d[i])) and inv_expm1[i] = 1 / expm1(d[i]) for d[i] > 0 (finite).
//
// gnolr_block: the whole float32 GNOLR loss (or, with `scores`, the proportional-odds loss) and gradient of one
// block of n <= kLossBlock samples with T = num_levels in [1, kGnolrMaxFused], in one branch-free pass over the
// samples (structure of arrays, every level of every sample computed and the ones a sample's level does not use
// selected away), so the loop vectorises. Same formulas and clamp as the scalar path in ordinal.cpp; returns false
// (doing nothing) for T outside the range.
constexpr int kGnolrMaxFused = 4;

struct GnolrBlock {
  const float* cos = nullptr;        // [n, T] (GNOLR), or null with scores set (proportional odds)
  const float* scores = nullptr;     // [n]: ordinal_logistic_loss, z_t = f - theta_t, plain (not nested)
  const int64_t* levels = nullptr;   // [n], already checked to lie in [0, T]
  const float* weights = nullptr;    // [n] or null
  const float* grad_loss = nullptr;  // [n * grad_loss_stride] or null (= 1)
  int64_t grad_loss_stride = 0;
  const float* gamma = nullptr;      // [T] (null in the proportional-odds mode)
  const float* thresholds = nullptr; // [T]
  int64_t n = 0, num_levels = 0;
  float inv_b = 1.0f, min_gap = 0.0f;
  bool nested = true, with_grad = false;
  float* loss = nullptr;      // [n] per-sample weighted loss (reduction none) or null (summed into part[0])
  float* grad_cos = nullptr;  // [n, T] when with_grad ([n] d scores in the proportional-odds mode)
  float* scratch = nullptr;   // (4 + 3T) * (n rounded up to 8) floats
  double* part = nullptr;     // [1 + 2T]: loss sum, d gamma partials, d thresholds partials (added to)
};

#define RECOPS_LOSS_DECLARE(isa)                                               \
  namespace isa {                                                              \
  void exp_log1p(const float* z, int64_t n, float* e, float* l);               \
  void log1mexp(const float* d, int64_t n, float* log1mexp, float* inv_expm1); \
  bool gnolr_block(const GnolrBlock& b);                                       \
  }
RECOPS_LOSS_DECLARE(generic)
RECOPS_LOSS_DECLARE(avx2)
#undef RECOPS_LOSS_DECLARE

}  // namespace recops::losses
