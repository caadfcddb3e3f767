// SPDX-License-Identifier: Apache-2.0
// Exact top-k by inner product, CUDA kernel.
//
// Thread mapping: one block of kWarps warps per query (grid-stride over queries). The query row is staged in
// shared memory; warp w scores items w * 32 + lane, stepping by kWarps * 32 (one item per lane, dot product
// over D from the staged query), and keeps its own best-first list of up to k hits in the workspace. Lanes
// whose score beats the warp's current worst hit are inserted one at a time (ballot order): the warp counts
// the entries better than the candidate in parallel, shifts the tail right by one and writes the hit. Then
// thread 0 merges the kWarps sorted lists into the output row. Exclusions are checked (linear scan of the
// query's list) only for candidates that pass the threshold.
// TODO(perf): tile items through shared memory for a block of queries and use tensor cores for the scores;
// this first kernel is correct but bandwidth-bound on item rows.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "common/cuda_check.cuh"

namespace recops::cuda {

constexpr int kTopkWarps = 4;

__device__ __forceinline__ bool topk_better(float sa, int64_t ia, float sb, int64_t ib) {
  return sa > sb || (sa == sb && ia < ib);
}

__global__ void topk_inner_product_kernel(const float* __restrict__ queries, int64_t num_queries, int64_t dim,
                                          const float* __restrict__ items, int64_t num_items,
                                          const float* __restrict__ item_bias, const int64_t* __restrict__ excl,
                                          const int64_t* __restrict__ excl_offsets, int64_t num_excludes, int64_t k,
                                          float* __restrict__ out_scores, int64_t* __restrict__ out_ids,
                                          float* __restrict__ ws_scores, int64_t* __restrict__ ws_ids,
                                          int32_t* __restrict__ error_flag) {
  extern __shared__ float q_sh[];
  __shared__ int64_t counts[kTopkWarps];
  __shared__ int64_t ex_begin, ex_end;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int64_t q = blockIdx.x; q < num_queries; q += gridDim.x) {
    for (int64_t d = threadIdx.x; d < dim; d += blockDim.x) q_sh[d] = queries[q * dim + d];
    if (threadIdx.x == 0) {
      ex_begin = ex_end = 0;
      if (excl_offsets != nullptr) {
        const int64_t b = excl_offsets[q], e = excl_offsets[q + 1];
        const bool ok = b >= 0 && b <= e && e <= num_excludes && (q != 0 || b == 0) &&
                        (q != num_queries - 1 || e == num_excludes);
        if (ok) {
          ex_begin = b;
          ex_end = e;
        } else {
          atomicOr(error_flag, kErrBadOffsets);
        }
      }
    }
    __syncthreads();
    for (int64_t i = ex_begin + threadIdx.x; i < ex_end; i += blockDim.x) {
      if (excl[i] < 0 || excl[i] >= num_items) atomicOr(error_flag, kErrBadIndex);
    }
    float* ls = ws_scores + (q * kTopkWarps + warp) * k;
    int64_t* li = ws_ids + (q * kTopkWarps + warp) * k;
    int64_t cnt = 0;
    for (int64_t base = int64_t(warp) * 32; base < num_items; base += kTopkWarps * 32) {
      const int64_t n = base + lane;
      float s = -INFINITY;
      bool pass = false;
      if (n < num_items) {
        float acc = 0.0f;
        for (int64_t d = 0; d < dim; ++d) acc = fmaf(q_sh[d], items[n * dim + d], acc);
        s = item_bias != nullptr ? acc + item_bias[n] : acc;
        // Threshold first (cnt and the list are warp-uniform), so the exclusion scan runs for few items.
        pass = !isnan(s) && (cnt < k || topk_better(s, n, ls[k - 1], li[k - 1]));
        for (int64_t i = ex_begin; pass && i < ex_end; ++i) pass = excl[i] != n;
      }
      unsigned mask = __ballot_sync(0xffffffffu, pass);
      while (mask) {
        const int src = __ffs(mask) - 1;
        mask &= mask - 1;
        const float cs = __shfl_sync(0xffffffffu, s, src);
        const int64_t cn = __shfl_sync(0xffffffffu, n, src);
        if (cnt == k && !topk_better(cs, cn, ls[k - 1], li[k - 1])) continue;  // cnt, ls are warp-uniform
        int64_t pos = 0;  // entries better than the candidate
        for (int64_t j = lane; j < cnt; j += 32) pos += topk_better(ls[j], li[j], cs, cn) ? 1 : 0;
        for (int off = 16; off > 0; off /= 2) pos += __shfl_xor_sync(0xffffffffu, pos, off);
        const int64_t last = cnt < k ? cnt : k - 1;  // the tail [pos, last) moves to [pos + 1, last + 1)
        for (int64_t hi = last - 1; hi >= pos; hi -= 32) {
          const int64_t j = hi - lane;
          float vs = 0.0f;
          int64_t vi = 0;
          if (j >= pos) {
            vs = ls[j];
            vi = li[j];
          }
          __syncwarp();
          if (j >= pos) {
            ls[j + 1] = vs;
            li[j + 1] = vi;
          }
          __syncwarp();
        }
        if (lane == 0) {
          ls[pos] = cs;
          li[pos] = cn;
        }
        __syncwarp();
        cnt = cnt < k ? cnt + 1 : k;
      }
    }
    if (lane == 0) counts[warp] = cnt;
    __syncthreads();
    if (threadIdx.x == 0) {
      int64_t head[kTopkWarps] = {};
      for (int64_t j = 0; j < k; ++j) {
        int best = -1;
        for (int w = 0; w < kTopkWarps; ++w) {
          if (head[w] >= counts[w]) continue;
          const int64_t at = (q * kTopkWarps + w) * k + head[w];
          if (best < 0) {
            best = w;
            continue;
          }
          const int64_t bt = (q * kTopkWarps + best) * k + head[best];
          if (topk_better(ws_scores[at], ws_ids[at], ws_scores[bt], ws_ids[bt])) best = w;
        }
        if (best < 0) {
          out_scores[q * k + j] = -INFINITY;
          out_ids[q * k + j] = -1;
        } else {
          const int64_t bt = (q * kTopkWarps + best) * k + head[best]++;
          out_scores[q * k + j] = ws_scores[bt];
          out_ids[q * k + j] = ws_ids[bt];
        }
      }
    }
    __syncthreads();
  }
}

}  // namespace recops::cuda
