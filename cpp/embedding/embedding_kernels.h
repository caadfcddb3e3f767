// SPDX-License-Identifier: Apache-2.0
// Internal interface between embedding_bag.cpp (validation, sorting, ISA dispatch) and the per-ISA kernels
// (embedding_kernels_impl.h compiled once per instruction set). Inputs reaching these are already validated.
#pragma once

#include <cstdint>
#include <cstring>

#include "embedding/embedding_bag.h"

namespace recops::embedding {

template <typename weight_t> struct Traits { using acc_t = float; using out_t = weight_t; };
template <> struct Traits<double> { using acc_t = double; using out_t = double; };
template <> struct Traits<uint8_t> { using acc_t = float; using out_t = float; };

// Everything one forward or backward call needs, already checked.
// Feature and sample of the bag a position belongs to (saves a 64-bit division per position).
struct BagRef {
  int32_t feature, sample;
};

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
  const out_t* grad_out = nullptr;
  // Backward: positions sorted by global row, segment starts of each unique row (num_segments + 1 entries)
  // and the bag of every position.
  const uint32_t* sorted_pos = nullptr;
  const uint64_t* sorted_rows = nullptr;
  const int64_t* segments = nullptr;
  int64_t num_segments = 0;
  const BagRef* bag_of = nullptr;
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
