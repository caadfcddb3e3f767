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

#include "jagged/jagged_params.h"

namespace recops::cuda {

// p: cpp/jagged/jagged_params.h (error_flag required).
void launch_jagged_to_padded(const jagged::JaggedToPaddedParams& p, cudaStream_t stream);
void launch_padded_to_jagged(const jagged::PaddedToJaggedParams& p, cudaStream_t stream);

}  // namespace recops::cuda
