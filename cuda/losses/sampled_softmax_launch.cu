// SPDX-License-Identifier: Apache-2.0
// Launchers of the fused sampled softmax (see losses_cuda.h); kernels in sampled_softmax_kernels.cuh.
#include <algorithm>
#include <cstdint>

#include "common/cuda_check.cuh"
#include "losses/losses_cuda.h"
#include "losses/sampled_softmax_kernels.cuh"

namespace recops::cuda {
namespace {

// Dynamic shared memory a block may use without opting in; past it the rows are read from global memory.
constexpr int64_t kSsmSmemBytes = 48 * 1024;
// Blocks that scan log_q / the shared negatives when the rows alone need fewer.
constexpr unsigned kSsmScanBlocks = 1024;

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// The kernels' arguments, the grid and the shared memory of one call. rows_per_warp: 1 (forward: the query) or
// 2 (backward: the query and its gradient) D-float rows of shared memory per warp.
struct SsmLaunch {
  SsmArgs a;
  unsigned grid;
  size_t smem;
  bool vec4;
};

SsmLaunch prepare(const losses::SampledSoftmaxParams& p, int32_t* error_flag, int64_t rows_per_warp) {
  SsmLaunch l;
  SsmArgs& a = l.a;
  a.queries = static_cast<const float*>(p.queries);
  a.items = static_cast<const float*>(p.items);
  a.log_q = static_cast<const float*>(p.log_q);
  a.positives = p.positives;
  a.negatives = p.negatives;
  a.num_rows = p.num_rows;
  a.dim = p.dim;
  a.num_items = p.num_items;
  a.num_negatives = p.num_negatives;
  // as cpp/losses/sampled_softmax.cpp (its size check, run by the binding, rules out overflow)
  a.num_candidates = 1 + p.num_negatives + (p.in_batch && p.num_rows > 0 ? p.num_rows - 1 : 0);
  a.seed = p.seed;
  a.inv_temperature = static_cast<float>(p.inv_temperature);  // the CPU's T(inv_temperature)
  a.per_row = p.per_row;
  a.generate = p.generate;
  a.in_batch = p.in_batch;
  a.remove_accidental_hits = p.remove_accidental_hits;
  a.loss = static_cast<float*>(p.loss);
  a.lse = static_cast<float*>(p.lse);
  a.grad_loss = static_cast<const float*>(p.grad_loss);
  a.grad_queries = static_cast<float*>(p.grad_queries);
  a.grad_items = static_cast<float*>(p.grad_items);
  a.error_flag = error_flag;
  const int64_t smem = kSsmWarps * rows_per_warp * p.dim * static_cast<int64_t>(sizeof(float));
  a.staged = smem <= kSsmSmemBytes;
  l.smem = a.staged ? static_cast<size_t>(smem) : 0;
  l.vec4 = p.dim % 4 == 0 && aligned16(p.items) && (a.staged || aligned16(p.queries));
  // a warp per row; at least the blocks that scan log_q and the shared negatives in a few steps each
  const int64_t scanned = std::max(p.log_q ? p.num_items : 0, p.negatives && !p.per_row ? p.num_negatives : 0);
  l.grid = std::max(grid_for(p.num_rows, kSsmWarps), std::min(grid_for(scanned, kSsmThreads), kSsmScanBlocks));
  return l;
}

}  // namespace

void launch_sampled_softmax_forward(const losses::SampledSoftmaxParams& p, int32_t* error_flag,
                                    cudaStream_t stream) {
  const SsmLaunch l = prepare(p, error_flag, 1);
  if (l.vec4) {
    sampled_softmax_forward_kernel<true><<<l.grid, kSsmThreads, l.smem, stream>>>(l.a);
  } else {
    sampled_softmax_forward_kernel<false><<<l.grid, kSsmThreads, l.smem, stream>>>(l.a);
  }
  RECOPS_CUDA_CHECK(cudaGetLastError());
}

void launch_sampled_softmax_backward(const losses::SampledSoftmaxParams& p, int32_t* error_flag,
                                     cudaStream_t stream) {
  const size_t table_bytes = static_cast<size_t>(p.num_items) * static_cast<size_t>(p.dim) * sizeof(float);
  if (table_bytes > 0) RECOPS_CUDA_CHECK(cudaMemsetAsync(p.grad_items, 0, table_bytes, stream));
  const SsmLaunch l = prepare(p, error_flag, 2);
  if (l.vec4) {
    sampled_softmax_backward_kernel<true><<<l.grid, kSsmThreads, l.smem, stream>>>(l.a);
  } else {
    sampled_softmax_backward_kernel<false><<<l.grid, kSsmThreads, l.smem, stream>>>(l.a);
  }
  RECOPS_CUDA_CHECK(cudaGetLastError());
}

}  // namespace recops::cuda
