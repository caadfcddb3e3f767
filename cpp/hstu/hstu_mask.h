// SPDX-License-Identifier: Apache-2.0
// The mask rule of both jagged attention ops (HSTU's pointwise attention and the softmax attention; the
// reference HSTU kernels' rule; docs in cpp/hstu/hstu_attention.h), written once for the CPU kernels and the
// CUDA kernels. With c = contextual_len, n_t = num_targets[b], W = max_attn_len and n rows:
//   m = (c > 0 ? n - c + 1 : n) - n_t;  p(i) = min(c > 0 ? max(i - c + 1, 0) : i, m)
//   causal:        valid(i, j) = i == j || (p(i) - p(j) > 0 && (W == 0 || p(i) - p(j) <= W))
//                               || (c > 0 && p(i) == 0 && p(j) < m)
//   bidirectional: valid(i, j) = i == j || (p(j) < m && (W == 0 || |p(i) - p(j)| <= W))
//                               || (c > 0 && p(i) == 0 && p(j) < m)
// Semi-local attention (F = min_full_attn_seq_len > 0, with W > 0): the rows with p(i) >= m - F (the last F history
// rows and the targets) drop the window, "W == 0 ||" above becoming "W == 0 || (F > 0 && p(i) >= m - F) ||"; the
// reference HSTU kernels' rule.
// Bidirectional keeps the roles of targets and context: every history row sees every history row within the
// two-sided window, targets (p = m) see the history and themselves but no row sees another target.
#pragma once

#include <cmath>
#include <cstdint>

#include "common/host_device.h"

namespace recops::hstu {

struct HstuMask {
  int64_t c, m, window;
  bool causal;
  int64_t full;  // min_full_attn_seq_len (F): rows with p(i) >= m - F ignore the window; 0: none

  RECOPS_HOST_DEVICE static HstuMask make(int64_t contextual_len, int64_t max_attn_len, int64_t n,
                                          int64_t num_targets, bool causal = true, int64_t min_full = 0) {
    return HstuMask{contextual_len, (contextual_len > 0 ? n - contextual_len + 1 : n) - num_targets,
                    max_attn_len, causal, min_full};
  }
  // Row position pi attends without the window (W == 0, or a semi-local full row).
  RECOPS_HOST_DEVICE bool unwindowed(int64_t pi) const { return window == 0 || (full > 0 && pi >= m - full); }
  RECOPS_HOST_DEVICE int64_t p(int64_t i) const {
    const int64_t x = c > 0 ? (i - c + 1 > 0 ? i - c + 1 : 0) : i;
    return x < m ? x : m;
  }
  RECOPS_HOST_DEVICE bool valid(int64_t i, int64_t j) const {
    if (i == j) return true;
    const int64_t pi = p(i), pj = p(j), d = pi - pj;
    const bool free = unwindowed(pi);
    if (causal ? (d > 0 && (free || d <= window)) : (pj < m && (free || (d < 0 ? -d : d) <= window))) {
      return true;
    }
    return c > 0 && pi == 0 && pj < m;
  }
  // The plain causal rule (no context, window or targets): valid(i, j) iff j <= i.
  RECOPS_HOST_DEVICE bool plain_causal(int64_t n) const { return causal && c == 0 && window == 0 && m == n; }
  // Conservative: false only if no pair of rows [i0, i1] x cols [j0, j1] is valid (p is non-decreasing).
  RECOPS_HOST_DEVICE bool any(int64_t i0, int64_t i1, int64_t j0, int64_t j1) const {
    if (i0 <= j1 && j0 <= i1) return true;
    const int64_t pi0 = p(i0), pi1 = p(i1), pj0 = p(j0), pj1 = p(j1);
    const bool free = unwindowed(pi1);  // some row of the block may ignore the window
    if (causal) {
      if (pi1 - pj0 > 0 && (free || pi0 - pj1 <= window)) return true;
    } else if (pj0 < m) {  // the smallest |p(i) - p(j)| over the block: 0 where the p ranges overlap
      const int64_t gap = pj0 > pi1 ? pj0 - pi1 : (pi0 > pj1 ? pi0 - pj1 : 0);
      if (free || gap <= window) return true;
    }
    return c > 0 && pi0 == 0 && pj0 < m;
  }
  // Sufficient: every pair is valid through the causal/window rule.
  RECOPS_HOST_DEVICE bool all(int64_t i0, int64_t i1, int64_t j0, int64_t j1) const {
    const int64_t dmin = p(i0) - p(j1), dmax = p(i1) - p(j0);
    const bool free = unwindowed(p(i0));  // every row of the block ignores the window
    if (causal) return dmin > 0 && (free || dmax <= window);
    const int64_t far = dmax > -dmin ? dmax : -dmin;  // the largest |p(i) - p(j)| over the block
    return p(j1) < m && (free || far <= window);
  }
};

// The time bucket of |t'_i - t_j| = x: clamp(floor(ln(max(x, 1)) / base), 0, num_buckets - 1), ln in double.
// The CPU kernels find the same bucket from precomputed integer thresholds and use this where those end.
RECOPS_HOST_DEVICE int64_t time_bucket_formula(double x, double base, int64_t num_buckets) {
  const double k = floor(log(x < 1.0 ? 1.0 : x) / base);
  return k < 0.0 ? 0 : (k > static_cast<double>(num_buckets - 1) ? num_buckets - 1 : static_cast<int64_t>(k));
}

}  // namespace recops::hstu
