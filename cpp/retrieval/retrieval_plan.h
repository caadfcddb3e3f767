// SPDX-License-Identifier: Apache-2.0
// Internal: the per-call plan shared by the ISA-specific top-k kernels (retrieval_kernels_impl.h) and the
// dispatcher (topk.cpp, ivf_index.cpp). Not part of the public core API.
#pragma once

#include <cstdint>

#include "retrieval/ivf_index.h"

namespace recops::retrieval {

constexpr int64_t kTileN = 256;        // items per packed tile (a multiple of every micro-kernel width)
constexpr int64_t kQuerySuper = 128;   // queries per task: one packed tile feeds all of them
constexpr int64_t kMicroRows = 8;      // upper bound of the queries per micro-kernel call (kMR per ISA)

struct TopkPlan {
  const float* queries = nullptr;  // [Q, D]
  int64_t num_queries = 0, dim = 0;
  const float* items = nullptr;    // [N, D]
  int64_t num_items = 0;
  const float* item_bias = nullptr;           // [N] or null
  const int64_t* excl_ids = nullptr;          // per-query sorted ascending; null when no exclusions
  const int64_t* excl_offsets = nullptr;      // [Q + 1] or null
  int64_t k = 0;
  int64_t num_splits = 1;    // item ranges per query superblock
  int64_t split_items = 0;   // items per split (a multiple of kTileN)
  // Heaps [num_splits][Q][k] (split 0 may alias the outputs) and their sizes [num_splits][Q].
  float* heap_scores = nullptr;
  int64_t* heap_ids = nullptr;
  int64_t* heap_sizes = nullptr;
  bool sort_heaps = false;   // turn each heap into a best-first list and pad it (only when num_splits == 1)
  float* scratch = nullptr;  // per thread: scratch_per_thread floats
  int64_t scratch_per_thread = 0;
};

// Per-thread top-k scratch: packed tile [D][kTileN], scores [kMicroRows][kTileN], queries
// [kQuerySuper + kMicroRows][D] (padded to whole micro blocks); topk.cpp allocates an overflow-checked bound.

struct IvfPlan {
  IvfView index;
  const float* queries = nullptr;  // [Q, D]
  int64_t num_queries = 0;
  int64_t nprobe = 1;              // <= number of lists
  const int64_t* probe_lists = nullptr;  // [Q, nprobe] lists to scan per query, best first, -1 padded
  int64_t k = 1;
  int64_t num_candidates = 1;      // >= k: approximate hits kept per query
  bool rerank = false;             // re-score the candidates from index.vectors
  const int64_t* excl_ids = nullptr;      // per-query sorted ascending; null when no exclusions
  const int64_t* excl_offsets = nullptr;  // [Q + 1] or null
  float* out_scores = nullptr;     // [Q, k]
  int64_t* out_ids = nullptr;      // [Q, k]
  float* fscratch = nullptr;       // per thread: ivf_fscratch(...) floats
  int64_t* iscratch = nullptr;     // per thread: ivf_iscratch(...) int64
};

inline int64_t ivf_fscratch(const IvfPlan& p) { return p.index.dim + p.num_candidates + p.k; }
inline int64_t ivf_iscratch(const IvfPlan& p) { return p.num_candidates + p.k; }

#define RECOPS_TOPK_DECLARE_ISA(ns)                  \
  namespace ns {                                     \
  void run_topk(const TopkPlan& p, int threads);     \
  void run_ivf_search(const IvfPlan& p, int threads); \
  }
RECOPS_TOPK_DECLARE_ISA(generic)
RECOPS_TOPK_DECLARE_ISA(avx2)
RECOPS_TOPK_DECLARE_ISA(avx512)
#undef RECOPS_TOPK_DECLARE_ISA

}  // namespace recops::retrieval
