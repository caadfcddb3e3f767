// SPDX-License-Identifier: Apache-2.0
// Jagged (packed variable-length) tensor conversions, CPU core.
//
// A jagged batch of B sequences is `values` [L, D] (row-major, D = product of the trailing dims) plus
// `offsets` [B + 1]: sequence b owns rows [offsets[b], offsets[b+1]) and has length len_b.
// Valid offsets: offsets[0] == 0, non-decreasing, offsets[B] == L.
//
// These ops only move data, so they are instantiated on storage words (uint8/16/32/64_t) of the element's
// size: one instantiation serves float32 and int32, bfloat16 and float16, and so on. `padding` is the bit
// pattern of the padding value in the element dtype; all-zero bits are 0 for every supported dtype.
//
// index_t is int32_t or int64_t (the offsets dtype). All functions validate before writing anything and throw
// std::invalid_argument (Python ValueError) with "<op>: <arg> <rule>, got <value>".
#pragma once

#include <cstdint>

#include "jagged/jagged_params.h"

namespace recops::jagged {

// Throws unless offsets [num_seqs + 1] start at 0, never decrease, and end at total_len. `op` names the
// calling op in the message. O(B), serial.
template <typename index_t>
void check_offsets(const char* op, const index_t* offsets, int64_t num_seqs, int64_t total_len);

// check_offsets, then every length <= max_len ("sequence lengths must be <= padded.shape[1]=..."): the data
// checks of padded_to_jagged, also run on host copies when a CUDA kernel flags bad input.
template <typename index_t>
void check_lengths(const char* op, const index_t* offsets, int64_t num_seqs, int64_t total_len, int64_t max_len);

// out[b, t, :] = values[offsets[b] + t, :] for t < min(len_b, max_len); out[b, t, :] = padding otherwise.
// Sequences longer than max_len are truncated (their rows from max_len on are not copied).
// values [total_len, dim], offsets [num_seqs + 1], out [num_seqs, max_len, dim]. Requires max_len >= 0.
template <typename elem_t, typename index_t>
void jagged_to_padded(const elem_t* values, int64_t total_len, int64_t dim, const index_t* offsets,
                      int64_t num_seqs, int64_t max_len, elem_t padding, elem_t* out, int num_threads);

// out[offsets[b] + t, :] = padded[b, t, :] for t < len_b. padded [num_seqs, max_len, dim],
// offsets [num_seqs + 1], out [total_len, dim].
// If allow_truncated is false, every len_b must be <= max_len (else ValueError). If true (the gradient of
// jagged_to_padded), rows with t >= max_len get zero.
template <typename elem_t, typename index_t>
void padded_to_jagged(const elem_t* padded, int64_t num_seqs, int64_t max_len, int64_t dim,
                      const index_t* offsets, int64_t total_len, bool allow_truncated, elem_t* out,
                      int num_threads);

// The entry points the binding calls: the typed functions above for the call's element size and offsets dtype.
void jagged_to_padded(const JaggedToPaddedParams& p, int num_threads);
void padded_to_jagged(const PaddedToJaggedParams& p, int num_threads);

// Calls fn(elem_t{}, index_t{}) with the storage word of `elem_size` bytes (1, 2, 4, 8) and the offsets type.
template <typename Fn>
void with_words(int64_t elem_size, bool offsets_int64, Fn&& fn) {
  auto with_index = [&](auto word) {
    if (offsets_int64) fn(word, int64_t{}); else fn(word, int32_t{});
  };
  switch (elem_size) {
    case 1: with_index(uint8_t{}); break;
    case 2: with_index(uint16_t{}); break;
    case 4: with_index(uint32_t{}); break;
    default: with_index(uint64_t{}); break;
  }
}

}  // namespace recops::jagged
