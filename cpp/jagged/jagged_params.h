// SPDX-License-Identifier: Apache-2.0
// The parameters of the jagged family, shared by the CPU core (jagged.h), the CUDA launchers
// (cuda/jagged/jagged_cuda.h) and the binding, so that an option is spelled once. Torch-free and CUDA-free.
// Data move as untyped elements of elem_size bytes (1, 2, 4 or 8); a row is `dim` elements.
#pragma once

#include <cstdint>

namespace recops::jagged {

struct JaggedParams {
  const void* offsets = nullptr;  // [num_seqs + 1], int64 or int32
  bool offsets_int64 = true;
  int64_t num_seqs = 0;           // B
  int64_t total_len = 0;          // L, rows of the jagged side
  int64_t max_len = 0;            // N, rows per sequence of the padded side
  int64_t dim = 0;                // elements per row
  int64_t elem_size = 4;          // bytes per element
  int32_t* error_flag = nullptr;  // CUDA: error bits (cpp/common/error_bits.h); unused on the CPU
};

// values [L, dim] -> out [B, N, dim], padding past each sequence's end (its bit pattern in the low bytes).
struct JaggedToPaddedParams : JaggedParams {
  const void* values = nullptr;
  uint64_t padding_bits = 0;
  void* out = nullptr;
};

// padded [B, N, dim] -> out [L, dim]; allow_truncated: sequences longer than N get zero rows (the gradient of
// jagged_to_padded), else they are an error.
struct PaddedToJaggedParams : JaggedParams {
  const void* padded = nullptr;
  bool allow_truncated = false;
  void* out = nullptr;
};

}  // namespace recops::jagged
