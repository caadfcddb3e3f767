// SPDX-License-Identifier: Apache-2.0
// The parameters of the exact fused top-k, shared by the CPU core (topk.h), the CUDA launcher
// (cuda/retrieval/retrieval_cuda.h) and the binding, so that an option is spelled once. Torch-free, CUDA-free.
#pragma once

#include <cstdint>

namespace recops::retrieval {

struct TopkParams {
  const float* queries = nullptr;          // [Q, D]
  int64_t num_queries = 0, dim = 0;
  const float* items = nullptr;            // [N, D]
  int64_t num_items = 0;
  const float* item_bias = nullptr;        // [N] or null
  const int64_t* exclude_ids = nullptr;    // [L] in [0, N), or null
  const int64_t* exclude_offsets = nullptr;  // [Q + 1], or null (then L = 0)
  int64_t num_excludes = 0;                // L
  int64_t k = 0;
  float* out_scores = nullptr;             // [Q, k]
  int64_t* out_ids = nullptr;              // [Q, k]
  float* ws_scores = nullptr;              // CUDA: topk_workspace_numel(Q, k) floats; unused on the CPU
  int64_t* ws_ids = nullptr;               // CUDA: as many int64; unused on the CPU
  int32_t* error_flag = nullptr;           // CUDA: error bits (cpp/common/error_bits.h); unused on the CPU
};

}  // namespace recops::retrieval
