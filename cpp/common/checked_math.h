// SPDX-License-Identifier: Apache-2.0
// Overflow-checked size arithmetic, the one place the core does it. Every sum or product of caller-controlled
// sizes, offsets or counts goes through these, so a huge or crafted value raises ValueError (std::invalid_argument)
// instead of wrapping around and passing a bounds test, under-allocating or reading out of bounds.
#pragma once

#include <cstdint>

#include "common/check.h"

namespace recops {

// a * b for non-negative sizes; throws naming `op` on overflow or a negative factor.
// `what` names the quantity in the message ("<op>: <what> overflows int64, got a * b").
inline int64_t checked_mul(int64_t a, int64_t b, const char* op, const char* what = "size product") {
  RECOPS_CHECK(a >= 0 && b >= 0, op, ": sizes must be non-negative, got ", a, " and ", b);
  int64_t r = 0;
  RECOPS_CHECK(!__builtin_mul_overflow(a, b, &r), op, ": ", what, " overflows int64, got ", a, " * ", b);
  return r;
}

// a + b for non-negative sizes; throws naming `op` on overflow or a negative term.
inline int64_t checked_add(int64_t a, int64_t b, const char* op, const char* what = "size sum") {
  RECOPS_CHECK(a >= 0 && b >= 0, op, ": sizes must be non-negative, got ", a, " and ", b);
  int64_t r = 0;
  RECOPS_CHECK(!__builtin_add_overflow(a, b, &r), op, ": ", what, " overflows int64, got ", a, " + ", b);
  return r;
}

// The end offset + count * stride of a range of `count` items of `stride` elements starting at `offset`.
inline int64_t checked_end(int64_t offset, int64_t count, int64_t stride, const char* op,
                           const char* what = "range end") {
  return checked_add(offset, checked_mul(count, stride, op, what), op, what);
}

}  // namespace recops
