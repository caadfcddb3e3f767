// SPDX-License-Identifier: Apache-2.0
// The id -> row map of dynamic embedding tables (see dynamic_table.h for the rules).
#include "embedding/dynamic_table.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <new>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

#include "common/check.h"
#include "common/checked_math.h"
#include "common/parallel.h"

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace recops::embedding {
namespace {

constexpr int64_t kMaxRows = (int64_t{1} << 31) - 1;  // rows are int32 in the slots
constexpr uint32_t kFreqMax = uint32_t{1} << 31;  // LFU counts saturate here

uint64_t next_pow2(uint64_t x) {
  uint64_t p = 1;
  while (p < x) p <<= 1;
  return p;
}

inline uint64_t sketch_salt(int d) { return 0x5851f42d4c957f2dULL * static_cast<uint64_t>(d + 1); }

template <typename T>
inline void relaxed_store(T* p, T v) {
  __atomic_store(p, &v, __ATOMIC_RELAXED);
}

// Small open-addressing set of the absent ids of one call: key -> index in first-occurrence order.
class Dedup {
 public:
  explicit Dedup(int64_t n) {
    const uint64_t size = next_pow2(static_cast<uint64_t>(std::max<int64_t>(n, 1)) * 2);
    keys_.resize(size);
    idx_.assign(size, -1);
    mask_ = size - 1;
  }
  // Index of key, inserting it as `next` when new; sets fresh.
  int64_t get(int64_t key, int64_t next, bool* fresh) {
    uint64_t s = mix64(static_cast<uint64_t>(key)) & mask_;
    while (idx_[s] >= 0) {
      if (keys_[s] == key) {
        *fresh = false;
        return idx_[s];
      }
      s = (s + 1) & mask_;
    }
    keys_[s] = key;
    idx_[s] = next;
    *fresh = true;
    return next;
  }

 private:
  std::vector<int64_t> keys_, idx_;
  uint64_t mask_ = 0;
};

}  // namespace

void check_dynamic_config(const char* op, const DynamicMapConfig& c) {
  RECOPS_CHECK(c.capacity >= 1 && c.capacity <= kMaxRows, op, ": capacity must be in [1, 2^31 - 1], got ", c.capacity);
  RECOPS_CHECK(c.max_capacity >= c.capacity && c.max_capacity <= kMaxRows, op,
               ": max_capacity must be in [capacity, 2^31 - 1], got ", c.max_capacity, " with capacity ", c.capacity);
  RECOPS_CHECK(c.admit_after >= 1 && c.admit_after <= 255, op, ": admit_after must be in [1, 255], got ",
               c.admit_after);
  RECOPS_CHECK(!c.has_ttl || (c.ttl >= 0 && std::isfinite(c.ttl)), op, ": ttl must be finite and >= 0, got ", c.ttl);
  RECOPS_CHECK(c.eviction == Eviction::kLru || c.eviction == Eviction::kLfu, op,
               ": eviction must be 0 (lru) or 1 (lfu), got ", static_cast<int>(c.eviction));
  if (c.admit_after > 1) {
    RECOPS_CHECK(c.sketch_width >= 64 && c.sketch_width <= (int64_t{1} << 36) &&
                     (c.sketch_width & (c.sketch_width - 1)) == 0,
                 op, ": sketch_width must be a power of two in [64, 2^36], got ", c.sketch_width);
    RECOPS_CHECK(c.sketch_depth >= 1 && c.sketch_depth <= 8, op, ": sketch_depth must be in [1, 8], got ",
                 c.sketch_depth);
  }
}

DynamicIdMap::SlotBlock::SlotBlock(size_t n) : count(n) {
  constexpr size_t kHuge = size_t{1} << 21;
  const size_t bytes = std::max<size_t>(n * sizeof(Slot), 64);
  const size_t align = bytes >= kHuge ? kHuge : 64;
  data = static_cast<Slot*>(std::aligned_alloc(align, (bytes + align - 1) / align * align));
  if (data == nullptr) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (bytes >= kHuge) madvise(data, bytes / kHuge * kHuge, MADV_HUGEPAGE);
#endif
  for (size_t i = 0; i < n; ++i) data[i] = Slot{0, -1, 0};
}

DynamicIdMap::SlotBlock& DynamicIdMap::SlotBlock::operator=(SlotBlock&& o) noexcept {
  std::swap(data, o.data);
  std::swap(count, o.count);
  return *this;
}

DynamicIdMap::SlotBlock::~SlotBlock() { std::free(data); }

DynamicIdMap::DynamicIdMap(const char* op, const DynamicMapConfig& config) : cfg_(config) {
  check_dynamic_config(op, cfg_);
  const int64_t cap = cfg_.capacity;
  cfg_.capacity = 0;
  rehash(cap);
  if (cfg_.admit_after > 1) {
    sketch_.assign(static_cast<size_t>(cfg_.sketch_depth * cfg_.sketch_width), 0);
  }
}

void DynamicIdMap::rehash(int64_t capacity) {
  ++version_;
  const int64_t old = cfg_.capacity;
  free_bits_.resize(static_cast<size_t>((capacity + 63) / 64), 0);
  if (cfg_.has_ttl) last_seen_.resize(static_cast<size_t>(capacity), 0.0);
  if (cfg_.eviction == Eviction::kLfu) freq_.resize(static_cast<size_t>(capacity), 0);
  for (int64_t r = old; r < capacity; ++r) free_bits_[r >> 6] |= uint64_t{1} << (r & 63);
  num_free_ += capacity - old;
  free_hint_ = std::min<int64_t>(free_hint_, old >> 6);
  cfg_.capacity = capacity;
  const uint64_t size = next_pow2(static_cast<uint64_t>(capacity) * 2);
  if (size != slots_.size()) {
    SlotBlock fresh(size);
    std::swap(fresh, slots_);
    mask_ = size - 1;
    for (const Slot& e : fresh) {
      if (e.row >= 0) slots_[static_cast<size_t>(insert(e.key, e.row))] = e;
    }
  }
}

int64_t DynamicIdMap::find(int64_t key) const {
  uint64_t s = 0;
  return probe_slots(slots_.data, mask_, key, &s) >= 0 ? static_cast<int64_t>(s) : -1;
}

int64_t DynamicIdMap::insert(int64_t key, int64_t row) {
  uint64_t s = mix64(static_cast<uint64_t>(key)) & mask_;
  while (slots_[s].row >= 0) s = (s + 1) & mask_;
  slots_[s] = Slot{key, static_cast<int32_t>(row), 0};
  return static_cast<int64_t>(s);
}

// Backward-shift deletion: later members of the probe run move into the hole when their home slot allows it.
void DynamicIdMap::erase_slot(int64_t slot) {
  uint64_t hole = static_cast<uint64_t>(slot);
  uint64_t s = hole;
  for (;;) {
    s = (s + 1) & mask_;
    if (slots_[s].row < 0) break;
    const uint64_t home = mix64(static_cast<uint64_t>(slots_[s].key)) & mask_;
    // s may move to hole unless home lies cyclically in (hole, s]
    const bool stays = hole <= s ? (home > hole && home <= s) : (home > hole || home <= s);
    if (!stays) {
      slots_[hole] = slots_[s];
      hole = s;
    }
  }
  slots_[hole].row = -1;
}

void DynamicIdMap::push_free(int64_t row) {
  free_bits_[row >> 6] |= uint64_t{1} << (row & 63);
  free_hint_ = std::min<int64_t>(free_hint_, row >> 6);
  ++num_free_;
}

int64_t DynamicIdMap::pop_free() {  // the lowest free row (num_free_ > 0)
  int64_t w = free_hint_;
  while (free_bits_[w] == 0) ++w;
  free_hint_ = w;
  const int64_t r = w * 64 + __builtin_ctzll(free_bits_[w]);
  free_bits_[w] &= free_bits_[w] - 1;
  --num_free_;
  return r;
}

void DynamicIdMap::release_key(int64_t key) {
  const int64_t slot = find(key);
  if (slot < 0) return;
  const int64_t row = slots_[slot].row;
  erase_slot(slot);
  --used_;
  push_free(row);
}

bool DynamicIdMap::expired(const Slot& e, double now) const {
  return cfg_.has_ttl && now - last_seen_[static_cast<size_t>(e.row)] > cfg_.ttl;
}

int64_t DynamicIdMap::last_use(const Slot& e) const {
  return serial_ - static_cast<int64_t>(static_cast<uint32_t>(static_cast<uint32_t>(serial_) - e.use));
}

void DynamicIdMap::reclaim_expired(double now) {
  if (!cfg_.has_ttl) return;
  std::vector<int64_t> keys;
  for (const Slot& e : slots_) {
    if (e.row >= 0 && expired(e, now)) keys.push_back(e.key);
  }
  for (int64_t k : keys) release_key(k);
}

uint32_t DynamicIdMap::estimate(int64_t key) const {
  uint32_t m = 255;
  const uint64_t wmask = static_cast<uint64_t>(cfg_.sketch_width - 1);
  for (int d = 0; d < cfg_.sketch_depth; ++d) {
    const uint64_t c = mix64(static_cast<uint64_t>(key) ^ sketch_salt(d)) & wmask;
    m = std::min<uint32_t>(m, sketch_[static_cast<size_t>(d * cfg_.sketch_width) + c]);
  }
  return m;
}

void DynamicIdMap::count(int64_t key, int64_t occurrences) {
  const uint32_t target =
      static_cast<uint32_t>(std::min<int64_t>(255, static_cast<int64_t>(estimate(key)) + occurrences));
  const uint64_t wmask = static_cast<uint64_t>(cfg_.sketch_width - 1);
  for (int d = 0; d < cfg_.sketch_depth; ++d) {  // conservative update: raise each counter only up to the target
    uint8_t& c = sketch_[static_cast<size_t>(d * cfg_.sketch_width) +
                         (mix64(static_cast<uint64_t>(key) ^ sketch_salt(d)) & wmask)];
    c = static_cast<uint8_t>(std::max<uint32_t>(c, target));
  }
}

// Training stamps the rows it finds right in the lookup (the slot's line is in cache): last_use = this call's serial,
// last_seen = now, freq + 1 per occurrence. A call that returns grow_to is repeated by the caller with the same
// serial and now, so those last_use / last_seen stamps are the ones it writes anyway; the freq counts are taken back
// (unstamp) before it returns.
// Software-pipelined: the home slot of id i + kAhead is prefetched (and its index kept in a ring) while id i is
// probed, so the probes find their lines in cache (a probe is one cache miss otherwise). Absent and expired ids get
// -1 (training) or the zero row. Specialised on the configuration so the common loop (no ttl, LRU) has no
// branches for options it does not use.
template <bool kTtl, bool kLfu, bool kTrain>
void DynamicIdMap::lookup_impl(const int64_t* ids, int64_t b, int64_t e, int64_t* rows, double now) {
  const int64_t zero_row = cfg_.capacity;
  const uint32_t use = static_cast<uint32_t>(serial_ + 1);
  constexpr int64_t kAhead = 32;  // a power of two: the ring index is i & (kAhead - 1)
  uint64_t ring[kAhead];
  Slot* const slots = slots_.data;
  const uint64_t mask = mask_;
  for (int64_t i = b; i < std::min(e, b + kAhead); ++i) {
    ring[i & (kAhead - 1)] = mix64(static_cast<uint64_t>(ids[i])) & mask;
    __builtin_prefetch(&slots[ring[i & (kAhead - 1)]], 1);
  }
  for (int64_t i = b; i < e; ++i) {
    uint64_t s = ring[i & (kAhead - 1)];
    if (i + kAhead < e) {
      const uint64_t h = mix64(static_cast<uint64_t>(ids[i + kAhead])) & mask;
      ring[i & (kAhead - 1)] = h;
      __builtin_prefetch(&slots[h], 1);
    }
    int64_t row = probe_from(slots, mask, ids[i], s, &s);
    if (row >= 0) {
      double* seen = kTtl ? &last_seen_[static_cast<size_t>(row)] : nullptr;
      double was = 0;
      if (kTtl) __atomic_load(seen, &was, __ATOMIC_RELAXED);
      if (kTtl && now - was > cfg_.ttl) {
        row = -1;
      } else if (kTrain) {
        // store only when the value changes: hot ids (Zipf) would otherwise bounce their line between cores
        if (__atomic_load_n(&slots[s].use, __ATOMIC_RELAXED) != use) relaxed_store(&slots[s].use, use);
        if (kTtl && was != now) relaxed_store(seen, now);
        if (kLfu) {  // saturating near 2^31 instead of wrapping (the check and the add race by a few threads)
          uint32_t* f = &freq_[static_cast<size_t>(row)];
          if (__atomic_load_n(f, __ATOMIC_RELAXED) < kFreqMax) __atomic_fetch_add(f, 1u, __ATOMIC_RELAXED);
        }
      }
    }
    rows[i] = kTrain ? row : (row < 0 ? zero_row : row);
  }
}

void DynamicIdMap::lookup_range(const int64_t* ids, int64_t b, int64_t e, int64_t* rows, bool training,
                                double now) {
  const bool ttl = cfg_.has_ttl, lfu = cfg_.eviction == Eviction::kLfu;
  using Fn = void (DynamicIdMap::*)(const int64_t*, int64_t, int64_t, int64_t*, double);
  static constexpr Fn kTable[8] = {
      &DynamicIdMap::lookup_impl<false, false, false>, &DynamicIdMap::lookup_impl<false, false, true>,
      &DynamicIdMap::lookup_impl<false, true, false>,  &DynamicIdMap::lookup_impl<false, true, true>,
      &DynamicIdMap::lookup_impl<true, false, false>,  &DynamicIdMap::lookup_impl<true, false, true>,
      &DynamicIdMap::lookup_impl<true, true, false>,   &DynamicIdMap::lookup_impl<true, true, true>};
  (this->*kTable[(ttl ? 4 : 0) + (lfu ? 2 : 0) + (training ? 1 : 0)])(ids, b, e, rows, now);
}

void DynamicIdMap::unstamp(const int64_t* /*ids*/, int64_t n, const int64_t* rows) {
  if (cfg_.eviction != Eviction::kLfu) return;
  for (int64_t i = 0; i < n; ++i) {
    if (rows[i] < 0) continue;
    uint32_t& f = freq_[static_cast<size_t>(rows[i])];
    if (f > 0) --f;
  }
}

ResolveResult DynamicIdMap::resolve(const int64_t* ids, int64_t n, int64_t* rows, bool training, double now,
                                    int num_threads, int64_t* new_rows, int64_t* new_ids) {
  parallel_for(0, n, 4096, num_threads,
               [&](int64_t b, int64_t e) { lookup_range(ids, b, e, rows, training, now); });
  if (!training) return ResolveResult{};
  const ResolveResult res = finish(ids, n, rows, now, new_rows, new_ids);
  if (res.grow_to) unstamp(ids, n, rows);
  return res;
}

ResolveResult DynamicIdMap::finish(const int64_t* ids, int64_t n, int64_t* rows, double now, int64_t* new_rows,
                                   int64_t* new_ids) {
  ResolveResult res;
  ++version_;
  const int64_t zero_row = cfg_.capacity, stamp = serial_ + 1;
  const bool ttl = cfg_.has_ttl, lfu = cfg_.eviction == Eviction::kLfu;
  // 2. the absent ids, deduplicated in first-occurrence order, with their occurrence counts.
  int64_t misses = 0;
  for (int64_t i = 0; i < n; ++i) misses += rows[i] < 0;
  if (misses == 0) {
    ++serial_;
    return res;
  }
  std::vector<int64_t> uniq, occ, miss_pos, miss_idx;
  {
    Dedup dedup(misses);
    miss_pos.reserve(static_cast<size_t>(misses));
    miss_idx.reserve(static_cast<size_t>(misses));
    for (int64_t i = 0; i < n; ++i) {
      if (rows[i] >= 0) continue;
      bool fresh = false;
      const int64_t u = dedup.get(ids[i], static_cast<int64_t>(uniq.size()), &fresh);
      if (fresh) {
        uniq.push_back(ids[i]);
        occ.push_back(0);
      }
      ++occ[static_cast<size_t>(u)];
      miss_pos.push_back(i);
      miss_idx.push_back(u);
    }
  }
  const int64_t nu = static_cast<int64_t>(uniq.size());
  std::vector<uint8_t> admit(static_cast<size_t>(nu), 1);
  int64_t wanted = nu;
  if (cfg_.admit_after > 1) {
    wanted = 0;
    for (int64_t u = 0; u < nu; ++u) {
      admit[u] = static_cast<int64_t>(estimate(uniq[u])) + occ[u] >= cfg_.admit_after;
      wanted += admit[u];
    }
  }
  // 3. rows. Expired rows of ids that came back are released first (their ids count as absent), then, when the
  // free rows cannot hold every admitted id, all expired rows; when they still cannot, grow if allowed.
  if (ttl) {
    for (int64_t u = 0; u < nu; ++u) release_key(uniq[u]);
  }
  if (wanted > num_free()) {
    reclaim_expired(now);
    const int64_t need = used_ + wanted;
    if (need > cfg_.capacity && cfg_.capacity < cfg_.max_capacity) {
      int64_t to = cfg_.capacity;
      while (to < need && to < cfg_.max_capacity) to = std::min(cfg_.max_capacity, to * 2);
      res.grow_to = to;
      return res;
    }
  }
  ++serial_;
  if ((serial_ & ((int64_t{1} << 30) - 1)) == 0) {  // keep every age below 2^31, so 32-bit uses never alias
    for (Slot& e : slots_) {
      if (e.row >= 0 && static_cast<uint32_t>(static_cast<uint32_t>(serial_) - e.use) > (uint32_t{1} << 31)) {
        e.use = static_cast<uint32_t>(serial_ - (int64_t{1} << 31));
      }
    }
  }
  if (cfg_.admit_after > 1) {
    for (int64_t u = 0; u < nu; ++u) count(uniq[u], occ[u]);
  }
  // Evict when the free rows do not suffice: victims in ascending policy key among rows not used in this call.
  if (wanted > num_free()) {
    const int64_t short_by = wanted - num_free();
    std::vector<std::pair<std::pair<int64_t, int64_t>, std::pair<int64_t, int64_t>>> cand;  // ((freq, use), (row, key))
    cand.reserve(static_cast<size_t>(used_));
    for (const Slot& e : slots_) {
      if (e.row >= 0 && e.use != static_cast<uint32_t>(stamp)) {
        cand.push_back({{lfu ? static_cast<int64_t>(freq_[static_cast<size_t>(e.row)]) : 0, last_use(e)},
                        {e.row, e.key}});
      }
    }
    const int64_t k = std::min<int64_t>(short_by, static_cast<int64_t>(cand.size()));
    if (k < static_cast<int64_t>(cand.size())) std::nth_element(cand.begin(), cand.begin() + k, cand.end());
    for (int64_t j = 0; j < k; ++j) release_key(cand[static_cast<size_t>(j)].second.second);
  }
  std::vector<int64_t> urow(static_cast<size_t>(nu), zero_row);
  for (int64_t u = 0; u < nu; ++u) {
    if (!admit[u] || num_free() == 0) continue;
    const int64_t r = pop_free();
    slots_[static_cast<size_t>(insert(uniq[u], r))].use = static_cast<uint32_t>(stamp);
    if (ttl) last_seen_[static_cast<size_t>(r)] = now;
    if (lfu) freq_[static_cast<size_t>(r)] = static_cast<uint32_t>(std::min<int64_t>(occ[u], kFreqMax));
    ++used_;
    urow[u] = r;
    new_rows[res.num_new] = r;
    new_ids[res.num_new] = uniq[u];
    ++res.num_new;
  }
  for (size_t j = 0; j < miss_pos.size(); ++j) rows[miss_pos[j]] = urow[static_cast<size_t>(miss_idx[j])];
  return res;
}

std::pair<int64_t, int64_t> resolve_many(DynamicIdMap* const* maps, int64_t num_maps, const int64_t* ids,
                                         const int64_t* bounds, int64_t* rows, bool training, double now,
                                         int num_threads, int64_t* new_rows, int64_t* new_ids, int64_t* new_counts) {
  const int64_t n = bounds[num_maps];
  parallel_for(0, n, 4096, num_threads, [&](int64_t b, int64_t e) {
    // the segments overlapping [b, e)
    int64_t t = static_cast<int64_t>(std::upper_bound(bounds, bounds + num_maps + 1, b) - bounds) - 1;
    for (; t < num_maps && bounds[t] < e; ++t) {
      const int64_t lo = std::max(b, bounds[t]), hi = std::min(e, bounds[t + 1]);
      if (lo < hi) maps[t]->lookup_range(ids, lo, hi, rows, training, now);
    }
  });
  for (int64_t t = 0; t < num_maps; ++t) new_counts[t] = 0;
  if (!training) return {-1, 0};
  for (int64_t t = 0; t < num_maps; ++t) {
    const int64_t lo = bounds[t], len = bounds[t + 1] - bounds[t];
    const ResolveResult r = maps[t]->finish(ids + lo, len, rows + lo, now, new_rows + lo, new_ids + lo);
    if (r.grow_to) {  // this map and the ones after it take their frequency counts back; the caller grows and resumes
      for (int64_t u = t; u < num_maps; ++u) {
        maps[u]->unstamp(ids + bounds[u], bounds[u + 1] - bounds[u], rows + bounds[u]);
      }
      return {t, r.grow_to};
    }
    new_counts[t] = r.num_new;
  }
  return {-1, 0};
}

void DynamicIdMap::grow(int64_t new_capacity) {
  RECOPS_CHECK(new_capacity > cfg_.capacity && new_capacity <= cfg_.max_capacity, "DynamicTable",
               ": grow needs a capacity in (", cfg_.capacity, ", ", cfg_.max_capacity, "], got ", new_capacity);
  rehash(new_capacity);
}

int64_t DynamicIdMap::num_live(double now) const {
  int64_t n = 0;
  for (const Slot& e : slots_) n += e.row >= 0 && !expired(e, now);
  return n;
}

void DynamicIdMap::dump(int64_t* ids, int64_t* rows, int64_t* last_use, double* last_seen, int64_t* freq) const {
  std::vector<std::pair<int32_t, int64_t>> order;  // (row, slot)
  order.reserve(static_cast<size_t>(used_));
  for (size_t s = 0; s < slots_.size(); ++s) {
    if (slots_[s].row >= 0) order.emplace_back(slots_[s].row, static_cast<int64_t>(s));
  }
  std::sort(order.begin(), order.end());
  for (size_t j = 0; j < order.size(); ++j) {
    const Slot& e = slots_[static_cast<size_t>(order[j].second)];
    ids[j] = e.key;
    rows[j] = e.row;
    last_use[j] = this->last_use(e);
    last_seen[j] = cfg_.has_ttl ? last_seen_[static_cast<size_t>(e.row)] : 0.0;
    freq[j] = cfg_.eviction == Eviction::kLfu ? static_cast<int64_t>(freq_[static_cast<size_t>(e.row)]) : 0;
  }
}

void DynamicIdMap::load(const char* op, const int64_t* ids, const int64_t* rows, const int64_t* last_use,
                        const double* last_seen, const int64_t* freq, int64_t n, int64_t serial) {
  RECOPS_CHECK(n >= 0 && n <= cfg_.capacity, op, ": a dynamic table of capacity ", cfg_.capacity,
               " cannot hold ", n, " ids");
  RECOPS_CHECK(serial >= 0, op, ": the serial counter must be >= 0, got ", serial);
  std::vector<uint8_t> taken(static_cast<size_t>(cfg_.capacity), 0);
  for (int64_t j = 0; j < n; ++j) {
    RECOPS_CHECK(rows[j] >= 0 && rows[j] < cfg_.capacity, op, ": rows[", j, "] must be in [0, ", cfg_.capacity,
                 "), got ", rows[j]);
    RECOPS_CHECK(!taken[rows[j]], op, ": rows[", j, "] = ", rows[j], " is held by two ids");
    taken[rows[j]] = 1;
    RECOPS_CHECK(last_use[j] >= 0 && last_use[j] <= serial, op, ": last_use[", j, "] must be in [0, ", serial,
                 "], got ", last_use[j]);
    RECOPS_CHECK(freq[j] >= 0, op, ": freq[", j, "] must be >= 0, got ", freq[j]);
    RECOPS_CHECK(std::isfinite(last_seen[j]), op, ": last_seen[", j, "] must be finite, got ", last_seen[j]);
  }
  {  // distinct ids
    std::vector<int64_t> sorted(ids, ids + n);
    std::sort(sorted.begin(), sorted.end());
    const auto dup = std::adjacent_find(sorted.begin(), sorted.end());
    RECOPS_CHECK(dup == sorted.end(), op, ": id ", dup == sorted.end() ? 0 : *dup, " is listed twice");
  }
  clear();
  for (int64_t j = 0; j < n; ++j) {
    const size_t r = static_cast<size_t>(rows[j]);
    slots_[static_cast<size_t>(insert(ids[j], rows[j]))].use =
        static_cast<uint32_t>(std::max<int64_t>(last_use[j], serial - (int64_t{1} << 31)));
    if (cfg_.has_ttl) last_seen_[r] = last_seen[j];
    if (cfg_.eviction == Eviction::kLfu) freq_[r] = static_cast<uint32_t>(std::min<int64_t>(freq[j], kFreqMax));
    free_bits_[rows[j] >> 6] &= ~(uint64_t{1} << (rows[j] & 63));
  }
  num_free_ = cfg_.capacity - n;
  free_hint_ = 0;
  used_ = n;
  serial_ = serial;
}

void DynamicIdMap::restamp(double now) {
  ++version_;
  if (!cfg_.has_ttl) return;
  for (Slot& e : slots_) {
    if (e.row >= 0) last_seen_[static_cast<size_t>(e.row)] = now;
  }
}

void DynamicIdMap::clear() {
  ++version_;
  for (auto& e : slots_) e.row = -1;
  std::fill(sketch_.begin(), sketch_.end(), uint8_t{0});
  std::fill(free_bits_.begin(), free_bits_.end(), uint64_t{0});
  for (int64_t r = 0; r < cfg_.capacity; ++r) free_bits_[r >> 6] |= uint64_t{1} << (r & 63);
  num_free_ = cfg_.capacity;
  free_hint_ = 0;
  used_ = 0;
  serial_ = 0;
}

void dynamic_init_values(const int64_t* ids, int64_t n, int64_t dim, uint64_t seed, double bound, float* out,
                         int num_threads) {
  parallel_for(0, n, std::max<int64_t>(1, 4096 / std::max<int64_t>(dim, 1)), num_threads, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const uint64_t base = mix64(seed ^ static_cast<uint64_t>(ids[i]));
      for (int64_t j = 0; j < dim; ++j) {
        const double u = static_cast<double>(mix64(base + static_cast<uint64_t>(j)) >> 11) * 0x1.0p-53;
        out[i * dim + j] = static_cast<float>((2.0 * u - 1.0) * bound);
      }
    }
  });
}

}  // namespace recops::embedding
