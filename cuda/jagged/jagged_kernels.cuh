// SPDX-License-Identifier: Apache-2.0
// Kernels of the jagged family.
//
// Thread mapping: a flat grid-stride loop over output words. Rows are moved as `word_t` (up to 16 bytes) when
// the row size and the pointers allow it, so each thread issues wide coalesced loads/stores; offsets are
// re-read per word but stay in L1.
#pragma once

#include <cstdint>

#include "common/cuda_check.cuh"

namespace recops::cuda {

template <typename index_t>
__global__ void check_offsets_kernel(const index_t* __restrict__ offsets, int64_t num_seqs,
                                     int64_t total_len, int32_t* __restrict__ error_flag) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i <= num_seqs;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t o = offsets[i];
    bool bad = (i == 0 && o != 0) || (i == num_seqs && o != total_len) ||
               (i < num_seqs && o > static_cast<int64_t>(offsets[i + 1]));
    if (bad) atomicOr(error_flag, kErrBadOffsets);
  }
}

template <typename word_t, typename index_t>
__global__ void jagged_to_padded_kernel(const word_t* __restrict__ values, int64_t total_len, int64_t words,
                                        const index_t* __restrict__ offsets, int64_t num_seqs,
                                        int64_t max_len, word_t padding, word_t* __restrict__ out,
                                        int32_t* __restrict__ error_flag) {
  const int64_t n = num_seqs * max_len * words;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = i / words;
    const int64_t w = i - row * words;
    const int64_t b = row / max_len;
    const int64_t t = row - b * max_len;
    const int64_t start = offsets[b];
    const int64_t end = offsets[b + 1];
    word_t v = padding;
    if (start < 0 || end < start || end > total_len) {
      if (t == 0 && w == 0) atomicOr(error_flag, kErrBadOffsets);
    } else if (t < end - start) {
      v = values[(start + t) * words + w];
    }
    out[i] = v;
  }
}

template <typename word_t, typename index_t>
__global__ void padded_to_jagged_kernel(const word_t* __restrict__ padded, int64_t num_seqs, int64_t max_len,
                                        int64_t words, const index_t* __restrict__ offsets,
                                        int64_t total_len, bool allow_truncated, word_t* __restrict__ out,
                                        int32_t* __restrict__ error_flag) {
  const int64_t n = total_len * words;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = i / words;
    const int64_t w = i - row * words;
    // b = first sequence whose end is past `row` (binary search; stays in [0, num_seqs) even for bad offsets).
    int64_t lo = 0, hi = num_seqs - 1;
    while (lo < hi) {
      const int64_t mid = (lo + hi) >> 1;
      if (static_cast<int64_t>(offsets[mid + 1]) > row) hi = mid; else lo = mid + 1;
    }
    const int64_t t = row - static_cast<int64_t>(offsets[lo]);
    word_t v{};
    if (t >= 0 && t < max_len) {
      v = padded[(lo * max_len + t) * words + w];
    } else if (w == 0 && (t < 0 || !allow_truncated)) {
      atomicOr(error_flag, t < 0 ? kErrBadOffsets : kErrTooLong);
    }
    out[i] = v;
  }
}

}  // namespace recops::cuda
