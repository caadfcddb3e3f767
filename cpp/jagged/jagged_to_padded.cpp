// SPDX-License-Identifier: Apache-2.0
#include <algorithm>
#include <cstring>

#include "common/check.h"
#include "common/checked_math.h"
#include "common/parallel.h"
#include "jagged/jagged.h"

namespace recops::jagged {

template <typename elem_t, typename index_t>
void jagged_to_padded(const elem_t* values, int64_t total_len, int64_t dim, const index_t* offsets,
                      int64_t num_seqs, int64_t max_len, elem_t padding, elem_t* out, int num_threads) {
  constexpr const char* kOp = "jagged_to_padded";
  RECOPS_CHECK(max_len >= 0, kOp, ": max_len must be >= 0, got ", max_len);
  RECOPS_CHECK(dim >= 0, kOp, ": values row size must be >= 0, got ", dim);
  check_offsets(kOp, offsets, num_seqs, total_len);
  const int64_t row_elems = checked_mul(max_len, dim, kOp);
  checked_mul(num_seqs, row_elems, kOp);
  if (num_seqs == 0 || row_elems == 0) return;

  // ~64 KiB of output per chunk keeps fork/join cost small against the copy.
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / (row_elems * int64_t(sizeof(elem_t))));
  parallel_for(0, num_seqs, grain, num_threads, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t start = offsets[b];
      const int64_t len = std::min<int64_t>(offsets[b + 1] - start, max_len);
      elem_t* dst = out + b * row_elems;
      if (len > 0) std::memcpy(dst, values + start * dim, sizeof(elem_t) * len * dim);
      std::fill(dst + len * dim, dst + row_elems, padding);
    }
  });
}

#define RECOPS_INSTANTIATE(E, I)                                                                  \
  template void jagged_to_padded<E, I>(const E*, int64_t, int64_t, const I*, int64_t, int64_t, E, \
                                       E*, int);
RECOPS_INSTANTIATE(uint8_t, int32_t)
RECOPS_INSTANTIATE(uint8_t, int64_t)
RECOPS_INSTANTIATE(uint16_t, int32_t)
RECOPS_INSTANTIATE(uint16_t, int64_t)
RECOPS_INSTANTIATE(uint32_t, int32_t)
RECOPS_INSTANTIATE(uint32_t, int64_t)
RECOPS_INSTANTIATE(uint64_t, int32_t)
RECOPS_INSTANTIATE(uint64_t, int64_t)
#undef RECOPS_INSTANTIATE

void jagged_to_padded(const JaggedToPaddedParams& p, int num_threads) {
  with_words(p.elem_size, p.offsets_int64, [&](auto word, auto index) {
    using elem_t = decltype(word);
    using index_t = decltype(index);
    jagged_to_padded<elem_t, index_t>(static_cast<const elem_t*>(p.values), p.total_len, p.dim,
                                      static_cast<const index_t*>(p.offsets), p.num_seqs, p.max_len,
                                      static_cast<elem_t>(p.padding_bits), static_cast<elem_t*>(p.out), num_threads);
  });
}

}  // namespace recops::jagged
