// SPDX-License-Identifier: Apache-2.0
// Collisionless (Monolith-style) id -> row map of a dynamic embedding table, CPU core.
//
// A dynamic table has `capacity` preallocated rows and a map from raw int64 ids (every value valid, negative
// ones and INT64_MIN/MAX included) to rows. The map is an open-addressing hash table with linear probing and
// backward-shift deletion (no tombstones), load factor <= 1/2: slots hold {key, row}, row -1 marks an empty
// slot, so no key value is reserved. Lookups probe in parallel with software prefetch; every mutation happens
// in one serial phase per call, so the result never depends on the thread count.
//
// One training call (resolve with training = true), for the n ids of one batch, `now` the step or clock value:
//   1. every id is looked up (parallel, read-only). An id whose row expired (has_ttl and now - last_seen > ttl)
//      counts as absent.
//   2. the absent ids, deduplicated in order of first occurrence, are counted in the admission sketch (count-min,
//      `sketch_depth` rows of `sketch_width` saturating uint8 counters, conservative update, by the number of
//      occurrences in the batch). An id is admitted when its estimate reaches admit_after (admit_after = 1:
//      always, and there is no sketch). Count-min never under-counts: a collision can only admit an id early.
//   3. rows for the admitted ids, in first-occurrence order, come from the free rows, lowest first. When they do
//      not suffice, expired rows are reclaimed (made free); when they still do not and capacity < max_capacity, the
//      call stops there and asks the caller to grow to the smallest doubling that fits (grow_to; nothing else has
//      changed) and call again; else victims are evicted: the rows not used in this call with the smallest
//      (last_use, row) for LRU or (freq, last_use, row) for LFU. Admitted ids that still find no row (every row is
//      used in this call) are treated as not admitted.
//   4. every id with a row gets last_use = this call's serial number, last_seen = now and freq += its occurrences
//      (freq restarts at a (re)assigned row). rows[i] = the id's row, or `capacity` (the zero row the caller keeps)
//      for an id without one. The (row, id) pairs assigned in this call are reported so the caller re-initialises
//      those rows' weights and optimizer state.
// Eval calls (training = false) never mutate anything: unknown and expired ids read the zero row.
// Expired rows are reclaimed lazily (step 1 when the id comes back, step 3 before an eviction, and when asked):
// what callers observe (num_live, live rows, rows of ids) is the eager rule's.
//
// Layout: 16-byte slots {key, row, use} (use: the last training call that used the row), so a lookup and its LRU
// stamp touch one cache line; with a ttl a per-row last_seen (8 bytes), with LFU a per-row count (4 bytes); free
// rows are a bitmap (lowest first). Memory per row of capacity: 2 to 4 slots (the slot count is the power of two
// >= 2 * capacity), i.e. 32 bytes at a power-of-two capacity, plus 1 bit (+ 8 ttl, + 4 LFU); the sketch adds
// depth * width bytes per table. Rows are int32: capacity <= 2^31 - 1.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "embedding/dynamic_params.h"

namespace recops::embedding {

enum class Eviction : int { kLru = 0, kLfu = 1 };

struct DynamicMapConfig {
  int64_t capacity = 0;       // rows now, in [1, 2^31 - 1]
  int64_t max_capacity = 0;   // >= capacity; growth doubles up to it
  int64_t admit_after = 1;    // in [1, 255]
  bool has_ttl = false;
  double ttl = 0;             // >= 0 when has_ttl
  Eviction eviction = Eviction::kLru;
  int64_t sketch_width = 0;   // power of two >= 64 when admit_after > 1
  int sketch_depth = 4;       // in [1, 8]
};

// Checks a config, throwing std::invalid_argument naming `op` and the bad field.
void check_dynamic_config(const char* op, const DynamicMapConfig& c);

struct ResolveResult {
  int64_t grow_to = 0;  // > 0: nothing changed; grow the table to this capacity and call again
  int64_t num_new = 0;  // (row, id) pairs assigned by this call, written to new_rows / new_ids
};

class DynamicIdMap {
 public:
  DynamicIdMap(const char* op, const DynamicMapConfig& config);

  const DynamicMapConfig& config() const { return cfg_; }
  int64_t capacity() const { return cfg_.capacity; }
  int64_t serial() const { return serial_; }
  int64_t num_used() const { return used_; }  // rows held by ids, expired ones not yet reclaimed included

  // rows [n] for ids [n] as described above. new_rows / new_ids: room for n entries each (training only).
  ResolveResult resolve(const int64_t* ids, int64_t n, int64_t* rows, bool training, double now, int num_threads,
                        int64_t* new_rows, int64_t* new_ids);

  // The two halves of resolve, for resolve_many: the lookups of ids[b, e) (no parallel region; training stamps the
  // rows found), then the serial phase over the whole call's ids (training only); unstamp takes the frequency
  // counts of a lookup back when the call asked to grow.
  void lookup_range(const int64_t* ids, int64_t b, int64_t e, int64_t* rows, bool training, double now);
  ResolveResult finish(const int64_t* ids, int64_t n, int64_t* rows, double now, int64_t* new_rows,
                       int64_t* new_ids);
  void unstamp(const int64_t* ids, int64_t n, const int64_t* rows);

  // More rows (new_capacity in (capacity, max_capacity]); the new rows are free.
  void grow(int64_t new_capacity);

