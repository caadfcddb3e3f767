// SPDX-License-Identifier: Apache-2.0
// Ordinal-logistic losses, CPU core: fused forward + backward in one pass over the batch.
//
// Both losses are cumulative-link (proportional-odds) models over ordered levels 0..T with per-sample logits
// z_1..z_T, P(level >= t) = sigmoid(z_t):
//   P(0) = sigmoid(-z_1),   P(k) = sigmoid(z_k) - sigmoid(z_{k+1}) for 0 < k < T,   P(T) = sigmoid(z_T).
//
// Numerics (no fast-math anywhere in this family): log(sigmoid(a) - sigmoid(b)) is evaluated as
//   logsigmoid(a) + logsigmoid(-b) + log1mexp(d),   d = max(a - b, min_gap),
//   log1mexp(d) = log(-expm1(-d)) if d < ln 2 else log1p(-exp(-d)),
// which is exact for a - b >= min_gap and finite for every finite input. The clamp: when a - b < min_gap
// (levels out of order, or nearly tied) the log1mexp term is frozen at log1mexp(min_gap) and passes no
// gradient, so loss and gradients stay finite (the naive log(p1 - p2) gives -inf or NaN there).
// Derivatives used: d/da = sigmoid(-a) + 1/expm1(d), d/db = -sigmoid(b) - 1/expm1(d) (the 1/expm1 terms only
// when a - b >= min_gap).
//
// Weights, reduction and upstream gradient: sample b's loss l_b is multiplied by weights[b] (1 when weights is
// null). `loss` receives either the per-sample weighted losses [B] (reduction kNone) or one value: the sum
// (kSum) or the sum / B (kMean; 0 when B = 0). When the gradient outputs are non-null they receive
//   d(sum_b m_b l_b) / d(inputs),   m_b = weights[b] * grad_loss[b * grad_loss_stride] * (1/B for kMean),
// with grad_loss null meaning 1 (the fused forward+backward of a reduced loss). grad_loss_stride is 0 for a
// scalar upstream gradient, 1 for a per-sample one. Gradients are computed only when with_grad is true; a
// pointer may be null exactly when its array is empty or with_grad is false.
//
// Determinism: the batch is cut into fixed blocks of kLossBlock samples independent of num_threads; each
// block accumulates its partial sums (loss, d thresholds, d gamma) in double and the blocks are added in
// order, so results are bitwise identical for any thread count.
//
// Validation (before anything is written): labels / levels in range, ordinal thresholds strictly
// increasing, min_gap > 0, sizes >= 0. Throws std::invalid_argument (Python ValueError) as
// "<op>: <arg> <rule>, got <value>". B = 0 is valid.
#pragma once

#include <cstdint>

#include "losses/losses_params.h"

namespace recops::losses {

// Samples per deterministic reduction block.
constexpr int64_t kLossBlock = 2048;

// The data checks of both losses: thresholds [num_thresholds] strictly increasing (when non-null), then
// labels [num_samples] in [0, hi] (`arg` names them: "labels" or "levels"); throws naming the first bad one.
// Also run on host copies when a CUDA kernel flags bad input, so both devices raise the same message.
template <typename scalar_t>
void check_ordinal_data(const char* op, const char* arg, const int64_t* labels, int64_t num_samples, int64_t hi,
                        const scalar_t* thresholds, int64_t num_thresholds, int num_threads = 1);

// Proportional-odds loss: K = num_thresholds + 1 classes, z_t = scores[b] - thresholds[t-1], and
// loss_b = -log P(labels[b]). scores [B], thresholds [K-1] (strictly increasing), labels [B] int64 in [0, K),
// weights [B] or null, grad_loss [B] / [1] / null (see above). Outputs: loss [B] or [1]; with with_grad,
// grad_scores [B] and grad_thresholds [K-1]. scalar_t (float or double) is the dtype behind the pointers.
template <typename scalar_t>
void ordinal_logistic_loss(const OrdinalParams& p, int num_threads);

// GNOLR (KDD 2025): cos [B, T] per-level similarities c_t, gamma [T], thresholds a [T], levels [B] int64 in
// [0, T]; z_t = sum_{j<=t} gamma_j c_j - a_t. nested = true: the sum over sub-tasks s = 1..T of an OLR over
// {0..s} with label min(k, s):
//   k = 0:  -T * logsigmoid(-z_1)
//   k >= 1: -sum_{s<=k} logsigmoid(z_s) - (T - k) * log(sigmoid(z_k) - sigmoid(z_{k+1}))
// nested = false: the plain OLR likelihood -log P(k) over T+1 levels with the same z (GNOLR-V1).
// Thresholds need not be ordered (the min_gap clamp covers z_k <= z_{k+1}). Gradient outputs (with_grad):
// grad_cos [B, T], grad_gamma [T], grad_thresholds [T].
template <typename scalar_t>
void gnolr_loss(const GnolrParams& p, int num_threads);

}  // namespace recops::losses
