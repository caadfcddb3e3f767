// SPDX-License-Identifier: Apache-2.0
// IVF (inverted-file) approximate inner-product search, CPU core. The index state is owned by the caller
// (Python keeps it as arrays, which makes persistence and add/remove plain array work); this core trains the
// coarse quantiser and answers searches.
//
// Layout of an index with n vectors, dimension D and nlist lists (all arrays contiguous):
//   centroids [nlist, D] float32     unit-norm list directions (spherical k-means on vector directions)
//   list_scale [nlist] float32       largest vector norm in each list (0 for an empty list)
//   list_offsets [nlist + 1] int64   list j holds rows [list_offsets[j], list_offsets[j + 1]) of the arrays below
//   codes [n, D]                     storage kFloat32: float32 vectors; kFloat16: IEEE binary16 bits (uint16);
//                                    kInt8: uint8 codes c with x[d] ~ vmin[d] + vscale[d] * c[d]
//   vmin, vscale [D] float32         kInt8 only (null otherwise)
//   vectors [n, D] float32           the full-precision vectors, for the exact re-rank
//   ids [n] int64                    the caller's ids
//
// Norm-aware probing: items are clustered by direction only, and list j is ranked for query q by
// list_scale[j] * dot(q, centroids[j]), an estimate of the best score the list can hold. Plain k-means on raw
// vectors sends the large-norm items (the ones inner-product search wants) to a few far-away lists that
// the nearest centroids never reach; ranking directions by the list's norm keeps them reachable.
#pragma once

#include <cstdint>

namespace recops::retrieval {

enum class IvfStorage : int { kFloat32 = 0, kFloat16 = 1, kInt8 = 2 };

struct IvfView {
  const float* centroids = nullptr;
  const float* list_scale = nullptr;
  const int64_t* list_offsets = nullptr;
  int64_t num_lists = 0;
  int64_t dim = 0;
  int64_t num_vectors = 0;
  IvfStorage storage = IvfStorage::kFloat32;
  const void* codes = nullptr;
  const float* vmin = nullptr;
  const float* vscale = nullptr;
  const float* vectors = nullptr;
  const int64_t* ids = nullptr;
};

// Approximate top-k by inner product: probe the nprobe best lists (see above), score their vectors from
// `codes`, keep the best num_candidates by that score, then (if num_candidates > 0) re-score those exactly
// from `vectors` and keep the best k; num_candidates = 0 keeps the best k approximate scores directly
// (exact for kFloat32). exclude_ids / exclude_offsets [Q + 1] (or null): per-query lists of the caller's ids
// never returned (ids not in the index are ignored). Output like topk_inner_product: scores [Q, k] float32
// descending, ties by lower id, ids [Q, k] int64, -1 / -inf padding.
// Throws std::invalid_argument ("ivf_search: ...") on bad sizes, k < 1, nprobe < 1, num_candidates < 0,
// bad list_offsets or exclude_offsets, before anything is written. Q = 0 and n = 0 are valid.
void ivf_search(const IvfView& index, const float* queries, int64_t num_queries, int64_t nprobe, int64_t k,
                int64_t num_candidates, const int64_t* exclude_ids, const int64_t* exclude_offsets,
                int64_t num_excludes, float* out_scores, int64_t* out_ids, int num_threads);

// k-means (Lloyd) on data [n, D] float32 into centroids [nlist, D]: seeds are nlist distinct rows drawn
// with the generator seeded by `seed`; each of `iters` rounds assigns every row to its best centroid (by
// inner product when spherical, else by squared L2) with the fused top-k kernel, then moves each centroid
// to its members' mean (re-normalised when spherical). An empty cluster is re-seeded at a random row.
// Deterministic for a given seed and any num_threads. Requires 1 <= nlist <= n, iters >= 0; throws
// std::invalid_argument ("kmeans: ...") otherwise.
void kmeans(const float* data, int64_t num_rows, int64_t dim, int64_t num_lists, int64_t iters, uint64_t seed,
            bool spherical, float* centroids, int num_threads);

}  // namespace recops::retrieval
