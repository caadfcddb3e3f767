// SPDX-License-Identifier: Apache-2.0
// Counter-based dropout of a contiguous array (the recops::dropout op): element e is kept iff
//   dropout_bits(dropout_row_key(seed, 0xFFFFFFFF, 0, e >> 32), e & 0xFFFFFFFF) >= dropout_threshold(p)
// (hstu/attention_dropout.h: the same generator as the attention dropout), and a kept element is scaled by
// 1 / (1 - p). Nothing is stored: the backward is the same call on the gradient with the same seed. Results do not
// depend on the thread count or the instruction set.
#pragma once

#include <cstdint>

namespace recops::nn {

// out[e] = keep(e) ? x[e] / (1 - p) : 0 for e < n (x and out may alias). T = float or double.
// Throws std::invalid_argument ("dropout: ...") for n < 0 or p outside [0, 1).
template <typename T>
void dropout(const T* x, T* out, int64_t n, double p, uint64_t seed, int num_threads);

}  // namespace recops::nn
