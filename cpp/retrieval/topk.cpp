// SPDX-License-Identifier: Apache-2.0
// Exact fused top-k: validation, work plan, run-time ISA dispatch and the merge of item splits.
#include "retrieval/topk.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "common/check.h"
#include "common/checked_math.h"
#include "common/cpu_isa.h"
#include "jagged/jagged.h"
#include "retrieval/retrieval_plan.h"

namespace recops::retrieval {

namespace {

constexpr const char* kOp = "topk_inner_product";

// Exclusion lists sorted per query (a copy only when some list is unsorted).
const int64_t* sorted_exclusions(const int64_t* ids, const int64_t* offsets, int64_t num_queries,
                                 std::vector<int64_t>& copy) {
  bool sorted = true;
  for (int64_t q = 0; q < num_queries && sorted; ++q) {
    for (int64_t i = offsets[q] + 1; i < offsets[q + 1]; ++i) {
      if (ids[i - 1] > ids[i]) { sorted = false; break; }
    }
  }
  if (sorted) return ids;
  copy.assign(ids, ids + offsets[num_queries]);
  for (int64_t q = 0; q < num_queries; ++q) std::sort(copy.begin() + offsets[q], copy.begin() + offsets[q + 1]);
  return copy.data();
}

void run(const TopkPlan& plan, int threads) {
  isa_pick(&generic::run_topk, &avx2::run_topk, &avx512::run_topk)(plan, threads);
}

}  // namespace

void check_topk_exclusions(const int64_t* exclude_offsets, int64_t num_queries, const int64_t* exclude_ids,
                           int64_t num_excludes, int64_t num_items) {
  if (exclude_offsets == nullptr) {
    RECOPS_CHECK(num_excludes == 0, kOp, ": exclude_ids must be empty without exclude_offsets, got ",
                 num_excludes, " ids");
    return;
  }
  jagged::check_offsets<int64_t>("topk_inner_product: exclude_offsets", exclude_offsets, num_queries, num_excludes);
  for (int64_t i = 0; i < num_excludes; ++i) {
    RECOPS_CHECK(exclude_ids[i] >= 0 && exclude_ids[i] < num_items, kOp, ": exclude_ids[", i, "] must be in [0, ",
                 num_items, "), got ", exclude_ids[i]);
  }
}

void topk_inner_product(const TopkParams& params, int num_threads) {
  const float *queries = params.queries, *items = params.items, *item_bias = params.item_bias;
  const int64_t num_queries = params.num_queries, dim = params.dim, num_items = params.num_items;
  const int64_t *exclude_ids = params.exclude_ids, *exclude_offsets = params.exclude_offsets;
  const int64_t num_excludes = params.num_excludes, k = params.k;
  float* out_scores = params.out_scores;
  int64_t* out_ids = params.out_ids;
  RECOPS_CHECK(num_queries >= 0 && dim >= 0 && num_items >= 0 && num_excludes >= 0, kOp,
               ": sizes must be non-negative, got Q=", num_queries, " D=", dim, " N=", num_items, " L=",
               num_excludes);
  RECOPS_CHECK(k >= 1, kOp, ": k must be >= 1, got ", k);
  const int64_t out_numel = checked_mul(num_queries, k, kOp);
  checked_mul(num_items, dim, kOp);
  checked_mul(num_queries, dim, kOp);
  check_topk_exclusions(exclude_offsets, num_queries, exclude_ids, num_excludes, num_items);
  if (num_queries == 0) return;

  TopkPlan p;
  p.queries = queries;
  p.num_queries = num_queries;
  p.dim = dim;
  p.items = items;
  p.num_items = num_items;
  p.item_bias = item_bias;
  p.k = k;
  std::vector<int64_t> excl_copy;
  if (exclude_offsets != nullptr && num_excludes > 0) {
    p.excl_ids = sorted_exclusions(exclude_ids, exclude_offsets, num_queries, excl_copy);
    p.excl_offsets = exclude_offsets;
  }
  const int threads = std::max(num_threads, 1);
  const int64_t num_super = (num_queries + kQuerySuper - 1) / kQuerySuper;
  const int64_t num_tiles = std::max<int64_t>((num_items + kTileN - 1) / kTileN, 1);
  // Split the items only when the queries alone cannot feed every thread, and keep >= 8 tiles per split.
  int64_t splits = num_super >= threads ? 1 : (threads + num_super - 1) / num_super;
  splits = std::max<int64_t>(1, std::min(splits, num_tiles / 8));
  const int64_t tiles_per_split = (num_tiles + splits - 1) / splits;
  p.split_items = tiles_per_split * kTileN;
  p.num_splits = (num_tiles + tiles_per_split - 1) / tiles_per_split;
  p.sort_heaps = p.num_splits == 1;

  std::vector<float> split_scores;
  std::vector<int64_t> split_ids;
  std::vector<int64_t> sizes(checked_mul(p.num_splits, num_queries, kOp));
  if (p.num_splits == 1) {
    p.heap_scores = out_scores;
    p.heap_ids = out_ids;
  } else {
    split_scores.resize(checked_mul(p.num_splits, out_numel, kOp));
    split_ids.resize(split_scores.size());
    p.heap_scores = split_scores.data();
    p.heap_ids = split_ids.data();
  }
  p.heap_sizes = sizes.data();
  // >= D * kTileN + kMicroRows * kTileN + (kQuerySuper + kMicroRows) * D (see retrieval_plan.h), overflow-checked.
  p.scratch_per_thread = checked_mul(kTileN + kQuerySuper + 2 * kMicroRows, std::max<int64_t>(dim, kTileN), kOp);
  std::vector<float> scratch(checked_mul(p.scratch_per_thread, threads, kOp));
  p.scratch = scratch.data();
  run(p, threads);
  if (p.num_splits == 1) return;

  // Few queries here (fewer superblocks than threads): a serial merge of the split heaps is cheap.
  std::vector<std::pair<float, int64_t>> hits;
  const auto better = [](const std::pair<float, int64_t>& a, const std::pair<float, int64_t>& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  for (int64_t q = 0; q < num_queries; ++q) {
    hits.clear();
    for (int64_t s = 0; s < p.num_splits; ++s) {
      const int64_t base = (s * num_queries + q) * k;
      for (int64_t j = 0; j < sizes[s * num_queries + q]; ++j) hits.emplace_back(p.heap_scores[base + j], p.heap_ids[base + j]);
    }
    const int64_t m = std::min<int64_t>(k, static_cast<int64_t>(hits.size()));
    std::partial_sort(hits.begin(), hits.begin() + m, hits.end(), better);
    for (int64_t j = 0; j < k; ++j) {
      out_scores[q * k + j] = j < m ? hits[j].first : -std::numeric_limits<float>::infinity();
      out_ids[q * k + j] = j < m ? hits[j].second : -1;
    }
  }
}

}  // namespace recops::retrieval