  // Rows held by non-expired ids at `now`.
  int64_t num_live(double now) const;

  // Every held row (expired ones included) in row order: key, row, last_use, last_seen (0 without ttl), freq
  // (0 without LFU); each array num_used() long.
  void dump(int64_t* ids, int64_t* rows, int64_t* last_use, double* last_seen, int64_t* freq) const;

  // Replaces the whole state by a dump (validated first: rows distinct in [0, capacity), ids distinct; nothing
  // changes when it throws) and the serial counter.
  void load(const char* op, const int64_t* ids, const int64_t* rows, const int64_t* last_use,
            const double* last_seen, const int64_t* freq, int64_t n, int64_t serial);

  // The sketch counters (sketch_depth * sketch_width bytes; empty without admission).
  int64_t sketch_size() const { return static_cast<int64_t>(sketch_.size()); }
  const uint8_t* sketch() const { return sketch_.data(); }
  uint8_t* sketch_mut() { return sketch_.data(); }

  // For a device mirror (the CUDA lookup): the slots (num_slots() of them, DynamicSlot bytes), the per-row
  // last_seen (with a ttl; capacity entries) and a version that changes with every mutation.
  int64_t num_slots() const { return static_cast<int64_t>(slots_.size()); }
  const DynamicSlot* slots() const { return slots_.data; }
  const double* last_seen() const { return last_seen_.data(); }
  int64_t version() const { return version_; }

  // Every held row's last_seen set to `now` (the caller switched ttl from steps to a clock).
  void restamp(double now);

  // Frees every row (the table is then empty); the sketch is cleared too.
  void clear();

 private:
  using Slot = DynamicSlot;  // dynamic_params.h

  template <bool kTtl, bool kLfu, bool kTrain>
  void lookup_impl(const int64_t* ids, int64_t b, int64_t e, int64_t* rows, double now);
  int64_t find(int64_t key) const;   // slot index holding key, or -1
  int64_t insert(int64_t key, int64_t row);  // returns the slot
  void erase_slot(int64_t slot);
  void release_key(int64_t key);     // removes key from the map, its row becomes free
  bool expired(const Slot& s, double now) const;
  int64_t last_use(const Slot& s) const;  // the full serial (ages stay below 2^31, see resolve)
  void reclaim_expired(double now);
  void rehash(int64_t capacity);
  uint32_t estimate(int64_t key) const;
  void count(int64_t key, int64_t occurrences);
  int64_t pop_free();
  void push_free(int64_t row);
  int64_t num_free() const { return num_free_; }

  // Slots in one 2 MiB-aligned block advised to transparent huge pages (Linux): random probes then stop missing
  // the TLB once the tables around them fill the caches.
  struct SlotBlock {
    Slot* data = nullptr;
    size_t count = 0;
    SlotBlock() = default;
    explicit SlotBlock(size_t n);
    SlotBlock(SlotBlock&& o) noexcept : data(o.data), count(o.count) { o.data = nullptr, o.count = 0; }
    SlotBlock& operator=(SlotBlock&& o) noexcept;
    SlotBlock(const SlotBlock&) = delete;
    SlotBlock& operator=(const SlotBlock&) = delete;
    ~SlotBlock();
    Slot& operator[](size_t i) { return data[i]; }
    const Slot& operator[](size_t i) const { return data[i]; }
    size_t size() const { return count; }
    Slot* begin() { return data; }
    Slot* end() { return data + count; }
    const Slot* begin() const { return data; }
    const Slot* end() const { return data + count; }
  };

  DynamicMapConfig cfg_;
  SlotBlock slots_;
  uint64_t mask_ = 0;
  std::vector<double> last_seen_;    // per row, with a ttl: step or clock of the last training call using it
  std::vector<uint32_t> freq_;       // per row, LFU: occurrences since the row was assigned
  std::vector<uint64_t> free_bits_;  // bit r: row r is free
  int64_t free_hint_ = 0;            // no free row below word free_hint_
  int64_t num_free_ = 0;
  std::vector<uint8_t> sketch_;
  int64_t used_ = 0;
  int64_t serial_ = 0;               // training calls so far
  int64_t version_ = 0;              // bumped by every mutation
};

// resolve for several maps at once (the dynamic tables of one collection group): map t resolves ids[bounds[t],
// bounds[t + 1]) into the same positions of rows, all lookups in one parallel region, then each map's serial phase
// in order. Map t's new (row, id) pairs go to new_rows / new_ids from position bounds[t], new_counts[t] of them.
// Returns (-1, 0), or (t, grow_to) when map t must grow first: maps before t are done, maps from t on changed
// nothing; the caller grows map t and calls again with the maps and ids from t on.
std::pair<int64_t, int64_t> resolve_many(DynamicIdMap* const* maps, int64_t num_maps, const int64_t* ids,
                                         const int64_t* bounds, int64_t* rows, bool training, double now,
                                         int num_threads, int64_t* new_rows, int64_t* new_ids, int64_t* new_counts);

// Deterministic initial values of the rows of new ids: out [n, dim] (float32),
// uniform in [-bound, bound): u = (mix64(mix64(seed ^ id) + j) >> 11) * 2^-53, value = float((2u - 1) * bound).
void dynamic_init_values(const int64_t* ids, int64_t n, int64_t dim, uint64_t seed, double bound, float* out,
                         int num_threads);

}  // namespace recops::embedding
