// SPDX-License-Identifier: Apache-2.0
// Internal interface between embedding_bag.cpp (validation, sorting, ISA dispatch) and the per-ISA kernels
// (embedding_kernels_impl.h compiled once per instruction set). Inputs reaching these are already validated.
#pragma once

// Every standard header the kernels use is included here, and the ISA files include this before their
// `#pragma GCC target`: a std:: template first instantiated after the pragma would be a weak copy with AVX code
// that the linker may also pick for the portable path (.ci/check_isa_objects.py fails CI on that).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "common/parallel.h"
#include "embedding/embedding_bag.h"

namespace recops::embedding {

template <typename weight_t> struct Traits { using acc_t = float; using out_t = weight_t; };
template <> struct Traits<double> { using acc_t = double; using out_t = double; };
template <> struct Traits<uint8_t> { using acc_t = float; using out_t = float; };

// One table of the flat buffer as the backward sees it: its first global row (row offset), where its weights start,
// its dim and row stride. The backward's table list is sorted by first_row, so the rows of a sorted segment range
// walk it forward.
struct TableRef {
  int64_t first_row, weight_offset, dim, stride;
};

// Everything one forward or backward call needs, already checked.
template <typename weight_t, typename index_t>
struct Batch {
  using acc_t = typename Traits<weight_t>::acc_t;
  using out_t = typename Traits<weight_t>::out_t;
  weight_t* weights = nullptr;
  const int64_t* meta = nullptr;
  int64_t num_features = 0, batch = 0, total_dim = 0, max_dim = 0;
  const index_t* indices = nullptr;
  const index_t* offsets = nullptr;
  const acc_t* psw = nullptr;
  int64_t* argmax = nullptr;      // forward: written; backward: read
  out_t* out = nullptr;           // forward output
  std::atomic<bool>* bad_index = nullptr;  // forward: set when an index is out of its table's range (row skipped)
  const out_t* grad_out = nullptr;
  // Backward: keys = (global row << 32) | id, sorted (ids ascend within a row); the id is the key's bag, or its
  // position when per-sample weights or max pooling need it. segments = the start of each unique row's run of keys
  // (num_segments + 1 entries). Per id: the element offset of its bag's gradient row in grad_out, its coefficient
  // (per-sample weight / mean scale) and, when some feature max-pools, whether its feature does (else null).
  // tables: sorted by first_row.
  const uint64_t* sorted_keys = nullptr;
  const int64_t* segments = nullptr;
  int64_t num_segments = 0;
  const int64_t* grad_offset = nullptr;
  const acc_t* coef = nullptr;
  const uint8_t* is_max = nullptr;
  const TableRef* tables = nullptr;
  int64_t num_tables = 0;
  UpdateParams params;
  weight_t* grad_weights = nullptr;
  float* state0 = nullptr;
  float* state1 = nullptr;
  acc_t* grad_psw = nullptr;
};

#define RECOPS_EMB_DECLARE(isa)                                                           \
  namespace isa {                                                                         \
  template <typename weight_t, typename index_t>                                          \
  void forward_kernel(const Batch<weight_t, index_t>& p, int num_threads);                \
  template <typename weight_t, typename index_t>                                          \
  void backward_kernel(const Batch<weight_t, index_t>& p, int num_threads);               \
  }
RECOPS_EMB_DECLARE(generic)
RECOPS_EMB_DECLARE(avx2)
#undef RECOPS_EMB_DECLARE

}  // namespace recops::embedding
