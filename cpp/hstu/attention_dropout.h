// SPDX-License-Identifier: Apache-2.0
// The attention-dropout mask of jagged_attention: a counter-based generator, so the backward regenerates the
// forward's mask from (seed, sequence, head, row, column) instead of storing it. Written once for the CPU
// kernels, the CUDA kernels and (in Python, recops/ops/attention_ref.py) the reference.
//
//   mix(x)        = murmur3's 32-bit finaliser (a bijection on uint32 with full avalanche)
//   row_key       = mix(mix(mix(mix(mix(seed_lo ^ 0x5851F42D) ^ seed_hi) ^ b) ^ h) ^ i)   (b, h, i as uint32)
//   bits(i, j)    = mix(row_key ^ (j * 0x9E3779B9))                                       (mod 2^32)
//   keep(i, j)    = bits(i, j) >= threshold,  threshold = floor(p * 2^32)
// so P(keep) = 1 - threshold / 2^32 (within 2^-32 of 1 - p); a kept probability is scaled by 1 / (1 - p).
// b is the sequence, h the head, i and j the local query and key rows.
#pragma once

#include <cstdint>

#include "common/host_device.h"

namespace recops::hstu {

RECOPS_HOST_DEVICE uint32_t dropout_mix(uint32_t x) {
  x ^= x >> 16;
  x *= 0x85EBCA6Bu;
  x ^= x >> 13;
  x *= 0xC2B2AE35u;
  x ^= x >> 16;
  return x;
}

RECOPS_HOST_DEVICE uint32_t dropout_row_key(uint64_t seed, int64_t b, int64_t h, int64_t i) {
  uint32_t x = dropout_mix(static_cast<uint32_t>(seed) ^ 0x5851F42Du);
  x = dropout_mix(x ^ static_cast<uint32_t>(seed >> 32));
  x = dropout_mix(x ^ static_cast<uint32_t>(b));
  x = dropout_mix(x ^ static_cast<uint32_t>(h));
  return dropout_mix(x ^ static_cast<uint32_t>(i));
}

RECOPS_HOST_DEVICE uint32_t dropout_bits(uint32_t row_key, int64_t j) {
  return dropout_mix(row_key ^ (static_cast<uint32_t>(j) * 0x9E3779B9u));
}

// floor(p * 2^32) for p in [0, 1), clamped below 2^32.
RECOPS_HOST_DEVICE uint32_t dropout_threshold(double p) {
  const double t = p * 4294967296.0;
  return t >= 4294967295.0 ? 0xFFFFFFFFu : static_cast<uint32_t>(t);
}

}  // namespace recops::hstu
