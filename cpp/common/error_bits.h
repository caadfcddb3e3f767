// SPDX-License-Identifier: Apache-2.0
// Device error flags written by CUDA kernels that meet bad data (they never read out of bounds; they skip the
// element and set a bit). The Python op reads the flag once per call when checks are enabled and then reruns
// the family's CPU validator (_C.check_<family>) on host copies, so both devices raise the same ValueError.
// Torch-free and CUDA-free: _C exports the values as ERROR_BITS.
#pragma once

#include <cstdint>

namespace recops {

enum ErrorBits : int32_t {
  kErrBadOffsets = 1,  // offsets do not start at 0, decrease, or do not end at L
  kErrTooLong = 2,     // a sequence is longer than the padded length where truncation is not allowed
  kErrBadIndex = 4,    // an index is out of range
  kErrBadOrder = 8,    // values that must be strictly increasing are not (ordinal thresholds)
  kErrNonFinite = 16,  // a value that must be finite is not (sampled-softmax log_q)
};

}  // namespace recops
