// SPDX-License-Identifier: Apache-2.0
// Fused sampled softmax (cross-entropy of a positive among sampled candidates), CPU core.
//
// Row i of queries [L, D] scores candidates c_0 = positives[i] and c_1 .. c_{C-1}: M negatives (shared [M],
// per-row [L, M], or drawn in the kernel by negative_id below), then, with in_batch, the positives of the other
// rows in row order. logit_j = (q_i . e_{c_j}) * inv_temperature - log_q[c_j] (log_q optional, logQ correction
// of every candidate, the positive included). With remove_accidental_hits a candidate j >= 1 whose id equals the
// row's positive is masked (logit -inf). loss_i = logsumexp_j(logit_j) - logit_0; lse_i is kept for the backward,
// which recomputes the logits (nothing of size L x C is stored).
//
// Backward: with g_i = grad_loss[i], p_j = exp(logit_j - lse_i), c_j = g_i * (p_j - [j == 0]) * inv_temperature:
// grad_queries[i] = sum_j c_j e_{c_j}, grad_items[c_j] += c_j q_i. Rows are split into contiguous blocks, one per
// task; each task adds its item gradient into its own [V, D] buffer (task 0 into grad_items), and the buffers are
// added in task order, so results are deterministic for a thread count. Tasks are limited so the extra buffers
// stay under kSampledSoftmaxScratchBytes (down to one task, serial, for very large tables).
//
// Validation (std::invalid_argument -> ValueError, before anything is written): sizes (and the scratch size,
// overflow-checked), every id in [0, V), inv_temperature > 0 and finite in T, log_q finite.
//
// CUDA (float32): cuda/losses/losses_cuda.h, same candidates and formulas; the binding runs the data-free part
// of the validation (check_sampled_softmax_sizes) on the host, the kernels flag bad ids and a non-finite log_q
// on the device and the Python op reruns check_sampled_softmax on host copies to raise the same ValueError.
#pragma once

#include <cstdint>

#include "losses/sampled_softmax_ids.h"  // negative_id (host and device)

namespace recops::losses {

constexpr int64_t kSampledSoftmaxScratchBytes = int64_t{256} << 20;

struct SampledSoftmaxParams {
  const void* queries = nullptr;  // [L, D] T
  const void* items = nullptr;    // [V, D] T
  int64_t num_rows = 0, dim = 0, num_items = 0;
  const int64_t* positives = nullptr;  // [L]
  const int64_t* negatives = nullptr;  // [M] (shared) or [L, M] (per_row), or null (generated or none)
  int64_t num_negatives = 0;           // M
  bool per_row = false;                // negatives are [L, M]
  bool generate = false;               // negatives drawn by negative_id(seed, row, j, V) (per row)
  uint64_t seed = 0;
  bool in_batch = false;
  bool remove_accidental_hits = true;
  const void* log_q = nullptr;  // [V] T or null
  double inv_temperature = 1.0;
  void* loss = nullptr;              // [L] T, per row (forward)
  void* lse = nullptr;               // [L] T (written by the forward, read by the backward)
  const void* grad_loss = nullptr;   // [L] T (backward)
  void* grad_queries = nullptr;      // [L, D] T (backward)
  void* grad_items = nullptr;        // [V, D] T (backward; fully written)
};

// The ids negative_id gives for rows [0, rows) and j in [0, m): out [rows, m] (for references and tests).
void sampled_softmax_negatives(int64_t rows, int64_t m, int64_t num_items, uint64_t seed, int64_t* out);

// Throws for bad sizes, ids, temperature or log_q (run by both entry points).
template <typename T>
void check_sampled_softmax(const SampledSoftmaxParams& p);

// The checks of check_sampled_softmax that read no id or log_q (its first ones, in its order): sizes, their
// overflow, temperature, at least 1 item. Run on the host before a CUDA launch, whose arrays are on the device.
template <typename T>
void check_sampled_softmax_sizes(const SampledSoftmaxParams& p);

template <typename T>
void sampled_softmax_forward(const SampledSoftmaxParams& p, int num_threads);

template <typename T>
void sampled_softmax_backward(const SampledSoftmaxParams& p, int num_threads);

// Scratch of one call, allocated by the dispatcher: rows split into `tasks` blocks of rows_per_task rows; per
// task ids [C] and logits [C] (T); partial [(tasks - 1) * V * D] (T) item-gradient buffers of the backward.
struct SampledSoftmaxScratch {
  int64_t tasks = 1, rows_per_task = 0;
  int64_t* ids = nullptr;
  void* logits = nullptr;
  void* partial = nullptr;
};

// Per-ISA kernels (sampled_softmax_impl.h), chosen by isa_pick.
#define RECOPS_SSM_DECLARE(isa)                                                                            \
  namespace isa {                                                                                          \
  template <typename T>                                                                                    \
  void forward(const SampledSoftmaxParams& p, const SampledSoftmaxScratch& s, int num_threads);            \
  template <typename T>                                                                                    \
  void backward(const SampledSoftmaxParams& p, const SampledSoftmaxScratch& s, int num_threads);           \
  }
RECOPS_SSM_DECLARE(generic)
RECOPS_SSM_DECLARE(avx2)
RECOPS_SSM_DECLARE(avx512)
#undef RECOPS_SSM_DECLARE

}  // namespace recops::losses
