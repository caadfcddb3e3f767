// SPDX-License-Identifier: Apache-2.0
// CUDA error checking and launch helpers shared by every family. Never includes Python or nanobind.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

// Throws std::runtime_error (a real runtime failure, not a user mistake) if a CUDA call or launch failed.
#define RECOPS_CUDA_CHECK(expr)                                                                 \
  do {                                                                                          \
    cudaError_t recops_err_ = (expr);                                                           \
    if (recops_err_ != cudaSuccess) {                                                           \
      throw std::runtime_error(std::string("recops CUDA error: ") + cudaGetErrorString(recops_err_) + \
                               " at " __FILE__ ":" + std::to_string(__LINE__));                 \
    }                                                                                           \
  } while (0)

#include "common/error_bits.h"

namespace recops::cuda {

// The error bits (kErrBadOffsets, ...) live in cpp/common/error_bits.h (namespace recops).

// Blocks for a grid-stride loop over n items: enough to fill the GPU, never more than the work needs.
inline unsigned int grid_for(int64_t n, int threads) {
  int64_t blocks = (n + threads - 1) / threads;
  if (blocks < 1) blocks = 1;
  if (blocks > 65535LL * 8) blocks = 65535LL * 8;
  return static_cast<unsigned int>(blocks);
}

}  // namespace recops::cuda
