// SPDX-License-Identifier: Apache-2.0
// What the CPU id map (dynamic_table.h) and the CUDA lookup kernel (cuda/embedding/dynamic_lookup.cu) share: the
// slot layout and the hash, spelled once. Torch-free and CUDA-free.
#pragma once

#include <cstdint>

#include "common/host_device.h"

namespace recops::embedding {

// One slot of the open-addressing table: 16 bytes; row -1 marks an empty slot (every key value is valid).
struct DynamicSlot {
  int64_t key;
  int32_t row;
  uint32_t use;  // low 32 bits of the serial of the last training call that used the row
};
static_assert(sizeof(DynamicSlot) == 16, "the CUDA mirror copies slots bytewise");

// One splitmix64 step (golden-ratio increment, then the finaliser): the slot hash (mix64(key) & mask), the
// sketch hashes and the initial rows; python/recops/nn/dynamic_ref.py spells the same function.
RECOPS_HOST_DEVICE uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

// The row of key in slots [mask + 1], probing linearly from slot `start` (its home mix64(key) & mask, which a
// caller may have computed ahead), or -1; *slot_out (when given) gets the slot reached. The table is never full
// (load <= 1/2), so the probe ends at an empty slot.
RECOPS_HOST_DEVICE int64_t probe_from(const DynamicSlot* slots, uint64_t mask, int64_t key, uint64_t start,
                                      uint64_t* slot_out) {
  uint64_t s = start;
  while (slots[s].row >= 0) {
    if (slots[s].key == key) {
      if (slot_out) *slot_out = s;
      return slots[s].row;
    }
    s = (s + 1) & mask;
  }
  if (slot_out) *slot_out = s;
  return -1;
}

RECOPS_HOST_DEVICE int64_t probe_slots(const DynamicSlot* slots, uint64_t mask, int64_t key, uint64_t* slot_out) {
  return probe_from(slots, mask, key, mix64(static_cast<uint64_t>(key)) & mask, slot_out);
}

}  // namespace recops::embedding
