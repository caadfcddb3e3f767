// SPDX-License-Identifier: Apache-2.0
// negative_id, the one rule that draws the generated negatives of the sampled softmax (docs in
// cpp/losses/sampled_softmax.h): written once for the CPU core and the CUDA kernels, bit-identical on both.
#pragma once

#include <cstdint>

#include "common/host_device.h"

namespace recops::losses {

// The j-th generated negative of row `row`: uniform in [0, num_items) from a counter-based hash of
// (seed, row, j) (splitmix64 finaliser, then Lemire's multiply-shift: the high 64 bits of x * num_items).
// The same on every ISA, thread count and device (the device takes the high word with __umul64hi).
RECOPS_HOST_DEVICE int64_t negative_id(uint64_t seed, int64_t row, int64_t j, int64_t num_items) {
  uint64_t x = seed + 0x9E3779B97F4A7C15ull * (static_cast<uint64_t>(row) * 0x100000001B3ull +
                                                static_cast<uint64_t>(j) + 1);
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  x ^= x >> 31;
#if defined(__CUDA_ARCH__)
  return static_cast<int64_t>(__umul64hi(x, static_cast<uint64_t>(num_items)));
#else
  return static_cast<int64_t>((static_cast<unsigned __int128>(x) * static_cast<uint64_t>(num_items)) >> 64);
#endif
}

}  // namespace recops::losses
