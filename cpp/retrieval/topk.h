// SPDX-License-Identifier: Apache-2.0
// Exact top-k by inner product, fused with the matmul: the [Q, N] score matrix is never materialised.
//
// For every query q the K best items n by
//   s(q, n) = dot(queries[q, :], items[n, :]) + (item_bias ? item_bias[n] : 0)
// over the candidates n in [0, N) that are not in q's exclusion list
//   exclude_ids[exclude_offsets[q] : exclude_offsets[q + 1]]
// and whose score is not NaN. Results are sorted by score descending, ties broken by the lower id; when a
// query has fewer than K candidates the remaining slots get id -1 and score -inf.
//
// Layout: queries [Q, D], items [N, D], item_bias [N] or null, all float32 and contiguous; exclude_offsets
// [Q + 1] int64 (or null: no exclusions), exclude_ids [L] int64 with L = exclude_offsets[Q]; out_scores
// [Q, K] float32, out_ids [Q, K] int64.
//
// Tiling: tasks are (query superblock, item split); a task packs one item tile (kTileN items, transposed)
// at a time and runs a register-blocked micro-kernel over all its queries, whose running top-K min-heaps
// are updated straight from the tile. Item splits exist only when there are fewer query superblocks than
// threads (small Q); their per-split heaps are merged at the end. Memory: O(Q * K * splits + tile).
// Results do not depend on num_threads except through floating-point summation order, which is fixed by
// the tiling (not by the thread count): results are bitwise reproducible for any num_threads.
//
// Validation (before anything is written): sizes >= 0, K >= 1, Q * K and N * D fit int64, exclude_offsets
// start at 0, non-decreasing, end at L, every exclude id in [0, N). Throws std::invalid_argument
// (Python ValueError) as "topk_inner_product: <arg> <rule>, got <value>". Q = 0, N = 0 and D = 0 are valid.
#pragma once

#include <cstdint>

#include "retrieval/retrieval_params.h"

namespace recops::retrieval {

// The exclusion checks of topk_inner_product: exclude_offsets [Q + 1] (null: no exclusions, then
// num_excludes must be 0) start at 0, never decrease and end at num_excludes; exclude_ids in [0, num_items).
// Also run on host copies when the CUDA kernel flags bad exclusions, so both devices raise the same message.
void check_topk_exclusions(const int64_t* exclude_offsets, int64_t num_queries, const int64_t* exclude_ids,
                           int64_t num_excludes, int64_t num_items);

// The top-k of p (retrieval_params.h) on the CPU; the semantics above.
void topk_inner_product(const TopkParams& p, int num_threads);

}  // namespace recops::retrieval
