// SPDX-License-Identifier: Apache-2.0
// Launchers of the jagged family: pick the widest word that divides the row and the pointers' alignment,
// check offsets on the device, then run the copy kernel. One thread per output word (see jagged_kernels.cuh).
#include <cstring>

#include "common/cuda_check.cuh"
#include "jagged/jagged_cuda.h"
#include "jagged/jagged_kernels.cuh"

namespace recops::cuda {
namespace {

constexpr int kThreads = 256;

struct alignas(16) Word16 { uint64_t lo, hi; };

// Largest word size in {16, 8, 4, 2, 1} bytes that is >= elem_size, divides the row and all pointers.
int64_t pick_word(int64_t row_bytes, int64_t elem_size, const void* a, const void* b) {
  for (int64_t w = 16; w > elem_size; w >>= 1) {
    if (row_bytes % w == 0 && reinterpret_cast<uintptr_t>(a) % w == 0 &&
        reinterpret_cast<uintptr_t>(b) % w == 0) {
      return w;
    }
  }
  return elem_size;
}

// The padding element's bit pattern repeated to fill one word.
template <typename word_t>
word_t splat(uint64_t bits, int64_t elem_size) {
  unsigned char bytes[sizeof(word_t)];
  for (size_t i = 0; i < sizeof(word_t); i += elem_size) std::memcpy(bytes + i, &bits, elem_size);
  word_t w;
  std::memcpy(&w, bytes, sizeof(word_t));
  return w;
}

template <typename index_t>
void check_offsets(const void* offsets, int64_t num_seqs, int64_t total_len, int32_t* flag, cudaStream_t s) {
  check_offsets_kernel<index_t><<<grid_for(num_seqs + 1, kThreads), kThreads, 0, s>>>(
      static_cast<const index_t*>(offsets), num_seqs, total_len, flag);
  RECOPS_CUDA_CHECK(cudaGetLastError());
}

// Calls fn(word_t{}) with word_t the unsigned type of `bytes` bytes.
template <typename Fn>
void with_word(int64_t bytes, Fn&& fn) {
  switch (bytes) {
    case 1: fn(uint8_t{}); break;
    case 2: fn(uint16_t{}); break;
    case 4: fn(uint32_t{}); break;
    case 8: fn(uint64_t{}); break;
    default: fn(Word16{}); break;
  }
}

template <typename index_t>
void jagged_to_padded_impl(const jagged::JaggedToPaddedParams& p, cudaStream_t s) {
  const int64_t total_len = p.total_len, num_seqs = p.num_seqs, max_len = p.max_len, elem_size = p.elem_size;
  const void *values = p.values, *offsets = p.offsets;
  void* out = p.out;
  int32_t* flag = p.error_flag;
  check_offsets<index_t>(offsets, num_seqs, total_len, flag, s);
  const int64_t row_bytes = p.dim * elem_size;
  if (num_seqs == 0 || max_len == 0 || row_bytes == 0) return;
  const int64_t word = pick_word(row_bytes, elem_size, values, out);
  with_word(word, [&](auto tag) {
    using word_t = decltype(tag);
    const int64_t words = row_bytes / word;
    jagged_to_padded_kernel<word_t, index_t><<<grid_for(num_seqs * max_len * words, kThreads), kThreads, 0, s>>>(
        static_cast<const word_t*>(values), total_len, words, static_cast<const index_t*>(offsets), num_seqs,
        max_len, splat<word_t>(p.padding_bits, elem_size), static_cast<word_t*>(out), flag);
  });
  RECOPS_CUDA_CHECK(cudaGetLastError());
}

template <typename index_t>
void padded_to_jagged_impl(const jagged::PaddedToJaggedParams& p, cudaStream_t s) {
  const int64_t total_len = p.total_len, num_seqs = p.num_seqs, max_len = p.max_len, elem_size = p.elem_size;
  const void *padded = p.padded, *offsets = p.offsets;
  void* out = p.out;
  int32_t* flag = p.error_flag;
  check_offsets<index_t>(offsets, num_seqs, total_len, flag, s);
  const int64_t row_bytes = p.dim * elem_size;
  if (total_len == 0 || row_bytes == 0) return;
  if (num_seqs == 0) {  // offsets are bad (L > 0 with no sequences): the check above flagged it.
    RECOPS_CUDA_CHECK(cudaMemsetAsync(out, 0, total_len * row_bytes, s));
    return;
  }
  const int64_t word = pick_word(row_bytes, elem_size, padded, out);
  with_word(word, [&](auto tag) {
    using word_t = decltype(tag);
    const int64_t words = row_bytes / word;
    padded_to_jagged_kernel<word_t, index_t><<<grid_for(total_len * words, kThreads), kThreads, 0, s>>>(
        static_cast<const word_t*>(padded), num_seqs, max_len, words, static_cast<const index_t*>(offsets),
        total_len, p.allow_truncated, static_cast<word_t*>(out), flag);
  });
  RECOPS_CUDA_CHECK(cudaGetLastError());
}

}  // namespace

void launch_jagged_to_padded(const jagged::JaggedToPaddedParams& p, cudaStream_t stream) {
  (p.offsets_int64 ? jagged_to_padded_impl<int64_t> : jagged_to_padded_impl<int32_t>)(p, stream);
}

void launch_padded_to_jagged(const jagged::PaddedToJaggedParams& p, cudaStream_t stream) {
  (p.offsets_int64 ? padded_to_jagged_impl<int64_t> : padded_to_jagged_impl<int32_t>)(p, stream);
}

}  // namespace recops::cuda
