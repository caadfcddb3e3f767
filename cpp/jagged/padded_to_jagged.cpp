// SPDX-License-Identifier: Apache-2.0
#include <algorithm>
#include <cstring>

#include "common/check.h"
#include "common/checked_math.h"
#include "common/parallel.h"
#include "jagged/jagged.h"

namespace recops::jagged {

template <typename elem_t, typename index_t>
void padded_to_jagged(const elem_t* padded, int64_t num_seqs, int64_t max_len, int64_t dim,
                      const index_t* offsets, int64_t total_len, bool allow_truncated, elem_t* out,
                      int num_threads) {
  constexpr const char* kOp = "padded_to_jagged";
  RECOPS_CHECK(max_len >= 0, kOp, ": padded.shape[1] must be >= 0, got ", max_len);
  RECOPS_CHECK(dim >= 0, kOp, ": padded row size must be >= 0, got ", dim);
  if (allow_truncated) check_offsets(kOp, offsets, num_seqs, total_len);
  else check_lengths(kOp, offsets, num_seqs, total_len, max_len);
  const int64_t row_elems = checked_mul(max_len, dim, kOp);
  checked_mul(total_len, dim, kOp);
  if (num_seqs == 0 || dim == 0) return;

  const int64_t avg_row = std::max<int64_t>(1, (total_len / num_seqs) * dim * int64_t(sizeof(elem_t)));
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / avg_row);
  parallel_for(0, num_seqs, grain, num_threads, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t start = offsets[b];
      const int64_t len = offsets[b + 1] - start;
      const int64_t copied = std::min(len, max_len);
      elem_t* dst = out + start * dim;
      if (copied > 0) std::memcpy(dst, padded + b * row_elems, sizeof(elem_t) * copied * dim);
      if (len > copied) std::fill(dst + copied * dim, dst + len * dim, elem_t{0});
    }
  });
}

#define RECOPS_INSTANTIATE(E, I)                                                                         \
  template void padded_to_jagged<E, I>(const E*, int64_t, int64_t, int64_t, const I*, int64_t, bool, E*, \
                                       int);
RECOPS_INSTANTIATE(uint8_t, int32_t)
RECOPS_INSTANTIATE(uint8_t, int64_t)
RECOPS_INSTANTIATE(uint16_t, int32_t)
RECOPS_INSTANTIATE(uint16_t, int64_t)
RECOPS_INSTANTIATE(uint32_t, int32_t)
RECOPS_INSTANTIATE(uint32_t, int64_t)
RECOPS_INSTANTIATE(uint64_t, int32_t)
RECOPS_INSTANTIATE(uint64_t, int64_t)
#undef RECOPS_INSTANTIATE

void padded_to_jagged(const PaddedToJaggedParams& p, int num_threads) {
  with_words(p.elem_size, p.offsets_int64, [&](auto word, auto index) {
    using elem_t = decltype(word);
    using index_t = decltype(index);
    padded_to_jagged<elem_t, index_t>(static_cast<const elem_t*>(p.padded), p.num_seqs, p.max_len, p.dim,
                                      static_cast<const index_t*>(p.offsets), p.total_len, p.allow_truncated,
                                      static_cast<elem_t*>(p.out), num_threads);
  });
}


}  // namespace recops::jagged
