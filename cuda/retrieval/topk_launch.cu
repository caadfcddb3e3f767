// SPDX-License-Identifier: Apache-2.0
// Launchers of the retrieval family (see retrieval_cuda.h); kernels in topk_kernels.cuh.
#include "retrieval/retrieval_cuda.h"
#include "retrieval/topk_kernels.cuh"

namespace recops::cuda {

int64_t topk_workspace_numel(int64_t num_queries, int64_t k) { return num_queries * kTopkWarps * k; }

void launch_topk_inner_product(const retrieval::TopkParams& p, cudaStream_t stream) {
  const int64_t num_queries = p.num_queries, dim = p.dim;
  if (num_queries == 0) return;
  const unsigned grid = num_queries < 65535LL * 8 ? static_cast<unsigned>(num_queries) : 65535u * 8u;
  const size_t smem = static_cast<size_t>(dim) * sizeof(float);
  if (smem > 48 * 1024) {
    RECOPS_CUDA_CHECK(cudaFuncSetAttribute(topk_inner_product_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(smem)));
  }
  topk_inner_product_kernel<<<grid, kTopkWarps * 32, smem, stream>>>(
      p.queries, num_queries, dim, p.items, p.num_items, p.item_bias, p.exclude_ids, p.exclude_offsets,
      p.num_excludes, p.k, p.out_scores, p.out_ids, p.ws_scores, p.ws_ids, p.error_flag);
  RECOPS_CUDA_CHECK(cudaGetLastError());
}

}  // namespace recops::cuda
