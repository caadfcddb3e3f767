// SPDX-License-Identifier: Apache-2.0
#include "common/check.h"
#include "jagged/jagged.h"

namespace recops::jagged {

template <typename index_t>
void check_offsets(const char* op, const index_t* offsets, int64_t num_seqs, int64_t total_len) {
  RECOPS_CHECK(num_seqs >= 0, op, ": offsets must have at least 1 element, got 0");
  RECOPS_CHECK(offsets[0] == 0, op, ": offsets must start at 0, got offsets[0]=",
               static_cast<int64_t>(offsets[0]));
  for (int64_t b = 0; b < num_seqs; ++b) {
    RECOPS_CHECK(offsets[b] <= offsets[b + 1], op, ": offsets must be non-decreasing, got offsets[", b,
                 "]=", static_cast<int64_t>(offsets[b]), " > offsets[", b + 1,
                 "]=", static_cast<int64_t>(offsets[b + 1]));
  }
  RECOPS_CHECK(static_cast<int64_t>(offsets[num_seqs]) == total_len, op,
               ": offsets[-1] must equal the number of values rows L=", total_len, ", got ",
               static_cast<int64_t>(offsets[num_seqs]));
}

template <typename index_t>
void check_lengths(const char* op, const index_t* offsets, int64_t num_seqs, int64_t total_len, int64_t max_len) {
  check_offsets(op, offsets, num_seqs, total_len);
  for (int64_t b = 0; b < num_seqs; ++b) {
    const int64_t len = static_cast<int64_t>(offsets[b + 1]) - static_cast<int64_t>(offsets[b]);
    RECOPS_CHECK(len <= max_len, op, ": sequence lengths must be <= padded.shape[1]=", max_len, ", got length ",
                 len, " for sequence ", b);
  }
}

template void check_lengths<int32_t>(const char*, const int32_t*, int64_t, int64_t, int64_t);
template void check_lengths<int64_t>(const char*, const int64_t*, int64_t, int64_t, int64_t);
template void check_offsets<int32_t>(const char*, const int32_t*, int64_t, int64_t);
template void check_offsets<int64_t>(const char*, const int64_t*, int64_t, int64_t);

}  // namespace recops::jagged
