// SPDX-License-Identifier: Apache-2.0
// Launchers of the retrieval family (see retrieval_cuda.h); kernels in topk_kernels.cuh.
#include "retrieval/retrieval_cuda.h"
#include "retrieval/topk_kernels.cuh"

namespace recops::cuda {

int64_t topk_workspace_numel(int64_t num_queries, int64_t k) { return num_queries * kTopkWarps * k; }

void launch_topk_inner_product(const float* queries, int64_t num_queries, int64_t dim, const float* items,
                               int64_t num_items, const float* item_bias, const int64_t* exclude_ids,
                               const int64_t* exclude_offsets, int64_t num_excludes, int64_t k, float* out_scores,
                               int64_t* out_ids, float* ws_scores, int64_t* ws_ids, int32_t* error_flag,
                               cudaStream_t stream) {
  if (num_queries == 0) return;
  const unsigned grid = num_queries < 65535LL * 8 ? static_cast<unsigned>(num_queries) : 65535u * 8u;
  const size_t smem = static_cast<size_t>(dim) * sizeof(float);
  if (smem > 48 * 1024) {
    RECOPS_CUDA_CHECK(cudaFuncSetAttribute(topk_inner_product_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(smem)));
  }
  topk_inner_product_kernel<<<grid, kTopkWarps * 32, smem, stream>>>(
      queries, num_queries, dim, items, num_items, item_bias, exclude_ids, exclude_offsets, num_excludes, k,
      out_scores, out_ids, ws_scores, ws_ids, error_flag);
  RECOPS_CUDA_CHECK(cudaGetLastError());
}

}  // namespace recops::cuda
