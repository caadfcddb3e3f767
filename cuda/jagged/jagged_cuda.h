// SPDX-License-Identifier: Apache-2.0
// CUDA launchers for the jagged family. Raw device pointers and sizes in, work queued on `stream`.
// Same semantics as cpp/jagged/jagged.h. Data are moved as untyped elements of `elem_size` bytes (1, 2, 4
// or 8); `padding_bits` is the padding value's bit pattern in the low elem_size bytes.
//
// Validation on the device: offsets are checked by a small kernel and every gathered row is bounds-checked;
// on bad data the kernels write padding/zeros instead of reading out of range and OR an ErrorBits value into
// *error_flag (an int32 in device memory that the caller zeroed). No launcher synchronises.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace recops::cuda {

void launch_jagged_to_padded(const void* values, int64_t total_len, int64_t dim, int64_t elem_size,
                             const void* offsets, bool offsets_int64, int64_t num_seqs, int64_t max_len,
                             uint64_t padding_bits, void* out, int32_t* error_flag, cudaStream_t stream);

void launch_padded_to_jagged(const void* padded, int64_t num_seqs, int64_t max_len, int64_t dim,
                             int64_t elem_size, const void* offsets, bool offsets_int64, int64_t total_len,
                             bool allow_truncated, void* out, int32_t* error_flag, cudaStream_t stream);

}  // namespace recops::cuda
