// SPDX-License-Identifier: Apache-2.0
// Vectorised transcendental pre-pass of the ordinal losses (float32), one build per instruction set.
#pragma once

#include <cstdint>

namespace recops::losses {

// e[i] = exp(-|z[i]|) and l[i] = log1p(e[i]) for i < n (about 1-2 ulp; NaN propagates, exp below -87 -> 0).
// From them: softplus(+-z) = max(+-z, 0) + l, sigmoid(z) = (z >= 0 ? 1 : e) / (1 + e).
// log1mexp[i] = log(1 - exp(-d[i])) and inv_expm1[i] = 1 / expm1(d[i]) for d[i] > 0 (finite).
namespace generic {
void exp_log1p(const float* z, int64_t n, float* e, float* l);
void log1mexp(const float* d, int64_t n, float* log1mexp, float* inv_expm1);
}
namespace avx2 {
void exp_log1p(const float* z, int64_t n, float* e, float* l);
void log1mexp(const float* d, int64_t n, float* log1mexp, float* inv_expm1);
}

}  // namespace recops::losses
