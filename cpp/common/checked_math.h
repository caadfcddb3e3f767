// SPDX-License-Identifier: Apache-2.0
// Overflow-checked size arithmetic. Every product of user-controlled sizes goes through checked_mul so a
// huge shape raises ValueError instead of wrapping around and under-allocating or over-reading.
#pragma once

#include <cstdint>

#include "common/check.h"

namespace recops {

// a * b for non-negative sizes; throws std::invalid_argument naming `op` on overflow or a negative factor.
inline int64_t checked_mul(int64_t a, int64_t b, const char* op) {
  RECOPS_CHECK(a >= 0 && b >= 0, op, ": sizes must be non-negative, got ", a, " and ", b);
  int64_t r = 0;
  RECOPS_CHECK(!__builtin_mul_overflow(a, b, &r), op, ": size product overflows int64, got ", a, " * ", b);
  return r;
}

}  // namespace recops
