// SPDX-License-Identifier: Apache-2.0
// CUDA launchers of the losses family: raw device pointers and sizes in, work queued on `stream`.
//
// Ordinal-logistic losses: same semantics as cpp/losses/ordinal.h (reduction codes 0 none, 1 sum, 2 mean;
// weights and grad_loss may be null; grad_loss_stride 0 for a scalar upstream gradient, 1 for a per-sample one;
// gradient outputs written only when with_grad), with float32 math whatever the storage dtype: inputs and
// outputs are float32, or bfloat16 when `bf16` is true (every floating tensor of one call has the same dtype).
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
#include "losses/sampled_softmax.h"

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

// Fused sampled softmax (cpp/losses/sampled_softmax.h): the same candidates, masking and formulas as the CPU
// core, float32 storage and math (every float array of p is float32 on the device; ids int64). p has passed
// losses::check_sampled_softmax_sizes on the host; its ids and log_q are checked on the device: an id outside
// [0, V) is treated as masked (never read) and ORs kErrBadIndex into *error_flag, a non-finite log_q value ORs
// kErrNonFinite. The forward writes p.loss and p.lse [L]; the backward reads p.lse and p.grad_loss and writes
// p.grad_queries [L, D] and p.grad_items [V, D] (zeroed here with cudaMemsetAsync, then accumulated).
// Determinism: loss, lse and grad_queries are bitwise reproducible; grad_items is accumulated with float
// atomicAdd from every row, so its rounding depends on the order (not bitwise reproducible, unlike the CPU's).
// Thread mapping: sampled_softmax_kernels.cuh. No launcher synchronises; L = 0, M = 0 and any D are handled.
void launch_sampled_softmax_forward(const losses::SampledSoftmaxParams& p, int32_t* error_flag,
                                    cudaStream_t stream);
void launch_sampled_softmax_backward(const losses::SampledSoftmaxParams& p, int32_t* error_flag,
                                     cudaStream_t stream);

}  // namespace recops::cuda
