// SPDX-License-Identifier: Apache-2.0
// CUDA launchers for the ordinal-logistic losses. Raw device pointers and sizes in, work queued on `stream`.
// Same semantics as cpp/losses/ordinal.h (reduction codes 0 none, 1 sum, 2 mean; weights and grad_loss may be
// null; grad_loss_stride 0 for a scalar upstream gradient, 1 for a per-sample one; gradient outputs written
// only when with_grad), with float32 math whatever the storage dtype: inputs and outputs are float32, or bfloat16
// when `bf16` is true (every floating tensor of one call has the same dtype).
//
// Determinism: one thread per sample; each block reduces its samples' loss and d thresholds / d gamma with a
// fixed shuffle tree into `workspace` (float32, loss_workspace_numel(...) elements), and a one-block second
// pass adds the block partials in a fixed order. No float atomics: results are bitwise reproducible.
//
// Validation on the device: a label / level out of range contributes zero and ORs kErrBadIndex into
// *error_flag; ordinal thresholds that are not strictly increasing OR kErrBadOrder. No launcher synchronises.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "losses/losses_params.h"

namespace recops::cuda {

// Threads per block of the per-sample kernels (one sample per thread).
constexpr int kLossThreads = 256;

// float32 elements of the workspace for B samples and P partial sums per block (P = K-1 for the ordinal
// loss, 2T for GNOLR).
inline int64_t loss_workspace_numel(int64_t num_samples, int64_t num_partials) {
  const int64_t blocks = num_samples > 0 ? (num_samples + kLossThreads - 1) / kLossThreads : 1;
  return blocks * (1 + num_partials);
}

// p: cpp/losses/losses_params.h (workspace and error_flag required); bf16: bfloat16 storage, else float32.
void launch_ordinal_logistic_loss(const losses::OrdinalParams& p, bool bf16, cudaStream_t stream);
void launch_gnolr_loss(const losses::GnolrParams& p, bool bf16, cudaStream_t stream);

}  // namespace recops::cuda
